"""The call-invites task: after steps moved, give calls their slots and tell the assignees' calendars.

Used by run-due-steps at the end of every run (its cron makes it the safety net for invites a failure left pending).
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from engage import db, invites
from engage.plans import calls
from engage.reports import redact
from engage.settings import get_settings
from flows.common import retry_on_transient


@task(
    name="send-call-invites",
    task_run_name="call slots and calendar invites",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient,
)
def send_call_invites(now: datetime, flow_run_id: str | None = None) -> dict[str, int]:
    """Place new calls in their assignee's free slots, follow moved and cancelled ones, and send the invites due."""
    with db.session_scope() as session:
        synced = calls.sync_calls(session=session, now=now)
    sent = invites.send_pending_invites(now=now, flow_run_id=flow_run_id)
    return {f"calls_{key}": value for key, value in synced.as_dict().items()} | sent.as_dict()


def tell_calendars(now: datetime, flow_run_id: str | None) -> dict[str, int] | None:
    """Run send-call-invites in a flow; a failure leaves the invites pending for the next run, not the run failed."""
    settings = get_settings()
    configured = send_call_invites.with_options(retries=settings.send_retries)
    if settings.retry_delay_seconds is not None:
        configured = configured.with_options(retry_delay_seconds=settings.retry_delay_seconds)
    state = configured(now, flow_run_id, return_state=True)
    logger = get_run_logger()
    if not state.is_completed():
        logger.warning("call invites stay pending until the next run: %s", redact(state.message or "failed"))
        return None
    counts: dict[str, int] = state.result()
    if any(counts.values()):
        logger.info("calls and invites: %s", counts)
    return counts
