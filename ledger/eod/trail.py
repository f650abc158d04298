"""Audit trails and official receipts: the self-contained files, and their offline verification.

A **trail bundle** (``ledger eod trail CASE --out FILE``) is one JSON file holding everything an
auditor needs to check the course of a case with no network and no access to the office::

    {"format": "ledger-eod-trail/v2",
     "office": <signed office record: id, name, time zone, CA key>,  (ledger.eod.records)
     "case": "<case sign>",
     "policy": "<the ledger's c2sp.org/tlog-policy text>",
     "certificates": [<position certificate>, ...],     (ledger.eod.pki)
     "checkpoints": ["<cosigned checkpoint note>", ...], the checkpoints the events name
     "events": [{"event": <signed event>, "receipt": "<tlog-proof of the event hash>"}, ...],
     "documents": [{"digest": "<64 hex>", "receipt": "<tlog-proof of the digest>"}, ...],
     "head": {"head": ..., "signature": ..., "receipt": ...}}   the signed, anchored end

:func:`verify_trail` checks, in order, and fails with :class:`~ledger.errors.VerificationError`
naming the event and the reason:

1. the office record (its self-signature; a pinned ``--office-key`` must be its CA key) and the
   trust policy (the bundle's unless pinned with ``--policy``); the office's name and zone are
   shown as verified only when the key is pinned (a bundle can only vouch for itself);
2. each position certificate under the office CA key; each checkpoint under the policy, with
   its proven time;
3. each event: its signature under its position's certified key; its ledger receipt under the
   policy; its proven interval (ledger.eod.timing): after the checkpoint it names, no later
   than its receipt; its recorded time within that interval give or take
   :data:`~ledger.eod.timing.MAX_CLOCK_SKEW` (a declared time outside it is flagged, not
   failed); then :func:`ledger.eod.rules.apply` with the office's calendar: the sequence
   number, the previous-event hash, the role, the officer, the path's units and every ordering,
   deadline and retention rule. A changed event fails its signature (or, re-signed, its
   receipt); a removed, inserted or reordered event fails the previous-hash chain;
4. each document receipt under the policy; with ``--document`` the file's digest must be a
   document of the case;
5. the signed head: signed by the office CA, anchored, and naming exactly this many events and
   this last event. A bundle whose last events were dropped fails here. A bundle cut back to an
   older head still verifies, "complete as of" that head's ledger time, which the timeline
   prints.

The **official receipt** (urzędowe poświadczenie of a registration, handed to the sender) has
the same building blocks: the registration event, its receipt and the document's, the
registering position's certificate, the office record and the policy (:func:`verify_official`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from ledger.eod.calendar import OfficeCalendar, appeal_deadline, deemed_delivery, parse_date
from ledger.eod.canonical import loads
from ledger.eod.events import SignedEvent, parse_hex_digest
from ledger.eod.model import EVENT_TERMS, EventType
from ledger.eod.pki import PositionCertificate, fingerprint
from ledger.eod.proofs import ReceiptVerifier
from ledger.eod.records import OfficeRecord, TrailHead
from ledger.eod.rules import CaseState, Facts, WorkflowError, apply
from ledger.eod.timing import MAX_CLOCK_SKEW, ProvenTime, VerifiedCheckpoint, verify_checkpoint
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.policy import Policy, parse_policy
from ledger.receipt import VerifiedReceipt

__all__ = [
    "MAX_BUNDLE_SIZE",
    "OFFICIAL_RECEIPT_FORMAT",
    "TRAIL_FORMAT",
    "TrailEntry",
    "VerifiedOfficialReceipt",
    "VerifiedTrail",
    "describe",
    "render_timeline",
    "verify_official",
    "verify_trail",
]

TRAIL_FORMAT: Final = "ledger-eod-trail/v2"
OFFICIAL_RECEIPT_FORMAT: Final = "ledger-eod-official-receipt/v2"
MAX_BUNDLE_SIZE: Final = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class TrailEntry:
    event: SignedEvent
    certificate: PositionCertificate
    receipt: VerifiedReceipt
    proven: ProvenTime
    flagged: bool = False


@dataclass(frozen=True, kw_only=True)
class VerifiedTrail:
    """A verified trail: its events with their certificates, receipts and proven times, the
    end state and the signed head."""

    office: OfficeRecord
    ca_pinned: bool
    policy_pinned: bool
    case: str
    entries: tuple[TrailEntry, ...]
    state: CaseState
    head: TrailHead
    head_receipt: VerifiedReceipt
    document: bytes | None = None
    document_events: tuple[int, ...] = ()
    document_receipt: VerifiedReceipt | None = None

    @property
    def calendar(self) -> OfficeCalendar:
        return self.office.calendar

    @property
    def flagged(self) -> tuple[int, ...]:
        return tuple(i for i, e in enumerate(self.entries) if e.flagged)


@dataclass(frozen=True, kw_only=True)
class VerifiedOfficialReceipt:
    office: OfficeRecord
    ca_pinned: bool
    policy_pinned: bool
    register: str
    case: str | None
    document: bytes
    registered_at: int
    event_receipt: VerifiedReceipt
    document_receipt: VerifiedReceipt


# ------------------------------------------------------------------------------ helpers


def _fail(message: str) -> VerificationError:
    return VerificationError(message)


def _field(obj: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedError(f"{what}: field {key!r} is missing or has the wrong type")
    return value


def _trust(
    bundle: Mapping[str, Any], policy: Policy | None, office_key: str | None, what: str
) -> tuple[OfficeRecord, Policy]:
    record = OfficeRecord.from_json(_field(bundle, "office", dict, what))
    ca_key = record.ca_public_key
    if office_key is not None and office_key.strip() not in (
        fingerprint(ca_key),
        base64.b64encode(ca_key).decode("ascii"),
    ):
        raise _fail(
            f"the office CA key in the {what} ({fingerprint(ca_key)}) is not the pinned key"
        )
    bundled = parse_policy(_field(bundle, "policy", str, what))
    # A pinned policy replaces the bundle's: every receipt is then checked against it.
    return record, policy if policy is not None else bundled


def _certificates(
    items: Sequence[Any], ca_key: bytes, office: str
) -> dict[str, PositionCertificate]:
    certs: dict[str, PositionCertificate] = {}
    for item in items:
        if not isinstance(item, dict):
            raise MalformedError("a certificate must be a JSON object")
        cert = PositionCertificate.from_json(item)
        cert.verify(ca_key)
        if cert.office != office:
            raise _fail(f"certificate of {cert.position!r} is for office {cert.office!r}")
        if cert.position in certs:
            raise MalformedError(f"two certificates for position {cert.position!r}")
        certs[cert.position] = cert
    return certs


def _checkpoints(items: Sequence[Any], policy: Policy) -> dict[tuple[int, bytes], int]:
    known: dict[tuple[int, bytes], int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise MalformedError(f"checkpoints[{i}] must be a checkpoint note (text)")
        try:
            checkpoint: VerifiedCheckpoint = verify_checkpoint(item, policy)
        except LedgerError as exc:
            raise _fail(f"checkpoint {i} does not verify: {exc.diagnostics()}") from None
        known[(checkpoint.size, checkpoint.root)] = checkpoint.time
    return known


def _receipt(
    text: object, verifier: ReceiptVerifier, digest: bytes, what: str
) -> VerifiedReceipt:
    if not isinstance(text, str):
        raise MalformedError(f"{what}: the receipt must be text")
    try:
        return verifier.verify(text, digest)
    except LedgerError as exc:
        raise _fail(f"{what}: the ledger receipt does not verify: {exc.diagnostics()}") from None


def _check_event(
    state: CaseState,
    entry: object,
    index: int,
    certs: Mapping[str, PositionCertificate],
    checkpoints: Mapping[tuple[int, bytes], int],
    verifier: ReceiptVerifier,
    calendar: OfficeCalendar,
) -> tuple[CaseState, TrailEntry]:
    if not isinstance(entry, dict) or set(entry) != {"event", "receipt"}:
        raise MalformedError(f"events[{index}] must be {{'event': ..., 'receipt': ...}}")
    if not isinstance(entry["event"], dict):
        raise MalformedError(f"events[{index}].event must be an object")
    event = SignedEvent.from_json(entry["event"])
    record = event.record
    what = f"event #{index} ({record.type.value})"
    cert = certs.get(record.position)
    if cert is None:
        raise _fail(f"{what}: no certificate for position {record.position!r}")
    try:
        event.verify(cert.public_key)
    except VerificationError:
        raise _fail(
            f"{what}: the signature of {record.position!r} does not verify (the event was changed)"
        ) from None
    verified = _receipt(entry["receipt"], verifier, event.hash, what)
    after: int | None = None
    if record.seen is not None:
        found = checkpoints.get((record.seen.size, record.seen.root))
        if found is None:
            raise _fail(
                f"{what}: the checkpoint it names (tree size {record.seen.size}) is not in the "
                "bundle"
            )
        if verified.index < record.seen.size:
            raise _fail(f"{what}: its ledger leaf precedes the checkpoint it names")
        after = found
    proven = ProvenTime(after=after, before=verified.time_bound)
    fmt = calendar.format_time
    if record.time > verified.time_bound + MAX_CLOCK_SKEW:
        raise _fail(
            f"{what}: dated {fmt(record.time)}, after the ledger's time bound "
            f"{fmt(verified.time_bound)}"
        )
    if after is not None and record.time < after - MAX_CLOCK_SKEW:
        raise _fail(
            f"{what}: dated {fmt(record.time)}, before the ledger checkpoint it names "
            f"({fmt(after)})"
        )
    flagged = record.declared is not None and not proven.contains(
        record.declared, slack=MAX_CLOCK_SKEW
    )
    try:
        new_state = apply(
            state,
            event,
            Facts(cert=cert, calendar=calendar, positions=certs, proven=proven),
        )
    except WorkflowError as exc:
        raise _fail(f"{what}: {exc.diagnostics()}") from None
    return new_state, TrailEntry(
        event=event, certificate=cert, receipt=verified, proven=proven, flagged=flagged
    )


def _check_head(
    raw: object, office: OfficeRecord, entries: Sequence[TrailEntry], verifier: ReceiptVerifier
) -> tuple[TrailHead, VerifiedReceipt]:
    if not isinstance(raw, dict) or set(raw) != {"head", "signature", "receipt"}:
        raise _fail(
            "the trail has no signed head (its end is not proven: events may have been dropped)"
        )
    head = TrailHead.from_json({"head": raw["head"], "signature": raw["signature"]})
    head.verify(office.ca_public_key)
    if head.office != office.office:
        raise _fail(f"the trail head is of office {head.office!r}")
    receipt = _receipt(raw["receipt"], verifier, head.hash, "the trail head")
    if head.count != len(entries):
        raise _fail(
            f"the trail holds {len(entries)} events, but its signed head counts {head.count}: "
            "events were dropped or added"
        )
    if head.chain != entries[0].event.hash or head.last != entries[-1].event.hash:
        raise _fail("the trail's events are not the ones its signed head names")
    return head, receipt


def _load(data: bytes, fmt: str, what: str) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_SIZE:
        raise MalformedError(f"{what} is larger than {MAX_BUNDLE_SIZE} bytes")
    bundle = loads(data, what=what)
    if bundle.get("format") != fmt:
        raise MalformedError(f"{what} is not a {fmt} file")
    return bundle


# ------------------------------------------------------------------------------- verify


def verify_trail(
    data: bytes,
    *,
    policy: Policy | None = None,
    office_key: str | None = None,
    document: bytes | None = None,
) -> VerifiedTrail:
    """Verify a trail bundle offline (see the module docstring).

    ``office_key`` pins the office CA key (its fingerprint ``SHA256:...`` or base64 key);
    ``policy`` pins the ledger's trust policy; ``document`` is a document's SHA-256 that must be
    part of the case.

    Raises:
        MalformedError: the bundle does not parse.
        VerificationError: anything fails, with the event and the reason.
    """
    bundle = _load(data, TRAIL_FORMAT, "trail bundle")
    record, trusted = _trust(bundle, policy, office_key, "trail bundle")
    calendar = record.calendar
    case = _field(bundle, "case", str, "trail bundle")
    certs = _certificates(
        _field(bundle, "certificates", list, "trail bundle"), record.ca_public_key, record.office
    )
    checkpoints = _checkpoints(_field(bundle, "checkpoints", list, "trail bundle"), trusted)
    raw_events = _field(bundle, "events", list, "trail bundle")
    if not raw_events:
        raise _fail("the trail holds no events")
    state = CaseState()
    entries: list[TrailEntry] = []
    # Each distinct checkpoint note is verified once; every receipt's inclusion proof is.
    verifier = ReceiptVerifier(trusted)
    for index, entry in enumerate(raw_events):
        state, checked = _check_event(state, entry, index, certs, checkpoints, verifier, calendar)
        entries.append(checked)
    if state.case is not None and state.case != case:
        raise _fail(f"the bundle says case {case!r} but its events are case {state.case!r}")
    documents: dict[bytes, VerifiedReceipt] = {}
    for item in _field(bundle, "documents", list, "trail bundle"):
        if not isinstance(item, dict):
            raise MalformedError("a document entry must be an object")
        digest = parse_hex_digest(item.get("digest"), what="document digest")
        documents[digest] = _receipt(
            item.get("receipt"), verifier, digest, f"document {digest.hex()[:16]}"
        )
    head, head_receipt = _check_head(bundle.get("head"), record, entries, verifier)
    used = [i for i, e in enumerate(entries) if e.event.record.document == document]
    if document is not None and not used:
        raise _fail(f"the document {document.hex()} is not part of this case")
    return VerifiedTrail(
        office=record,
        ca_pinned=office_key is not None,
        policy_pinned=policy is not None,
        case=case,
        entries=tuple(entries),
        state=state,
        head=head,
        head_receipt=head_receipt,
        document=document,
        document_events=tuple(used) if document is not None else (),
        document_receipt=documents.get(document) if document is not None else None,
    )


def verify_official(
    data: bytes,
    *,
    policy: Policy | None = None,
    office_key: str | None = None,
    document: bytes | None = None,
) -> VerifiedOfficialReceipt:
    """Verify an official registration receipt offline (the sender's proof of what the office
    received and when).

    Raises:
        MalformedError: the file does not parse.
        VerificationError: a signature, certificate or receipt fails, or ``document`` is not the
            registered document.
    """
    bundle = _load(data, OFFICIAL_RECEIPT_FORMAT, "official receipt")
    record, trusted = _trust(bundle, policy, office_key, "official receipt")
    certs = _certificates(
        _field(bundle, "certificates", list, "official receipt"),
        record.ca_public_key,
        record.office,
    )
    event = SignedEvent.from_json(_field(bundle, "event", dict, "official receipt"))
    rec = event.record
    cert = certs.get(rec.position)
    if cert is None:
        raise _fail(f"no certificate for position {rec.position!r}")
    try:
        event.verify(cert.public_key)
    except VerificationError:
        raise _fail("the registration's signature does not verify") from None
    if rec.type is not EventType.REGISTERED or rec.document is None:
        raise _fail("the official receipt does not hold a registration")
    register = _field(bundle, "register", str, "official receipt")
    if rec.data.get("register") != register or rec.case != bundle.get("case"):
        raise _fail("the register number or case sign differs from the signed registration")
    if rec.document.hex() != bundle.get("document"):
        raise _fail("the document digest differs from the signed registration")
    if document is not None and document != rec.document:
        raise _fail("the document is not the one registered")
    verifier = ReceiptVerifier(trusted)
    event_receipt = _receipt(bundle.get("event_receipt"), verifier, event.hash, "registration")
    doc_receipt = _receipt(bundle.get("document_receipt"), verifier, rec.document, "document")
    return VerifiedOfficialReceipt(
        office=record,
        ca_pinned=office_key is not None,
        policy_pinned=policy is not None,
        register=register,
        case=rec.case,
        document=rec.document,
        registered_at=rec.time,
        event_receipt=event_receipt,
        document_receipt=doc_receipt,
    )


# ----------------------------------------------------------------------------- timeline


def _short(digest: bytes) -> str:
    return digest.hex()[:16]


def _date_text(value: object) -> date | None:
    try:
        return parse_date(value, what="date") if isinstance(value, str) else None
    except MalformedError:
        return None


def describe(event: SignedEvent, calendar: OfficeCalendar) -> str:
    """What an event says, in one line, for the timeline."""
    r = event.record
    d = r.data
    kind = r.type
    if kind is EventType.REGISTERED:
        text = (
            f"item {d.get('register')}, {d.get('direction')} via {d.get('channel')}, "
            f"{d.get('kind')}, {d.get('attachments')} attachment(s)"
        )
        if d.get("sender_ref"):
            text += f", sender's reference {d.get('sender_ref')}"
    elif kind is EventType.ASSIGNED:
        text = f"to {d.get('to')}"
        if d.get("method"):
            text += f", method: {d.get('method')}"
        if d.get("deadline"):
            text += f", deadline {d.get('deadline')}"
    elif kind is EventType.CASE_OPENED:
        jrwa = d.get("jrwa")
        title = jrwa.get("title") if isinstance(jrwa, Mapping) else None
        text = f"case {r.case}, JRWA {title}, category {d.get('category')}"
        if d.get("category_reason"):
            listed = jrwa.get("category") if isinstance(jrwa, Mapping) else None
            text += f" (the class has {listed}: {d.get('category_reason')})"
        text += f", {d.get('kind')}"
        steps = d.get("path")
        if isinstance(steps, list) and steps:
            names = []
            for step in steps:
                event_name = step.get("event") if isinstance(step, Mapping) else None
                try:
                    names.append(EVENT_TERMS[EventType(str(event_name))][1])
                except ValueError:
                    names.append(str(event_name))
            text += ": " + " → ".join(names)
    elif kind is EventType.ATTACHED:
        text = str(d.get("kind"))
    elif kind is EventType.SUBMITTED:
        text = "draft for acceptance"
    elif kind is EventType.ACCEPTED:
        text = f"level {d.get('level')}"
    elif kind in (EventType.REJECTED, EventType.REOPENED):
        text = f"reason: {d.get('reason')}"
    elif kind is EventType.SIGNED:
        text = f"accepted draft {str(d.get('draft'))[:16]}"
    elif kind is EventType.ACCOUNT_CODING:
        text = f"accounts {d.get('accounts')}"
    elif kind is EventType.DISPATCHED:
        text = f"{d.get('register')} via {d.get('channel')}"
    elif kind is EventType.RECEIPT_RECORDED:
        text = str(d.get("kind"))
    elif kind is EventType.DELIVERED:
        notice = _date_text(d.get("notice"))
        if d.get("deemed") is True and notice is not None:
            day = deemed_delivery(notice)
            text = f"deemed delivered on {day} (first notice {notice})"
        else:
            given = _date_text(d.get("date"))
            day = given if given is not None else calendar.date_of(r.time)
            text = f"delivered on {day}"
        text += f"; the 14-day appeal period ends {appeal_deadline(day)}"
    elif kind is EventType.DESTROYED:
        text = f"consent {d.get('consent')}"
    elif kind is EventType.TRANSFERRED:
        text = f"to {d.get('archive')}, handover list"
    else:
        text = str(d.get("note", "")) if d.get("note") else ""
    if r.document is not None:
        text = (
            f"{text}; document {_short(r.document)}" if text else f"document {_short(r.document)}"
        )
    return text or "-"


def end_state(state: CaseState) -> str:
    if state.destroyed:
        return "destroyed (brakowanie)"
    if state.transferred:
        return "transferred to the state archive (archiwum państwowe)"
    if state.archived:
        return "in the office archive (archiwum zakładowe)"
    if state.closed:
        return "closed (zakończona)"
    if state.case is not None:
        return "open (w toku)"
    return "registered, no case opened yet"


def proven_line(entry: TrailEntry, calendar: OfficeCalendar) -> str:
    """``after X, no later than Y (leaf i of n)``: the event's proven interval."""
    fmt = calendar.format_time
    after = entry.proven.after
    start = "no checkpoint before it" if after is None else f"after {fmt(after)}"
    return (
        f"{start}, no later than {fmt(entry.receipt.time_bound)} "
        f"(leaf {entry.receipt.index} of {entry.receipt.size})"
    )


