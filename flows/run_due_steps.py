"""The run-due-steps flow: claim what is due, run it as one task per (template step, batch), record every outcome."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from uuid import uuid4

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_flow_run

from engage import db, runner
from engage.errors import StepsFailedError
from engage.plans.actions import retry_steps
from engage.reports import redact
from engage.runner.due import BatchOutcome, StepGroup
from engage.settings import get_settings
from flows.call_invites import tell_calendars
from flows.common import publish_workshop_progress, schedule_due_runs, with_send_retries
from models import StepKind, utcnow


@task(name="retry-failed-steps", task_run_name="put this run's failed steps back on the schedule")
def retry_failed_steps(flow_run_id: str, now: datetime) -> int:
    """On a retry of this run (the UI's "Retry"), schedule again the steps it failed; the ledger skips the rest."""
    with db.session_scope() as session:
        return len(retry_steps(session=session, now=now, flow_run_id=flow_run_id))


@task(name="claim-due-steps", task_run_name="claim due steps")
def claim_due_steps(now: datetime, claimant: str, limit: int, lease_seconds: int) -> list[int]:
    """Atomically claim up to `limit` due plan steps for this run."""
    return runner.claim_due_steps(now=now, claimant=claimant, limit=limit, lease_seconds=lease_seconds)


@task(name="send-step-emails")
def send_step_emails(group: StepGroup, claimant: str, now: datetime, flow_run_id: str | None) -> BatchOutcome:
    """Render and send the emails of one batch of claimed steps; the ledger skips what already went out."""
    return runner.send_email_batch(step_ids=group.step_ids, claimant=claimant, now=now, flow_run_id=flow_run_id)


@task(name="open-work-items")
def open_work_items(group: StepGroup, claimant: str, now: datetime, flow_run_id: str | None) -> BatchOutcome:
    """Turn due call and task steps into open work items for their assignees."""
    return runner.open_work_items(step_ids=group.step_ids, claimant=claimant, now=now, flow_run_id=flow_run_id)


def _run_name() -> str:
    """Keep the name a scheduled run was given (e.g. `Atelier Lyon · day 7 · Resource pack`); name the others."""
    name = current_flow_run.name or ""
    if " · " in name:
        return name
    now = current_flow_run.parameters.get("now")
    return f"due steps · {now:%Y-%m-%d %H:%M}" if isinstance(now, datetime) else f"due steps · {name}"


@flow(name="run-due-steps", flow_run_name=_run_name, log_prints=False)
def run_due_steps(now: datetime | None = None, batch_size: int | None = None) -> dict[str, int]:
    """Run every plan step that is due: send emails, open calls and tasks, release the next steps."""
    logger = get_run_logger()
    settings = get_settings()
    now = now or utcnow()
    # Claims belong to this run; what the steps remember is the run a person sees and retries: the top-level one
    # (an enroll run, when this runs as its subflow).
    claimant = current_flow_run.id or f"local-{uuid4()}"
    flow_run_id = (current_flow_run.root_flow_run_id or current_flow_run.id) if current_flow_run.id else None
    send = with_send_retries(send_step_emails)
    if flow_run_id and flow_run_id == current_flow_run.id and (current_flow_run.run_count or 1) > 1:
        logger.info("retry of this run: %s failed steps scheduled again", retry_failed_steps(flow_run_id, now))
    totals = BatchOutcome()
    report: list[dict[str, object]] = []
    failures: list[str] = []
    workshops: set[int | None] = set()
    # Keep `send_concurrency` batches going at once (each task has its own SMTP connection and session): the next
    # claim is taken while the others send, and results are collected oldest first.
    in_flight: deque[tuple[StepGroup, PrefectFuture[BatchOutcome]]] = deque()
    more = True
    while more or in_flight:
        while more and len(in_flight) < settings.send_concurrency:
            claimed = claim_due_steps(now, claimant, batch_size or settings.batch_size, settings.lease_seconds)
            more = bool(claimed)
            for group in runner.group_claims(step_ids=claimed):
                workshops.add(group.workshop_id)
                batch_task = (send if group.kind == StepKind.EMAIL else open_work_items).with_options(
                    task_run_name=group.label
                )
                in_flight.append((group, batch_task.submit(group, claimant, now, flow_run_id)))
        if not in_flight:
            break
        group, future = in_flight.popleft()
        row: dict[str, object] = {"batch": group.label, "template": group.template_key}
        try:
            outcome = future.result()
        except Exception as error:  # retries ran out: record it, go on with the other batches, fail at the end
            reason = redact(str(error))
            failed = runner.mark_failed(
                step_ids=group.step_ids, claimant=claimant, error=str(error), now=now, origin=flow_run_id
            )
            totals.failed += failed
            failures.append(f"{group.label}: {failed} steps failed: {reason}")
            report.append(row | {"failed": failed, "error": reason})
            logger.error("%s: %s steps failed after retries: %s", group.label, failed, reason)
            continue
        totals.add(outcome)
        report.append(row | outcome.as_dict())
        logger.info("%s: %s", group.label, outcome.as_dict())
    # Calls released by this run get their slot and their invite now, days before they are due.
    tell_calendars(now, flow_run_id)
    scheduled = schedule_due_runs(totals.released)
    if report:
        create_table_artifact(table=report, description=f"Due steps run at {now:%Y-%m-%d %H:%M} UTC")
        publish_workshop_progress(workshops, now)
    if failures:
        raise StepsFailedError("; ".join(failures))
    return totals.as_dict() | {"batches": len(report), "scheduled_runs": scheduled}


if __name__ == "__main__":
    run_due_steps()
