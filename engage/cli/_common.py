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