def event_lines(entry: TrailEntry, calendar: OfficeCalendar) -> list[str]:
    """The timeline's lines of one event (also what the browser page shows, word for word)."""
    r = entry.event.record
    english, polish = EVENT_TERMS[r.type]
    cert = entry.certificate
    lines = [
        f"#{r.seq:<3} {calendar.format_time(r.time)}  {english} ({polish})",
        f"     who:    {cert.position}, {cert.title} (unit {cert.unit})",
        f"     what:   {describe(entry.event, calendar)}",
        f"     proven: {proven_line(entry, calendar)}",
    ]
    if r.declared is not None:
        note = " (outside the proven interval: flagged)" if entry.flagged else ""
        lines.append(f"     declared: {calendar.format_time(r.declared)}{note}")
    return lines


def render_timeline(trail: VerifiedTrail) -> str:
    """The course of the case as readable text: who, what, when, which proven interval."""
    calendar = trail.calendar
    fmt = calendar.format_time
    office = trail.office
    origin = trail.entries[0].receipt.origin
    name = (
        office.name if trail.ca_pinned else f"{office.name}; name not verified: pin the office key"
    )
    lines = [
        f"Case {trail.case}, office {office.office} ({name})",
        f"office CA key: {fingerprint(office.ca_public_key)}"
        + (
            ""
            if trail.ca_pinned
            else " (from the bundle: compare it with the office's published key)"
        ),
        f"ledger: {origin}; trust policy "
        + ("pinned" if trail.policy_pinned else "from the bundle (pin it with --policy)"),
        f"times: {office.zone}; each event is proven to lie after the ledger checkpoint it names "
        "and no later than its receipt",
        "",
    ]
    for entry in trail.entries:
        lines.extend(event_lines(entry, calendar))
    lines.append("")
    lines.append(f"state: {end_state(trail.state)}")
    lines.append(
        f"complete as of {fmt(trail.head_receipt.time_bound)}: the signed head counts "
        f"{trail.head.count} events"
    )
    if trail.document is not None:
        where = ", ".join(f"#{i}" for i in trail.document_events)
        line = f"document {trail.document.hex()}: in events {where}"
        if trail.document_receipt is not None:
            line += f"; existed no later than {fmt(trail.document_receipt.time_bound)}"
        lines.append(line)
    if trail.flagged:
        where = ", ".join(f"#{i}" for i in trail.flagged)
        lines.append(f"flagged: a declared time outside the proven interval in events {where}")
    lines.append(
        f"valid: {len(trail.entries)} events; every signature, certificate, ledger receipt, "
        "checkpoint, previous-event hash, workflow rule and the signed head check out"
    )
    return "\n".join(lines) + "\n"
