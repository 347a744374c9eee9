"""What staff do, one call each: the CLI's commands and the staff desk's pages call these same operations.

Each takes ledger ids, emails (who acts, who takes over) and ``now``, and runs in a transaction of its own: the change
and everything that follows from it (the steps it releases, the calls brought in line, see
:mod:`engage.plans.actions`) commit together. Once committed, the calendar invites the change made pending are sent
(:func:`send_invites`, the one place that does it); a failure to send is no failure of the change: it stands, and the
result carries a warning that run-due-steps sends the invites later. Each returns a small, frozen result that a
terminal prints and a web page renders: what changed, what was released, the invites sent or the warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TypeVar

from sqlmodel import Session

from engage import db
from engage.contacts.lookup import get_contact
from engage.errors import SendError
from engage.invites.send import send_pending_invites
from engage.plan_templates.store import current_template
from engage.plans import actions
from engage.plans.apply import apply_template
from engage.plans.handover import deactivate_staff as hand_over
from engage.plans.lifecycle import StepRow
from engage.plans.queries import get_plan, get_step
from engage.plans.workshops import get_or_create_workshop
from engage.settings import Settings, get_settings
from engage.staff import get_staff
from models import Plan, PlanStep, Staff, StepComment, id_of


@dataclass(frozen=True)
class Invites:
    """The calendar invites sent once a change was committed, or why they wait (``warning``)."""

    requests: int = 0
    cancels: int = 0
    warning: str | None = None

    @property
    def sent(self) -> int:
        return self.requests + self.cancels


@dataclass(frozen=True)
class Outcome:
    """What every operation's result has: the invites sent once the change was committed."""

    invites: Invites = field(default_factory=Invites, kw_only=True)

    @property
    def tells_calendars(self) -> bool:
        """Whether the invites the change made pending go out now (not when nothing changed, nor for a comment)."""
        return True


@dataclass(frozen=True)
class ReleasedStep:
    """A step that waited for the one finished and now has its due time."""

    id: int
    key: str
    name: str
    due_at: datetime | None


@dataclass(frozen=True)
class TaskChange(Outcome):
    """A task (a plan step) as it is after staff acted on it, and the steps its completion released."""

    task: PlanStep
    released: tuple[ReleasedStep, ...] = ()
    previous_assignee: Staff | None = None


@dataclass(frozen=True)
class TaskComment(Outcome):
    """A note left on a task."""

    comment: StepComment

    @property
    def tells_calendars(self) -> bool:
        return False


@dataclass(frozen=True)
class PlanApplied(Outcome):
    """The contact's plan: created now, or found from an earlier application (then nothing changed)."""

    plan: Plan
    contact_email: str
    created: bool

    @property
    def tells_calendars(self) -> bool:
        return self.created


@dataclass(frozen=True)
class PlanCancelled(Outcome):
    """A cancelled plan and the ids of the steps its cancellation stopped."""

    plan: Plan
    cancelled: tuple[int, ...]


@dataclass(frozen=True)
class StaffDeactivated(Outcome):
    """A staff member who left, and what their successor took over, in counts."""

    email: str
    successor: str
    tasks: int
    contacts: int


def send_invites(*, now: datetime, settings: Settings | None = None) -> Invites:
    """Send the invites pending in the ledger; when SMTP fails they stay pending, for run-due-steps to send later."""
    try:
        outcome = send_pending_invites(now=now, settings=settings)
    except SendError as error:
        return Invites(warning=f"calendar invites not sent now ({error}); run-due-steps sends them later")
    return Invites(requests=outcome.requests, cancels=outcome.cancels)


R = TypeVar("R", bound=Outcome)


def _committed(change: Callable[[Session], R], *, now: datetime, settings: Settings | None) -> R:
    """Run ``change`` in a transaction of its own; once it is committed, send the invites it made pending."""
    settings = settings or get_settings()
    with db.session_scope(settings.database_url) as session:
        result = change(session)
    if not result.tells_calendars:
        return result
    return replace(result, invites=send_invites(now=now, settings=settings))


def _task_change(session: Session, task_id: int, released: Iterable[StepRow] = ()) -> TaskChange:
    """The task as the change left it, with the steps it released."""
    return TaskChange(
        task=get_step(session=session, step_id=task_id),
        released=tuple(ReleasedStep(row.id, row.step_key, row.name, row.due_at) for row in released),
    )


# --- plans -------------------------------------------------------------------------------------------------------


def apply_plan(
    *,
    template_key: str,
    contact_email: str,
    by: str,
    now: datetime,
    started_on: date | None = None,
    workshop: str | None = None,
    settings: Settings | None = None,
) -> PlanApplied:
    """Apply a plan template to one contact (NPSP's "new engagement plan"); a plan that exists is left as it is.

    The plan counts its days from ``started_on`` (default: the day of ``now``). A plan following up a ``workshop``
    (found by name, or created) is keyed on it; another on its start day. ``by`` is who applies it.
    """
    start = started_on or now.date()

    def change(session: Session) -> PlanApplied:
        applier = get_staff(session=session, email=by, active_only=True)
        contact = get_contact(session=session, email=contact_email)
        version = current_template(session=session, key=template_key)
        if workshop:
            found, _ = get_or_create_workshop(session=session, name=workshop, on=start, template_key=template_key)
            enrollment_key, workshop_id = found.enrollment_key, found.id
        else:
            enrollment_key, workshop_id = f"manual:{start.isoformat()}", None
        applied = apply_template(
            session=session,
            template=version,
            contact=contact,
            enrollment_key=enrollment_key,
            started_on=start,
            applied_by=applier,
            workshop_id=workshop_id,
            now=now,
        )
        plan = get_plan(session=session, plan_id=applied.plan_id)
        return PlanApplied(plan=plan, contact_email=contact.email, created=applied.created)

    return _committed(change, now=now, settings=settings)


