"""The flows, run in this process: the one module of the package that imports ``flows/``.

``engage enroll``, ``engage run-due``, ``engage retry`` and the simulator run the very flows a Prefect worker runs,
here, reporting to the configured Prefect API. ``flows/`` is imported on first use: commands that run no flow do not
pay for importing Prefect's engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path

from engage.errors import NotFoundError
from engage.settings import settings_override


def enroll(
    *,
    attendees: Path,
    template: str,
    workshop: str,
    on: date,
    applied_by: str,
    now: datetime,
    place: str | None = None,
    column_map: Mapping[str, str] | None = None,
    role_templates: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Run the enroll flow on an attendee file wherever it is (its folder is the inbox for this run)."""
    from flows.enroll import Attendees
    from flows.enroll import enroll as enroll_flow

    if not attendees.is_file():
        raise NotFoundError(f"{attendees}: no such file")
    request = Attendees(
        attendees=attendees.name,
        workshop=workshop,
        date=on,
        place=place,
        applied_by=applied_by,
        column_map=dict(column_map or {}),
        role_templates=dict(role_templates or {}),
    )
    with settings_override(inbox_dir=attendees.resolve().parent):
        return enroll_flow(request, template=template, now=now)


def run_due(*, now: datetime) -> dict[str, int]:
    """Run the run-due-steps flow: every step due at ``now``."""
    from flows.run_due_steps import run_due_steps

    return run_due_steps(now=now)
