"""The office calendar: its time zone, dates, years, deadlines and the KPA day-term rules.

An office lives in its own time zone (Europe/Warsaw by default: CET, CEST in summer), set once
when the office is set up (``ledger eod init --zone``) and signed into the office record
(:mod:`ledger.eod.office_record`), so an auditor's verifier computes with the same zone. Every
calendar rule goes through :class:`OfficeCalendar`:

* register numbers and case signs restart on **1 January local time** (:meth:`year_of`): an
  item registered at 00:30 on 1 January in Warsaw (23:30 UTC on 31 December) belongs to the new
  year;
* a **deadline date** (termin) ends at local midnight: ``2025-03-20`` is met by anything up to
  and excluding 2025-03-21 00:00 local (:meth:`deadline_end`);
* **retention** (okres przechowywania) of category B*n* counts n full years from 1 January of
  the year after the case closed, local (:meth:`destruction_allowed_from`);
* times shown to people are local, with their UTC offset (:meth:`format_time`).

Times are POSIX seconds (what the ledger's cosignatures carry); dates are :class:`datetime.date`
values in the office's zone. The terms of the code of administrative procedure (KPA) are
counted on dates, with the Polish public holidays of :mod:`ledger.eod.holidays`:

* art. 57 § 1: a term in days that starts with an event does not count the day of the event;
  it ends with the last of its days (:func:`day_term_end`);
* art. 57 § 3: a term in months ends on the day of the last month that corresponds to the
  starting day, or on the last day of that month if it has no such day (:func:`month_term_end`);
* art. 57 § 4: a term whose end falls on a Saturday or a day free from work (a Sunday, a public
  holiday) ends on the next working day;
* art. 44 § 1 and § 4: a letter not collected is deemed delivered (doręczenie zastępcze) with
  the lapse of the 14th day after the first notice (:func:`deemed_delivery`); the collection
  period itself is not a term for a party's act, so it does not move to a working day. Terms
  that run from the delivery do, e.g. the 14 days to appeal of art. 129 § 2
  (:func:`appeal_deadline`).

Pure: no clock is read here; the caller passes every time in.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.eod.holidays import FIRST_YEAR, LAST_YEAR, is_working_day
from ledger.eod.model import Category
from ledger.errors import MalformedError

__all__ = [
    "APPEAL_DAYS",
    "DEEMED_DELIVERY_DAYS",
    "DEFAULT_ZONE",
    "OfficeCalendar",
    "appeal_deadline",
    "day_term_end",
    "deemed_delivery",
    "month_term_end",
    "next_working_day",
    "parse_date",
]

DEFAULT_ZONE: Final = "Europe/Warsaw"
#: KPA art. 44 § 1 pkt 1 and § 4: 14 days to collect a letter, then it is deemed delivered.
DEEMED_DELIVERY_DAYS: Final = 14
#: KPA art. 129 § 2: an appeal is brought within 14 days of the delivery of the decision.
APPEAL_DAYS: Final = 14
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ZONE_NAME: Final = re.compile(r"[A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*")
#: The calendar shows times up to 9999-12-29 (so that any zone's local date stays in year
#: 9999); a later time is printed as a number and refused by every calendar rule.
_MAX_SHOWN: Final = 253402300799 - 2 * 86400


def parse_date(text: str, *, what: str = "date") -> date:
    """A calendar date written ``YYYY-MM-DD`` (``2024-02-30`` is refused), in the years the
    holiday calendar covers.

    Raises:
        MalformedError: another shape, no such day, or a year outside 1990-9998.
    """
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise MalformedError(f"{what} {text!r} is not a date YYYY-MM-DD")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise MalformedError(f"{what} {text} is not a day of the calendar") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise MalformedError(f"{what} {text} is outside the years {FIRST_YEAR}-{LAST_YEAR}")
    return day


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not _ZONE_NAME.fullmatch(name) or ".." in name:
        raise MalformedError(f"time zone {name!r} is not an IANA zone name (e.g. Europe/Warsaw)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise MalformedError(
            f"unknown time zone {name!r} (an IANA name, e.g. Europe/Warsaw)"
        ) from None


@dataclass(frozen=True)
class OfficeCalendar:
    """The calendar of an office in the IANA time zone ``zone_name``.

    Raises (on construction):
        MalformedError: an unknown zone.
    """

    zone_name: str = DEFAULT_ZONE
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", _load_zone(self.zone_name))

    # ------------------------------------------------------------------ times and dates

    def local(self, ts: int) -> datetime:
        """The local date and time of POSIX second ``ts``.

        Raises:
            MalformedError: a time outside what a calendar can show (before 1970 or after 9999).
        """
        if not 0 <= ts <= _MAX_SHOWN:
            raise MalformedError(f"time {ts} is outside the calendar (1970 to 9999-12-29)")
        return datetime.fromtimestamp(ts, tz=UTC).astimezone(self._zone)

    def date_of(self, ts: int) -> date:
        """The local date of ``ts`` (as :meth:`local`)."""
        return self.local(ts).date()

    def year_of(self, ts: int) -> int:
        """The local year of ``ts``: the year of register numbers and case signs."""
        return self.local(ts).year

    def start_of_day(self, day: date) -> int:
        """The first second of ``day``, local (midnight; in a zone whose clocks jump at
        midnight, the earlier reading, as :mod:`zoneinfo` resolves ``fold=0``)."""
        return int(datetime(day.year, day.month, day.day, tzinfo=self._zone).timestamp())

    def deadline_end(self, day: date) -> int:
        """When a deadline date ends: the following local midnight. A step at a time ``t`` is
        within the deadline exactly when ``t < deadline_end(day)``."""
        return self.start_of_day(day + timedelta(days=1))

    def start_of_year(self, year: int) -> int:
        """1 January of ``year``, 00:00 local."""
        return self.start_of_day(date(year, 1, 1))

    def format_time(self, ts: int) -> str:
        """``2025-01-01 00:30:00 +01:00``: local time with its UTC offset (never ambiguous)."""
        try:
            moment = self.local(ts)
        except MalformedError:
            return f"{ts} s after the epoch"
        offset = moment.strftime("%z")
        return moment.strftime("%Y-%m-%d %H:%M:%S ") + offset[:3] + ":" + offset[3:]

    def parse_time(self, text: str, *, what: str = "time") -> int:
        """An ISO 8601 time; one without a UTC offset is read as office local time.

        Raises:
            MalformedError: not an ISO 8601 time.
        """
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise MalformedError(f"{what} {text!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._zone)
        return int(moment.timestamp())

    # -------------------------------------------------------------------- retention

    def retention_start(self, closed: int) -> date:
        """1 January of the local year after the case closed (at ``closed``)."""
        return date(self.year_of(closed) + 1, 1, 1)

    def destruction_allowed_from(self, category: Category, closed: int) -> int | None:
        """The first moment destruction (brakowanie) is lawful, or ``None`` for category A.

        ``B<n>`` and ``BE<n>``: n full years from 1 January of the year after closing, so from
        1 January of year + 1 + n, 00:00 local. ``Bc``: once its use has ended, which the
        closing marks. ``closed`` must be a proven time (the latest the closing can have
        happened), never a claimed one: see :mod:`ledger.eod.rules`.
        """
        if category.years is None:
            return None
        if category.text == "Bc":
            return closed
        year = self.year_of(closed) + 1 + category.years
        if year > 9999:
            raise MalformedError(
                f"the retention period of category {category.text} ends after 9999"
            )
        return self.start_of_year(year)


# ------------------------------------------------------------------------ the KPA terms


def next_working_day(day: date) -> date:
    """``day`` itself if it is a working day, else the next one (KPA art. 57 § 4).

    Raises:
        MalformedError: a year outside the holiday calendar.
    """
    while not is_working_day(day):
        day += timedelta(days=1)
    return day


def day_term_end(start: date, days: int) -> date:
    """The last day of a term of ``days`` days that starts with an event on ``start``
    (art. 57 § 1: the day of the event is not counted; § 4: a Saturday or a day free from work
    moves the end to the next working day).

    Raises:
        MalformedError: ``days`` < 1, or a year outside the holiday calendar.
    """
    if days < 1:
        raise MalformedError("a term counts at least one day")
    return next_working_day(start + timedelta(days=days))


def month_term_end(start: date, months: int) -> date:
    """The last day of a term of ``months`` months from ``start`` (art. 57 § 3 and § 4), e.g.
    the month of art. 35 § 3 to settle a matter.

    Raises:
        MalformedError: ``months`` < 1, or a year outside the holiday calendar.
    """
    if months < 1:
        raise MalformedError("a term counts at least one month")
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, _stdlib_calendar.monthrange(year, month)[1])
    return next_working_day(date(year, month, day))


def deemed_delivery(notice: date) -> date:
    """The day a letter first noticed (awizo) on ``notice`` is deemed delivered: with the lapse
    of the 14th day after it (art. 44 § 4), not moved to a working day."""
    return notice + timedelta(days=DEEMED_DELIVERY_DAYS)


def appeal_deadline(delivered: date) -> date:
    """The last day to appeal a decision delivered on ``delivered`` (art. 129 § 2 with
    art. 57 § 1 and § 4).

    Raises:
        MalformedError: a year outside the holiday calendar.
    """
    return day_term_end(delivered, APPEAL_DAYS)
