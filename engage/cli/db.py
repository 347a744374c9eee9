"""`engage db`: the ledger's schema."""

from __future__ import annotations

import typer

from engage import db
from engage.cli._common import console

app = typer.Typer(help="The ledger database.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Create or upgrade the ledger schema."""
    db.upgrade_schema()
    console.print("ledger schema is up to date")
