"""Time rules: offsets, weekends, holidays, the send window and daylight-saving changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engage.rules.due import (
    CalendarRules,
    dependent_due_at,
    due_day,
    independent_due_at,
    is_day_off,
    local_day,
    next_send_time,
    parse_window,
)

PARIS = CalendarRules(timezone="Europe/Paris", skip_weekends=True, reschedule_to="monday")
PARIS_FRIDAY = CalendarRules(timezone="Europe/Paris", skip_weekends=True, reschedule_to="friday")
PARIS_FR_HOLIDAYS = CalendarRules(timezone="Europe/Paris", skip_weekends=True, holidays="FR")
EVERY_DAY = CalendarRules(timezone="Europe/Paris")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- the worked example (also in the README) -------------------------------------------------------


def test_volunteer_plan_after_a_friday_workshop() -> None:
    workshop = date(2026, 11, 20)  # a Friday
    rules = CalendarRules(
        timezone="Europe/Paris",
        skip_weekends=True,
        reschedule_to="monday",
        send_window_start=time(9, 0),
        send_window_end=time(17, 0),
    )

    survey = independent_due_at(workshop, 1, rules)
    resource_pack = dependent_due_at(survey, 6, rules)
    motivation = dependent_due_at(resource_pack, 7, rules)
    call = dependent_due_at(motivation, 16, rules)

    assert [local_day(due, rules) for due in (survey, resource_pack, motivation, call)] == [
        date(2026, 11, 23),
        date(2026, 11, 30),
        date(2026, 12, 7),
        date(2026, 12, 23),
    ]
    assert [due.strftime("%a") for due in (survey, resource_pack, motivation, call)] == [
        "Mon",
        "Mon",
        "Mon",
        "Wed",
    ]
    assert (survey, resource_pack, motivation, call) == (
        utc(2026, 11, 23, 8, 0),
        utc(2026, 11, 30, 8, 0),
        utc(2026, 12, 7, 8, 0),
        utc(2026, 12, 23, 8, 0),
    )
    assert all(due.tzinfo is UTC for due in (survey, resource_pack, motivation, call))


# --- small cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "released_on", "days_after", "expected"),
    [
        pytest.param(PARIS_FRIDAY, date(2026, 11, 20), 1, date(2026, 11, 20), id="friday rule: Sat -> Fri"),
        pytest.param(PARIS_FRIDAY, date(2026, 11, 19), 3, date(2026, 11, 20), id="friday rule: Sun -> Fri"),
        pytest.param(PARIS_FRIDAY, date(2026, 11, 21), 0, date(2026, 11, 23), id="friday rule: released Sat -> Mon"),
        pytest.param(
            PARIS_FRIDAY,
            date(2026, 11, 21),
            1,
            date(2026, 11, 23),
            id="friday rule: released Sat, Sun -> Mon",
        ),
        pytest.param(PARIS, date(2026, 11, 20), 1, date(2026, 11, 23), id="monday rule: Sat -> Mon"),
        pytest.param(PARIS, date(2026, 11, 20), 0, date(2026, 11, 20), id="working day stays"),
        pytest.param(EVERY_DAY, date(2026, 11, 20), 1, date(2026, 11, 21), id="no skipping: Sat stays"),
        pytest.param(PARIS_FR_HOLIDAYS, date(2026, 12, 24), 1, date(2026, 12, 28), id="FR Christmas Fri -> Mon"),
        pytest.param(
            CalendarRules(skip_weekends=True, reschedule_to="friday", holidays="FR"),
            date(2026, 12, 21),
            5,
            date(2026, 12, 24),
            id="friday rule: Sat after Christmas -> Thu 24",
        ),
        pytest.param(PARIS, date(2026, 12, 24), 1, date(2026, 12, 25), id="holiday ignored without a country"),
        pytest.param(
            CalendarRules(skip_weekends=False, holidays="FR"),
            date(2026, 12, 24),
            1,
            date(2026, 12, 25),
            id="holiday ignored without skipping",
        ),
        pytest.param(PARIS_FR_HOLIDAYS, date(2026, 4, 30), 1, date(2026, 5, 4), id="Labour Day Fri -> Mon 4 May"),
    ],
)
def test_due_day(rules: CalendarRules, released_on: date, days_after: int, expected: date) -> None:
    assert due_day(released_on, days_after, rules) == expected


@pytest.mark.parametrize(
    ("plan_start", "days_after", "expected"),
    [
        # Europe left summer time on Sunday 25 Oct 2026: on Monday 26, 09:00 Paris is 08:00 UTC.
        pytest.param(date(2026, 10, 24), 2, utc(2026, 10, 26, 8, 0), id="day after the October change"),
        pytest.param(date(2026, 10, 22), 1, utc(2026, 10, 23, 7, 0), id="last Friday of summer time"),
        pytest.param(date(2026, 7, 1), 1, utc(2026, 7, 2, 7, 0), id="summer"),
        pytest.param(date(2026, 1, 14), 1, utc(2026, 1, 15, 8, 0), id="winter"),
        # Summer time starts on Sunday 29 Mar 2026; the step moves to Monday 30, already summer time.
        pytest.param(date(2026, 3, 27), 2, utc(2026, 3, 30, 7, 0), id="across the March change"),
    ],
)
def test_independent_due_at_follows_daylight_saving(plan_start: date, days_after: int, expected: datetime) -> None:
    assert independent_due_at(plan_start, days_after, PARIS) == expected


@pytest.mark.parametrize(
    ("rules", "moment", "expected"),
    [
        pytest.param(PARIS, utc(2026, 11, 18, 10, 30), utc(2026, 11, 18, 10, 30), id="inside: unchanged"),
        pytest.param(PARIS, utc(2026, 11, 18, 8, 0), utc(2026, 11, 18, 8, 0), id="at window start"),
        pytest.param(PARIS, utc(2026, 11, 18, 5, 0), utc(2026, 11, 18, 8, 0), id="before: window start"),
        pytest.param(
            PARIS,
            utc(2026, 11, 18, 8, 0) - timedelta(microseconds=1),
            utc(2026, 11, 18, 8, 0),
            id="just before: window start",
        ),
        pytest.param(
            PARIS,
            utc(2026, 11, 18, 16, 0) - timedelta(microseconds=1),
            utc(2026, 11, 18, 16, 0) - timedelta(microseconds=1),
            id="just before window end: unchanged",
        ),
        pytest.param(PARIS, utc(2026, 11, 18, 16, 0), utc(2026, 11, 19, 8, 0), id="17:00 Paris: next day"),
        pytest.param(PARIS, utc(2026, 11, 18, 20, 0), utc(2026, 11, 19, 8, 0), id="evening: next day"),
        pytest.param(PARIS, utc(2026, 11, 18, 23, 30), utc(2026, 11, 19, 8, 0), id="after local midnight"),
        pytest.param(PARIS, utc(2026, 11, 20, 16, 0), utc(2026, 11, 23, 8, 0), id="Friday evening: Monday"),
        pytest.param(PARIS, utc(2026, 11, 21, 10, 0), utc(2026, 11, 23, 8, 0), id="Saturday: Monday"),
        pytest.param(EVERY_DAY, utc(2026, 11, 20, 16, 0), utc(2026, 11, 21, 8, 0), id="no skipping: Sat"),
        pytest.param(PARIS, utc(2026, 10, 23, 15, 0), utc(2026, 10, 26, 8, 0), id="Friday 17:00 summer: Monday winter"),
        pytest.param(PARIS_FR_HOLIDAYS, utc(2026, 12, 24, 16, 0), utc(2026, 12, 28, 8, 0), id="over Christmas"),
        pytest.param(
            CalendarRules(timezone="America/Montreal", skip_weekends=True),
            utc(2026, 11, 20, 20, 0),  # 15:00 in Montreal: inside the window
            utc(2026, 11, 20, 20, 0),
            id="Montreal inside",
        ),
        pytest.param(
            CalendarRules(timezone="America/Montreal", skip_weekends=True),
            utc(2026, 11, 20, 23, 0),  # 18:00 Friday in Montreal
            utc(2026, 11, 23, 14, 0),  # 09:00 Monday EST
            id="Montreal Friday evening",
        ),
        pytest.param(
            CalendarRules(send_window_start=time(8, 30), send_window_end=time(12, 0)),
            utc(2026, 6, 10, 10, 1),  # 12:01 Paris summer time
            utc(2026, 6, 11, 6, 30),
            id="custom window",
        ),
    ],
)
def test_next_send_time(rules: CalendarRules, moment: datetime, expected: datetime) -> None:
    result = next_send_time(moment, rules)
    assert result == expected
    assert result.tzinfo is UTC


def test_next_send_time_accepts_other_aware_zones_and_returns_utc() -> None:
    moment = datetime(2026, 11, 18, 11, 30, tzinfo=ZoneInfo("Europe/Paris"))
    result = next_send_time(moment, PARIS)
    assert result == utc(2026, 11, 18, 10, 30)
    assert result.tzinfo is UTC


def test_montreal_independent_step_in_summer_and_winter() -> None:
    rules = CalendarRules(timezone="America/Montreal", skip_weekends=True)
    assert independent_due_at(date(2026, 7, 1), 0, rules) == utc(2026, 7, 1, 13, 0)
    assert independent_due_at(date(2026, 11, 20), 1, rules) == utc(2026, 11, 23, 14, 0)


@pytest.mark.parametrize(
    ("completed_at", "days_after", "expected"),
    [
        pytest.param(utc(2026, 11, 18, 10, 0), 0, utc(2026, 11, 18, 10, 0), id="same day, window open"),
        pytest.param(utc(2026, 11, 18, 17, 0), 0, utc(2026, 11, 19, 8, 0), id="same day, window closed"),
        pytest.param(utc(2026, 11, 18, 17, 0), 1, utc(2026, 11, 19, 8, 0), id="next day"),
        # 00:30 Paris on Thursday 19 is still Wednesday 18 in UTC: the local day counts.
        pytest.param(utc(2026, 11, 18, 23, 30), 1, utc(2026, 11, 20, 8, 0), id="local day after midnight"),
        pytest.param(utc(2026, 11, 21, 12, 0), 0, utc(2026, 11, 23, 8, 0), id="completed on Saturday"),
    ],
)
def test_dependent_due_at(completed_at: datetime, days_after: int, expected: datetime) -> None:
    assert dependent_due_at(completed_at, days_after, PARIS) == expected


def test_dependent_friday_rule_never_before_completion() -> None:
    # Completed on Friday evening; 1 day later is Saturday, the Friday rule points back to the completion
    # day whose window has closed, so the Monday is used.
    completed_at = utc(2026, 11, 20, 18, 0)
    assert dependent_due_at(completed_at, 1, PARIS_FRIDAY) == utc(2026, 11, 23, 8, 0)
    completed_at = utc(2026, 11, 20, 10, 0)
    assert dependent_due_at(completed_at, 1, PARIS_FRIDAY) == completed_at


@pytest.mark.parametrize(
    ("day", "rules", "expected"),
    [
        (date(2026, 11, 21), PARIS, True),
        (date(2026, 11, 22), PARIS, True),
        (date(2026, 11, 23), PARIS, False),
        (date(2026, 11, 21), EVERY_DAY, False),
        (date(2026, 12, 25), PARIS, False),
        (date(2026, 12, 25), PARIS_FR_HOLIDAYS, True),
        (date(2026, 7, 14), PARIS_FR_HOLIDAYS, True),
        (date(2026, 12, 25), CalendarRules(holidays="FR"), False),
        (date(2026, 12, 26), CalendarRules(skip_weekends=True, holidays="FR-57"), True),  # Alsace-Moselle
        (date(2026, 12, 28), CalendarRules(skip_weekends=True, holidays="FR-57"), False),
    ],
)
def test_is_day_off(day: date, rules: CalendarRules, expected: bool) -> None:
    assert is_day_off(day, rules) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00-17:00", (time(9), time(17))),
        ("9:00-17:30", (time(9), time(17, 30))),
        (" 08:15 - 12:00 ", (time(8, 15), time(12))),
        ("00:00-23:59", (time(0), time(23, 59))),
    ],
)
def test_parse_window(text: str, expected: tuple[time, time]) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["", "9-17", "09:00", "09:00-25:00", "09:60-10:00", "17:00-09:00", "09:00-09:00"])
def test_parse_window_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=f"send window '{text}'"):
        parse_window(text)


def test_local_day() -> None:
    assert local_day(utc(2026, 11, 18, 23, 30), PARIS) == date(2026, 11, 19)
    assert local_day(utc(2026, 11, 18, 23, 30), CalendarRules(timezone="America/Montreal")) == date(2026, 11, 18)


def test_holiday_code_is_normalised() -> None:
    assert CalendarRules(holidays="fr").holidays == "FR"
    assert CalendarRules(holidays="fr-zone a").holidays == "FR-Zone A"
    assert CalendarRules(holidays="fr") == CalendarRules(holidays="FR")


# --- bad inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
        ({"timezone": ""}, "unknown time zone ''"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
        (
            {"send_window_start": time(17), "send_window_end": time(9)},
            "ends at 09:00, not after it starts at 17:00",
        ),
        ({"send_window_start": time(9), "send_window_end": time(9)}, "not after it starts"),
        ({"send_window_start": time(9, tzinfo=UTC)}, "without tzinfo"),
        ({"reschedule_to": "sunday"}, "reschedule_to must be 'friday' or 'monday'"),
        ({"holidays": "XX"}, "unknown holiday country 'XX'"),
        ({"holidays": "FR-NOPE"}, "unknown holiday subdivision 'FR-NOPE'"),
    ],
)
def test_calendar_rules_reject(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalendarRules(**kwargs)  # type: ignore[arg-type]


def test_negative_days_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="days_after must be 0 or more, not -1"):
        due_day(date(2026, 11, 20), -1, PARIS)
    with pytest.raises(ValueError, match="days_after"):
        independent_due_at(date(2026, 11, 20), -2, PARIS)
    with pytest.raises(ValueError, match="days_after"):
        dependent_due_at(utc(2026, 11, 20, 10), -3, PARIS)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda naive: next_send_time(naive, PARIS), id="next_send_time"),
        pytest.param(lambda naive: dependent_due_at(naive, 1, PARIS), id="dependent_due_at"),
        pytest.param(lambda naive: local_day(naive, PARIS), id="local_day"),
    ],
)
def test_naive_datetimes_are_rejected(call: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="must be timezone-aware"):
        call(datetime(2026, 11, 20, 10, 0))


def test_datetime_where_a_date_is_expected_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be a date"):
        independent_due_at(utc(2026, 11, 20, 10), 1, PARIS)


# --- properties ------------------------------------------------------------------------------------

TIMEZONES = ["Europe/Paris", "America/Montreal", "UTC", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo"]
# Windows stay clear of 01:00-04:00, where daylight-saving changes make wall-clock times skip or repeat.
WINDOWS = [(time(9), time(17)), (time(8, 30), time(18)), (time(10), time(11)), (time(6), time(22, 45))]

calendar_rules = st.builds(
    lambda tz, skip, to, hol, window: CalendarRules(
        timezone=tz,
        skip_weekends=skip,
        reschedule_to=to,
        holidays=hol,
        send_window_start=window[0],
        send_window_end=window[1],
    ),
    st.sampled_from(TIMEZONES),
    st.booleans(),
    st.sampled_from(["friday", "monday"]),
    st.sampled_from([None, "FR", "FR", "CA"]),
    st.sampled_from(WINDOWS),
)
skipping_rules = calendar_rules.map(
    lambda rules: CalendarRules(
        timezone=rules.timezone,
        skip_weekends=True,
        reschedule_to=rules.reschedule_to,
        holidays=rules.holidays,
        send_window_start=rules.send_window_start,
        send_window_end=rules.send_window_end,
    )
)
days = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
offsets = st.integers(min_value=0, max_value=60)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC))
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def _is_public_holiday(day: date, rules: CalendarRules) -> bool:
    # Asked of the holidays package directly, not through the module's cache, as an independent check.
    if rules.holidays is None:
        return False
    return day in holidays.country_holidays(rules.holidays, years=day.year)


def _sendable(moment: datetime, rules: CalendarRules) -> bool:
    local = moment.astimezone(ZoneInfo(rules.timezone))
    in_window = rules.send_window_start <= local.time() < rules.send_window_end
    day_off = rules.skip_weekends and (local.weekday() >= 5 or _is_public_holiday(local.date(), rules))
    return in_window and not day_off


def _assert_in_window_on_allowed_day(due: datetime, rules: CalendarRules) -> None:
    assert due.tzinfo is UTC
    assert _sendable(due, rules)
    assert not is_day_off(local_day(due, rules), rules)


@PROPERTY_SETTINGS
@given(rules=skipping_rules, released_on=days, days_after=offsets)
def test_due_day_never_lands_on_a_weekend_or_holiday(rules: CalendarRules, released_on: date, days_after: int) -> None:
    day = due_day(released_on, days_after, rules)
    assert day.weekday() < 5
    assert not _is_public_holiday(day, rules)


@PROPERTY_SETTINGS
@given(rules=calendar_rules, released_on=days, days_after=offsets)
def test_due_day_is_the_nearest_working_day(rules: CalendarRules, released_on: date, days_after: int) -> None:
    base = released_on + timedelta(days=days_after)
    day = due_day(released_on, days_after, rules)
    assert day >= released_on  # the Friday rule never goes before the release
    assert not is_day_off(day, rules)
    between = range(1, abs((day - base).days))
    if day < base:
        assert rules.reschedule_to == "friday"
        assert all(is_day_off(day + timedelta(days=n), rules) for n in between)
    elif day > base:
        assert all(is_day_off(base + timedelta(days=n), rules) for n in between)


@PROPERTY_SETTINGS
@given(rules=calendar_rules, plan_start=days, days_after=offsets)
def test_independent_due_at_is_in_the_window(rules: CalendarRules, plan_start: date, days_after: int) -> None:
    due = independent_due_at(plan_start, days_after, rules)
    _assert_in_window_on_allowed_day(due, rules)
    assert local_day(due, rules) == due_day(plan_start, days_after, rules)
    assert due == independent_due_at(plan_start, days_after, rules)


@PROPERTY_SETTINGS
@given(rules=calendar_rules, completed_at=moments, days_after=offsets)
def test_dependent_due_at_is_after_parent_and_in_the_window(
    rules: CalendarRules, completed_at: datetime, days_after: int
) -> None:
    due = dependent_due_at(completed_at, days_after, rules)
    assert due >= completed_at
    _assert_in_window_on_allowed_day(due, rules)
    assert local_day(due, rules) >= local_day(completed_at, rules)
    if rules.reschedule_to == "monday" or not rules.skip_weekends:
        assert local_day(due, rules) >= local_day(completed_at, rules) + timedelta(days=days_after)
    assert due == dependent_due_at(completed_at, days_after, rules)


@PROPERTY_SETTINGS
@given(rules=calendar_rules, moment=moments)
def test_next_send_time_is_the_earliest_allowed_instant(rules: CalendarRules, moment: datetime) -> None:
    sent = next_send_time(moment, rules)
    assert sent >= moment
    _assert_in_window_on_allowed_day(sent, rules)
    assert next_send_time(sent, rules) == sent
    if sent > moment:
        # Nothing earlier would do: the moment itself was outside the window or on a day off, and the
        # result is a window start.
        assert sent.astimezone(ZoneInfo(rules.timezone)).time() == rules.send_window_start
        assert not _sendable(moment, rules)
