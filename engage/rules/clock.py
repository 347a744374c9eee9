"""The small rules of the clock, each written once: time zones, weekdays, and hour ranges such as ``09:00-17:00``.

Pure: no database, no Prefect, no settings. A value that does not parse raises :class:`InvalidValueError`, which is a
``ValueError`` (pydantic validators report it against their field) and an ``EngageError`` (the CLI prints it on one
line).
"""

from __future__ import annotations

import re
from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engage.errors import InvalidValueError

__all__ = ["WEEKDAYS", "parse_days", "parse_hours", "weekday_numbers", "zone"]

#: The days of the week as they are stored and typed, Monday first (``date.weekday()`` is their index).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``; InvalidValueError when there is no such zone."""
    try:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None


def parse_hours(text: str, *, what: str = "hours") -> tuple[time, time]:
    """Parse a range of wall-clock times such as ``09:00-17:00`` into (start, end); the end comes after the start."""
    match = _HOURS_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidValueError(f"{what} {text!r} is not of the form HH:MM-HH:MM (e.g. 09:00-17:00)")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    try:
        start, end = time(start_h, start_m), time(end_h, end_m)
    except ValueError as error:
        raise InvalidValueError(f"{what} {text!r} has an impossible time: {error}") from None
    if end <= start:
        raise InvalidValueError(f"{what} {text!r} must end after it starts")
    return start, end


def parse_days(text: str) -> str:
    """Parse days such as ``mon-fri``, ``mon,tue,thu`` or ``Monday, Thursday`` into the stored form ``mon,tue,thu``."""
    text = text.strip().lower()
    if "-" in text and "," not in text:
        first, last = (part.strip()[:3] for part in text.split("-", 1))
        if first not in WEEKDAYS or last not in WEEKDAYS:
            raise InvalidValueError(f"days {text!r}: use three-letter English day names, e.g. mon-fri")
        start, end = WEEKDAYS.index(first), WEEKDAYS.index(last)
        if end < start:
            raise InvalidValueError(f"days {text!r}: the range must run forward, e.g. mon-fri")
        return ",".join(WEEKDAYS[start : end + 1])
    days = [part.strip()[:3] for part in text.split(",") if part.strip()]
    unknown = [day for day in days if day not in WEEKDAYS]
    if unknown or not days:
        raise InvalidValueError(f"days {text!r}: use three-letter English day names, e.g. mon,tue,thu")
    return ",".join(sorted(set(days), key=WEEKDAYS.index))


def weekday_numbers(stored: str) -> frozenset[int]:
    """The weekday numbers (0 = Monday) of days in their stored form, e.g. ``mon,tue`` -> {0, 1}."""
    names = [name.strip()[:3].lower() for name in stored.split(",") if name.strip()]
    unknown = [name for name in names if name not in WEEKDAYS]
    if unknown:
        raise InvalidValueError(f"unknown working days {unknown}: use mon, tue, wed, thu, fri, sat, sun")
    if not names:
        raise InvalidValueError("no working days: name at least one, e.g. mon-fri")
    return frozenset(WEEKDAYS.index(name) for name in names)
