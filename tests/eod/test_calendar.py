"""The office calendar: its zone decides years, deadlines and retention; Polish holidays and the
KPA day terms (art. 44, 57, 129) end on the right day around Easter, 1 and 3 May, 11 November
and 24-26 December."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ledger.eod.calendar import (
    OfficeCalendar,
    appeal_deadline,
    day_term_end,
    deemed_delivery,
    month_term_end,
    next_working_day,
    parse_date,
)
from ledger.eod.holidays import easter_sunday, is_public_holiday, is_working_day, public_holidays
from ledger.eod.model import parse_category
from ledger.errors import MalformedError

WARSAW = OfficeCalendar("Europe/Warsaw")


def utc(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2027, date(2027, 3, 28)),
        (2038, date(2038, 4, 25)),
        (2011, date(2011, 4, 24)),
    ],
)
def test_easter_sunday(year: int, easter: date) -> None:
    assert easter_sunday(year) == easter


def test_holidays_of_2025_include_christmas_eve_and_the_movable_feasts() -> None:
    days = public_holidays(2025)
    assert list(days) == [
        date(2025, 1, 1),
        date(2025, 1, 6),
        date(2025, 4, 20),
        date(2025, 4, 21),
        date(2025, 5, 1),
        date(2025, 5, 3),
        date(2025, 6, 8),
        date(2025, 6, 19),
        date(2025, 8, 15),
        date(2025, 11, 1),
        date(2025, 11, 11),
        date(2025, 12, 24),
        date(2025, 12, 25),
        date(2025, 12, 26),
    ]
    assert days[date(2025, 6, 19)] == ("Boże Ciało", "Corpus Christi")
    assert not is_public_holiday(date(2024, 12, 24))  # Wigilia only from 2025
    assert is_public_holiday(date(2026, 12, 24))
    assert not is_working_day(date(2025, 5, 3)) and is_working_day(date(2025, 5, 2))
    assert not is_working_day(date(2025, 11, 8))  # a Saturday


def test_a_new_year_starts_at_midnight_in_warsaw_not_utc() -> None:
    half_past_midnight = utc(2024, 12, 31, 23, 30)  # 00:30 on 1 January 2025 in Warsaw
    assert WARSAW.year_of(half_past_midnight) == 2025
    assert OfficeCalendar("UTC").year_of(half_past_midnight) == 2024
    assert WARSAW.year_of(utc(2025, 12, 31, 22, 30)) == 2025  # 23:30 on 31 December
    assert WARSAW.format_time(half_past_midnight) == "2025-01-01 00:30:00 +01:00"
    assert WARSAW.format_time(utc(2025, 7, 1, 10)) == "2025-07-01 12:00:00 +02:00"


def test_a_deadline_day_ends_at_midnight_warsaw_time() -> None:
    end = WARSAW.deadline_end(date(2025, 3, 20))
    assert end == utc(2025, 3, 20, 23, 0)  # 2025-03-21 00:00 CET
    assert WARSAW.format_time(end) == "2025-03-21 00:00:00 +01:00"
    summer = WARSAW.deadline_end(date(2025, 7, 20))
    assert summer == utc(2025, 7, 20, 22, 0)  # CEST


def test_retention_counts_from_1_january_after_the_local_closing_year() -> None:
    b5 = parse_category("B5")
    closed = utc(2024, 12, 31, 23, 30)  # 00:30 on 1 January 2025 in Warsaw
    # Closed in 2025 (local): n = 5 full years 2026-2030; destruction from 1 January 2031.
    assert WARSAW.retention_start(closed) == date(2026, 1, 1)
    assert WARSAW.destruction_allowed_from(b5, closed) == utc(2030, 12, 31, 23, 0)
    # Counted in UTC it would be a year early.
    assert OfficeCalendar("UTC").destruction_allowed_from(b5, closed) == utc(2030, 1, 1)
    assert WARSAW.destruction_allowed_from(parse_category("A"), closed) is None
    assert WARSAW.destruction_allowed_from(parse_category("Bc"), closed) == closed


@pytest.mark.parametrize(
    ("notice", "deemed", "appeal"),
    [
        # Deemed delivered on Monday 7 April 2025; 14 days end on Easter Monday -> Tuesday.
        (date(2025, 3, 24), date(2025, 4, 7), date(2025, 4, 22)),
        # Deemed delivered on 17 April 2025; 1 May is a holiday -> Friday 2 May.
        (date(2025, 4, 3), date(2025, 4, 17), date(2025, 5, 2)),
        # Deemed delivered on Monday 28 October 2025; 11 November -> Wednesday 12 November.
        (date(2025, 10, 14), date(2025, 10, 28), date(2025, 11, 12)),
        # Deemed delivered on Saturday 25 October 2025 (no shift for the collection period);
        # 14 days end on Saturday 8 November -> Monday 10 November.
        (date(2025, 10, 11), date(2025, 10, 25), date(2025, 11, 10)),
        # 14 days end on 24 December 2025 (a holiday from 2025), then 25, 26, a weekend.
        (date(2025, 11, 26), date(2025, 12, 10), date(2025, 12, 29)),
        # 2024: 24 December is a working day.
        (date(2024, 11, 26), date(2024, 12, 10), date(2024, 12, 24)),
        # Ends on 3 May 2026 (a Sunday and a holiday) -> Monday 4 May.
        (date(2026, 4, 5), date(2026, 4, 19), date(2026, 5, 4)),
    ],
)
def test_appeal_deadline_after_a_deemed_delivery(notice: date, deemed: date, appeal: date) -> None:
    assert deemed_delivery(notice) == deemed
    assert appeal_deadline(deemed) == appeal


def test_day_and_month_terms() -> None:
    assert day_term_end(date(2025, 1, 2), 1) == date(2025, 1, 3)
    assert day_term_end(date(2025, 1, 5), 1) == date(2025, 1, 7)  # 6 January: Trzech Króli
    assert month_term_end(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert month_term_end(date(2025, 3, 3), 2) == date(2025, 5, 5)  # 3 May, a Saturday
    assert next_working_day(date(2025, 12, 24)) == date(2025, 12, 29)
    with pytest.raises(MalformedError):
        day_term_end(date(2025, 1, 1), 0)


def test_every_day_of_the_next_decade_is_judged_once() -> None:
    # Working days are exactly Monday-Friday outside the holiday list: 10 years of days.
    day, working = date(2025, 1, 1), 0
    while day.year < 2035:
        holiday = day in public_holidays(day.year)
        assert is_working_day(day) == (day.weekday() < 5 and not holiday)
        working += is_working_day(day)
        day += timedelta(days=1)
    assert 2480 < working < 2520


@pytest.mark.parametrize("text", ["2024-02-30", "2025-13-01", "2025-1-1", "yesterday", ""])
def test_dates_that_are_not_days_are_refused(text: str) -> None:
    with pytest.raises(MalformedError):
        parse_date(text, what="deadline")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "", "Europe/Warsaw "])
def test_unknown_zones_are_refused(zone: str) -> None:
    with pytest.raises(MalformedError):
        OfficeCalendar(zone)


def test_naive_times_are_office_local() -> None:
    assert WARSAW.parse_time("2025-01-01T00:30") == utc(2024, 12, 31, 23, 30)
    assert WARSAW.parse_time("2025-01-01T00:30Z") == utc(2025, 1, 1, 0, 30)
