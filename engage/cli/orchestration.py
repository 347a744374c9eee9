"""`engage enroll`, `engage run-due`, `engage simulate`: the flows, run from the terminal."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import typer
from rich.table import Table

from engage.cli._common import AsOption, JsonOption, NowOption, acting_email, console, parse_day, parse_now, print_json
from engage.errors import EngageError
from engage.settings import get_settings


def _pairs(entries: list[str], option: str) -> dict[str, str]:
    result = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise EngageError(f"{option} {entry!r}: expected KEY=VALUE")
        result[key.strip()] = value.strip()
    return result


def enroll(
    attendees: Path = typer.Argument(..., help="The attendee list (CSV).", exists=False),
    template: str = typer.Option(..., "--template", help="Plan template key, e.g. volunteer-followup."),
    workshop: str = typer.Option(..., "--workshop", help='Workshop name, e.g. "Atelier Lyon".'),
    on: str = typer.Option(..., "--date", help="Workshop date, e.g. 2026-11-20."),
    place: str | None = typer.Option(None, "--place", help="Where it took place."),
    mapping: list[str] = typer.Option([], "--map", help="COLUMN=FIELD for a column the importer does not know."),
    roles: list[str] = typer.Option([], "--role", help="ROLE=TEMPLATE: the plan for attendees with this role."),
    as_email: str | None = AsOption,
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Enroll a workshop's attendees in their plans (the enroll flow, run here)."""
    from engage.local import flows

    result = flows.enroll(
        attendees=attendees,
        template=template,
        workshop=workshop,
        on=parse_day(on, "--date"),
        place=place,
        applied_by=acting_email(as_email),
        column_map=_pairs(mapping, "--map"),
        role_templates=_pairs(roles, "--role"),
        now=parse_now(now_text),
    )
    if as_json:
        print_json(result)
        return
    table = Table("what", "count")
    for key, value in result.items():
        if isinstance(value, int):
            table.add_row(key, str(value))
    console.print(table)


def run_due(now_text: str | None = NowOption, as_json: bool = JsonOption) -> None:
    """Run every plan step that is due now (the run-due-steps flow, run here)."""
    from engage.local import flows

    result = flows.run_due(now=parse_now(now_text))
    if as_json:
        print_json(result)
    else:
        console.print(", ".join(f"{key}: {value}" for key, value in result.items()))


