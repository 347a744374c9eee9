"""What every command shares: the console, JSON output, the acting staff member, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import typer
from rich.console import Console
from sqlmodel import Session

from engage import db
from engage.errors import ConfigurationError
from engage.settings import get_settings

console = Console()
err_console = Console(stderr=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def print_json(payload: Any) -> None:
    """Write one JSON document on stdout, nothing else."""
    typer.echo(json.dumps(payload, default=_json_default, ensure_ascii=False))


@contextmanager
def ledger(*, readonly: bool = False) -> Iterator[Session]:
    """A session on the configured ledger, upgrading a fresh or old schema first."""
    db.ensure_schema()
    with db.session_scope(readonly=readonly) as session:
        yield session


def acting_email(as_email: str | None) -> str:
    """Who is acting: `--as EMAIL`, else ENGAGE_STAFF_EMAIL."""
    email = as_email or get_settings().staff_email
    if not email:
        raise ConfigurationError("no acting staff member: pass --as EMAIL or set ENGAGE_STAFF_EMAIL")
    return email


AsOption = typer.Option(None, "--as", help="Staff email of who is acting (default: ENGAGE_STAFF_EMAIL).")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout, for scripts.")


def parse_now(text: str | None) -> datetime:
    """`--now ISO` (naive means the organisation's time zone), or the real time."""
    from datetime import UTC
    from zoneinfo import ZoneInfo

    from engage.errors import EngageError

    if not text:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise EngageError(f"--now {text!r}: expected an ISO date or time, e.g. 2026-11-23T09:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(get_settings().timezone))
    return moment.astimezone(UTC)


def parse_day(text: str, option: str) -> date:
    from engage.errors import EngageError

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise EngageError(f"{option} {text!r}: expected a date such as 2026-11-20") from None


def local_text(moment: datetime | None) -> str:
    """A ledger time shown in the organisation's time zone, e.g. `Mon 23 Nov 09:00`."""
    from zoneinfo import ZoneInfo

    if moment is None:
        return "-"
    return moment.astimezone(ZoneInfo(get_settings().timezone)).strftime("%a %d %b %Y %H:%M")


NowOption = typer.Option(None, "--now", help="Pretend it is this time (ISO); for simulations and checks.")
