"""Moving plans forward: claim due steps, send their emails, open their calls and tasks, record every outcome."""

from engage.runner.claims import (
    claim_due_steps,
    claim_steps,
    group_claims,
    has_due_steps,
    mark_failed,
    recover_expired_claims,
)
from engage.runner.due import COUNTS, BatchOutcome, DueItem, StepGroup, scheduled_due_items, unique_due_items
from engage.runner.emails import send_email_batch
from engage.runner.work_items import open_work_items

__all__ = [
    "BatchOutcome",
    "COUNTS",
    "DueItem",
    "StepGroup",
    "claim_due_steps",
    "claim_steps",
    "group_claims",
    "has_due_steps",
    "mark_failed",
    "open_work_items",
    "recover_expired_claims",
    "scheduled_due_items",
    "send_email_batch",
    "unique_due_items",
]
