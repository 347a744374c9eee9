"""What the task and plan commands share about calls: keep them in line with their steps, then tell the calendars."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session

from engage.cli._common import console, err_console
from engage.errors import SendError
from engage.invites.send import send_pending_invites
from engage.plans.calls import sync_calls


def follow_calls(session: Session, now: datetime, step_ids: Iterable[int] | None = None) -> None:
    """Bring the calls of these steps (and of the steps they released) in line, in the command's transaction."""
    sync_calls(session=session, now=now, step_ids=None if step_ids is None else list(step_ids))


def tell_calendars(now: datetime) -> None:
    """Send the invites the change made pending, once it is committed; when SMTP fails, the next run sends them."""
    try:
        outcome = send_pending_invites(now=now)
    except SendError as error:
        err_console.print(
            f"[yellow]warning:[/yellow] calendar invites not sent now ({error}); run-due-steps sends them later",
            highlight=False,
            soft_wrap=True,
        )
        return
    if outcome.sent:
        console.print(f"calendar: {outcome.requests} invites and {outcome.cancels} cancellations sent")
