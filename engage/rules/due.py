"""When a plan step falls due: offsets, weekends, public holidays and the send window.

Pure rules: no Prefect, no database, no settings. Every moment in and out is an aware datetime in UTC
(the ledger's convention); days are counted in the organisation's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from engage.rules.clock import parse_hours, zone

__all__ = [
    "CalendarRules",
    "dependent_due_at",
    "due_day",
    "independent_due_at",
    "is_day_off",
    "local_day",
    "next_send_time",
    "parse_window",
]

RescheduleTo = Literal["friday", "monday"]

# Weekends and holidays never chain for more than a few weeks; a longer run means a broken calendar,
# and failing loudly beats looping forever.
_MAX_DAYS_OFF_IN_A_ROW = 366


@dataclass(frozen=True)
class CalendarRules:
    """How a template's offsets become due times: time zone, days off and the send window."""

    timezone: str = "Europe/Paris"
    skip_weekends: bool = False
    reschedule_to: RescheduleTo = "monday"
    holidays: str | None = None
    send_window_start: time = time(9, 0)
    send_window_end: time = time(17, 0)

    def __post_init__(self) -> None:
        zone(self.timezone)
        if self.reschedule_to not in ("friday", "monday"):
            raise ValueError(f"reschedule_to must be 'friday' or 'monday', not {self.reschedule_to!r}")
        if self.holidays is not None:
            # Frozen: normalising "fr" to "FR" keeps equal calendars equal (and hashable alike).
            object.__setattr__(self, "holidays", _normalise_holiday_code(self.holidays))
        for name in ("send_window_start", "send_window_end"):
            value = getattr(self, name)
            if not isinstance(value, time):
                raise ValueError(f"{name} must be a time, not {value!r}")
            if value.tzinfo is not None:
                raise ValueError(f"{name} must be a local wall-clock time without tzinfo, not {value!r}")
        if self.send_window_end <= self.send_window_start:
            raise ValueError(
                f"send window ends at {self.send_window_end:%H:%M}, "
                f"not after it starts at {self.send_window_start:%H:%M}"
            )

    @property
    def zone(self) -> ZoneInfo:
        """The organisation's time zone."""
        return zone(self.timezone)


def parse_window(text: str) -> tuple[time, time]:
    """Parse a send window such as "09:00-17:00" into its start and end times."""
    return parse_hours(text, what="send window")


def is_day_off(day: date, rules: CalendarRules) -> bool:
    """Tell whether nothing may fall due on this day: a weekend or public holiday, when skipping is on."""
    _require_date(day, "day")
    if not rules.skip_weekends:
        return False
    if day.weekday() >= 5:
        return True
    return rules.holidays is not None and day in _holiday_dates(rules.holidays, day.year)


def due_day(released_on: date, days_after: int, rules: CalendarRules) -> date:
    """Return the local day a step falls due, `days_after` days after `released_on`, moved off days off."""
    _require_date(released_on, "released_on")
    if days_after < 0:
        raise ValueError(f"days_after must be 0 or more, not {days_after}")
    base = released_on + timedelta(days=days_after)
    if not is_day_off(base, rules):
        return base
    if rules.reschedule_to == "friday":
        earlier = _step_to_working_day(base, rules, step=-1)
        # A step is never due before it was released; then the next working day is used instead.
        if earlier >= released_on:
            return earlier
    return _step_to_working_day(base, rules, step=1)


def local_day(moment: datetime, rules: CalendarRules) -> date:
    """Return the date of an aware moment in the organisation's time zone."""
    return _require_aware(moment, "moment").astimezone(rules.zone).date()


def next_send_time(moment: datetime, rules: CalendarRules) -> datetime:
    """Return the earliest instant at or after `moment` inside the send window on a working day, in UTC."""
    moment = _require_aware(moment, "moment").astimezone(UTC)
    day = local_day(moment, rules)
    for _ in range(_MAX_DAYS_OFF_IN_A_ROW):
        if not is_day_off(day, rules):
            # Compare instants, not wall-clock times, so a daylight-saving change cannot fool the test.
            start = _local_instant(day, rules.send_window_start, rules)
            if moment < start:
                return start
            if moment < _local_instant(day, rules.send_window_end, rules):
                return moment
        day += timedelta(days=1)
    raise ValueError(f"no working day within {_MAX_DAYS_OFF_IN_A_ROW} days after {moment.isoformat()}")


def independent_due_at(plan_start: date, days_after: int, rules: CalendarRules) -> datetime:
    """Return when a step that counts from the plan start (the workshop date) falls due, in UTC."""
    day = due_day(plan_start, days_after, rules)
    return next_send_time(_local_instant(day, rules.send_window_start, rules), rules)


def dependent_due_at(parent_completed_at: datetime, days_after: int, rules: CalendarRules) -> datetime:
    """Return when a step that counts from its parent's completion falls due, in UTC; never before it."""
    completed = _require_aware(parent_completed_at, "parent_completed_at").astimezone(UTC)
    day = due_day(local_day(completed, rules), days_after, rules)
    # With days_after 0 (or a Friday rule landing on the completion day) the window may already be open.
    return next_send_time(max(_local_instant(day, rules.send_window_start, rules), completed), rules)


def _step_to_working_day(day: date, rules: CalendarRules, *, step: int) -> date:
    for _ in range(_MAX_DAYS_OFF_IN_A_ROW):
        if not is_day_off(day, rules):
            return day
        day += timedelta(days=step)
    raise ValueError(f"no working day within {_MAX_DAYS_OFF_IN_A_ROW} days of {day.isoformat()}")


def _local_instant(day: date, at: time, rules: CalendarRules) -> datetime:
    return datetime.combine(day, at, tzinfo=rules.zone).astimezone(UTC)


def _require_aware(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, not {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment


def _require_date(day: date, name: str) -> None:
    # datetime is a subclass of date: adding days to one would silently keep its time and zone.
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ValueError(f"{name} must be a date (not a datetime), got {day!r}")


def _normalise_holiday_code(code: str) -> str:
    country, _, subdivision = code.strip().partition("-")
    country = country.upper()
    supported = holidays_lib.list_supported_countries()
    if country not in supported:
        raise ValueError(f"unknown holiday country {code!r}; use an ISO 3166 code such as 'FR'")
    if not subdivision:
        return country
    by_folded = {sub.casefold(): sub for sub in supported[country]}
    canonical = by_folded.get(subdivision.casefold())
    if canonical is None:
        raise ValueError(
            f"unknown holiday subdivision {code!r}; {country} has: {', '.join(supported[country]) or 'none'}"
        )
    return f"{country}-{canonical}"


@lru_cache(maxsize=256)
def _holiday_dates(code: str, year: int) -> frozenset[date]:
    # A frozen set per (calendar, year): the holidays object expands itself on lookup, which is neither
    # cheap nor safe to share between task threads.
    country, _, subdivision = code.partition("-")
    calendar = holidays_lib.country_holidays(country, subdiv=subdivision or None, years=year)
    return frozenset(calendar.keys())
