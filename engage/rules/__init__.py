"""Pure rules: due times, call slots, weekdays and hours, dates in words. No Prefect, no database, no network."""

from engage.rules.clock import WEEKDAYS, parse_days, parse_hours, weekday_numbers, zone
from engage.rules.due import (
    CalendarRules,
    RescheduleTo,
    dependent_due_at,
    due_day,
    independent_due_at,
    is_day_off,
    local_day,
    next_send_time,
    parse_window,
)
from engage.rules.slots import CallRequest, Slot, SlotBook, WorkingHours
from engage.rules.words import long_date

__all__ = [
    "CalendarRules",
    "CallRequest",
    "RescheduleTo",
    "Slot",
    "SlotBook",
    "WEEKDAYS",
    "WorkingHours",
    "dependent_due_at",
    "due_day",
    "independent_due_at",
    "is_day_off",
    "local_day",
    "long_date",
    "next_send_time",
    "parse_days",
    "parse_hours",
    "parse_window",
    "weekday_numbers",
    "zone",
]
