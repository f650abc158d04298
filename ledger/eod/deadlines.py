"""Deadlines watched (monitorowanie terminów): each open matter's term, overdue and due soon.

A matter's deadline is, in this order:

1. the one set at assignment (dekretacja, ``assign --deadline``; a lower level's own, earlier
   one if it set one), recorded in the trail: ``source = "assigned"``;
2. else the statutory term of the code of administrative procedure (KPA art. 35), counted from
   the day the matter started (its first event, in the office's calendar) by the office's
   :class:`Terms`: ``immediate`` (art. 35 § 2, "niezwłocznie": watched as
   :data:`IMMEDIATE_DAYS` days), ``1m`` (§ 3: a month), ``2m`` (§ 3: two months, complicated
   matters), ``<n>d`` (a term in days of another act), or ``none`` (no term is watched, e.g.
   cost documents, whose payment terms are the contract's): ``source = "statutory"``.

Periods that do not count (art. 35 § 5: terms for specific acts, suspension, delays by the
party or for reasons the office is not responsible for) are recorded by the office with
``ledger eod pause`` (kept in the office store, listed here; they are the office's statement,
not a proven fact) and push the statutory end back by their days. The end of a term that falls
on a Saturday or a day free from work moves to the next working day (art. 57 § 4), and a
deadline date ends at local midnight (:meth:`OfficeCalendar.deadline_end`).

A matter is watched while it is open: registered, assigned or in progress (a decision signed,
dispatched or delivered, or a closed case, has met its term). It is ``overdue`` once its
deadline has ended, ``due-soon`` when it ends within ``soon`` days.
"""

from __future__ import annotations

import calendar as _stdlib_calendar
import re
import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from ledger.eod.calendar import OfficeCalendar, next_working_day, parse_date
from ledger.eod.casesign import parse_case_sign
from ledger.eod.store import OfficeStore
from ledger.errors import MalformedError

__all__ = [
    "DEFAULT_TERMS",
    "IMMEDIATE_DAYS",
    "OPEN_STAGES",
    "Deadline",
    "Terms",
    "add_pause",
    "office_terms",
    "statutory_end",
    "watch",
]

IMMEDIATE_DAYS: Final = 7
OPEN_STAGES: Final = ("registered", "assigned", "in-progress")
_TERM: Final = re.compile(r"immediate|none|([12])m|([1-9][0-9]{0,2})d")
#: The office's terms: a default, and per JRWA class or document kind (``[class]``,
#: ``[kind]``); a class wins over a kind.
DEFAULT_TERMS: Final = """\
# Statutory terms watched per matter (KPA art. 35): immediate, 1m, 2m, <n>d or none.
default = "1m"

[kind]
cost = "none"     # cost documents: the contract's payment terms, not KPA

[class]
"""


def _check_term(text: object, where: str) -> str:
    if not isinstance(text, str) or _TERM.fullmatch(text) is None:
        raise MalformedError(f"{where}: a term is immediate, none, 1m, 2m or <n>d, not {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class Terms:
    """The office's statutory terms (:data:`DEFAULT_TERMS` is the shape)."""

    default: str = "1m"
    kinds: tuple[tuple[str, str], ...] = ()
    classes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_toml(cls, text: str) -> Terms:
        """Parse the office's terms.

        Raises:
            MalformedError: not TOML, or a term of another shape.
        """
        try:
            data: dict[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MalformedError(f"terms: {exc}") from None
        default = _check_term(data.get("default", "1m"), "terms default")
        parts = []
        for table in ("kind", "class"):
            raw = data.get(table, {})
            if not isinstance(raw, dict):
                raise MalformedError(f"terms: [{table}] must be a table")
            parts.append(tuple(sorted((k, _check_term(v, f"terms {table} {k}"))
                                      for k, v in raw.items())))
        return cls(default=default, kinds=parts[0], classes=parts[1])

    def term(self, *, kind: str | None, jrwa_class: str | None) -> str:
        classes, kinds = dict(self.classes), dict(self.kinds)
        if jrwa_class is not None and jrwa_class in classes:
            return classes[jrwa_class]
        if kind is not None and kind in kinds:
            return kinds[kind]
        return self.default


@dataclass(frozen=True, kw_only=True)
class Deadline:
    """One watched matter."""

    register: str | None
    case: str | None
    unit: str | None
    officer: str | None
    stage: str
    started: date
    due: date
    source: str  # "assigned" or "statutory"
    term: str | None
    paused_days: int
    state: str  # "overdue", "due-soon" or "ok"
    days_left: int

    def to_json(self) -> dict[str, Any]:
        return {
            "register": self.register,
            "case": self.case,
            "unit": self.unit,
            "officer": self.officer,
            "stage": self.stage,
            "started": self.started.isoformat(),
            "due": self.due.isoformat(),
            "source": self.source,
            "term": self.term,
            "paused_days": self.paused_days,
            "state": self.state,
            "days_left": self.days_left,
        }


def _add_months(start: date, months: int) -> date:
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, _stdlib_calendar.monthrange(year, month)[1]))


