"""The workflow rules: which event may follow which, recorded by whom. Pure: no I/O, no clock.

One function, :func:`apply`, takes the state of a chain (folded from its earlier events), the
next signed event and the :class:`Facts` it is judged by (its actor's position certificate, the
office's certified positions, the office calendar and the event's proven time), and returns
the new state or raises :class:`WorkflowError` naming the rule that was broken. The office runs
it **before** signing and anchoring anything (an out-of-order or unauthorised step never
reaches the ledger); the auditor's offline verifier runs the very same function over a trail
bundle, and the browser page runs its JavaScript port (``ledger/static/verify.js``, tested
against this module word for word), so a trail that breaks a rule fails everywhere with the
same reason.

A chain is the course of one matter: it starts with the registration of an item (rejestracja
przesyłki) or directly with the opening of a case (założenie sprawy), and from the opening on
every event carries the case sign. Rules, by event (roles in brackets):

General: seq and prev continue the chain; the event's office and position are those of the
certificate; the certificate was issued no later than the event; the position holds the role
(for the steps of an acceptance path, the role and unit of the step, see below); times never go
backwards; the case field is null before the opening and the case sign after it; nothing
follows destruction; a closed case takes only receipts, deliveries, archiving, destruction and
reopening; an archived case only destruction or the transfer to the state archive; nothing
follows a transfer. Once the case is open, the steps of the case
officer (attached, submitted, closed, reopened) are recorded by the case officer (prowadzący
sprawę) only: the position that opened it, or the one it was assigned to since.

- registered [registry]: the first event, or a further item registered into an open case;
  ``data``: direction (incoming/outgoing/internal), register (its register number), channel,
  kind ("letter" or "invoice"), attachments (count), sender_ref (the letter's own reference,
  optional), eform (optional: the outcome of an e-form's XAdES verification, ``{valid, signer,
  certificate, reason}``, :mod:`ledger.eod.eforms`); the document digest is required.
- assigned, dekretacja [assign]: ``to`` (a position certified in the office), method and
  deadline (optional; a calendar date, not already past in the office's zone). The first
  assignment fixes the original assigner. A later one is made by the original assigner (who
  may change method and deadline) or by the current assignee passing the matter down
  (dekretacja wtórna), who may not change the method, and may set a deadline of its own level
  no later than every deadline above it. After the opening, the assignee becomes the case
  officer.
- case-opened, założenie sprawy [officer]: only once; by the current assignee if assigned;
  ``data``: kind (the document kind of the office's acceptance paths), path (the resolved
  acceptance path, :mod:`ledger.eod.paths`), jrwa (``{class, title, category}`` from the
  office's subject file list; the class is the sign's), category (the case's: the class's,
  unless ``category_reason`` says why not). An invoice's case follows a cost path.
- attached [officer]: an open case; a document digest; ``data.kind`` (contract, order, ...).
- submitted / accepted / rejected / signed (projekt, akceptacja, podpis) [officer / the step's
  role / the step's role / sign]: one draft at a time, in a case with an acceptance path; each
  ``accepted.data.level`` is the next level of the path, by a position holding the level's role
  in the level's unit, neither the submitter nor an earlier acceptor; a rejection (by who may
  accept at the pending level) returns the draft; ``signed`` needs every level accepted, and its
  ``data.draft`` names the accepted draft's digest.
- cost steps (a case with a cost path), strictly in the path's order, each by a **different**
  position holding the step's role in the step's unit, each on the invoice's digest: the
  substantive check (kontrola merytoryczna) needs at least one attachment (the contract or
  order); account coding (dekretacja księgowa) names ``data.accounts``.
- dispatched, wysyłka [registry]: of a signed document; ``data``: channel, register.
- receipt-recorded [registry]: ``data.kind`` UPP (needs a registered item), UPO or UPD (need a
  dispatch); the document is the receipt XML's digest.
- delivered [registry]: after a dispatch; ``data.deemed``; a deemed delivery (doręczenie
  zastępcze) names ``data.notice``, the date of the first notice (no earlier than the dispatch),
  and is recorded only once the 14th day after it has lapsed (KPA art. 44 § 4); a delivery may
  name ``data.date``, its day, no earlier than the dispatch and no later than the recording.
- closed, zakończenie sprawy [officer]: no draft pending; a cost case only after its path's
  last step.
- reopened, wznowienie sprawy [officer]: a closed case not yet archived; ``data.reason``.
- archived [archivist]: a closed case, never of category Bc.
- transferred, przekazanie do archiwum państwowego [archivist]: only of an archived category A
  case, once its office-archive period (:data:`ARCHIVE_TRANSFER_YEARS` full years from 1
  January after the proven closing, as for retention) has run, judged by the transfer's
  proven time (its seen checkpoint); the document is the digest of the handover list (spis
  zdawczo-odbiorczy, :mod:`ledger.eod.transfer`); ``data.archive`` names the state archive.
- destroyed, brakowanie: never category A; with ``data.consent`` (the state archive director's
  consent reference); only once the retention period has run, counted from the **proven** time
  of the last closing (the latest it can have happened: its receipt's time bound) and judged
  by the proven time of the destruction (the earliest it can have happened: its seen
  checkpoint), never from claimed times. Category Bc [officer] is destroyed after its use in the
  unit that made it (the case's unit), without passing through the office archive; every other
  category [archivist] only from the office archive, from 1 January of the year after n full
  years counted from 1 January after the closing (local time).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from ledger.eod.calendar import OfficeCalendar, deemed_delivery, parse_date
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
from ledger.eod.paths import COST_STEPS, PathStep, parse_path_json
from ledger.eod.pki import PositionCertificate
from ledger.eod.timing import ProvenTime
from ledger.errors import LedgerError, MalformedError

__all__ = [
    "ARCHIVE_TRANSFER_YEARS",
    "OFFICER_STEPS",
    "PATH_STEPS",
    "REQUIRED_ROLE",
    "CaseState",
    "Facts",
    "WorkflowError",
    "apply",
    "fold",
    "term",
]


class WorkflowError(LedgerError):
    """An event is out of order, unauthorised, or breaks a workflow rule."""

    code = "workflow_refused"


#: The role each event needs, except the steps of an acceptance path (:data:`PATH_STEPS`),
#: whose role the path gives, and the destruction of a Bc case (by the case's unit, officer).
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
    EventType.REOPENED: Role.OFFICER,
    EventType.ARCHIVED: Role.ARCHIVIST,
    EventType.DESTROYED: Role.ARCHIVIST,
    EventType.TRANSFERRED: Role.ARCHIVIST,
}
#: Category A records stay in the office archive this many full years (counted from 1 January
#: after the closing), then go to the state archive (rozporządzenie w sprawie przekazywania
#: materiałów archiwalnych do archiwów państwowych: after 25 years).
ARCHIVE_TRANSFER_YEARS: Final = 25
PATH_STEPS: Final = frozenset({EventType.ACCEPTED, EventType.REJECTED, *COST_STEPS})
#: Steps only the case officer records once the case is open.
OFFICER_STEPS: Final = frozenset(
    {EventType.ATTACHED, EventType.SUBMITTED, EventType.CLOSED, EventType.REOPENED}
)
_LATE_OK: Final = frozenset(
    {
        EventType.RECEIPT_RECORDED,
        EventType.DELIVERED,
        EventType.ARCHIVED,
        EventType.DESTROYED,
        EventType.TRANSFERRED,
        EventType.REOPENED,
    }
)


def term(kind: EventType) -> str:
    """``"<English> (<Polish>)"``, as used in messages."""
    english, polish = EVENT_TERMS[kind]
    return f"{english} ({polish})"


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What an event is judged by besides its chain: the actor's certificate, the office's
    certified positions (targets of a dekretacja), the office calendar, and the event's proven
    time (:mod:`ledger.eod.timing`; ``before`` is ``None`` while it is not anchored yet)."""

    cert: PositionCertificate
    calendar: OfficeCalendar
    positions: Mapping[str, PositionCertificate] = field(default_factory=dict)
    proven: ProvenTime = field(default_factory=ProvenTime)


