"""What the flows share: scheduled runs for due times, and progress artifacts. Prefect-facing, no rules."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from prefect import get_client
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from engage import db
from engage.errors import TransientSendError
from engage.reports import workshop_progress
from engage.runner.due import DueItem, unique_due_items
from engage.settings import get_settings

RUN_DUE_STEPS_DEPLOYMENT = "run-due-steps/run-due-steps"

logger = logging.getLogger("engage.flows")


def retry_on_transient(task: object, task_run: object, state: object) -> bool:
    """Retry a task only for failures that may pass (SMTP 4xx, refused or dropped connections).

    Anything else is a bug or a permanent refusal: retrying would only repeat it. What went out is recorded in the
    ledger, so a retry never sends it again.
    """
    try:
        state.result()  # type: ignore[attr-defined]
    except TransientSendError:
        return True
    except Exception:  # the failure is not transient: say no
        return False
    return False


def deployments_available() -> bool:
    """Whether due times become scheduled flow runs (a Prefect server with the run-due-steps deployment)."""
    mode = get_settings().prefect_deployments
    if mode != "auto":
        return mode == "always"
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(RUN_DUE_STEPS_DEPLOYMENT)
        except ObjectNotFound:
            return False
    return True


def schedule_due_runs(items: Iterable[DueItem]) -> int:
    """Make sure one scheduled run-due-steps flow run exists per (workshop, template step, due day).

    The idempotency key makes a second call for the same due time return the run that exists, so enrolling again or
    releasing many steps of one workshop at once never piles up runs. Returns how many due times were covered.
    """
    unique = unique_due_items(items)
    if not unique or not deployments_available():
        return 0
    for item in unique:
        run_deployment(
            RUN_DUE_STEPS_DEPLOYMENT,
            scheduled_time=item.due_at,
            timeout=0,
            idempotency_key=item.idempotency_key,
            flow_run_name=item.run_name,
            tags=[f"template:{item.template_key}"] + ([f"workshop:{item.workshop_name}"] if item.workshop_name else []),
            as_subflow=False,
        )
    return len(unique)


def publish_workshop_progress(workshop_ids: Iterable[int | None], now: datetime) -> None:
    """One table artifact per workshop (key `workshop-<id>-progress`): plans per step and status, in counts."""
    with db.session_scope(readonly=True) as session:
        for workshop_id in sorted({w for w in workshop_ids if w is not None}):
            progress = workshop_progress(session=session, workshop_id=workshop_id, now=now)
            create_table_artifact(
                key=f"workshop-{workshop_id}-progress",
                table=progress.rows,
                description=progress.description,
            )
