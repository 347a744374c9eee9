"""Claims: atomic, with a lease, so several runs never take the same step and a crashed run's steps are taken again."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from engage import db
from engage.db import writing
from engage.mail.outbox import recover_lost_emails
from engage.runner.batch import _load
from engage.runner.due import StepGroup
from models import (
    Plan,
    PlanStep,
    StepStatus,
    Workshop,
)


def recover_expired_claims(*, session: Session, now: datetime) -> int:
    """A run died holding claims: its emails in doubt become `unknown` (the outbox's rule); the other expired claims
    stay `running`, and the next claim takes them again."""
    return recover_lost_emails(session=session, now=now)


def _claimable(now: datetime) -> tuple[Any, Any]:
    """What a claim takes at ``now``: steps whose claim expired, then steps due (each walks its own index)."""
    return (
        and_(col(PlanStep.status) == StepStatus.RUNNING, col(PlanStep.lease_until) < now),
        and_(col(PlanStep.status) == StepStatus.SCHEDULED, col(PlanStep.due_at) <= now),
    )


def has_due_steps(*, now: datetime, url: str | None = None) -> bool:
    """Whether a claim at ``now`` would find a step: one cheap look (an EXISTS per condition), nothing locked."""
    with db.session_scope(url, readonly=True) as session:
        return bool(session.scalar(sa_select(or_(*(exists().where(condition) for condition in _claimable(now))))))


def claim_due_steps(
    *, now: datetime, claimant: str, limit: int, lease_seconds: int, url: str | None = None
) -> list[int]:
    """Atomically take up to ``limit`` due steps (and steps whose claim expired) for ``claimant``, in a transaction."""
    with writing(db.get_engine(url)), db.session_scope(url) as session:
        return claim_steps(session=session, now=now, claimant=claimant, limit=limit, lease_seconds=lease_seconds)


def claim_steps(*, session: Session, now: datetime, claimant: str, limit: int, lease_seconds: int) -> list[int]:
    """Take up to ``limit`` claimable steps for ``claimant`` in the caller's transaction; the ids taken, sorted.

    Two statements: select the candidates, then mark them. On PostgreSQL the SELECT locks them (FOR UPDATE SKIP
    LOCKED), so concurrent runs take different rows; on SQLite, which ignores FOR UPDATE, the engine begins write
    transactions IMMEDIATE, so claims run one at a time. The UPDATE does not rely on either: it takes a row only
    while it is still claimable (due and `scheduled`, or `running` with its lease expired), so a step another
    transaction cancelled, completed or claimed between the two statements is left alone, and it returns exactly
    the ids it took. Two statements on purpose: PostgreSQL may evaluate a LIMIT subquery inside
    `UPDATE ... WHERE id IN (...)` more than once, and then claims more rows than asked.
    """
    recover_expired_claims(session=session, now=now)
    # Expired claims first, then due steps, each in due order: two queries, because one with an OR of the two
    # cannot walk the (status, due_at) index, and would sort every due step of the ledger for each claim.
    ids: list[int] = []
    for condition in _claimable(now):
        if len(ids) < limit:
            ids += (
                step_id
                for step_id in session.exec(
                    select(col(PlanStep.id))
                    .where(condition)
                    .order_by(col(PlanStep.due_at), col(PlanStep.id))
                    .limit(limit - len(ids))
                    .with_for_update(skip_locked=True)
                )
                if step_id is not None
            )
    if not ids:
        return []
    claimed = session.execute(
        update(PlanStep)
        .where(col(PlanStep.id).in_(ids), or_(*_claimable(now)))
        .values(
            status=StepStatus.RUNNING,
            claimed_by=claimant,
            lease_until=now + timedelta(seconds=lease_seconds),
            attempts=PlanStep.attempts + 1,
            updated_at=now,
        )
        .returning(col(PlanStep.id)),
        execution_options={"synchronize_session": False},
    )
    return sorted(int(step_id) for step_id in claimed.scalars())


def group_claims(*, step_ids: Iterable[int], url: str | None = None) -> list[StepGroup]:
    """Group claimed steps by workshop and template step, in due order."""
    ids = list(step_ids)
    if not ids:
        return []
    with db.session_scope(url, readonly=True) as session:
        rows = session.exec(
            select(PlanStep, Plan, Workshop)
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
            .where(col(PlanStep.id).in_(ids))
            .order_by(col(PlanStep.due_at), col(PlanStep.id))
        ).all()
    groups: dict[tuple[int | None, str, str], list[tuple[PlanStep, Plan, Workshop | None]]] = defaultdict(list)
    for step, plan, workshop in rows:
        groups[(plan.workshop_id, plan.template_key, step.step_key)].append((step, plan, workshop))
    result = []
    for (workshop_id, template_key, step_key), members in groups.items():
        first, _, first_workshop = members[0]
        result.append(
            StepGroup(
                workshop_id=workshop_id,
                workshop_name=first_workshop.name if first_workshop else None,
                workshop_date=first_workshop.date if first_workshop else None,
                template_key=template_key,
                step_key=step_key,
                step_name=first.name,
                kind=first.kind,
                step_ids=tuple(s.id for s, _, _ in members if s.id is not None),
                first_due_at=first.due_at or datetime.min.replace(tzinfo=ZoneInfo("UTC")),
            )
        )
    return result


def mark_failed(
    *,
    step_ids: Iterable[int],
    claimant: str,
    error: str,
    now: datetime,
    origin: str | None = None,
    url: str | None = None,
) -> int:
    """Retries ran out: the claimed steps not finished are `failed` and block their dependents until staff act.

    They stay `retryable` and remember the run that failed them (``origin``, the run a person sees, else the
    ``claimant``), so retrying that run in the Prefect UI, or `engage retry --run`, runs exactly them again.
    """
    with writing(db.get_engine(url)), db.session_scope(url) as session:
        items = _load(session, step_ids, claimant)
        for item in items:
            item.step.status = StepStatus.FAILED
            item.step.retryable = True
            item.step.last_error = error[:2000]
            item.step.flow_run_id = origin or claimant
            item.step.lease_until = None
            item.step.claimed_by = None
            item.step.updated_at = now
            session.add(item.step)
        return len(items)
