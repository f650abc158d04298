"""Polish public holidays (dni ustawowo wolne od pracy), computed for any year from 1990 on.

The list is that of the act of 18 January 1951 on days free from work (ustawa o dniach wolnych
od pracy, art. 1), as amended: 1 January (Nowy Rok); 6 January (Trzech Króli, from 2011);
Easter Sunday and Monday; 1 May; 3 May (from 1990); Pentecost Sunday (Zielone Świątki);
Corpus Christi (Boże Ciało, Thursday 60 days after Easter); 15 August; 1 November;
11 November (from 1989); 24 December (Wigilia, from 2025); 25 and 26 December. Sundays are days
free from work too; Saturdays are not, but a term of the code of administrative procedure that
ends on one moves to the next working day all the same (KPA art. 57 § 4), so
:func:`is_working_day` is "Monday to Friday and not a public holiday".

Easter is computed with the anonymous Gregorian algorithm (Meeus/Jones/Butcher), exact for every
Gregorian year. Pure functions, no clock, no I/O: :mod:`ledger.eod.calendar` builds the KPA
term rules on them.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Final

from ledger.errors import MalformedError

__all__ = [
    "FIRST_YEAR",
    "LAST_YEAR",
    "easter_sunday",
    "holiday_name",
    "is_public_holiday",
    "is_working_day",
    "public_holidays",
]

#: The holiday list above holds from 1990 (3 May restored); earlier years had other days.
FIRST_YEAR: Final = 1990
LAST_YEAR: Final = 9998
#: Trzech Króli is a day free from work again from 2011, Wigilia from 2025.
_EPIPHANY_FROM: Final = 2011
_CHRISTMAS_EVE_FROM: Final = 2025


def _check_year(year: int) -> None:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise MalformedError(
            f"Polish public holidays are computed for {FIRST_YEAR}-{LAST_YEAR}, not {year}"
        )


def easter_sunday(year: int) -> date:
    """Easter Sunday of ``year`` (Gregorian calendar).

    Raises:
        MalformedError: a year outside :data:`FIRST_YEAR`-:data:`LAST_YEAR`.
    """
    _check_year(year)
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    el = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * el) // 451
    month, day = divmod(h + el - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=256)
def _holidays(year: int) -> tuple[tuple[date, str, str], ...]:
    easter = easter_sunday(year)
    days: list[tuple[date, str, str]] = [(date(year, 1, 1), "Nowy Rok", "New Year's Day")]
    if year >= _EPIPHANY_FROM:
        days.append((date(year, 1, 6), "Święto Trzech Króli", "Epiphany"))
    days += [
        (easter, "Wielkanoc", "Easter Sunday"),
        (easter + timedelta(days=1), "Poniedziałek Wielkanocny", "Easter Monday"),
        (date(year, 5, 1), "Święto Państwowe (1 Maja)", "Labour Day"),
        (date(year, 5, 3), "Święto Narodowe Trzeciego Maja", "Constitution Day"),
        (easter + timedelta(days=49), "Zielone Świątki", "Pentecost Sunday"),
        (easter + timedelta(days=60), "Boże Ciało", "Corpus Christi"),
        (date(year, 8, 15), "Wniebowzięcie Najświętszej Maryi Panny", "Assumption Day"),
        (date(year, 11, 1), "Wszystkich Świętych", "All Saints' Day"),
        (date(year, 11, 11), "Narodowe Święto Niepodległości", "Independence Day"),
    ]
    if year >= _CHRISTMAS_EVE_FROM:
        days.append((date(year, 12, 24), "Wigilia Bożego Narodzenia", "Christmas Eve"))
    days += [
        (date(year, 12, 25), "Boże Narodzenie (pierwszy dzień)", "Christmas Day"),
        (date(year, 12, 26), "Boże Narodzenie (drugi dzień)", "Second Day of Christmas"),
    ]
    return tuple(sorted(days))


def public_holidays(year: int) -> dict[date, tuple[str, str]]:
    """The public holidays of ``year``: date -> (Polish name, English name), in date order.

    Raises:
        MalformedError: a year outside the supported range.
    """
    return {day: (polish, english) for day, polish, english in _holidays(year)}


def holiday_name(day: date) -> tuple[str, str] | None:
    """The (Polish, English) name of the holiday on ``day``, or ``None``.

    Raises:
        MalformedError: a year outside the supported range.
    """
    for when, polish, english in _holidays(day.year):
        if when == day:
            return polish, english
    return None


def is_public_holiday(day: date) -> bool:
    """Whether ``day`` is a public holiday (Sundays as such are not listed; see below).

    Raises:
        MalformedError: a year outside the supported range.
    """
    return holiday_name(day) is not None


def is_working_day(day: date) -> bool:
    """Monday to Friday and not a public holiday: a day on which a KPA term may end.

    Raises:
        MalformedError: a year outside the supported range.
    """
    return day.weekday() < 5 and not is_public_holiday(day)