def cancel_plan(*, plan_id: int, reason: str, now: datetime, settings: Settings | None = None) -> PlanCancelled:
    """Cancel a plan: every step not yet finished is cancelled, and its call leaves its assignee's calendar."""

    def change(session: Session) -> PlanCancelled:
        cancelled = actions.cancel_plan(session=session, plan_id=plan_id, reason=reason, now=now)
        plan = get_plan(session=session, plan_id=plan_id)
        return PlanCancelled(plan=plan, cancelled=tuple(id_of(step) for step in cancelled))

    return _committed(change, now=now, settings=settings)


# --- tasks -------------------------------------------------------------------------------------------------------


def complete_task(
    *, task_id: int, by: str, now: datetime, outcome: str | None = None, settings: Settings | None = None
) -> TaskChange:
    """Record a call or task as done (``by`` did it); the next steps of the plan count their days from ``now``."""

    def change(session: Session) -> TaskChange:
        staff = get_staff(session=session, email=by)
        released = actions.complete_task(session=session, step_id=task_id, outcome=outcome, by=staff, now=now)
        return _task_change(session, task_id, released)

    return _committed(change, now=now, settings=settings)


def skip_task(*, task_id: int, reason: str, by: str, now: datetime, settings: Settings | None = None) -> TaskChange:
    """Give up on a task, saying why; the steps that wait for it are released."""

    def change(session: Session) -> TaskChange:
        staff = get_staff(session=session, email=by)
        released = actions.skip_task(session=session, step_id=task_id, reason=reason, by=staff, now=now)
        return _task_change(session, task_id, released)

    return _committed(change, now=now, settings=settings)


def resolve_unknown(
    *, task_id: int, went_out: bool, by: str, now: datetime, settings: Settings | None = None
) -> TaskChange:
    """Say whether an email in doubt after a crash went out (the next steps are released) or is to be sent again."""

    def change(session: Session) -> TaskChange:
        staff = get_staff(session=session, email=by)
        released = actions.resolve_unknown(session=session, step_id=task_id, went_out=went_out, by=staff, now=now)
        return _task_change(session, task_id, released)

    return _committed(change, now=now, settings=settings)


def reassign_task(*, task_id: int, to: str, now: datetime, settings: Settings | None = None) -> TaskChange:
    """Give a task to another active staff member (``to``); a call moves from one calendar to the other."""

    def change(session: Session) -> TaskChange:
        step, previous = actions.reassign_task(session=session, step_id=task_id, email=to, now=now)
        return TaskChange(task=step, previous_assignee=previous)

    return _committed(change, now=now, settings=settings)


def reschedule_task(*, task_id: int, on: date, now: datetime, settings: Settings | None = None) -> TaskChange:
    """Move a task to another day; a call takes a slot that day and its invite is updated."""

    def change(session: Session) -> TaskChange:
        return TaskChange(task=actions.reschedule_task(session=session, step_id=task_id, on=on, now=now))

    return _committed(change, now=now, settings=settings)


def add_follow_up(
    *, task_id: int, on: date, subject: str, by: str, now: datetime, settings: Settings | None = None
) -> TaskChange:
    """Add a new open task to the plan of ``task_id``, due on ``on``; the result's task is the new one."""

    def change(session: Session) -> TaskChange:
        staff = get_staff(session=session, email=by)
        step = actions.add_follow_up(session=session, step_id=task_id, on=on, subject=subject, by=staff, now=now)
        return TaskChange(task=step)

    return _committed(change, now=now, settings=settings)


def comment_task(*, task_id: int, text: str, by: str, now: datetime, settings: Settings | None = None) -> TaskComment:
    """Leave a note on a task."""

    def change(session: Session) -> TaskComment:
        staff = get_staff(session=session, email=by)
        return TaskComment(comment=actions.comment_task(session=session, step_id=task_id, text=text, by=staff, now=now))

    return _committed(change, now=now, settings=settings)


# --- staff -------------------------------------------------------------------------------------------------------


def deactivate_staff(
    *, email: str, reassign_to: str, now: datetime, settings: Settings | None = None
) -> StaffDeactivated:
    """Deactivate a staff member and hand their open tasks and contacts to another, in one go; calls move too."""

    def change(session: Session) -> StaffDeactivated:
        handover = hand_over(session=session, email=email, reassign_to=reassign_to, now=now)
        return StaffDeactivated(email=email, successor=reassign_to, tasks=handover.tasks, contacts=handover.contacts)

    return _committed(change, now=now, settings=settings)
