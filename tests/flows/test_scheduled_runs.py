"""Due times become scheduled run-due-steps flow runs on the Prefect server: staff see what is coming."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from sqlmodel import Session

from engage.mail.capture import SmtpCapture
from engage.settings import get_settings
from flows.common import RUN_DUE_STEPS_DEPLOYMENT
from flows.enroll import Attendees, enroll
from flows.run_due_steps import run_due_steps
from models import Staff

STAFF = "camille@nmh.example.org"
CSV = "Prénom;Courriel;Rôle\nLéa;lea@example.org;bénévole\nZoë;zoe@example.org;donateur\nTom;tom@example.org;bénévole\n"


def scheduled_runs() -> list[tuple[str, datetime]]:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(RUN_DUE_STEPS_DEPLOYMENT)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
    return sorted((run.name, run.next_scheduled_start_time or run.expected_start_time) for run in runs)  # type: ignore[misc]


@pytest.fixture
def deployed(prefect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run-due-steps deployment exists on the server (no worker: its runs stay scheduled)."""
    run_due_steps.to_deployment(name="run-due-steps").apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(RUN_DUE_STEPS_DEPLOYMENT)
        for run in client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        ):
            client.delete_flow_run(run.id)
    monkeypatch.setenv("ENGAGE_PREFECT_DEPLOYMENTS", "auto")
    get_settings.cache_clear()


def test_enrolling_schedules_one_run_per_workshop_step_and_day(
    deployed: None, db_url: str, session: Session, smtp_sink: SmtpCapture
) -> None:
    session.add(Staff(email=STAFF, name="Camille Martin"))
    session.commit()
    request = Attendees(
        attendees=CSV,
        workshop="Atelier Lyon",
        date=date(2026, 11, 20),
        applied_by=STAFF,
        role_templates={"donor": "donor-followup"},
    )
    evening = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
    first = enroll(request, template="volunteer-followup", now=evening)
    monday_nine = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert first["scheduled_runs"] == 2
    assert scheduled_runs() == [
        ("Atelier Lyon · day 3 · Impact story", monday_nine),
        ("Atelier Lyon · day 3 · Satisfaction survey", monday_nine),
    ]
    enroll(request, template="volunteer-followup", now=evening)  # again: the same runs, no new ones
    assert len(scheduled_runs()) == 2

    # When the survey goes out, the next step's due time gets its scheduled run.
    run_due_steps(now=monday_nine)
    names = [name for name, _ in scheduled_runs()]
    assert "Atelier Lyon · day 10 · Resource pack" in names
    assert "Atelier Lyon · day 10 · Call to give" in names
