"""Progress of a workshop's plans, in counts only: fit for Prefect artifacts, which outlive an erased contact."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from models import Plan, PlanStep, StepKind, StepStatus, Workshop

_EMAIL = re.compile(r"[^\s<>()\"',;:]+@[^\s<>()\"',;:]+")


def redact(text: str) -> str:
    """Text fit for Prefect logs and artifacts: email addresses (e.g. in an SMTP answer) are hidden."""
    return _EMAIL.sub("<address>", text)


@dataclass(frozen=True)
class WorkshopProgress:
    rows: list[dict[str, object]]
    description: str


def workshop_progress(*, session: Session, workshop_id: int, now: datetime) -> WorkshopProgress:
    """Per template step: how many plans are at each status; plus overdue calls and the reasons steps were skipped."""
    workshop = session.get(Workshop, workshop_id)
    counts = session.execute(
        sa_select(
            col(Plan.template_key), col(PlanStep.position), col(PlanStep.name), col(PlanStep.status), func.count()
        )
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .where(col(Plan.workshop_id) == workshop_id)
        .group_by(col(Plan.template_key), col(PlanStep.position), col(PlanStep.name), col(PlanStep.status))
        .order_by(col(Plan.template_key), col(PlanStep.position))
    ).all()
    table: dict[tuple[str, int, str], Counter[str]] = {}
    for template_key, position, name, status, count in counts:
        table.setdefault((template_key, position, name), Counter())[status] += count
    overdue_calls = session.exec(
        select(func.count())
        .select_from(PlanStep)
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .where(
            Plan.workshop_id == workshop_id,
            PlanStep.kind == StepKind.CALL,
            col(PlanStep.status).in_([StepStatus.OPEN, StepStatus.SCHEDULED]),
            col(PlanStep.due_at) < now,
        )
    ).one()
    reasons = session.execute(
        sa_select(
            col(PlanStep.name),
            col(PlanStep.status),
            func.coalesce(PlanStep.skip_reason, PlanStep.last_error),
            func.count(),
        )
        .join(Plan, col(Plan.id) == PlanStep.plan_id)
        .where(
            col(Plan.workshop_id) == workshop_id,
            col(PlanStep.status).in_([StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.UNKNOWN]),
        )
        .group_by(col(PlanStep.name), col(PlanStep.status), func.coalesce(PlanStep.skip_reason, PlanStep.last_error))
    ).all()
    statuses = [s.value for s in StepStatus]
    rows: list[dict[str, object]] = []
    for (template_key, _, name), counter in table.items():
        row: dict[str, object] = {"template": template_key, "step": name}
        row.update({status: counter.get(status, 0) for status in statuses})
        rows.append(row)
    lines = [
        f"Progress of {workshop.name if workshop else 'workshop'} ({workshop.date if workshop else ''}), "
        f"{now:%Y-%m-%d %H:%M} UTC.",
        f"Overdue calls: {overdue_calls}.",
    ]
    lines += [f"{name}: {count} {status}: {redact(reason or '')}" for name, status, reason, count in reasons]
    return WorkshopProgress(rows=rows, description="\n".join(lines))
