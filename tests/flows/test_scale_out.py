"""More than one machine: two workers on one PostgreSQL-backed Prefect server, and a PostgreSQL ledger.

One workshop of 2,000 attendees; several run-due-steps runs at once, spread over both workers: every email goes
out exactly once and no step is lost.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.schemas.objects import FlowRun
from sqlalchemy import create_engine, text
from sqlmodel import Session, func, select
from stack import MailSink, free_port, run, submit, wait_all

from engage import db
from engage.local.stack import LocalStack
from engage.staff import add_staff
from models import Plan, PlanStep, StepStatus

pytestmark = pytest.mark.slow

ATTENDEES = 2000
STAFF = "camille@nmh.example.org"
MONDAY_NINE = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
def postgres_databases(postgresql_url: str) -> Iterator[tuple[str, str]]:
    """Two throwaway PostgreSQL databases: the ledger and the Prefect server's own."""
    admin_url = postgresql_url.rsplit("/", 1)[0] + "/postgres"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    names = [f"engage_scale_{kind}_{os.getpid()}_{uuid.uuid4().hex[:6]}" for kind in ("ledger", "prefect")]
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    base = postgresql_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{names[0]}", f"{base.replace('+psycopg', '+asyncpg')}/{names[1]}"
    finally:
        db.dispose_engines()
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_two_workers_share_one_workshop_without_duplicates_or_losses(
    postgres_databases: tuple[str, str], tmp_path: Path
) -> None:
    ledger_url, prefect_url = postgres_databases
    db.upgrade_schema(ledger_url)
    with db.session_scope(ledger_url) as session:
        add_staff(session=session, email=STAFF, name="Camille Martin")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with (inbox / "attendees.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first name", "language"])
        writer.writerows([f"person{n}@example.org", f"Person{n}", "fr" if n % 2 else "en"] for n in range(ATTENDEES))
    sink = MailSink(tmp_path / "outbox").start()
    stack = LocalStack(
        port=free_port(),
        workers=0,
        prefect_home=tmp_path / "prefect",
        log_dir=tmp_path / "logs",
        prefect_database_url=prefect_url,
        extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    env = {
        "ENGAGE_DATABASE_URL": ledger_url,
        "ENGAGE_INBOX_DIR": str(inbox),
        "ENGAGE_SMTP_PORT": str(sink.port),
        "ENGAGE_BATCH_SIZE": "100",
        "ENGAGE_PREFECT_DEPLOYMENTS": "never",
    }
    try:
        stack.start()
        # Three flow runs at a time each, as two small machines would take them.
        stack.start_worker(name="machine-a", env=env, limit=3)
        stack.start_worker(name="machine-b", env=env, limit=3)
        enrolled = run(
            stack,
            "enroll/volunteer-followup",
            {
                "request": {
                    "attendees": "attendees.csv",
                    "workshop": "Grand forum",
                    "date": "2026-11-20",
                    "applied_by": STAFF,
                },
                "now": datetime(2026, 11, 20, 17, 0, tzinfo=UTC).isoformat(),
            },
            timeout=300,
        )
        assert enrolled.state is not None and enrolled.state.is_completed(), enrolled.state

        runs: list[FlowRun] = [
            submit(stack, "run-due-steps/run-due-steps", {"now": MONDAY_NINE.isoformat()}) for _ in range(6)
        ]
        finished = wait_all(stack, runs)
        assert all(r.state is not None and r.state.is_completed() for r in finished), [r.state for r in finished]
        ran_by = {
            name: sum(f"Flow run '{r.name}' submitted to infrastructure" in log for r in runs)
            for name in ("machine-a", "machine-b")
            for log in [(tmp_path / "logs" / f"{name}.log").read_text(encoding="utf-8", errors="replace")]
        }
        assert sum(ran_by.values()) == len(runs) and min(ran_by.values()) > 0, ran_by

        received = sink.received()
        assert len(received) == ATTENDEES and set(received.values()) == {1}
        with Session(db.get_engine(ledger_url)) as session:
            assert session.exec(select(func.count()).select_from(Plan)).one() == ATTENDEES
            by_status = dict(
                session.exec(
                    select(PlanStep.step_key + ":" + PlanStep.status, func.count()).group_by(
                        PlanStep.step_key, PlanStep.status
                    )
                ).all()
            )
        assert by_status == {
            f"survey:{StepStatus.DONE}": ATTENDEES,
            f"resource-pack:{StepStatus.SCHEDULED}": ATTENDEES,
            f"motivation:{StepStatus.WAITING}": ATTENDEES,
            f"follow-up-call:{StepStatus.WAITING}": ATTENDEES,
        }
    finally:
        stack.stop()
        sink.stop()
