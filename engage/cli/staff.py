"""`engage staff`: the people of the nonprofit."""

from __future__ import annotations

import typer
from rich.table import Table

from engage import db
from engage import staff as staff_ops
from engage.cli._common import JsonOption, console, ledger, print_json
from engage.cli.plans import print_invites
from engage.plans import operations
from models import Staff, utcnow

app = typer.Typer(help="Staff members: who owns contacts and works tasks.", no_args_is_help=True)


def staff_json(member: Staff) -> dict[str, object]:
    return {
        "email": member.email,
        "name": member.name,
        "timezone": member.timezone,
        "language": member.language,
        "hours": f"{member.work_start:%H:%M}-{member.work_end:%H:%M}",
        "days": member.work_days,
        "active": member.active,
    }


@app.command("add")
def add(
    email: str = typer.Argument(..., help="Their email: how they sign in and receive invites."),
    name: str = typer.Option(..., "--name", help="Full name, as contacts will see it."),
    timezone: str = typer.Option("Europe/Paris", "--timezone", help="IANA time zone, e.g. Europe/Paris."),
    hours: str = typer.Option("09:00-17:00", "--hours", help="Working hours, HH:MM-HH:MM."),
    days: str = typer.Option("mon-fri", "--days", help="Working days, e.g. mon-fri or mon,tue,thu."),
    language: str = typer.Option("fr", "--language", help="Language of their digests."),
    as_json: bool = JsonOption,
) -> None:
    """Add a staff member (or update the one with this email)."""
    with ledger() as session:
        member, created = staff_ops.add_staff(
            session=session, email=email, name=name, timezone=timezone, hours=hours, days=days, language=language
        )
        payload = staff_json(member) | {"created": created}
    if as_json:
        print_json(payload)
    else:
        console.print(f"{'added' if created else 'updated'} {payload['email']} ({payload['name']})")


@app.command("list")
def list_(
    include_inactive: bool = typer.Option(True, "--all/--active", help="Include staff who left."),
    as_json: bool = JsonOption,
) -> None:
    """List staff members."""
    with ledger(readonly=True) as session:
        rows = [staff_json(m) for m in staff_ops.list_staff(session=session, include_inactive=include_inactive)]
    if as_json:
        print_json(rows)
        return
    table = Table("email", "name", "time zone", "hours", "days", "active")
    for row in rows:
        table.add_row(
            str(row["email"]),
            str(row["name"]),
            str(row["timezone"]),
            str(row["hours"]),
            str(row["days"]),
            "yes" if row["active"] else "no",
        )
    console.print(table)


@app.command("deactivate")
def deactivate(
    email: str = typer.Argument(..., help="Who is leaving."),
    reassign_to: str = typer.Option(..., "--reassign-to", help="Who takes over their open tasks and contacts."),
    as_json: bool = JsonOption,
) -> None:
    """Deactivate a staff member and hand their open tasks and contacts to another, in one go."""
    db.ensure_schema()
    # Their calls move with the tasks: a CANCEL to the one leaving, a REQUEST to the one taking over.
    done = operations.deactivate_staff(email=email, reassign_to=reassign_to, now=utcnow())
    if as_json:
        print_json({"tasks": done.tasks, "contacts": done.contacts})
    else:
        handed = f"{done.tasks} open tasks and {done.contacts} contacts"
        console.print(f"{email} deactivated; {handed} now with {reassign_to}")
    print_invites(done.invites, as_json=as_json)
