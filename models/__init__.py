"""The ledger: every table of Engage. Importing this package completes ``SQLModel.metadata``."""

from models.base import (
    FINAL_STATUSES,
    RELEASING_STATUSES,
    Community,
    DeliveryKind,
    DeliveryState,
    PlanStatus,
    StepKind,
    StepStatus,
    UTCDateTime,
    id_of,
    utcnow,
)
from models.contact import Contact, ContactBase, ContactCommunity, ContactTag
from models.delivery import Call, Delivery
from models.digest import StaffDigest
from models.plan import Plan, PlanStep, StepComment
from models.staff import Staff, StaffBase
from models.template import PlanTemplate, TemplateStep
from models.workshop import Workshop

__all__ = [
    "FINAL_STATUSES",
    "RELEASING_STATUSES",
    "Call",
    "Community",
    "Contact",
    "ContactBase",
    "ContactCommunity",
    "ContactTag",
    "Delivery",
    "DeliveryKind",
    "DeliveryState",
    "Plan",
    "PlanStatus",
    "PlanStep",
    "PlanTemplate",
    "Staff",
    "StaffBase",
    "StaffDigest",
    "StepComment",
    "StepKind",
    "StepStatus",
    "TemplateStep",
    "UTCDateTime",
    "Workshop",
    "id_of",
    "utcnow",
]