def _paused(pauses: list[tuple[date, date]], start: date) -> int:
    days: set[date] = set()
    for first, last in pauses:
        day = max(first, start + timedelta(days=1))
        while day <= last:
            days.add(day)
            day += timedelta(days=1)
    return len(days)


def statutory_end(start: date, term: str, paused: int) -> date | None:
    """The last day of the term ``term`` from ``start``, pushed back by ``paused`` days that do
    not count and moved to a working day (art. 57 § 1, § 3, § 4); ``None`` for ``none``."""
    match = _TERM.fullmatch(term)
    if match is None or term == "none":
        return None
    if term == "immediate":
        raw = start + timedelta(days=IMMEDIATE_DAYS)
    elif match.group(1) is not None:
        raw = _add_months(start, int(match.group(1)))
    else:
        raw = start + timedelta(days=int(match.group(2)))
    return next_working_day(raw + timedelta(days=paused))


def add_pause(store: OfficeStore, chain: str, *, start: str, until: str, reason: str) -> None:
    """Record a period that does not count towards the matter's term (art. 35 § 5).

    Raises:
        MalformedError: a bad date, ``until`` before ``start``, or no reason.
        StorageError: a period starting that day is already recorded.
    """
    first, last = parse_date(start, what="--from"), parse_date(until, what="--until")
    if last < first:
        raise MalformedError("a period that does not count ends no earlier than it starts")
    if not reason.strip():
        raise MalformedError("say why the period does not count (--reason)")
    with store.transaction():
        store.execute(
            "INSERT INTO pauses (chain, start, until, reason) VALUES (?, ?, ?, ?)",
            chain,
            first.isoformat(),
            last.isoformat(),
            reason.strip(),
        )


def office_terms(store: OfficeStore) -> Terms:
    """The office's terms (meta ``terms``; :data:`DEFAULT_TERMS` until it sets its own).

    Raises:
        MalformedError: the stored terms do not parse.
    """
    rows = store.query("SELECT value FROM meta WHERE key = 'terms'")
    return Terms.from_toml(str(rows[0][0]) if rows else DEFAULT_TERMS)


def watch(
    store: OfficeStore,
    calendar: OfficeCalendar,
    terms: Terms,
    *,
    now: int,
    soon: int = 7,
    unit: str | None = None,
    officer: str | None = None,
    include_ok: bool = False,
) -> list[Deadline]:
    """Every open matter's deadline (overdue first, then by due date), optionally of one unit
    or officer; only overdue and due-soon ones unless ``include_ok``.

    Raises:
        StorageError: the store cannot be read.
    """
    sql = (
        "SELECT chain, register, case_sign, unit, officer, status, started, deadline, kind, "
        "item_kind FROM matters WHERE status IN ('registered', 'assigned', 'in-progress')"
    )
    args: list[object] = []
    if unit is not None:
        sql += " AND unit = ?"
        args.append(unit)
    if officer is not None:
        sql += " AND (officer = ? OR (officer IS NULL AND assignee = ?))"
        args += [officer, officer]
    pauses: dict[str, list[tuple[date, date]]] = {}
    for chain, first, last in store.query("SELECT chain, start, until FROM pauses"):
        pauses.setdefault(str(chain), []).append((date.fromisoformat(first),
                                                  date.fromisoformat(last)))
    today = calendar.date_of(now)
    found: list[Deadline] = []
    for chain, register, case, unit_, officer_, stage, started, assigned, kind, item in (
        store.query(sql, *args)
    ):
        start = date.fromisoformat(started)
        paused = _paused(pauses.get(str(chain), []), start)
        term: str | None = None
        if assigned is not None:
            due, source, paused = date.fromisoformat(assigned), "assigned", 0
        else:
            jrwa_class = parse_case_sign(case).jrwa_class if case else None
            term = terms.term(kind=kind or ("cost" if item == "invoice" else None),
                              jrwa_class=jrwa_class)
            end = statutory_end(start, term, paused)
            if end is None:
                continue
            due, source = end, "statutory"
        if now >= calendar.deadline_end(due):
            state = "overdue"
        elif (due - today).days <= soon:
            state = "due-soon"
        elif include_ok:
            state = "ok"
        else:
            continue
        found.append(
            Deadline(
                register=register,
                case=case,
                unit=unit_,
                officer=officer_,
                stage=str(stage),
                started=start,
                due=due,
                source=source,
                term=term,
                paused_days=paused,
                state=state,
                days_left=(due - today).days,
            )
        )
    rank = {"overdue": 0, "due-soon": 1, "ok": 2}
    found.sort(key=lambda d: (rank[d.state], d.due, d.case or d.register or ""))
    return found
