#!/usr/bin/env bash
# The main job on embedded defaults, in ./demo (a fresh SQLite ledger each time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
engage="$root/.venv/bin/engage"
mkdir -p "$root/demo"
cd "$root/demo"
rm -f engage.db engage.db-wal engage.db-shm
export ENGAGE_STAFF_EMAIL=camille@nmh.example.org

"$engage" staff add camille@nmh.example.org --name "Camille Martin" --timezone Europe/Paris
"$engage" templates validate
cp "$root/samples/attendees.csv" attendees.csv
"$engage" contacts import attendees.csv
for email in helene.lefevre@example.org jerome.faure@example.com samuel.oconnor@example.com; do
  "$engage" plans apply volunteer-followup "$email" --workshop "Atelier Lyon" --date 2026-11-20 --now 2026-11-20T18:00
done
"$engage" plans apply donor-followup priya.sharma@example.com --workshop "Atelier Lyon" --date 2026-11-20 \
  --now 2026-11-20T18:00
"$engage" plans list
"$engage" tasks list --now 2026-11-20T18:00
