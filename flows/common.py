"""What the flows share: scheduled runs for due times, and progress artifacts. Prefect-facing, no rules."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar, cast

from prefect import get_client
from prefect.artifacts import create_table_artifact
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.tasks import exponential_backoff

from engage import db
from engage.errors import TransientSendError
from engage.reports import workshop_progress
from engage.runner.due import DueItem, unique_due_items
from engage.settings import get_settings

RUN_DUE_STEPS_DEPLOYMENT = "run-due-steps/run-due-steps"

T = TypeVar("T")

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


def with_send_retries(task: T) -> T:
    """The retry policy of every task that sends, applied: transient failures only, with backoff.

    ``ENGAGE_SEND_RETRIES`` says how many times; ``ENGAGE_RETRY_DELAY_SECONDS`` fixes the delay (tests, simulations),
    else it grows from 10 seconds with jitter. What went out is in the ledger, so a retry never sends it again.
    """
    settings = get_settings()
    delay: Any = settings.retry_delay_seconds
    if delay is None:
        delay = exponential_backoff(backoff_factor=10)
    configured: Any = task.with_options(  # type: ignore[attr-defined]
        retries=settings.send_retries,
        retry_delay_seconds=delay,
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_on_transient,
    )
    return cast(T, configured)


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
