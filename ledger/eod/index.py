"""The office's query index: one row per chain (``matters``), the proven date of each stage a
citizen's status lookup shows (``milestones``) and the documents by kind (``documents``).

Every row follows from the trail alone: :func:`index_event` is called in the same store
transaction that stores an event, with the chain's state after it, and ``ledger eod reindex``
rebuilds the whole index by folding every chain again. Queries, deadlines, registers, the
status lookup and the archive transfer read these rows, never a chain fold per case.

Stages (what a citizen sees, and nothing more): ``registered``, ``assigned`` (to a unit),
``in-progress`` (a case is open), ``decided`` (a decision signed, or the cost path's last step
done), ``dispatched``, ``delivered``, ``closed``, ``archived``, ``transferred`` (to the state
archive), ``destroyed``. Each milestone's date is its event's ledger time bound: the matter had
reached the stage no later than then.
"""

from __future__ import annotations

from typing import Final

from ledger.eod.events import SignedEvent
from ledger.eod.model import EventType
from ledger.eod.rules import CaseState
from ledger.eod.store import OfficeStore

__all__ = ["STAGES", "index_event", "stage_of"]

STAGES: Final = (
    "registered",
    "assigned",
    "in-progress",
    "decided",
    "dispatched",
    "delivered",
    "closed",
    "archived",
    "transferred",
    "destroyed",
)

_STAGE_OF_EVENT: Final[dict[EventType, str]] = {
    EventType.REGISTERED: "registered",
    EventType.ASSIGNED: "assigned",
    EventType.CASE_OPENED: "in-progress",
    EventType.SIGNED: "decided",
    EventType.APPROVED_FOR_PAYMENT: "decided",
    EventType.DISPATCHED: "dispatched",
    EventType.DELIVERED: "delivered",
    EventType.CLOSED: "closed",
    EventType.ARCHIVED: "archived",
    EventType.DESTROYED: "destroyed",
    EventType.TRANSFERRED: "transferred",
}


def stage_of(state: CaseState, previous: str | None, kind: EventType) -> str:
    """The matter's stage after an event of ``kind`` (a reopened case is in progress again;
    steps that reach no new stage keep the previous one)."""
    if kind is EventType.REOPENED:
        return "in-progress"
    reached = _STAGE_OF_EVENT.get(kind)
    if reached is None:
        return previous or "registered"
    if previous is not None and kind is EventType.ASSIGNED and previous != "registered":
        return previous  # a further dekretacja inside an open case
    return reached


def index_event(
    store: OfficeStore,
    chain: str,
    event: SignedEvent,
    state: CaseState,
    *,
    bound: int,
    started: str,
    unit_of: dict[str, str],
) -> None:
    """Write the index rows that follow from ``event`` (now stored) and the chain's ``state``
    after it; ``bound`` is the event's ledger time bound, ``started`` the office-calendar date
    the matter started (its first event), ``unit_of`` position -> unit (call inside the
    store transaction of the event).

    Raises:
        StorageError: the store refused a write.
    """
    record = event.record
    rows = store.query(
        "SELECT status, register, item_kind, sender_ref, channel, started FROM matters "
        "WHERE chain = ?",
        chain,
    )
    previous = rows[0] if rows else None
    status = stage_of(state, previous[0] if previous else None, record.type)
    register, item_kind, sender_ref, channel = (
        (previous[1], previous[2], previous[3], previous[4]) if previous else (None,) * 4
    )
    if record.type is EventType.REGISTERED and register is None:
        data = record.data
        register = data.get("register")
        item_kind = data.get("kind")
        sender_ref = data.get("sender_ref")
        channel = data.get("channel")
    assignee_unit = unit_of.get(state.assignee or "")
    unit = state.unit or assignee_unit
    deadline = state.sub_deadline or state.deadline
    store.execute(
        "INSERT INTO matters (chain, register, case_sign, item_kind, kind, unit, officer, "
        "assignee, status, started, deadline, category, closed_before, events, last_time, "
        "sender_ref, channel) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(chain) DO UPDATE SET register = excluded.register, "
        "case_sign = excluded.case_sign, item_kind = excluded.item_kind, kind = excluded.kind, "
        "unit = excluded.unit, officer = excluded.officer, assignee = excluded.assignee, "
        "status = excluded.status, deadline = excluded.deadline, category = excluded.category, "
        "closed_before = excluded.closed_before, events = excluded.events, "
        "last_time = excluded.last_time, sender_ref = excluded.sender_ref, "
        "channel = excluded.channel",
        chain,
        register,
        state.case,
        item_kind,
        state.kind,
        unit,
        state.officer,
        state.assignee,
        status,
        previous[5] if previous else started,
        deadline,
        None if state.category is None else state.category.text,
        state.closed_before,
        state.seq,
        record.time,
        sender_ref,
        channel,
    )
    if status != (previous[0] if previous else None) or record.type is EventType.REGISTERED:
        store.execute(
            "INSERT INTO milestones (chain, stage, bound) VALUES (?, ?, ?) "
            "ON CONFLICT(chain, stage) DO NOTHING",
            chain,
            status,
            bound,
        )
    if record.type is EventType.ATTACHED and record.document is not None:
        store.execute(
            "INSERT INTO documents (chain, seq, kind, digest, time) VALUES (?, ?, ?, ?, ?)",
            chain,
            record.seq,
            str(record.data.get("kind")),
            record.document.hex(),
            record.time,
        )
