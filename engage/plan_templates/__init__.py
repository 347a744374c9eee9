"""Plan templates: the YAML schema (pure), loading and validating files, and their versions in the ledger."""

from engage.plan_templates.loading import display_path, load_template, load_templates, template_files, template_problems
from engage.plan_templates.schema import (
    ASSIGNEE_RULES,
    EMAIL_TEMPLATE_PARTS,
    TEMPLATE_SUFFIX,
    PlanTemplateSpec,
    Priority,
    RescheduleTo,
    StepKindName,
    StepSpec,
)
from engage.plan_templates.store import current_template, plan_spec, spec_of, sync_templates, template_spec

__all__ = [
    "ASSIGNEE_RULES",
    "EMAIL_TEMPLATE_PARTS",
    "PlanTemplateSpec",
    "Priority",
    "RescheduleTo",
    "StepKindName",
    "StepSpec",
    "TEMPLATE_SUFFIX",
    "current_template",
    "display_path",
    "load_template",
    "load_templates",
    "plan_spec",
    "spec_of",
    "sync_templates",
    "template_files",
    "template_problems",
    "template_spec",
]
