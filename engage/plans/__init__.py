"""Plans and their steps: applying templates, the step lifecycle, what staff do, the calls that follow.

Two layers: :mod:`engage.plans.actions` (and :func:`apply_templates`, :func:`deactivate_staff`) change the ledger in
the caller's transaction, with everything that follows from the change; :mod:`engage.plans.operations` runs each in a
transaction of its own and sends the calendar invites once it is committed: the CLI and the staff desk call those.
"""

from engage.plans import operations
from engage.plans.actions import (
    add_follow_up,
    cancel_plan,
    comment_task,
    complete_task,
    reassign_task,
    reschedule_task,
    resolve_unknown,
    retry_steps,
    skip_task,
)
from engage.plans.apply import AppliedPlan, ScheduledStep, apply_template, apply_templates
from engage.plans.assignees import AssigneeResolver
from engage.plans.calls import CHUNK, GONE_STATUSES, LIVE_STATUSES, CallSync, call_uid, sync_calls, working_hours
from engage.plans.handover import Handover, deactivate_staff
from engage.plans.lifecycle import StepFinisher, StepRow
from engage.plans.operations import (
    Invites,
    Outcome,
    PlanApplied,
    PlanCancelled,
    ReleasedStep,
    StaffDeactivated,
    TaskChange,
    TaskComment,
    send_invites,
)
from engage.plans.queries import (
    ACTIONABLE_STATUSES,
    PlanRow,
    TaskRow,
    get_plan,
    get_step,
    list_plans,
    list_tasks,
    plan_steps,
)
from engage.plans.workshops import find_workshop, get_or_create_workshop

__all__ = [
    "ACTIONABLE_STATUSES",
    "AppliedPlan",
    "AssigneeResolver",
    "CHUNK",
    "CallSync",
    "GONE_STATUSES",
    "Handover",
    "Invites",
    "LIVE_STATUSES",
    "Outcome",
    "PlanApplied",
    "PlanCancelled",
    "PlanRow",
    "ReleasedStep",
    "ScheduledStep",
    "StaffDeactivated",
    "StepFinisher",
    "StepRow",
    "TaskChange",
    "TaskComment",
    "TaskRow",
    "add_follow_up",
    "apply_template",
    "apply_templates",
    "call_uid",
    "cancel_plan",
    "comment_task",
    "complete_task",
    "deactivate_staff",
    "find_workshop",
    "get_or_create_workshop",
    "get_plan",
    "get_step",
    "list_plans",
    "list_tasks",
    "operations",
    "plan_steps",
    "reassign_task",
    "reschedule_task",
    "resolve_unknown",
    "retry_steps",
    "send_invites",
    "skip_task",
    "sync_calls",
    "working_hours",
]