@dataclass(frozen=True, kw_only=True)
class CaseState:
    """What the rules need to know about a chain after its events so far."""

    seq: int = 0
    head: bytes | None = None
    last_time: int = 0
    case: str | None = None
    unit: str | None = None
    category: Category | None = None
    kind: str | None = None
    path: tuple[PathStep, ...] = ()
    cost: bool = False
    invoice: bytes | None = None
    items: tuple[str, ...] = ()
    assigner: str | None = None
    assignee: str | None = None
    officer: str | None = None
    method: str | None = None
    deadline: str | None = None
    sub_deadline: str | None = None
    attachments: int = 0
    draft: bytes | None = None
    submitter: str | None = None
    accepted: int = 0
    acceptors: tuple[str, ...] = ()
    signed: tuple[bytes, ...] = ()
    cost_done: tuple[tuple[EventType, str], ...] = ()
    dispatched_at: int | None = None
    dispatched_on: str | None = None
    delivered_on: str | None = None
    closed: bool = False
    closed_before: int | None = None
    archived: bool = False
    transferred: bool = False
    destroyed: bool = False

    @property
    def levels(self) -> int:
        """Levels of acceptance a draft needs: the ``accepted`` steps of the case's path."""
        return 0 if self.cost else len(self.path)


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


def _date(data: Mapping[str, Any], key: str) -> date:
    return parse_date(_req(data, key), what=f"data field {key!r}")


