"""Audit trails and official receipts: the self-contained files, and their offline verification.

A **trail bundle** (``ledger eod trail CASE --out FILE``) is one JSON file holding everything an
auditor needs to check the course of a case with no network and no access to the office::

    {"format": "ledger-eod-trail/v1",
     "office": {"id": ..., "name": ..., "ca_public_key": "<base64>"},
     "case": "<case sign>",
     "policy": "<the ledger's c2sp.org/tlog-policy text>",
     "certificates": [<position certificate>, ...],     (ledger.eod.pki)
     "events": [{"event": <signed event>, "receipt": "<tlog-proof of the event hash>"}, ...],
     "documents": [{"digest": "<64 hex>", "receipt": "<tlog-proof of the digest>"}, ...]}

:func:`verify_trail` checks, in order, and fails with :class:`~ledger.errors.VerificationError`
naming the event and the reason:

1. the office CA key and the trust policy: taken from the bundle unless the auditor pins them
   (``--office-key``, ``--policy``); a pinned key or policy that differs fails, and the timeline
   says which were not pinned (a bundle can only vouch for itself);
2. each position certificate under the office CA key;
3. each event: its signature under its position's certified key; its ledger receipt for the
   event hash under the policy (the event existed no later than the receipt's time bound, and
   its claimed time is not later than that bound plus :data:`MAX_CLOCK_SKEW`); then
   :func:`ledger.eod.rules.apply`: the sequence number, the previous-event hash, the role and
   every ordering rule. A changed event fails its signature (or, re-signed, its receipt); a
   removed, inserted or reordered event fails the previous-hash chain;
4. each document receipt under the policy; with ``--document`` the file's digest must be a
   document of the case.

What a trail cannot show: events the office never exported after the last one in the bundle.
The timeline prints the final state (closed, archived, destroyed) so the auditor sees where the
course ends; comparing with the office's case list (spis spraw) is the auditor's step.

The **official receipt** (urzędowe poświadczenie of a registration, handed to the sender) has
the same building blocks: the registration event, its receipt and the document's, the
registering position's certificate, the office CA key and the policy (:func:`verify_official`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ledger.crypto import PUBLIC_KEY_SIZE, b64decode_strict
from ledger.eod.canonical import loads
from ledger.eod.events import SignedEvent, parse_hex_digest
from ledger.eod.model import EVENT_TERMS, EventType
from ledger.eod.pki import PositionCertificate, fingerprint
from ledger.eod.rules import CaseState, WorkflowError, apply
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.policy import Policy, parse_policy
from ledger.receipt import VerifiedReceipt, verify_receipt

__all__ = [
    "MAX_BUNDLE_SIZE",
    "MAX_CLOCK_SKEW",
    "OFFICIAL_RECEIPT_FORMAT",
    "TRAIL_FORMAT",
    "TrailEntry",
    "VerifiedOfficialReceipt",
    "VerifiedTrail",
    "render_timeline",
    "verify_official",
    "verify_trail",
]

TRAIL_FORMAT: Final = "ledger-eod-trail/v1"
OFFICIAL_RECEIPT_FORMAT: Final = "ledger-eod-official-receipt/v1"
MAX_BUNDLE_SIZE: Final = 64 * 1024 * 1024
#: How far an event's claimed time may lie after its ledger time bound: the office's and the
#: validators' clocks differ a little; more than this means a wrong clock or a forged date.
MAX_CLOCK_SKEW: Final = 600


@dataclass(frozen=True, kw_only=True)
class TrailEntry:
    event: SignedEvent
    certificate: PositionCertificate
    receipt: VerifiedReceipt


@dataclass(frozen=True, kw_only=True)
class VerifiedTrail:
    """A verified trail: its events with their certificates and receipts, and the end state."""

    office: str
    office_name: str
    ca_public_key: bytes
    ca_pinned: bool
    policy_pinned: bool
    case: str
    entries: tuple[TrailEntry, ...]
    state: CaseState
    document: bytes | None = None
    document_events: tuple[int, ...] = ()
    document_receipt: VerifiedReceipt | None = None


@dataclass(frozen=True, kw_only=True)
class VerifiedOfficialReceipt:
    office: str
    office_name: str
    ca_public_key: bytes
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
) -> tuple[str, str, bytes, Policy]:
    office = _field(bundle, "office", dict, what)
    office_id = _field(office, "id", str, f"{what} office")
    office_name = _field(office, "name", str, f"{what} office")
    ca_key = b64decode_strict(_field(office, "ca_public_key", str, f"{what} office"), what="CA key")
    if len(ca_key) != PUBLIC_KEY_SIZE:
        raise MalformedError("the office CA key must be 32 bytes")
    if office_key is not None and office_key.strip() not in (
        fingerprint(ca_key),
        base64.b64encode(ca_key).decode("ascii"),
    ):
        raise _fail(
            f"the office CA key in the {what} ({fingerprint(ca_key)}) is not the pinned key"
        )
    bundled = parse_policy(_field(bundle, "policy", str, what))
    if policy is not None and policy != bundled:
        # Not fatal by itself, but every receipt is then checked against the pinned policy.
        bundled = policy
    return office_id, office_name, ca_key, bundled


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


def _receipt(text: object, policy: Policy, digest: bytes, what: str) -> VerifiedReceipt:
    if not isinstance(text, str):
        raise MalformedError(f"{what}: the receipt must be text")
    try:
        return verify_receipt(text, policy, digest)
    except LedgerError as exc:
        raise _fail(f"{what}: the ledger receipt does not verify: {exc.diagnostics()}") from None


def _check_event(
    state: CaseState,
    entry: object,
    index: int,
    certs: Mapping[str, PositionCertificate],
    policy: Policy,
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
    verified = _receipt(entry["receipt"], policy, event.hash, what)
    if record.time > verified.time_bound + MAX_CLOCK_SKEW:
        raise _fail(
            f"{what}: dated {_when(record.time)}, after the ledger's time bound "
            f"{_when(verified.time_bound)}"
        )
    try:
        new_state = apply(state, event, cert)
    except WorkflowError as exc:
        raise _fail(f"{what}: {exc.diagnostics()}") from None
    return new_state, TrailEntry(event=event, certificate=cert, receipt=verified)


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
    office, name, ca_key, trusted = _trust(bundle, policy, office_key, "trail bundle")
    case = _field(bundle, "case", str, "trail bundle")
    certs = _certificates(_field(bundle, "certificates", list, "trail bundle"), ca_key, office)
    raw_events = _field(bundle, "events", list, "trail bundle")
    if not raw_events:
        raise _fail("the trail holds no events")
    state = CaseState()
    entries: list[TrailEntry] = []
    for index, entry in enumerate(raw_events):
        state, checked = _check_event(state, entry, index, certs, trusted)
        entries.append(checked)
    if state.case is not None and state.case != case:
        raise _fail(f"the bundle says case {case!r} but its events are case {state.case!r}")
    documents: dict[bytes, VerifiedReceipt] = {}
    for item in _field(bundle, "documents", list, "trail bundle"):
        if not isinstance(item, dict):
            raise MalformedError("a document entry must be an object")
        digest = parse_hex_digest(item.get("digest"), what="document digest")
        documents[digest] = _receipt(
            item.get("receipt"), trusted, digest, f"document {digest.hex()[:16]}"
        )
    used = [i for i, e in enumerate(entries) if e.event.record.document == document]
    if document is not None and not used:
        raise _fail(f"the document {document.hex()} is not part of this case")
    return VerifiedTrail(
        office=office,
        office_name=name,
        ca_public_key=ca_key,
        ca_pinned=office_key is not None,
        policy_pinned=policy is not None,
        case=case,
        entries=tuple(entries),
        state=state,
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
    office, name, ca_key, trusted = _trust(bundle, policy, office_key, "official receipt")
    certs = _certificates(_field(bundle, "certificates", list, "official receipt"), ca_key, office)
    event = SignedEvent.from_json(_field(bundle, "event", dict, "official receipt"))
    record = event.record
    cert = certs.get(record.position)
    if cert is None:
        raise _fail(f"no certificate for position {record.position!r}")
    try:
        event.verify(cert.public_key)
    except VerificationError:
        raise _fail("the registration's signature does not verify") from None
    if record.type is not EventType.REGISTERED or record.document is None:
        raise _fail("the official receipt does not hold a registration")
    register = _field(bundle, "register", str, "official receipt")
    if record.data.get("register") != register or record.case != bundle.get("case"):
        raise _fail("the register number or case sign differs from the signed registration")
    if record.document.hex() != bundle.get("document"):
        raise _fail("the document digest differs from the signed registration")
    if document is not None and document != record.document:
        raise _fail("the document is not the one registered")
    event_receipt = _receipt(bundle.get("event_receipt"), trusted, event.hash, "registration")
    doc_receipt = _receipt(bundle.get("document_receipt"), trusted, record.document, "document")
    return VerifiedOfficialReceipt(
        office=office,
        office_name=name,
        ca_public_key=ca_key,
        ca_pinned=office_key is not None,
        policy_pinned=policy is not None,
        register=register,
        case=record.case,
        document=record.document,
        registered_at=record.time,
        event_receipt=event_receipt,
        document_receipt=doc_receipt,
    )


# ----------------------------------------------------------------------------- timeline


def _when(ts: int) -> str:
    try:
        return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return f"{ts} s after the epoch"


def _short(digest: bytes) -> str:
    return digest.hex()[:16]


def describe(event: SignedEvent) -> str:
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
        text = f"case {r.case}, category {d.get('category')}"
        if d.get("cost"):
            text += ", cost document"
    elif kind is EventType.ATTACHED:
        text = str(d.get("kind"))
    elif kind is EventType.SUBMITTED:
        text = f"draft for {d.get('levels')} level(s) of acceptance"
    elif kind is EventType.ACCEPTED:
        text = f"level {d.get('level')}"
    elif kind is EventType.REJECTED:
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
        notice = d.get("notice")
        text = (
            f"deemed delivered, first notice {_when(notice)}"
            if d.get("deemed") and isinstance(notice, int)
            else "delivered"
        )
    elif kind is EventType.DESTROYED:
        text = f"consent {d.get('consent')}"
    else:
        text = str(d.get("note", "")) if d.get("note") else ""
    if r.document is not None:
        text = (
            f"{text}; document {_short(r.document)}" if text else f"document {_short(r.document)}"
        )
    return text or "-"


def _end_state(state: CaseState) -> str:
    if state.destroyed:
        return "destroyed (brakowanie)"
    if state.archived:
        return "in the office archive (archiwum zakładowe)"
    if state.closed_at is not None:
        return "closed (zakończona)"
    if state.case is not None:
        return "open (w toku)"
    return "registered, no case opened yet"


def render_timeline(trail: VerifiedTrail) -> str:
    """The course of the case as readable text: who, what, when, which ledger time bound."""
    origin = trail.entries[0].receipt.origin
    lines = [
        f"Case {trail.case}, office {trail.office} ({trail.office_name})",
        f"office CA key: {fingerprint(trail.ca_public_key)}"
        + (
            ""
            if trail.ca_pinned
            else " (from the bundle: compare it with the office's published key)"
        ),
        f"ledger: {origin}; trust policy "
        + ("pinned" if trail.policy_pinned else "from the bundle (pin it with --policy)"),
        "",
    ]
    for entry in trail.entries:
        r = entry.event.record
        english, polish = EVENT_TERMS[r.type]
        cert = entry.certificate
        lines.append(f"#{r.seq:<3} {_when(r.time)}  {english} ({polish})")
        lines.append(f"     who:    {cert.position}, {cert.title} (unit {cert.unit})")
        lines.append(f"     what:   {describe(entry.event)}")
        lines.append(
            f"     ledger: existed no later than {_when(entry.receipt.time_bound)} "
            f"(leaf {entry.receipt.index} of {entry.receipt.size})"
        )
    lines.append("")
    lines.append(f"state: {_end_state(trail.state)}")
    if trail.document is not None:
        where = ", ".join(f"#{i}" for i in trail.document_events)
        line = f"document {trail.document.hex()}: in events {where}"
        if trail.document_receipt is not None:
            line += f"; existed no later than {_when(trail.document_receipt.time_bound)}"
        lines.append(line)
    lines.append(
        f"valid: {len(trail.entries)} events; every signature, certificate, ledger receipt, "
        "previous-event hash and workflow rule checks out"
    )
    return "\n".join(lines) + "\n"
