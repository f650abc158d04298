"""Registers (rejestr faktur, rejestr umów): views over the office's matters, with CSV export.

* The **invoice register** lists every registered invoice (``register --kind invoice``): its
  register number, the sender's reference (the invoice number), the channel, the day it came
  in, its case, unit, case officer and stage.
* The **contract register** lists every contract attached to a case (``attach --kind
  contract``): its digest, the day it was attached, its case, unit and the case's stage.

Both filter by unit, period (``since`` / ``until``, office-calendar dates, inclusive) and stage,
and read the query index (ledger.eod.index), never the documents: the office's own system
holds the invoice's amount and the contract's parties; the register proves which document
came in or was attached, when and where it went.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, Final

from ledger.eod.calendar import OfficeCalendar, parse_date
from ledger.eod.store import OfficeStore
from ledger.errors import MalformedError

__all__ = ["REGISTERS", "register_csv", "register_rows"]

REGISTERS: Final = {
    "invoices": ("register", "sender_ref", "channel", "date", "case", "unit", "officer", "stage"),
    "contracts": ("case", "unit", "date", "digest", "stage"),
}


def register_rows(
    store: OfficeStore,
    calendar: OfficeCalendar,
    which: str,
    *,
    unit: str | None = None,
    since: str | None = None,
    until: str | None = None,
    stage: str | None = None,
    limit: int = 100_000,
) -> list[dict[str, Any]]:
    """The rows of register ``which`` (:data:`REGISTERS`), in order of date.

    Raises:
        MalformedError: an unknown register or a bad date.
    """
    if which not in REGISTERS:
        raise MalformedError(f"no register {which!r}: {', '.join(REGISTERS)}")
    low = calendar.start_of_day(parse_date(since, what="--since")) if since else None
    high = (
        calendar.deadline_end(parse_date(until, what="--until")) if until else None
    )
    args: list[object] = []
    if which == "invoices":
        sql = (
            "SELECT m.register, m.sender_ref, m.channel, s.bound, m.case_sign, m.unit, "
            "m.officer, m.status FROM matters m JOIN milestones s "
            "ON s.chain = m.chain AND s.stage = 'registered' WHERE m.item_kind = 'invoice'"
        )
        time_column = "s.bound"
    else:
        sql = (
            "SELECT m.case_sign, m.unit, d.time, d.digest, m.status FROM documents d "
            "JOIN matters m ON m.chain = d.chain WHERE d.kind = 'contract'"
        )
        time_column = "d.time"
    if unit is not None:
        sql += " AND m.unit = ?"
        args.append(unit)
    if stage is not None:
        sql += " AND m.status = ?"
        args.append(stage)
    if low is not None:
        sql += f" AND {time_column} >= ?"
        args.append(low)
    if high is not None:
        sql += f" AND {time_column} < ?"
        args.append(high)
    sql += f" ORDER BY {time_column} LIMIT ?"
    args.append(limit)
    rows = []
    for row in store.query(sql, *args):
        values = list(row)
        at = 3 if which == "invoices" else 2
        values[at] = calendar.date_of(int(values[at])).isoformat()
        rows.append(dict(zip(REGISTERS[which], values, strict=True)))
    return rows


def register_csv(rows: Sequence[dict[str, Any]], which: str) -> str:
    """The rows as CSV (RFC 4180, a header line; empty fields for none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REGISTERS[which])
    for row in rows:
        writer.writerow(["" if row[k] is None else row[k] for k in REGISTERS[which]])
    return out.getvalue()
