"""`engage digest`: the staff digest (the staff-digest flow's work), run from the terminal."""

from __future__ import annotations

import typer

from engage import db
from engage.cli._common import JsonOption, NowOption, console, parse_now, print_json


def digest(
    to: str | None = typer.Option(
        None, "--to", help="Only this staff member's digest, sent now whatever their local time."
    ),
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Email each active staff member in their morning their calls and tasks of the day, the overdue and the news."""
    from engage.digest.send import send_digests

    db.ensure_schema()
    counts = send_digests(now=parse_now(now_text), only=to).as_dict()
    if as_json:
        print_json(counts)
        return
    console.print(
        f"digests: {counts['sent']} sent, {counts['nothing_to_do']} with nothing to do, "
        f"{counts['not_their_morning']} not yet their morning, {counts['already_done']} already done today"
        + (f", {counts['failed']} failed" if counts["failed"] else "")
        + (f", {counts['unknown']} unknown" if counts["unknown"] else "")
    )
