"""Benchmark the attendee import: seconds, rows per second and peak memory, for N rows and for 1,000.

Usage (from the repository root)::

    .venv/bin/python benchmarks/import_contacts.py [--rows 10000] [--database-url URL]

Each run writes a semicolon-separated UTF-8 attendee list (French header, about 1% bad emails and 2% duplicates)
in a temporary folder and imports it into a fresh SQLite ledger there (or into ``--database-url``, e.g. an empty
PostgreSQL database). The 1,000-row run goes first, so the peak RSS after it is the baseline: a 10,000-row peak
close to it means flat memory, and a time-per-row ratio close to 1 means linear time. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engage import db
from engage.contacts.importing import import_contacts
from engage.importer.source import AttendeeSource

FIRST_NAMES = ["Hélène", "Zoë", "Jérôme", "Amélie", "Samuel", "Chloé", "François", "Priya", "Léa", "Noël"]
LAST_NAMES = ["Lefèvre", "Dubois", "Faure", "Garnier", "O'Connor", "Rousseau", "Mercier", "Sharma", "Bonnet"]
LANGUAGES = ["fr", "Français", "fr-FR", "en", "English"]
ROLES = ["Bénévole", "Donateur", "Donatrice", "Volunteer", "Donor", "Adhérent"]
BASELINE_ROWS = 1_000


def write_attendees(path: Path, rows: int, run: str) -> None:
    """Write a realistic attendee list with a few bad and duplicate rows."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter=";")
        writer.writerow(["Prénom", "Nom", "Courriel", "Téléphone", "Langue", "Rôle", "Désinscrit", "Étiquettes"])
        for n in range(rows):
            person = n - 1 if n % 50 == 49 else n  # every 50th row repeats the one before, in other case
            email = f"Person.{person}.{run}@Example.org" if person != n else f"person.{n}.{run}@example.org"
            if n % 100 == 37:
                email = f"person.{n}.{run}@"
            writer.writerow(
                [
                    FIRST_NAMES[n % len(FIRST_NAMES)],
                    LAST_NAMES[n % len(LAST_NAMES)],
                    email,
                    f"06 {n % 100:02d} {n // 100 % 100:02d} 00 00",
                    LANGUAGES[n % len(LANGUAGES)],
                    ROLES[n % len(ROLES)],
                    "oui" if n % 40 == 0 else "",
                    "atelier-sensibilisation, lyon" if n % 3 == 0 else "",
                ]
            )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(rows: int, folder: Path, database_url: str | None) -> dict[str, Any]:
    """Import `rows` generated attendees into a fresh ledger and time it."""
    run = uuid.uuid4().hex[:8]
    path = folder / f"attendees-{rows}.csv"
    write_attendees(path, rows, run)
    url = database_url or f"sqlite:///{folder / f'ledger-{rows}.db'}"
    db.upgrade_schema(url)
    started = time.perf_counter()
    source = AttendeeSource.from_path(path)
    with db.session_scope(url) as session:
        summary = import_contacts(session=session, source=source, now=datetime.now(UTC))
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "created": summary.created,
        "merged": summary.merged,
        "rejected": summary.rejected,
        "backend": url.split(":", 1)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000, help="rows in the main run (default 10000)")
    parser.add_argument("--database-url", help="an empty ledger to use instead of temporary SQLite files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as folder:
        baseline = measure(BASELINE_ROWS, Path(folder), args.database_url)
        main_run = measure(args.rows, Path(folder), args.database_url)
    db.dispose_engines()
    ratio = (main_run["seconds"] / main_run["rows"]) / (baseline["seconds"] / baseline["rows"])
    for result in (baseline, main_run):
        sys.stdout.write(
            f"{result['rows']:>7} rows: {result['seconds']:.2f} s, {result['rows_per_second']} rows/s, "
            f"peak RSS {result['peak_rss_mb']} MB (created {result['created']}, merged {result['merged']}, "
            f"rejected {result['rejected']})\n"
        )
    sys.stdout.write(f"time per row, {main_run['rows']} vs {BASELINE_ROWS} rows: x{ratio:.2f}\n")
    sys.stdout.write(json.dumps({**main_run, "baseline": baseline, "time_per_row_ratio": round(ratio, 2)}) + "\n")


if __name__ == "__main__":
    main()
