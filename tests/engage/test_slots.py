"""Call slots: inside each staff member's working hours, never overlapping, spread over the next days when full."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engage.errors import SlotError
from engage.rules.slots import CallRequest, Slot, SlotBook, WorkingHours

PARIS = WorkingHours.of(timezone="Europe/Paris", work_days="mon,tue,wed,thu,fri", start=time(9), end=time(17))
WEDNESDAY = date(2026, 12, 23)
NINE_PARIS = datetime(2026, 12, 23, 8, tzinfo=UTC)


def place_many(book: SlotBook, count: int, day: date, not_before: datetime, minutes: int = 15) -> list[Slot]:
    return [book.place(CallRequest(day=day, not_before=not_before), minutes) for _ in range(count)]


def test_fifty_calls_of_one_workshop_are_spread_not_stacked() -> None:
    slots = place_many(SlotBook(PARIS), 50, WEDNESDAY, NINE_PARIS)
    local = [slot.start.astimezone(ZoneInfo("Europe/Paris")) for slot in slots]
    assert [f"{t:%a %H:%M}" for t in local[:3]] == ["Wed 09:00", "Wed 09:15", "Wed 09:30"]
    assert f"{local[31]:%a %H:%M}" == "Wed 16:45"  # 32 quarter hours from 09:00 to 17:00
    assert [f"{t:%a %H:%M}" for t in local[32:34]] == ["Thu 09:00", "Thu 09:15"]
    assert f"{local[-1]:%a %H:%M}" == "Thu 13:15"


def test_a_full_friday_moves_on_to_monday_and_never_before_the_due_time() -> None:
    friday_noon = datetime(2026, 12, 25, 11, tzinfo=UTC)  # 12:00 in Paris
    slots = place_many(SlotBook(PARIS), 20, date(2026, 12, 25), friday_noon, minutes=30)
    local = [slot.start.astimezone(ZoneInfo("Europe/Paris")) for slot in slots]
    assert f"{local[0]:%a %H:%M}" == "Fri 12:00"
    assert f"{local[9]:%a %H:%M}" == "Fri 16:30"
    assert f"{local[10]:%a %d %H:%M}" == "Mon 28 09:00"


def test_a_due_time_off_the_grid_starts_at_the_next_grid_line() -> None:
    (slot,) = place_many(SlotBook(PARIS), 1, WEDNESDAY, NINE_PARIS + timedelta(minutes=7))
    assert slot.start == NINE_PARIS + timedelta(minutes=15)


def test_existing_calls_keep_their_slots_and_a_released_one_is_free_again() -> None:
    taken = [
        Slot(NINE_PARIS, NINE_PARIS + timedelta(minutes=15)),
        Slot(NINE_PARIS + timedelta(minutes=20), NINE_PARIS + timedelta(minutes=50)),
    ]
    book = SlotBook(PARIS, taken)
    first, second = place_many(book, 2, WEDNESDAY, NINE_PARIS)
    # 09:15-09:30 would overlap the call taken from 09:20 to 09:50 (another template's length): next grid line after it.
    assert (first.start, second.start) == (NINE_PARIS + timedelta(minutes=60), NINE_PARIS + timedelta(minutes=75))
    book.release(taken[0])
    (third,) = place_many(book, 1, WEDNESDAY, NINE_PARIS)
    assert third.start == NINE_PARIS


def test_days_off_of_the_template_hold_no_call() -> None:
    christmas = date(2026, 12, 25)
    (slot,) = [
        SlotBook(PARIS).place(
            CallRequest(christmas, datetime(2026, 12, 25, 8, tzinfo=UTC)), 15, day_off=lambda d: d == christmas
        )
    ]
    assert slot.start.astimezone(ZoneInfo("Europe/Paris")).date() == date(2026, 12, 28)


def test_hours_too_short_for_a_call_fail_loudly() -> None:
    short = WorkingHours.of(timezone="Europe/Paris", work_days="mon", start=time(9), end=time(9, 10))
    with pytest.raises(SlotError, match="no working day"):
        SlotBook(short).place(CallRequest(WEDNESDAY, NINE_PARIS), 15)


@pytest.mark.parametrize(("work_days", "error"), [("", "working days"), ("mon,funday", "unknown working days")])
def test_working_hours_are_checked(work_days: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        WorkingHours.of(timezone="Europe/Paris", work_days=work_days, start=time(9), end=time(17))


# --- Properties, across daylight-saving changes --------------------------------------------------------------------

ZONES = ["Europe/Paris", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "America/St_Johns", "Europe/London"]
# Days around the 2026 changes of the zones above (March, April, October, November).
DST_DAYS = [
    date(2026, 3, 6),
    date(2026, 3, 27),
    date(2026, 4, 3),
    date(2026, 10, 2),
    date(2026, 10, 23),
    date(2026, 10, 30),
]


@st.composite
def calendars(draw: st.DrawFn) -> tuple[WorkingHours, int, list[CallRequest]]:
    zone = draw(st.sampled_from(ZONES))
    days = draw(st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1))
    start_minutes = draw(st.integers(min_value=0, max_value=20 * 60)) // 15 * 15
    length_minutes = draw(st.integers(min_value=60, max_value=min(12 * 60, 24 * 60 - 1 - start_minutes)))
    end_minutes = start_minutes + length_minutes
    hours = WorkingHours.of(
        timezone=zone,
        work_days=",".join(sorted(days)),
        start=time(start_minutes // 60, start_minutes % 60),
        end=time(end_minutes // 60, end_minutes % 60),
    )
    minutes = draw(st.sampled_from([5, 15, 20, 30, 45, 60]))
    first = draw(st.sampled_from(DST_DAYS))
    requests = []
    for _ in range(draw(st.integers(min_value=1, max_value=60))):
        day = first + timedelta(days=draw(st.integers(min_value=0, max_value=4)))
        not_before = datetime.combine(day, time(0), tzinfo=ZoneInfo(zone)).astimezone(UTC) + timedelta(
            minutes=draw(st.integers(min_value=0, max_value=24 * 60))
        )
        requests.append(CallRequest(day=day, not_before=not_before))
    return hours, minutes, requests


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars())
def test_slots_never_overlap_and_stay_inside_working_hours(case: tuple[WorkingHours, int, list[CallRequest]]) -> None:
    hours, minutes, requests = case
    book = SlotBook(hours)
    placed = [(request, book.place(request, minutes)) for request in requests]
    zone = ZoneInfo(hours.timezone)
    slots = sorted(slot for _, slot in placed)
    for earlier, later in zip(slots, slots[1:], strict=False):
        assert earlier.end <= later.start, f"{earlier} overlaps {later}"
    for request, slot in placed:
        assert slot.end - slot.start == timedelta(minutes=minutes)
        assert slot.start >= request.not_before
        local_start, local_end = slot.start.astimezone(zone), slot.end.astimezone(zone)
        assert local_start.date() >= request.day
        assert local_start.weekday() in hours.days
        opens, closes = hours.window(local_start.date())
        # Instants, not wall-clock times: an hour that does not exist or happens twice cannot fool the check.
        assert opens <= slot.start and slot.end <= closes
        assert local_end.date() == local_start.date()


@settings(max_examples=60, deadline=None)
@given(calendars())
def test_a_call_goes_on_its_due_day_whenever_that_day_has_room(
    case: tuple[WorkingHours, int, list[CallRequest]],
) -> None:
    hours, minutes, requests = case
    request = requests[0]
    (slot,) = [SlotBook(hours).place(request, minutes)]
    opens, closes = hours.window(request.day)
    if hours.works_on(request.day) and max(opens, request.not_before) + timedelta(minutes=2 * minutes) <= closes:
        assert hours.local_day(slot.start) == request.day
