"""Due times and batches as Prefect sees them: counts, step names and ledger ids, never a person."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlmodel import col, select

from engage import db
from models import (
    Plan,
    PlanStep,
    StepStatus,
    Workshop,
)


@dataclass(frozen=True)
class WorkshopStep:
    """One template step of one workshop: what Prefect's runs and tasks are named after (no person in it)."""

    workshop_id: int | None
    workshop_name: str | None
    workshop_date: date | None
    template_key: str
    step_key: str
    step_name: str

    def day_of(self, moment: datetime) -> int | None:
        """The day of ``moment`` as staff say it: days since the workshop."""
        return (moment.date() - self.workshop_date).days if self.workshop_date is not None else None


@dataclass(frozen=True)
class DueItem(WorkshopStep):
    """A due time some plan steps now have: one scheduled run per (workshop, template step, day) covers them."""

    due_at: datetime

    @property
    def day_number(self) -> int | None:
        """The day as staff say it: days since the workshop."""
        return self.day_of(self.due_at)

    @property
    def run_name(self) -> str:
        day = self.day_number
        parts = [self.workshop_name or self.template_key, f"day {day}" if day is not None else None, self.step_name]
        return " · ".join(part for part in parts if part)

    @property
    def idempotency_key(self) -> str:
        return f"engage:{self.workshop_id}:{self.template_key}:{self.step_key}:{self.due_at.date().isoformat()}"


@dataclass(frozen=True)
class StepGroup(WorkshopStep):
    """Claimed steps of one template step of one workshop: they run together as one task."""

    kind: str
    step_ids: tuple[int, ...]
    first_due_at: datetime

    @property
    def label(self) -> str:
        """e.g. `day 7 · Resource pack · 42 contacts`."""
        day = self.day_of(self.first_due_at)
        count = len(self.step_ids)
        parts = [f"day {day}" if day is not None else None, self.step_name, f"{count} contact{'s' * (count != 1)}"]
        return " · ".join(part for part in parts if part)


COUNTS = ("sent", "opened", "skipped", "failed", "deferred", "unknown", "already_done")


@dataclass
class BatchOutcome:
    """What one batch did, in counts and ledger ids only (Prefect keeps this after a person is erased)."""

    sent: int = 0
    opened: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    unknown: int = 0
    already_done: int = 0
    failed_step_ids: list[int] = field(default_factory=list)
    released: list[DueItem] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed_step_ids.extend(other.failed_step_ids)
        # One item per due time is all scheduling needs: a run over 100,000 steps keeps a handful, not 100,000.
        self.released = unique_due_items([*self.released, *other.released])

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


def scheduled_due_items(*, now: datetime, url: str | None = None) -> list[DueItem]:
    """Every future due time in the ledger, one per (workshop, template step, day)."""
    with db.session_scope(url, readonly=True) as session:
        rows = session.exec(
            select(PlanStep, Plan, Workshop)
            .join(Plan, col(Plan.id) == PlanStep.plan_id)
            .outerjoin(Workshop, col(Workshop.id) == Plan.workshop_id)
            .where(PlanStep.status == StepStatus.SCHEDULED, col(PlanStep.due_at) > now)
        ).all()
        items: dict[str, DueItem] = {}
        for step, plan, workshop in rows:
            assert step.due_at is not None
            item = DueItem(
                workshop_id=plan.workshop_id,
                workshop_name=workshop.name if workshop else None,
                workshop_date=workshop.date if workshop else None,
                template_key=plan.template_key,
                step_key=step.step_key,
                step_name=step.name,
                due_at=step.due_at,
            )
            items.setdefault(item.idempotency_key, item)
        return sorted(items.values(), key=lambda i: i.due_at)


def unique_due_items(items: Iterable[DueItem]) -> list[DueItem]:
    """One item per (workshop, template step, day), the earliest time of the day."""
    chosen: dict[str, DueItem] = {}
    for item in items:
        current = chosen.get(item.idempotency_key)
        if current is None or item.due_at < current.due_at:
            chosen[item.idempotency_key] = item
    return sorted(chosen.values(), key=lambda i: i.due_at)