def retry(
    failed: bool = typer.Option(False, "--failed", help="Every step whose retries ran out."),
    step: list[int] = typer.Option([], "--step", help="This failed step (repeatable), even one refused for good."),
    run: str | None = typer.Option(None, "--run", help="The steps this Prefect flow run failed."),
    now_text: str | None = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Put failed steps back on the schedule and run them now; what already went out is never sent again."""
    from engage import db
    from engage.local import flows
    from engage.plans.actions import retry_steps

    if sum((failed, bool(step), run is not None)) != 1:
        raise EngageError("say what to retry: --failed, --step ID or --run FLOW_RUN_ID (one of them)")
    now = parse_now(now_text)
    db.ensure_schema()
    with db.session_scope() as session:
        retried = retry_steps(session=session, now=now, step_ids=step, flow_run_id=run, all_failed=failed)
        count = len(retried)
    result: dict[str, object] = {"retried": count}
    if count:
        result |= flows.run_due(now=now)
    if as_json:
        print_json(result)
    else:
        console.print(", ".join(f"{key}: {value}" for key, value in result.items()))


def simulate(
    template: str = typer.Option(..., "--template", help="Plan template key."),
    attendees: Path = typer.Option(..., "--attendees", help="The attendee list (CSV)."),
    days: int = typer.Option(35, "--days", help="How many days to play out."),
    workshop: str = typer.Option("Atelier Lyon", "--workshop", help="Workshop name."),
    on: str | None = typer.Option(None, "--date", help="Workshop date (default: today)."),
    outbox: Path = typer.Option(Path("outbox"), "--outbox", help="Where each email lands as an .eml file."),
    complete_calls: bool = typer.Option(False, "--complete-calls", help="Complete each call when it is due."),
    roles: list[str] = typer.Option([], "--role", help="ROLE=TEMPLATE: the plan for attendees with this role."),
    as_email: str | None = AsOption,
    as_json: bool = JsonOption,
) -> None:
    """Play a workshop's plans through simulated days, with a local SMTP capture (nothing leaves the machine)."""
    # The timeline is the output; Prefect's own run logs would drown it (the flows still report to the API).
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from engage.local.simulate import simulate as run_simulation

    if not attendees.is_file():
        raise EngageError(f"{attendees}: no such file")
    if days < 1:
        raise EngageError("--days takes a number of days >= 1")
    started_on = parse_day(on, "--date") if on else parse_now(None).date()
    staff = as_email or get_settings().staff_email or "staff@nmh.example.org"

    def show(day: object, events: list[str]) -> None:
        from datetime import date

        assert isinstance(day, date)
        console.print(f"[bold]day {(day - started_on).days:>2}[/bold] · {day:%a %d %b %Y}")
        for event in events:
            console.print(f"        {event}")

    result = run_simulation(
        attendees=attendees,
        template=template,
        workshop=workshop,
        on=started_on,
        days=days,
        outbox=outbox,
        staff_email=staff,
        complete_calls=complete_calls,
        role_templates=_pairs(roles, "--role"),
        on_day=None if as_json else show,
    )
    if as_json:
        print_json(result.as_dict())
        return
    imported = result.enrollment
    console.print(
        f"\nattendees: {imported.get('created', 0)} new, {imported.get('updated', 0)} updated, "
        f"{imported.get('rejected', 0)} rejected"
        + (f" (fix them in {imported['rejects_file']} and enroll it again)" if imported.get("rejects_file") else "")
    )
    console.print(
        f"{result.plans} plans · {result.emails_sent} emails sent · {result.calls_created} calls created · "
        f"{result.calls_completed} calls completed · {result.steps_skipped} steps skipped · "
        f"{result.steps_failed} steps failed\nemails are in {result.outbox}/"
    )


def server(
    port: int = typer.Option(4200, "--port", help="Port of the Prefect server and its UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    workers: int = typer.Option(1, "--workers", help="How many process workers to start."),
    capture: bool = typer.Option(
        True, "--capture/--no-capture", help="Also run the local SMTP capture (ENGAGE_SMTP_PORT, .eml files)."
    ),
    logs: Path = typer.Option(Path("logs"), "--logs", help="Where each part writes its log."),
) -> None:
    """Run Engage for real on this machine: Prefect server and UI, deployments, workers; Ctrl-C stops it all."""
    import signal
    import threading

    from engage.local.stack import LocalStack
    from engage.mail.capture import SmtpCapture

    settings = get_settings()
    stack = LocalStack(port=port, host=host, workers=workers, log_dir=logs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    mail = SmtpCapture(settings.outbox_dir, host=settings.smtp_host, port=settings.smtp_port) if capture else None
    try:
        if mail is not None:
            mail.start()
            console.print(
                f"mail capture: {settings.smtp_host}:{settings.smtp_port} -> {settings.outbox_dir.resolve()}/"
            )
        console.print("starting the Prefect server, the deployments and the workers ...")
        stack.start()
        console.print(f"Prefect UI: {stack.ui_url}   (API {stack.api_url}; logs in {logs.resolve()}/)")
        console.print(
            f"attendee inbox: {settings.inbox_dir.resolve()}/   ledger: {stack.environment()['ENGAGE_DATABASE_URL']}"
        )
        console.print(f"in another terminal: export PREFECT_API_URL={stack.api_url}")
        console.print("Ctrl-C stops everything.")
        while not stop.wait(1.0):
            for process in [stack.server, *stack.worker_processes]:
                if process is not None and process.poll() is not None:
                    raise EngageError(f"a part of the stack stopped (exit {process.returncode}); see {logs}/")
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        stack.stop()
        if mail is not None:
            mail.stop()


def smtp_capture(
    port: int = typer.Option(1025, "--port", help="Port to listen on (loopback)."),
    outbox: Path = typer.Option(Path("outbox"), "--outbox", help="Where each accepted message is written (.eml)."),
) -> None:
    """Run the local SMTP capture alone: accepts every message and writes it to the outbox; Ctrl-C stops it."""
    import signal
    import threading

    from engage.mail.capture import SmtpCapture

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SmtpCapture(outbox, port=port), contextlib.suppress(KeyboardInterrupt):
        console.print(f"accepting mail on 127.0.0.1:{port}, writing to {outbox.resolve()}/", highlight=False)
        stop.wait()
