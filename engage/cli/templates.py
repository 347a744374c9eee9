"""`engage templates`: the plan templates admins write in YAML, and their versions in the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from engage import plan_templates
from engage.cli._common import JsonOption, console, err_console, ledger, print_json
from engage.errors import TemplateError
from engage.plan_templates.store import template_version
from engage.settings import get_settings

app = typer.Typer(help="Plan templates: list, validate and show them.", no_args_is_help=True)


def _cells(*values: object) -> list[Text]:
    # Text, not str: an admin's "[draft]" in a name must print as written, not as Rich markup.
    return [Text(str(value)) for value in values]


@app.command("list")
def list_(as_json: bool = JsonOption) -> None:
    """List the plan templates with their current version (syncing the files to the ledger first)."""
    with ledger() as session:
        rows = [
            {
                "key": row.key,
                "name": row.name,
                "version": row.version,
                "template_id": row.id,
                "steps": len(row.definition["steps"]),
                "skip_weekends": bool(row.definition["skip_weekends"]),
            }
            for row in plan_templates.sync_templates(session=session)
        ]
    if as_json:
        print_json(rows)
        return
    table = Table("key", "name", "version", "steps", "skip weekends")
    for row in rows:
        table.add_row(
            *_cells(row["key"], row["name"], row["version"], row["steps"], "yes" if row["skip_weekends"] else "no")
        )
    console.print(table)


@app.command("validate")
def validate(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A template YAML file or a folder of them (default: the configured plan templates folder).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check plan template files without touching the ledger; print every problem, one per line."""
    target = path or get_settings().plan_templates_dir
    files = [target] if target.is_file() else plan_templates.template_files(target)
    if not files:
        raise TemplateError(f"no plan template files in {plan_templates.display_path(target)}")
    failed = 0
    for file in files:
        problems = plan_templates.template_problems(file)
        if problems:
            failed += 1
            for problem in problems:
                err_console.print(problem, markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"ok {plan_templates.display_path(file)}", markup=False, highlight=False)
    if failed:
        # Raised, not typer.Exit: the CLI's main turns it into one summary line and exit code 1.
        raise TemplateError(f"{failed} of {len(files)} plan template files do not validate")


@app.command("show")
def show(
    key: str = typer.Argument(..., help="The template's key, e.g. volunteer-followup."),
    version: int | None = typer.Option(
        None, "--version", help="Show this stored version instead of the file's current one."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Show a template's steps, with the day each one falls on as staff count it."""
    with ledger() as session:
        row = template_version(session=session, key=key, version=version)
    spec = plan_templates.spec_of(row)
    days = spec.nominal_days()
    steps = [
        {
            "key": step.key,
            "name": step.name,
            "kind": step.kind,
            "days_after": step.days_after,
            "depends_on": step.depends_on,
            "day": days[step.key],
            "assignee": spec.assignee_of(step.key),
            "priority": step.priority,
            "email_template": step.email_template,
        }
        for step in spec.steps
    ]
    if as_json:
        print_json({"key": spec.key, "name": spec.name, "version": row.version, "steps": steps})
        return
    holidays = f", {spec.holidays} holidays" if spec.holidays else ""
    days_off = f"weekends{holidays} move to {spec.reschedule_to}" if spec.skip_weekends else "every day counts"
    console.print(f"[bold]{spec.name}[/bold] ({spec.key}, version {row.version})", highlight=False)
    console.print(
        f"{days_off}; emails {spec.send_window} {spec.timezone}; default assignee: {spec.assignee}",
        markup=False,
        highlight=False,
    )
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("day", justify="right")
    table.add_column("key", overflow="fold")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("days after", justify="right")
    table.add_column("depends on", overflow="fold")
    table.add_column("assignee", overflow="fold")
    table.add_column("email template", overflow="fold")
    for step in steps:
        table.add_row(
            *_cells(
                step["day"],
                step["key"],
                step["name"],
                step["kind"],
                step["days_after"],
                step["depends_on"] or "-",
                step["assignee"],
                step["email_template"] or "-",
            )
        )
    console.print(table)
    console.print("day: counted from the workshop, when every step completes on the day it is due.", highlight=False)
