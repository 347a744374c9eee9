"""Crash recovery, proven on a real Prefect server, real process workers and an SMTP server of its own.

A run-due-steps flow run is killed with SIGKILL in the middle of a batch, at three points of a send; its worker
is killed too. A new worker finishes the plan: no email is accepted twice for a step, the one send in doubt is
`unknown` until staff resolve it, and then every plan completes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from stack import MailSink, free_port, kill, kill_group, run, wait_for

from engage import db
from engage.local.stack import LocalStack
from engage.plans.actions import complete_task, resolve_unknown
from engage.settings import get_settings
from engage.staff import add_staff
from models import Delivery, DeliveryState, Plan, PlanStatus, PlanStep, StepKind, StepStatus

pytestmark = pytest.mark.slow

ATTENDEES = 200
WORKSHOP = date(2026, 11, 20)
MONDAYS = [datetime(2026, 11, d, 8, 0, tzinfo=UTC) for d in (23, 30)] + [datetime(2026, 12, 7, 8, 0, tzinfo=UTC)]
CALL_DAY = datetime(2026, 12, 23, 8, 0, tzinfo=UTC)
STAFF = "camille@nmh.example.org"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A Prefect server with Engage's deployments; each test starts its own workers."""
    home = tmp_path_factory.mktemp("prefect")
    # No cron runs: the test says when run-due-steps runs, with which `now`.
    local = LocalStack(
        port=free_port(),
        workers=0,
        prefect_home=home,
        log_dir=home / "logs",
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.parametrize("point", ["before_send", "after_accept", "during_ledger_write"])
def test_a_run_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    stack: LocalStack, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'engage.db'}"
    monkeypatch.setenv("ENGAGE_DATABASE_URL", ledger_url)
    get_settings.cache_clear()
    db.upgrade_schema(ledger_url)
    with db.session_scope(ledger_url) as session:
        add_staff(session=session, email=STAFF, name="Camille Martin")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (inbox / "attendees.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["first name", "email", "language"])
        writer.writerows([f"Person{n}", f"person{n}@example.org", "en" if n % 3 else "fr"] for n in range(ATTENDEES))
    sink = MailSink(tmp_path / "outbox").start()
    env = {
        "ENGAGE_DATABASE_URL": ledger_url,
        "ENGAGE_INBOX_DIR": str(inbox),
        "ENGAGE_SMTP_PORT": str(sink.port),
        "ENGAGE_BATCH_SIZE": "50",
        # One batch at a time, so one SMTP connection: the kill leaves exactly one send in doubt, or none.
        "ENGAGE_SEND_CONCURRENCY": "1",
        "ENGAGE_LEASE_SECONDS": "30",
        "ENGAGE_RETRY_DELAY_SECONDS": "1",
        "ENGAGE_FAULT_DIR": str(tmp_path),
        # Scheduled runs for due times would start at once (their simulated dates are past): the test drives time.
        "ENGAGE_PREFECT_DEPLOYMENTS": "never",
    }
    try:
        worker = stack.start_worker(name=f"doomed-{point}", env=env | {"ENGAGE_FAULT_PAUSE": f"{point}:57"})
        enrolled = run(
            stack,
            "enroll/volunteer-followup",
            {
                "request": {
                    "attendees": "attendees.csv",
                    "workshop": "Atelier Lyon",
                    "date": WORKSHOP.isoformat(),
                    "applied_by": STAFF,
                },
                "now": datetime(2026, 11, 20, 17, 0, tzinfo=UTC).isoformat(),
            },
        )
        assert enrolled.state is not None and enrolled.state.is_completed(), enrolled.state

        # The first Monday's run stops at the fault point on its 57th email: kill it, and its worker.
        from stack import submit

        submit(stack, "run-due-steps/run-due-steps", {"now": MONDAYS[0].isoformat()})
        flow_run_pid = int(wait_for(tmp_path / f"paused-{point}", timeout=120))
        kill(flow_run_pid)
        kill_group(worker)
        accepted_at_kill = sum(sink.received().values())
        assert accepted_at_kill in (56, 57)

        # Claims held by the dead run are not taken before their lease ends...
        stack.start_worker(name=f"healthy-{point}", env=env)
        early = run(stack, "run-due-steps/run-due-steps", {"now": (MONDAYS[0] + timedelta(seconds=10)).isoformat()})
        assert early.state is not None and early.state.is_completed()
        with Session(db.get_engine(ledger_url)) as session:
            held = session.exec(select(func.count()).where(PlanStep.status == StepStatus.RUNNING)).one()
        assert held > 0
        # ... and are taken again after it.
        for moment in [MONDAYS[0] + timedelta(minutes=5), *MONDAYS[1:]]:
            done = run(stack, "run-due-steps/run-due-steps", {"now": moment.isoformat()})
            assert done.state is not None and done.state.is_completed(), done.state
            if moment == MONDAYS[0] + timedelta(minutes=5):
                _resolve_unknowns(ledger_url, sink, point, moment)
                again = run(stack, "run-due-steps/run-due-steps", {"now": (moment + timedelta(minutes=1)).isoformat()})
                assert again.state is not None and again.state.is_completed()
        calls = run(stack, "run-due-steps/run-due-steps", {"now": CALL_DAY.isoformat()})
        assert calls.state is not None and calls.state.is_completed()

        received = sink.received()
        assert max(received.values()) == 1, "an email was accepted twice"
        to_attendees = sum(n for (recipient, _), n in received.items() if STAFF not in recipient)
        assert to_attendees == 3 * ATTENDEES
        _complete_calls_and_check_every_plan(ledger_url)
    finally:
        stack.stop_workers()
        sink.stop()


def _resolve_unknowns(ledger_url: str, sink: MailSink, point: str, now: datetime) -> None:
    """Staff look at each send in doubt: it went out if the relay has it; otherwise it is sent again."""
    accepted = {recipient for recipient, _ in sink.received()}
    with db.session_scope(ledger_url) as session:
        unknown = session.exec(select(PlanStep).where(PlanStep.status == StepStatus.UNKNOWN)).all()
        assert len(unknown) <= 1, "more sends in doubt than open SMTP connections at the kill"
        if point == "before_send":
            assert len(unknown) == 1
        for step in unknown:
            delivery = session.exec(
                select(Delivery).where(Delivery.plan_step_id == step.id, Delivery.state == DeliveryState.UNKNOWN)
            ).one()
            went_out = any(delivery.recipient.lower() in recipient for recipient in accepted)
            assert went_out == (point != "before_send")
            resolve_unknown(session=session, step_id=step.id or 0, went_out=went_out, now=now)


def _complete_calls_and_check_every_plan(ledger_url: str) -> None:
    with db.session_scope(ledger_url) as session:
        statuses = session.exec(select(PlanStep.kind, PlanStep.status)).all()
        assert {status for kind, status in statuses if kind == StepKind.EMAIL} == {StepStatus.DONE}
        open_calls = session.exec(select(PlanStep).where(PlanStep.status == StepStatus.OPEN)).all()
        assert len(open_calls) == ATTENDEES
        for call in open_calls:
            complete_task(session=session, step_id=call.id or 0, now=CALL_DAY + timedelta(hours=2), outcome="reached")
    with db.session_scope(ledger_url) as session:
        assert set(session.exec(select(Plan.status)).all()) == {PlanStatus.COMPLETED}
