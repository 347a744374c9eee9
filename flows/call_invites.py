"""The call-invites task: after steps moved, give calls their slots and tell the assignees' calendars.

Used by run-due-steps at the end of every run (its cron makes it the safety net for invites a failure left pending).
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task

from engage import db, invites
from engage.plans import calls
from engage.reports import redact
from flows.common import with_send_retries


@task(name="send-call-invites", task_run_name="call slots and calendar invites")
def send_call_invites(now: datetime, flow_run_id: str | None = None) -> dict[str, int]:
    """Place new calls in their assignee's free slots, follow moved and cancelled ones, and send the invites due."""
    with db.session_scope() as session:
        synced = calls.sync_calls(session=session, now=now)
    sent = invites.send_pending_invites(now=now, flow_run_id=flow_run_id)
    return {f"calls_{key}": value for key, value in synced.as_dict().items()} | sent.as_dict()


def tell_calendars(now: datetime, flow_run_id: str | None) -> dict[str, int] | None:
    """Run send-call-invites in a flow; a failure leaves the invites pending for the next run, not the run failed."""
    state = with_send_retries(send_call_invites)(now, flow_run_id, return_state=True)
    logger = get_run_logger()
    if not state.is_completed():
        logger.warning("call invites stay pending until the next run: %s", redact(state.message or "failed"))
        return None
    counts: dict[str, int] = state.result()
    if any(counts.values()):
        logger.info("calls and invites: %s", counts)
    return counts
