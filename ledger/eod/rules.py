"""The workflow rules: which event may follow which, recorded by whom. Pure: no I/O, no clock.

One function, :func:`apply`, takes the state of a chain (folded from its earlier events), the
next signed event and its actor's position certificate, and returns the new state or raises
:class:`WorkflowError` naming the rule that was broken. The office runs it **before** signing
and anchoring anything (an out-of-order or unauthorised step never reaches the ledger); the
auditor's offline verifier runs the very same function over a trail bundle, so a trail that
breaks a rule fails verification with the same reason.

A chain is the course of one matter: it starts with the registration of an item (rejestracja
przesyłki) or directly with the opening of a case (założenie sprawy), and from the opening on
every event carries the case sign. Rules, by event (roles in brackets):

General: seq and prev continue the chain; the event's office and position are those of the
certificate; the certificate was issued no later than the event; the position holds the role;
times never go backwards; the case field is null before the opening and the case sign after it;
nothing follows destruction; a closed case takes only receipts, deliveries and archiving; an
archived case only destruction.

- registered [registry]: the first event, or a further item registered into an open case;
  ``data``: direction (incoming/outgoing/internal), register (its register number), channel,
  kind ("letter" or "invoice"), attachments (count), sender_ref (the letter's own reference,
  optional); the document digest is required.
- assigned, dekretacja [assign]: to (a position), method and deadline (optional). The first
  assignment fixes the original assigner. A later one is made by the original assigner (who may
  change method and deadline) or by the current assignee passing the matter down, who may
  **not** change the method or the deadline (null = unchanged).
- case-opened, założenie sprawy [officer]: only once; by the current assignee if assigned;
  ``data``: category (A, Bc, Bn, BEn), cost (true for a cost document; required when the chain
  started with an invoice). The sign itself is in the record's case field.
- attached [officer]: an open case; a document digest; ``data.kind`` (contract, order, ...).
- submitted / accepted / rejected / signed (projekt, akceptacja, podpis) [officer / accept /
  accept / sign]: one draft at a time; ``submitted.data.levels`` acceptance levels (1-9); each
  ``accepted.data.level`` is the next level, by a position that is neither the submitter nor an
  earlier acceptor; a rejection returns the draft; ``signed`` needs every level accepted, and
  its ``data.draft`` names the accepted draft's digest.
- cost-document path (case opened with cost = true), strictly in this order, each by a
  **different** position, each on the invoice's digest: substantive-check (kontrola
  merytoryczna) [substantive], which needs at least one attachment (the contract or order);
  formal-check (kontrola formalna i rachunkowa) [accounts]; account-coding (dekretacja
  księgowa, ``data.accounts``) [accounts]; countersigned (kontrasygnata) [chief-accountant];
  approved-for-payment (zatwierdzenie do wypłaty) [approve-payment].
- dispatched, wysyłka [registry]: of a signed document; ``data``: channel, register.
- receipt-recorded [registry]: ``data.kind`` UPP (needs a registered item), UPO or UPD (need a
  dispatch); the document is the receipt XML's digest.
- delivered [registry]: after a dispatch; ``data.deemed``; a deemed delivery (doręczenie
  zastępcze) names ``data.notice`` (time of the first notice, not before the dispatch) and may
  be recorded only 14 days after it.
- closed, zakończenie sprawy [officer]: no draft pending; a cost case only after approval for
  payment.
- archived [archivist]: a closed case.
- destroyed, brakowanie [archivist]: an archived case, never category A, only from 1 January
  of the year after the retention period (n full years counted from 1 January of the year after
  closing), with ``data.consent`` (the state archive director's consent reference).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ledger.eod.casesign import parse_case_sign
from ledger.eod.events import SignedEvent, parse_hex_digest
from ledger.eod.model import (
    DIRECTIONS,
    EVENT_TERMS,
    RECEIPT_KINDS,
    ROLE_TERMS,
    Category,
    EventType,
    Role,
    parse_category,
)
from ledger.eod.pki import PositionCertificate
from ledger.errors import LedgerError, MalformedError

__all__ = [
    "COST_PATH",
    "DEEMED_DELIVERY_SECONDS",
    "REQUIRED_ROLE",
    "CaseState",
    "WorkflowError",
    "apply",
    "destruction_allowed_from",
    "fold",
    "term",
]

DEEMED_DELIVERY_SECONDS: Final = 14 * 86400
_MAX_LEVELS: Final = 9
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class WorkflowError(LedgerError):
    """An event is out of order, unauthorised, or breaks a workflow rule."""

    code = "workflow_refused"


REQUIRED_ROLE: Final[dict[EventType, Role]] = {
    EventType.REGISTERED: Role.REGISTRY,
    EventType.ASSIGNED: Role.ASSIGN,
    EventType.CASE_OPENED: Role.OFFICER,
    EventType.ATTACHED: Role.OFFICER,
    EventType.SUBMITTED: Role.OFFICER,
    EventType.ACCEPTED: Role.ACCEPT,
    EventType.REJECTED: Role.ACCEPT,
    EventType.SIGNED: Role.SIGN,
    EventType.SUBSTANTIVE_CHECK: Role.SUBSTANTIVE,
    EventType.FORMAL_CHECK: Role.ACCOUNTS,
    EventType.ACCOUNT_CODING: Role.ACCOUNTS,
    EventType.COUNTERSIGNED: Role.CHIEF_ACCOUNTANT,
    EventType.APPROVED_FOR_PAYMENT: Role.APPROVE_PAYMENT,
    EventType.DISPATCHED: Role.REGISTRY,
    EventType.RECEIPT_RECORDED: Role.REGISTRY,
    EventType.DELIVERED: Role.REGISTRY,
    EventType.CLOSED: Role.OFFICER,
    EventType.ARCHIVED: Role.ARCHIVIST,
    EventType.DESTROYED: Role.ARCHIVIST,
}

#: The acceptance path of a cost document in a shared-services centre, in its required order.
COST_PATH: Final = (
    EventType.SUBSTANTIVE_CHECK,
    EventType.FORMAL_CHECK,
    EventType.ACCOUNT_CODING,
    EventType.COUNTERSIGNED,
    EventType.APPROVED_FOR_PAYMENT,
)


def term(kind: EventType) -> str:
    """``"<English> (<Polish>)"``, as used in messages."""
    english, polish = EVENT_TERMS[kind]
    return f"{english} ({polish})"


@dataclass(frozen=True, kw_only=True)
class CaseState:
    """What the rules need to know about a chain after its events so far."""

    seq: int = 0
    head: bytes | None = None
    last_time: int = 0
    case: str | None = None
    category: Category | None = None
    cost: bool = False
    invoice: bytes | None = None
    items: tuple[str, ...] = ()
    assigner: str | None = None
    assignee: str | None = None
    method: str | None = None
    deadline: str | None = None
    attachments: int = 0
    draft: bytes | None = None
    submitter: str | None = None
    levels: int = 0
    accepted: int = 0
    acceptors: tuple[str, ...] = ()
    signed: tuple[bytes, ...] = ()
    cost_done: tuple[tuple[EventType, str], ...] = ()
    dispatched_at: int | None = None
    delivered: bool = False
    closed_at: int | None = None
    archived: bool = False
    destroyed: bool = False


# --------------------------------------------------------------------------- data fields


def _str(data: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 500:
        raise WorkflowError(f"data field {key!r} must be a non-empty string (max 500)")
    return value


def _req(data: Mapping[str, Any], key: str) -> str:
    value = _str(data, key)
    assert value is not None
    return value


def _int(data: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WorkflowError(f"data field {key!r} must be an integer in [{low}, {high}]")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise WorkflowError(f"data field {key!r} must be true or false")
    return value


def _only(data: Mapping[str, Any], *allowed: str) -> None:
    unknown = set(data) - set(allowed)
    if unknown:
        raise WorkflowError(f"unknown data fields: {', '.join(sorted(unknown))}")


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def destruction_allowed_from(category: Category, closed_at: int) -> int | None:
    """The first moment destruction (brakowanie) is lawful, or ``None`` for category A.

    The retention period of ``B<n>`` runs n full years from 1 January of the year after the
    case was closed; destruction is allowed from 1 January after it ends. ``Bc`` needs no
    waiting beyond the closing (use has ended) but still the consent.
    """
    if category.years is None:
        return None
    if category.years == 0 and category.text == "Bc":
        return closed_at
    year = datetime.fromtimestamp(closed_at, tz=UTC).year
    return int(datetime(year + 1 + category.years, 1, 1, tzinfo=UTC).timestamp())


# ------------------------------------------------------------------------------- apply


def apply(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    """The state after ``event``, or :class:`WorkflowError` if a rule refuses it.

    The signature is not checked here (see :meth:`SignedEvent.verify`); everything else about
    the event's place in its chain is.

    Raises:
        WorkflowError: a broken rule, with a one-line reason naming it.
    """
    record = event.record
    if state.destroyed:
        raise WorkflowError("the case was destroyed (brakowanie); nothing may follow")
    if record.seq != state.seq:
        raise WorkflowError(f"event number {record.seq} where {state.seq} was expected")
    if record.prev != state.head:
        raise WorkflowError("the previous-event hash does not match the chain")
    if record.office != cert.office or record.position != cert.position:
        raise WorkflowError("the event's office or position differs from its certificate")
    if cert.issued > record.time:
        raise WorkflowError(f"position {cert.position!r} was certified after the event")
    role = REQUIRED_ROLE[record.type]
    if not cert.allows(role):
        _, polish = ROLE_TERMS[role]
        raise WorkflowError(
            f"position {cert.position!r} ({cert.title}) may not record {term(record.type)}: "
            f"it needs the role {role.value!r} ({polish})"
        )
    if record.time < state.last_time:
        raise WorkflowError("the event is dated before the previous event")
    if record.type is EventType.CASE_OPENED:
        if state.case is not None:
            raise WorkflowError(f"the case {state.case} is already open")
    elif record.case != state.case:
        expected = state.case or "none (the case is not open yet)"
        raise WorkflowError(f"the event names case {record.case!r}; expected {expected}")
    if state.archived and record.type is not EventType.DESTROYED:
        raise WorkflowError(f"the case is archived; {term(record.type)} is no longer possible")
    late_ok = (
        EventType.RECEIPT_RECORDED,
        EventType.DELIVERED,
        EventType.ARCHIVED,
        EventType.DESTROYED,
    )
    if state.closed_at is not None and record.type not in late_ok:
        raise WorkflowError(f"the case is closed; {term(record.type)} is no longer possible")
    if record.seq == 0 and record.type not in (EventType.REGISTERED, EventType.CASE_OPENED):
        raise WorkflowError("a chain starts with a registration or the opening of a case")
    try:
        new = _RULES[record.type](state, event, cert)
    except MalformedError as exc:
        raise WorkflowError(exc.diagnostics()) from None
    return dataclasses.replace(new, seq=state.seq + 1, head=event.hash, last_time=record.time)


def fold(events: list[tuple[SignedEvent, PositionCertificate]]) -> CaseState:
    """The state after a whole chain (each event with its actor's certificate).

    Raises:
        WorkflowError: as :func:`apply`, prefixed with the event number.
    """
    state = CaseState()
    for event, cert in events:
        try:
            state = apply(state, event, cert)
        except WorkflowError as exc:
            raise WorkflowError(f"event {event.record.seq}: {exc.diagnostics()}") from None
    return state


# ---------------------------------------------------------------------- one rule per type

_Rule = Callable[[CaseState, SignedEvent, PositionCertificate], CaseState]


def _need_document(event: SignedEvent) -> bytes:
    if event.record.document is None:
        raise WorkflowError(f"{term(event.record.type)} needs the document's digest")
    return event.record.document


def _need_open_case(state: CaseState, event: SignedEvent) -> None:
    if state.case is None:
        raise WorkflowError(f"{term(event.record.type)} needs an open case (założenie sprawy)")


def _registered(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    data = event.record.data
    _only(data, "direction", "register", "channel", "kind", "attachments", "sender_ref")
    document = _need_document(event)
    direction = _req(data, "direction")
    if direction not in DIRECTIONS:
        raise WorkflowError(f"direction must be one of {', '.join(DIRECTIONS)}")
    register = _req(data, "register")
    _req(data, "channel")
    kind = _req(data, "kind")
    if kind not in ("letter", "invoice"):
        raise WorkflowError("kind must be 'letter' or 'invoice'")
    _int(data, "attachments", 0, 10_000)
    _str(data, "sender_ref", optional=True)
    if register in state.items:
        raise WorkflowError(f"item {register} is already registered in this chain")
    if state.seq > 0 and state.case is None:
        raise WorkflowError("a further item can be registered only into an open case")
    invoice = state.invoice
    if kind == "invoice":
        if invoice is not None:
            raise WorkflowError("a cost case holds one invoice")
        invoice = document
    return dataclasses.replace(state, items=(*state.items, register), invoice=invoice)


def _assigned(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    data = event.record.data
    _only(data, "to", "method", "deadline")
    to = _req(data, "to")
    method = _str(data, "method", optional=True)
    deadline = _str(data, "deadline", optional=True)
    if deadline is not None and not _DATE.fullmatch(deadline):
        raise WorkflowError("deadline must be a date YYYY-MM-DD")
    actor = event.record.position
    if state.assigner is None:
        return dataclasses.replace(
            state, assigner=actor, assignee=to, method=method, deadline=deadline
        )
    if actor == state.assigner:
        return dataclasses.replace(
            state,
            assignee=to,
            method=method if method is not None else state.method,
            deadline=deadline if deadline is not None else state.deadline,
        )
    if actor != state.assignee:
        raise WorkflowError(
            f"re-assignment (dekretacja) by {actor!r}, who is neither the original assigner "
            f"{state.assigner!r} nor the current assignee {state.assignee!r}"
        )
    if (method is not None and method != state.method) or (
        deadline is not None and deadline != state.deadline
    ):
        raise WorkflowError(
            f"only the original assigner {state.assigner!r} may change the method or the "
            "deadline of a dekretacja"
        )
    return dataclasses.replace(state, assignee=to)


def _case_opened(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    data = event.record.data
    _only(data, "category", "cost")
    if event.record.case is None:
        raise WorkflowError("opening a case needs its case sign (znak sprawy)")
    sign = parse_case_sign(event.record.case)
    if sign.original != event.record.case:
        raise WorkflowError("the case sign must be written without surrounding spaces")
    category = parse_category(_req(data, "category"))
    cost = _bool(data, "cost")
    if state.invoice is not None and not cost:
        raise WorkflowError("an invoice's case must be opened as a cost case (cost = true)")
    if state.assignee is not None and event.record.position != state.assignee:
        raise WorkflowError(
            f"the case is opened by the assignee {state.assignee!r} of the dekretacja, "
            f"not by {event.record.position!r}"
        )
    return dataclasses.replace(state, case=sign.original, category=category, cost=cost)


def _attached(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data, "kind")
    _req(event.record.data, "kind")
    _need_document(event)
    return dataclasses.replace(state, attachments=state.attachments + 1)


def _submitted(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data, "levels")
    levels = _int(event.record.data, "levels", 1, _MAX_LEVELS)
    if state.draft is not None:
        raise WorkflowError("a draft is already awaiting acceptance (akceptacja)")
    return dataclasses.replace(
        state,
        draft=_need_document(event),
        submitter=event.record.position,
        levels=levels,
        accepted=0,
        acceptors=(),
    )


def _pending_draft(state: CaseState, event: SignedEvent) -> bytes:
    if state.draft is None:
        raise WorkflowError(f"{term(event.record.type)} needs a draft submitted for acceptance")
    if event.record.document is not None and event.record.document != state.draft:
        raise WorkflowError("the document is not the draft submitted for acceptance")
    return state.draft


def _accepted(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _pending_draft(state, event)
    _only(event.record.data, "level")
    level = _int(event.record.data, "level", 1, _MAX_LEVELS)
    if level != state.accepted + 1 or level > state.levels:
        raise WorkflowError(
            f"acceptance at level {level}: the draft is accepted at {state.accepted} of "
            f"{state.levels} levels"
        )
    actor = event.record.position
    if actor == state.submitter or actor in state.acceptors:
        raise WorkflowError(f"position {actor!r} already submitted or accepted this draft")
    return dataclasses.replace(state, accepted=level, acceptors=(*state.acceptors, actor))


def _rejected(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _pending_draft(state, event)
    _only(event.record.data, "reason")
    _req(event.record.data, "reason")
    return dataclasses.replace(
        state, draft=None, submitter=None, levels=0, accepted=0, acceptors=()
    )


def _signed(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    if state.draft is None:
        raise WorkflowError("signature (podpis) before acceptance: no draft was accepted")
    _only(event.record.data, "draft")
    draft = parse_hex_digest(event.record.data.get("draft"), what="data field 'draft'")
    if draft != state.draft:
        raise WorkflowError("the signed draft is not the draft submitted for acceptance")
    if state.accepted < state.levels:
        raise WorkflowError(
            f"signature (podpis) before acceptance: the draft is accepted at {state.accepted} "
            f"of {state.levels} levels"
        )
    return dataclasses.replace(
        state,
        signed=(*state.signed, _need_document(event)),
        draft=None,
        submitter=None,
        levels=0,
        accepted=0,
        acceptors=(),
    )


def _cost_step(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    kind = event.record.type
    _need_open_case(state, event)
    if not state.cost:
        raise WorkflowError(f"{term(kind)} applies to cost documents only")
    step = COST_PATH.index(kind)
    done = len(state.cost_done)
    if done > step:
        raise WorkflowError(f"{term(kind)} was already recorded")
    if done < step:
        raise WorkflowError(
            f"{term(kind)} must come after {term(COST_PATH[step - 1])}, which is not recorded yet"
        )
    document = _need_document(event)
    if state.invoice is not None and document != state.invoice:
        raise WorkflowError(f"{term(kind)} must concern the registered invoice")
    if kind is EventType.SUBSTANTIVE_CHECK and state.attachments == 0:
        raise WorkflowError(
            "a cost document needs its attachment (contract or order) before the substantive check"
        )
    if kind is EventType.ACCOUNT_CODING:
        _only(event.record.data, "accounts")
        _req(event.record.data, "accounts")
    else:
        _only(event.record.data, "note")
        _str(event.record.data, "note", optional=True)
    actor = event.record.position
    for previous, who in state.cost_done:
        if who == actor:
            raise WorkflowError(
                f"position {actor!r} already did the {term(previous)}; {term(kind)} must be done "
                "by a different position"
            )
    invoice = state.invoice if state.invoice is not None else document
    return dataclasses.replace(state, cost_done=(*state.cost_done, (kind, actor)), invoice=invoice)


def _dispatched(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data, "channel", "register")
    _req(event.record.data, "channel")
    _req(event.record.data, "register")
    if _need_document(event) not in state.signed:
        raise WorkflowError("dispatch (wysyłka) of a document that was not signed (podpis)")
    return dataclasses.replace(state, dispatched_at=event.record.time)


def _receipt(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _only(event.record.data, "kind")
    kind = _req(event.record.data, "kind")
    _need_document(event)
    if kind not in RECEIPT_KINDS:
        raise WorkflowError(f"receipt kind must be one of {', '.join(RECEIPT_KINDS)}")
    if kind == "UPP" and not state.items:
        raise WorkflowError("a UPP confirms a registered item; none is registered")
    if kind != "UPP" and state.dispatched_at is None:
        raise WorkflowError(f"a {kind} confirms a dispatch (wysyłka); none is recorded")
    return state


def _delivered(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    data = event.record.data
    if state.dispatched_at is None:
        raise WorkflowError("delivery (doręczenie) before any dispatch (wysyłka)")
    if _bool(data, "deemed"):
        _only(data, "deemed", "notice")
        notice = _int(data, "notice", 0, (1 << 63) - 1)
        if notice < state.dispatched_at:
            raise WorkflowError("the first notice (awizo) predates the dispatch")
        if event.record.time < notice + DEEMED_DELIVERY_SECONDS:
            raise WorkflowError(
                "deemed delivery (doręczenie zastępcze) only after 14 days uncollected: "
                f"not before {_utc(notice + DEEMED_DELIVERY_SECONDS)}"
            )
    else:
        _only(data, "deemed")
    return dataclasses.replace(state, delivered=True)


def _closed(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data)
    if state.draft is not None:
        raise WorkflowError("a draft still awaits acceptance; close the case after it is decided")
    if state.cost and len(state.cost_done) < len(COST_PATH):
        raise WorkflowError(f"a cost case closes after the {term(EventType.APPROVED_FOR_PAYMENT)}")
    return dataclasses.replace(state, closed_at=event.record.time)


def _archived(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _only(event.record.data)
    if state.closed_at is None:
        raise WorkflowError("only a closed case (zakończenie sprawy) goes to the office archive")
    return dataclasses.replace(state, archived=True)


def _destroyed(state: CaseState, event: SignedEvent, cert: PositionCertificate) -> CaseState:
    _only(event.record.data, "consent")
    if not state.archived or state.closed_at is None or state.category is None:
        raise WorkflowError("destruction (brakowanie) only of a case in the office archive")
    allowed = destruction_allowed_from(state.category, state.closed_at)
    if allowed is None:
        raise WorkflowError(
            "category A records are kept forever and go to the state archive; "
            "they are never destroyed (brakowanie)"
        )
    if event.record.time < allowed:
        raise WorkflowError(
            f"category {state.category.text}: the retention period runs until "
            f"{_utc(allowed)}; destruction (brakowanie) is refused before"
        )
    _req(event.record.data, "consent")
    return dataclasses.replace(state, destroyed=True)


_RULES: Final[dict[EventType, _Rule]] = {
    EventType.REGISTERED: _registered,
    EventType.ASSIGNED: _assigned,
    EventType.CASE_OPENED: _case_opened,
    EventType.ATTACHED: _attached,
    EventType.SUBMITTED: _submitted,
    EventType.ACCEPTED: _accepted,
    EventType.REJECTED: _rejected,
    EventType.SIGNED: _signed,
    EventType.SUBSTANTIVE_CHECK: _cost_step,
    EventType.FORMAL_CHECK: _cost_step,
    EventType.ACCOUNT_CODING: _cost_step,
    EventType.COUNTERSIGNED: _cost_step,
    EventType.APPROVED_FOR_PAYMENT: _cost_step,
    EventType.DISPATCHED: _dispatched,
    EventType.RECEIPT_RECORDED: _receipt,
    EventType.DELIVERED: _delivered,
    EventType.CLOSED: _closed,
    EventType.ARCHIVED: _archived,
    EventType.DESTROYED: _destroyed,
}
