"""Call slots: place follow-up calls in a staff member's working hours, one after another, never overlapping.

Pure rules: no database, no Prefect, no settings. Moments in and out are aware datetimes in UTC; days are counted in
the staff member's own time zone, and each day's working hours are turned into instants through that zone, so a
daylight-saving change can neither push a call outside working hours nor make two calls overlap.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from engage.errors import SlotError
from engage.rules.clock import weekday_numbers, zone

__all__ = ["CallRequest", "Slot", "SlotBook", "SlotError", "WorkingHours"]

# A calendar with room for a call within a year is a given; a longer search means a broken calendar (no working day
# long enough for one call), and failing loudly beats looping forever.
_MAX_DAYS_AHEAD = 366


@dataclass(frozen=True)
class WorkingHours:
    """When one staff member takes calls: their time zone, working days and daily hours (local wall-clock times)."""

    timezone: str
    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        zone(self.timezone)
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError(f"working days must be weekday numbers 0 (Monday) to 6, not {sorted(self.days)}")
        if self.end <= self.start:
            raise ValueError(f"working hours end at {self.end:%H:%M}, not after they start at {self.start:%H:%M}")

    @classmethod
    def of(cls, *, timezone: str, work_days: str, start: time, end: time) -> WorkingHours:
        """Build them from a staff member's stored fields (`work_days` such as "mon,tue,wed,thu,fri")."""
        return cls(timezone=timezone, days=weekday_numbers(work_days), start=start, end=end)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.timezone)

    def local_day(self, moment: datetime) -> date:
        """The staff member's date at an aware moment."""
        return moment.astimezone(self.zone).date()

    def works_on(self, day: date) -> bool:
        return day.weekday() in self.days

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The instants (UTC) the working hours of ``day`` open and close."""
        zone = self.zone
        opens = datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)
        closes = datetime.combine(day, self.end, tzinfo=zone).astimezone(UTC)
        return opens, closes


@dataclass(frozen=True, order=True)
class Slot:
    """A call's place in a calendar: from ``start`` (included) to ``end`` (excluded), aware, in UTC."""

    start: datetime
    end: datetime

    def overlaps(self, other: Slot) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class CallRequest:
    """A call to place: on ``day`` (its due date) or the next working day with room, never before ``not_before``."""

    day: date
    not_before: datetime


class SlotBook:
    """One staff member's calls while new ones are placed: what is taken, and the first free slot of a day.

    Slots start on a grid of the call length counted from the opening of the working day (09:00, 09:15, ...), so a
    calendar full of calls stays readable; a slot taken off the grid (another template's length) pushes the next
    call to the next grid line after it.
    """

    def __init__(self, hours: WorkingHours, taken: Iterable[Slot] = ()) -> None:
        self.hours = hours
        self._by_day: dict[date, list[Slot]] = {}
        # Days found full for a call length (from the opening of the day): skipped at once by the next request.
        self._full: set[tuple[date, timedelta]] = set()
        for slot in taken:
            self.take(slot)

    def _days_of(self, slot: Slot) -> set[date]:
        return {self.hours.local_day(slot.start), self.hours.local_day(slot.end - timedelta(microseconds=1))}

    def take(self, slot: Slot) -> None:
        """Mark a slot as taken (an existing call)."""
        for day in self._days_of(slot):
            insort(self._by_day.setdefault(day, []), slot)

    def release(self, slot: Slot) -> None:
        """Free a slot (a call that moves or is cancelled); does nothing if it was not taken."""
        for day in self._days_of(slot):
            slots = self._by_day.get(day, [])
            if slot in slots:
                slots.remove(slot)
            self._full = {(full_day, length) for full_day, length in self._full if full_day != day}

    def taken(self) -> list[Slot]:
        """Every slot taken, in order."""
        return sorted({slot for slots in self._by_day.values() for slot in slots})

    def place(self, request: CallRequest, minutes: int, *, day_off: Callable[[date], bool] | None = None) -> Slot:
        """Take and return the first free slot of ``minutes`` on the request's day or the next working day.

        ``day_off`` adds days without calls to the staff member's own days off (e.g. a template's public holidays).
        """
        if minutes <= 0:
            raise ValueError(f"a call lasts at least one minute, not {minutes}")
        if request.not_before.tzinfo is None:
            raise ValueError("not_before must be an aware datetime")
        length = timedelta(minutes=minutes)
        day = request.day
        for _ in range(_MAX_DAYS_AHEAD):
            if self.hours.works_on(day) and not (day_off is not None and day_off(day)):
                slot = self._first_free(day, length, request.not_before)
                if slot is not None:
                    self.take(slot)
                    return slot
            day += timedelta(days=1)
        raise SlotError(
            f"no working day from {request.day.isoformat()} on has room for a {minutes}-minute call "
            f"(working hours {self.hours.start:%H:%M}-{self.hours.end:%H:%M} {self.hours.timezone})"
        )

    def _first_free(self, day: date, length: timedelta, not_before: datetime) -> Slot | None:
        opens, closes = self.hours.window(day)
        if closes - length < max(opens, not_before):
            return None
        from_opening = not_before <= opens
        if from_opening and (day, length) in self._full:
            return None
        start = opens if from_opening else opens + _ceil_steps(not_before - opens, length) * length
        taken = self._by_day.get(day, [])
        while start + length <= closes:
            candidate = Slot(start, start + length)
            clash_end = max((slot.end for slot in taken if slot.overlaps(candidate)), default=None)
            if clash_end is None:
                return candidate
            start = opens + _ceil_steps(clash_end - opens, length) * length
        if from_opening:
            self._full.add((day, length))
        return None


def _ceil_steps(span: timedelta, step: timedelta) -> int:
    """How many steps it takes to cover ``span`` (at least zero)."""
    if span <= timedelta(0):
        return 0
    whole, rest = divmod(span, step)
    return int(whole) + (1 if rest else 0)
