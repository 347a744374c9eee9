"""`engage contacts`: bring attendee lists into the ledger and see who is there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from engage.cli._common import JsonOption, NowOption, console, err_console, ledger, parse_now, print_json
from engage.contacts.importing import ImportSummary, import_contacts
from engage.contacts.listing import list_contacts
from engage.importer.fields import FIELDS, IGNORE, parse_mapping
from engage.importer.source import AttendeeSource

app = typer.Typer(help="Contacts: import attendee lists, see who is in the ledger.", no_args_is_help=True)

#: Above this many rows an import shows a progress bar (on stderr, so `--json` output stays clean).
PROGRESS_MIN_ROWS = 2000
#: Rejected rows listed in the summary; the rejects file has them all.
REJECTS_SHOWN = 20


@contextmanager
def _progress_bar(source: AttendeeSource) -> Iterator[Callable[[int], None] | None]:
    if source.row_count <= PROGRESS_MIN_ROWS:
        yield None
        return
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("import", total=source.row_count)
        yield lambda done: progress.update(task, completed=done)


FileArgument = typer.Argument(
    ..., help="Attendee CSV file: comma, semicolon or tab; UTF-8 (with or without BOM), UTF-16 or Windows-1252."
)
MapOption = typer.Option(
    [],
    "--map",
    metavar="COLUMN=FIELD",
    help=f"Read COLUMN (its header text) as FIELD: one of {', '.join(FIELDS)}, or {IGNORE}. Repeatable.",
)


@app.command("import")
def import_(
    file: Path = FileArgument,
    maps: list[str] = MapOption,
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Import attendees from a CSV file: add new contacts, update known ones, set bad rows aside."""
    source = AttendeeSource.from_path(file, mapping=parse_mapping(maps))
    now = parse_now(now_text)
    with ledger() as session, _progress_bar(source) as progress:
        summary = import_contacts(session=session, source=source, now=now, progress=progress)
    if as_json:
        print_json(summary.as_dict())
    else:
        _print_summary(summary)


def _print_summary(summary: ImportSummary) -> None:
    console.print(Text.assemble((summary.source, "bold"), f": {summary.rows} rows read"))
    table = Table(show_header=False, box=None, padding=(0, 2))
    for label, count, style in (
        ("created", summary.created, "green"),
        ("updated", summary.updated, "cyan"),
        ("unchanged", summary.unchanged, "dim"),
        ("merged duplicates", summary.merged, "dim"),
        ("rejected", summary.rejected, "red" if summary.rejected else "dim"),
    ):
        table.add_row(label, Text(str(count), style=style))
    console.print(table)
    for reject in summary.rejects[:REJECTS_SHOWN]:
        console.print(Text.assemble((f"line {reject.line}: ", "red"), reject.reason), soft_wrap=True)
    if summary.rejected > REJECTS_SHOWN:
        console.print(f"... and {summary.rejected - REJECTS_SHOWN} more")
    if summary.rejects_file is not None:
        console.print(
            Text(f"rejected rows are in {summary.rejects_file}: fix them there and import that file again"),
            soft_wrap=True,
        )


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """List the contacts in the ledger with their communities, owner and opt-out."""
    with ledger(readonly=True) as session:
        contacts = list_contacts(session=session)
    if as_json:
        print_json([contact.as_dict() for contact in contacts])
        return
    table = Table()
    # an email cut short is useless: keep it whole and let the other columns wrap
    table.add_column("email", no_wrap=True)
    for title in ("name", "lang", "communities", "owner", "opt-out"):
        table.add_column(title, overflow="fold")
    for contact in contacts:
        table.add_row(
            Text(contact.email),
            Text(" ".join(part for part in (contact.first_name, contact.last_name) if part)),
            contact.language or "-",
            Text(", ".join(contact.communities) or "-"),
            Text(contact.owner or "-"),
            "yes" if contact.email_opt_out else "no",
        )
    console.print(table)
    console.print(f"{len(contacts)} contacts")
