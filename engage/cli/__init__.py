"""The `engage` command: staff and admins work the ledger from the terminal."""

from __future__ import annotations

import sys

import typer

from engage.cli._common import err_console
from engage.errors import EngageError

app = typer.Typer(
    name="engage",
    help="Engagement plans for nonprofits: templates, contacts, plans and tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Attach every command group; each lives in its own module."""
    from engage.cli import db as db_commands
    from engage.cli import digest, emails, orchestration

    app.add_typer(db_commands.app, name="db")
    app.command("enroll")(orchestration.enroll)
    app.command("run-due")(orchestration.run_due)
    app.command("retry")(orchestration.retry)
    app.command("simulate")(orchestration.simulate)
    app.command("server")(orchestration.server)
    app.command("smtp-capture")(orchestration.smtp_capture)
    app.command("preview")(emails.preview)
    app.command("send-test")(emails.send_test)
    app.command("unsubscribe-server")(emails.unsubscribe_server)
    app.command("digest")(digest.digest)
    for module_name in ("templates", "contacts", "plans", "tasks", "staff"):
        try:
            module = __import__(f"engage.cli.{module_name}", fromlist=["app"])
        except ModuleNotFoundError as error:
            if error.name != f"engage.cli.{module_name}":
                raise
            continue
        app.add_typer(module.app, name=module_name)


_register()


def main() -> None:
    """Run the CLI; a user mistake is one line on stderr and exit code 1, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except EngageError as error:
        err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as error:
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
