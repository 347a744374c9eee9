"""Plans and their steps: applying templates, the step lifecycle, what staff do, the calls that follow."""

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
from engage.plans.lifecycle import StepFinisher, StepRow, finish_step, release_dependents
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
    "LIVE_STATUSES",
    "PlanRow",
    "ScheduledStep",
    "StepFinisher",
    "StepRow",
    "TaskRow",
    "add_follow_up",
    "apply_template",
    "apply_templates",
    "call_uid",
    "cancel_plan",
    "comment_task",
    "complete_task",
    "find_workshop",
    "finish_step",
    "get_or_create_workshop",
    "get_plan",
    "get_step",
    "list_plans",
    "list_tasks",
    "plan_steps",
    "reassign_task",
    "release_dependents",
    "reschedule_task",
    "resolve_unknown",
    "retry_steps",
    "skip_task",
    "sync_calls",
    "working_hours",
]