def _role_error(cert: PositionCertificate, kind: EventType, role: Role) -> WorkflowError:
    _, polish = ROLE_TERMS[role]
    return WorkflowError(
        f"position {cert.position!r} ({cert.title}) may not record {term(kind)}: "
        f"it needs the role {role.value!r} ({polish})"
    )


def _step_allowed(step: PathStep, cert: PositionCertificate, kind: EventType, what: str) -> None:
    if not cert.allows(step.role):
        raise _role_error(cert, kind, step.role)
    if step.unit is not None and cert.unit != step.unit:
        raise WorkflowError(
            f"{what} belongs to unit {step.unit}; position {cert.position!r} is in unit {cert.unit}"
        )


# ------------------------------------------------------------------------------- apply


def apply(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    """The state after ``event``, or :class:`WorkflowError` if a rule refuses it.

    The signature is not checked here (see :meth:`SignedEvent.verify`); everything else about
    the event's place in its chain is.

    Raises:
        WorkflowError: a broken rule, with a one-line reason naming it.
    """
    record = event.record
    cert = facts.cert
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
    if record.type not in PATH_STEPS:
        role = REQUIRED_ROLE[record.type]
        if record.type is EventType.DESTROYED and _is_bc(state):
            role = Role.OFFICER
        if not cert.allows(role):
            raise _role_error(cert, record.type, role)
    if record.time < state.last_time:
        raise WorkflowError("the event is dated before the previous event")
    if record.type is EventType.CASE_OPENED:
        if state.case is not None:
            raise WorkflowError(f"the case {state.case} is already open")
    elif record.case != state.case:
        expected = state.case or "none (the case is not open yet)"
        raise WorkflowError(f"the event names case {record.case!r}; expected {expected}")
    if state.transferred:
        raise WorkflowError(
            "the case was transferred to the state archive (archiwum państwowe); nothing may "
            "follow"
        )
    if state.archived and record.type not in (EventType.DESTROYED, EventType.TRANSFERRED):
        raise WorkflowError(f"the case is archived; {term(record.type)} is no longer possible")
    if state.closed and record.type not in _LATE_OK:
        raise WorkflowError(f"the case is closed; {term(record.type)} is no longer possible")
    if record.seq == 0 and record.type not in (EventType.REGISTERED, EventType.CASE_OPENED):
        raise WorkflowError("a chain starts with a registration or the opening of a case")
    if state.case is not None and record.type in OFFICER_STEPS and record.position != state.officer:
        raise WorkflowError(
            f"the case officer (prowadzący sprawę) is {state.officer!r}; {record.position!r} "
            f"may not record {term(record.type)}"
        )
    try:
        new = _RULES[record.type](state, event, facts)
    except MalformedError as exc:
        raise WorkflowError(exc.diagnostics()) from None
    return dataclasses.replace(new, seq=state.seq + 1, head=event.hash, last_time=record.time)


def fold(events: list[tuple[SignedEvent, Facts]]) -> CaseState:
    """The state after a whole chain (each event with the facts it is judged by).

    Raises:
        WorkflowError: as :func:`apply`, prefixed with the event number.
    """
    state = CaseState()
    for event, facts in events:
        try:
            state = apply(state, event, facts)
        except WorkflowError as exc:
            raise WorkflowError(f"event {event.record.seq}: {exc.diagnostics()}") from None
    return state


# ---------------------------------------------------------------------- one rule per type

_Rule = Callable[[CaseState, SignedEvent, Facts], CaseState]


def _is_bc(state: CaseState) -> bool:
    return state.category is not None and state.category.text == "Bc"


def _need_document(event: SignedEvent) -> bytes:
    if event.record.document is None:
        raise WorkflowError(f"{term(event.record.type)} needs the document's digest")
    return event.record.document


def _need_open_case(state: CaseState, event: SignedEvent) -> None:
    if state.case is None:
        raise WorkflowError(f"{term(event.record.type)} needs an open case (założenie sprawy)")


def _eform(value: object) -> None:
    bad = WorkflowError("data field 'eform' must be {valid, signer, certificate, reason}")
    if not isinstance(value, Mapping) or set(value) != {"valid", "signer", "certificate", "reason"}:
        raise bad
    if not isinstance(value["valid"], bool):
        raise bad
    reason = value["reason"]
    if not isinstance(reason, str) or not reason or len(reason) > 500:
        raise bad
    for key in ("signer", "certificate"):
        v = value[key]
        if v is not None and (not isinstance(v, str) or not v or len(v) > 500):
            raise bad
    certificate = value["certificate"]
    if certificate is not None and re.fullmatch(r"[0-9a-f]{64}", certificate) is None:
        raise bad


def _registered(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    data = event.record.data
    _only(data, "direction", "register", "channel", "kind", "attachments", "sender_ref", "eform")
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
    if "eform" in data:
        _eform(data["eform"])
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


def _assigned(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    record = event.record
    data = record.data
    _only(data, "to", "method", "deadline")
    to = _req(data, "to")
    if to not in facts.positions:
        raise WorkflowError(
            f"assignment (dekretacja) to {to!r}: no such position is certified in this office"
        )
    method = _str(data, "method", optional=True)
    deadline = _str(data, "deadline", optional=True)
    if deadline is not None:
        end = facts.calendar.deadline_end(parse_date(deadline, what="deadline"))
        if record.time >= end:
            raise WorkflowError(
                f"the deadline {deadline} has passed: it ended at {facts.calendar.format_time(end)}"
            )
    actor = record.position
    officer = to if state.case is not None else state.officer
    if state.assigner is None:
        return dataclasses.replace(
            state, assigner=actor, assignee=to, officer=officer, method=method, deadline=deadline
        )
    if actor == state.assigner:
        return dataclasses.replace(
            state,
            assignee=to,
            officer=officer,
            method=method if method is not None else state.method,
            deadline=deadline if deadline is not None else state.deadline,
            sub_deadline=None,
        )
    if actor != state.assignee:
        raise WorkflowError(
            f"re-assignment (dekretacja) by {actor!r}, who is neither the original assigner "
            f"{state.assigner!r} nor the current assignee {state.assignee!r}"
        )
    if method is not None and method != state.method:
        raise WorkflowError(
            f"only the original assigner {state.assigner!r} may change the method of a dekretacja"
        )
    sub_deadline = state.sub_deadline
    if deadline is not None:
        for above in (state.deadline, state.sub_deadline):
            if above is not None and deadline > above:
                raise WorkflowError(
                    f"a lower-level assignment (dekretacja wtórna) may set a deadline no later "
                    f"than the one above it ({above}), not {deadline}"
                )
        sub_deadline = deadline
    return dataclasses.replace(state, assignee=to, officer=officer, sub_deadline=sub_deadline)


def _case_opened(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    record = event.record
    data = record.data
    _only(data, "category", "category_reason", "jrwa", "kind", "path")
    if record.case is None:
        raise WorkflowError("opening a case needs its case sign (znak sprawy)")
    sign = parse_case_sign(record.case)
    if sign.original != record.case:
        raise WorkflowError("the case sign must be written without surrounding spaces")
    jrwa = data.get("jrwa")
    if not isinstance(jrwa, Mapping) or set(jrwa) != {"class", "title", "category"}:
        raise WorkflowError("data field 'jrwa' must be {'class', 'title', 'category'}")
    _only(jrwa, "class", "title", "category")
    if _req(jrwa, "class") != sign.jrwa_class:
        raise WorkflowError(
            f"the case sign's class {sign.jrwa_class} is not the JRWA class {jrwa['class']}"
        )
    _req(jrwa, "title")
    listed = parse_category(_req(jrwa, "category"))
    category = parse_category(_req(data, "category"))
    reason = _str(data, "category_reason", optional=True)
    if category != listed and reason is None:
        raise WorkflowError(
            f"category {category.text} differs from the JRWA class's {listed.text}: "
            "give the reason (category_reason)"
        )
    if category == listed and reason is not None:
        raise WorkflowError("a category_reason is given only with a category the class lacks")
    kind = _req(data, "kind")
    path = parse_path_json(data.get("path"))
    cost = bool(path) and path[0].event in COST_STEPS
    if state.invoice is not None and not cost:
        raise WorkflowError("an invoice's case must follow a cost-document path")
    if state.assignee is not None and record.position != state.assignee:
        raise WorkflowError(
            f"the case is opened by the assignee {state.assignee!r} of the dekretacja, "
            f"not by {record.position!r}"
        )
    return dataclasses.replace(
        state,
        case=sign.original,
        unit=sign.unit,
        category=category,
        kind=kind,
        path=path,
        cost=cost,
        officer=record.position,
        assignee=state.assignee or record.position,
    )


def _attached(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data, "kind")
    _req(event.record.data, "kind")
    _need_document(event)
    return dataclasses.replace(state, attachments=state.attachments + 1)


def _submitted(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data)
    if state.cost:
        raise WorkflowError(
            "a cost case follows its cost-document path; drafts go to cases with an acceptance path"
        )
    if state.draft is not None:
        raise WorkflowError("a draft is already awaiting acceptance (akceptacja)")
    return dataclasses.replace(
        state,
        draft=_need_document(event),
        submitter=event.record.position,
        accepted=0,
        acceptors=(),
    )


def _pending_draft(state: CaseState, event: SignedEvent) -> bytes:
    if state.draft is None:
        raise WorkflowError(f"{term(event.record.type)} needs a draft submitted for acceptance")
    if event.record.document is not None and event.record.document != state.draft:
        raise WorkflowError("the document is not the draft submitted for acceptance")
    return state.draft


def _pending_level(state: CaseState, event: SignedEvent) -> PathStep:
    if state.accepted >= state.levels:
        raise WorkflowError(
            f"the draft is accepted at {state.accepted} of {state.levels} levels; "
            "no level awaits acceptance"
        )
    return state.path[state.accepted]


def _accepted(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _pending_draft(state, event)
    _only(event.record.data, "level")
    level = _int(event.record.data, "level", 1, 9)
    if level != state.accepted + 1 or level > state.levels:
        raise WorkflowError(
            f"acceptance at level {level}: the draft is accepted at {state.accepted} of "
            f"{state.levels} levels"
        )
    step = _pending_level(state, event)
    _step_allowed(step, facts.cert, EventType.ACCEPTED, f"acceptance at level {level}")
    actor = event.record.position
    if actor == state.submitter or actor in state.acceptors:
        raise WorkflowError(f"position {actor!r} already submitted or accepted this draft")
    return dataclasses.replace(state, accepted=level, acceptors=(*state.acceptors, actor))


def _rejected(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _pending_draft(state, event)
    _only(event.record.data, "reason")
    _req(event.record.data, "reason")
    step = _pending_level(state, event)
    _step_allowed(step, facts.cert, EventType.REJECTED, f"acceptance at level {state.accepted + 1}")
    return dataclasses.replace(state, draft=None, submitter=None, accepted=0, acceptors=())


def _signed(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
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
        accepted=0,
        acceptors=(),
    )


def _path_text(path: tuple[PathStep, ...]) -> str:
    return " → ".join(EVENT_TERMS[s.event][1] for s in path)


def _cost_step(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    kind = event.record.type
    _need_open_case(state, event)
    if not state.cost:
        raise WorkflowError(f"{term(kind)} applies to cases with a cost-document path only")
    events = [s.event for s in state.path]
    if kind not in events:
        raise WorkflowError(
            f"{term(kind)} is not a step of this case's path ({_path_text(state.path)})"
        )
    index = events.index(kind)
    done = len(state.cost_done)
    if done > index:
        raise WorkflowError(f"{term(kind)} was already recorded")
    if done < index:
        raise WorkflowError(
            f"{term(kind)} must come after {term(events[index - 1])}, which is not recorded yet"
        )
    _step_allowed(state.path[index], facts.cert, kind, term(kind))
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


def _dispatched(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data, "channel", "register")
    _req(event.record.data, "channel")
    _req(event.record.data, "register")
    if _need_document(event) not in state.signed:
        raise WorkflowError("dispatch (wysyłka) of a document that was not signed (podpis)")
    return dataclasses.replace(
        state,
        dispatched_at=event.record.time,
        dispatched_on=facts.calendar.date_of(event.record.time).isoformat(),
    )


def _receipt(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
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


def _delivered(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    record = event.record
    data = record.data
    if state.dispatched_on is None:
        raise WorkflowError("delivery (doręczenie) before any dispatch (wysyłka)")
    calendar = facts.calendar
    if _bool(data, "deemed"):
        _only(data, "deemed", "notice")
        notice = _date(data, "notice")
        if notice.isoformat() < state.dispatched_on:
            raise WorkflowError("the first notice (awizo) predates the dispatch")
        day = deemed_delivery(notice)
        lapse = calendar.deadline_end(day)
        if record.time < lapse:
            raise WorkflowError(
                "deemed delivery (doręczenie zastępcze) with the lapse of the 14th day after "
                f"the first notice: not before {calendar.format_time(lapse)}"
            )
    else:
        _only(data, "deemed", "date")
        day = calendar.date_of(record.time)
        if "date" in data:
            given = _date(data, "date")
            if given > day:
                raise WorkflowError(f"the delivery date {given} is after its recording")
            day = given
        if day.isoformat() < state.dispatched_on:
            raise WorkflowError("the delivery date predates the dispatch (wysyłka)")
    return dataclasses.replace(state, delivered_on=day.isoformat())


def _closed(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _need_open_case(state, event)
    _only(event.record.data)
    if state.draft is not None:
        raise WorkflowError("a draft still awaits acceptance; close the case after it is decided")
    if state.cost and len(state.cost_done) < len(state.path):
        raise WorkflowError(f"a cost case closes after the {term(state.path[-1].event)}")
    return dataclasses.replace(state, closed=True, closed_before=facts.proven.before)


def _reopened(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _only(event.record.data, "reason")
    _req(event.record.data, "reason")
    if not state.closed:
        raise WorkflowError("only a closed case can be reopened (wznowienie sprawy)")
    return dataclasses.replace(state, closed=False, closed_before=None)


def _archived(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _only(event.record.data)
    if not state.closed:
        raise WorkflowError("only a closed case (zakończenie sprawy) goes to the office archive")
    if _is_bc(state):
        raise WorkflowError(
            "category Bc is destroyed in the unit that made it, without passing through the "
            "office archive"
        )
    return dataclasses.replace(state, archived=True)


def _destroyed(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _only(event.record.data, "consent")
    category = state.category
    if category is None or not state.closed:
        raise WorkflowError("destruction (brakowanie) only of a closed case")
    if category.years is None:
        raise WorkflowError(
            "category A records are kept forever and go to the state archive; "
            "they are never destroyed (brakowanie)"
        )
    if _is_bc(state):
        if facts.cert.unit != state.unit:
            raise WorkflowError(
                f"category Bc is destroyed in the unit that made it ({state.unit}); position "
                f"{facts.cert.position!r} is in unit {facts.cert.unit}"
            )
    elif not state.archived:
        raise WorkflowError(
            f"category {category.text}: destruction (brakowanie) only from the office archive"
        )
    _req(event.record.data, "consent")
    calendar = facts.calendar
    if state.closed_before is None:
        raise WorkflowError("the closing of the case has no proven time yet")
    allowed = calendar.destruction_allowed_from(category, state.closed_before)
    assert allowed is not None
    after = facts.proven.after
    if after is None or after < allowed:
        proven = (
            "no proven time" if after is None else f"proven after {calendar.format_time(after)}"
        )
        raise WorkflowError(
            f"category {category.text}: the retention period, counted from the proven closing, "
            f"runs until {calendar.format_time(allowed)}; destruction (brakowanie) is refused "
            f"before (this step: {proven})"
        )
    return dataclasses.replace(state, destroyed=True)


def _transferred(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    _only(event.record.data, "archive")
    _req(event.record.data, "archive")
    _need_document(event)
    category = state.category
    if category is None or category.years is not None:
        raise WorkflowError(
            "only category A records (materiały archiwalne) go to the state archive"
        )
    if not state.archived:
        raise WorkflowError("the state archive takes a case from the office archive only")
    if state.closed_before is None:
        raise WorkflowError("the closing of the case has no proven time yet")
    calendar = facts.calendar
    period = Category(text=f"B{ARCHIVE_TRANSFER_YEARS}", years=ARCHIVE_TRANSFER_YEARS)
    allowed = calendar.destruction_allowed_from(period, state.closed_before)
    assert allowed is not None
    after = facts.proven.after
    if after is None or after < allowed:
        proven = (
            "no proven time" if after is None else f"proven after {calendar.format_time(after)}"
        )
        raise WorkflowError(
            f"category A: the office-archive period of {ARCHIVE_TRANSFER_YEARS} years, counted "
            f"from the proven closing, runs until {calendar.format_time(allowed)}; the transfer "
            f"to the state archive is refused before (this step: {proven})"
        )
    return dataclasses.replace(state, transferred=True)


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
    EventType.REOPENED: _reopened,
    EventType.ARCHIVED: _archived,
    EventType.DESTROYED: _destroyed,
    EventType.TRANSFERRED: _transferred,
}
