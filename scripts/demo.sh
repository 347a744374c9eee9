#!/usr/bin/env bash
# The main job on embedded defaults, in ./demo: a workshop's plans played out over 35 simulated days, with a
# fresh SQLite ledger, Prefect running in-process, and a local SMTP capture that writes every email to
# ./demo/outbox as an .eml file. Nothing leaves the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
engage="$root/.venv/bin/engage"
mkdir -p "$root/demo"
cd "$root/demo"
rm -rf engage.db engage.db-wal engage.db-shm outbox attendees.rejects.csv
export ENGAGE_STAFF_EMAIL=camille@nmh.example.org

"$engage" staff add camille@nmh.example.org --name "Camille Martin" --timezone Europe/Paris
"$engage" templates validate
cp "$root/samples/attendees.csv" attendees.csv
"$engage" simulate --template volunteer-followup --role donor=donor-followup \
  --attendees attendees.csv --workshop "Atelier Lyon" --date 2026-11-20 --days 35 --outbox outbox
echo
echo "Staff task list on the morning of day 34 (the calls are open):"
"$engage" tasks list --now 2026-12-24T09:00
echo "The emails are in $root/demo/outbox; the ledger is $root/demo/engage.db."
