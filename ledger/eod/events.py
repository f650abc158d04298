"""Event records: the canonical, signed, hash-chained unit of an EOD audit trail.

One record per step of an item's or a case's course (registration, assignment, each
acceptance, ...). The record carries everything an auditor needs to judge the step, and nothing
personal: the document appears only as its SHA-256 digest, positions by their identifiers::

    {"case": "OR.0012.1.2025" | null,   case sign (znak sprawy), null until the case is opened
     "data": {...},                     type-specific fields (see ledger.eod.rules)
     "declared": <POSIX seconds> | null,  a time the user declares the act happened (--at)
     "document": "<64 hex>" | null,     SHA-256 of the document the step concerns
     "format": "ledger-eod-event/v2",
     "office": "<office id>",
     "position": "<position id>",       who acts (stanowisko), certified by the office CA
     "prev": "<64 hex>" | null,         hash of the previous event of this chain (null first)
     "seen": {"size": n, "root": "<base64>"} | null,
                                        the latest cosigned checkpoint the office had seen
     "seq": <n>,                        0, 1, 2, ... along the chain
     "time": <POSIX seconds>,           the office clock when the step was recorded
     "type": "<event type>"}

The actor signs ``SIGNING_DOMAIN || canonical(record)`` with the position's Ed25519 key; the
domain prefix keeps an event signature from ever being valid as another message signed by the
same key (a certificate, a note). The signed event is the canonical object
``{"event": record, "signature": "<base64>"}``; its SHA-256 is the **event hash**: the ``prev``
of the next event and the digest anchored in the ledger. Because the signature is inside the
hashed bytes, the ledger receipt also fixes the signature, and the previous-hash chain makes
every change, removal, insertion or reordering of an earlier event visible.

The ``time`` is the office's claim. Two facts the office cannot move bound it (ledger.eod.timing):
the event names the root of the ``seen`` checkpoint, so it was made after that checkpoint was
cosigned; and its ledger receipt shows it existed no later than the receipt's time bound. A
``declared`` time is what a user says (an item received yesterday, registered today); it is
kept next to the proven interval and flagged when it lies outside it, and no rule counts from
it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from ledger.crypto import SIGNATURE_SIZE, Ed25519Key, b64decode_strict, verify_ed25519
from ledger.eod import canonical
from ledger.eod.model import EventType
from ledger.errors import MalformedError

__all__ = [
    "EVENT_FORMAT",
    "SIGNING_DOMAIN",
    "EventRecord",
    "Seen",
    "SignedEvent",
    "parse_hex_digest",
]

EVENT_FORMAT: Final = "ledger-eod-event/v2"
#: Domain separation of event signatures (see the module docstring).
SIGNING_DOMAIN: Final = b"ledger/eod-event-signature/v1\n"
_MAX_SEQ: Final = 1 << 40
_FIELDS: Final = frozenset(
    {
        "case",
        "data",
        "declared",
        "document",
        "format",
        "office",
        "position",
        "prev",
        "seen",
        "seq",
        "time",
        "type",
    }
)
_MAX_TIME: Final = (1 << 63) - 1


def parse_hex_digest(text: object, *, what: str) -> bytes:
    """A 32-byte digest from 64 lowercase hex digits.

    Raises:
        MalformedError: anything else.
    """
    if not isinstance(text, str) or len(text) != 64 or text != text.lower():
        raise MalformedError(f"{what} must be 64 lowercase hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise MalformedError(f"{what} must be 64 lowercase hex digits") from None


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj[key]
    if value is not None and (not isinstance(value, str) or not value):
        raise MalformedError(f"event field {key!r} must be a non-empty string or null")
    return value


def _int(obj: Mapping[str, Any], key: str, limit: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise MalformedError(f"event field {key!r} must be an integer in [0, {limit}]")
    return value


@dataclass(frozen=True, kw_only=True)
class Seen:
    """A checkpoint an event names: the tree size and root of the ledger the office had seen."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.size <= _MAX_TIME or len(self.root) != 32:
            raise MalformedError("a seen checkpoint is a tree size and a 32-byte root")

    def to_json(self) -> dict[str, Any]:
        return {"root": base64.b64encode(self.root).decode("ascii"), "size": self.size}

    @classmethod
    def from_json(cls, obj: object) -> Seen:
        """Parse ``{"root": "<base64>", "size": n}``.

        Raises:
            MalformedError: any other shape.
        """
        if not isinstance(obj, Mapping) or set(obj) != {"root", "size"}:
            raise MalformedError("event field 'seen' must be {'root': ..., 'size': ...} or null")
        size, root = obj["size"], obj["root"]
        if isinstance(size, bool) or not isinstance(size, int) or not isinstance(root, str):
            raise MalformedError("event field 'seen' must be {'root': ..., 'size': ...} or null")
        return cls(size=size, root=b64decode_strict(root, what="seen checkpoint root"))


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """The signed content of one event (see the module docstring). ``data`` is not mutated."""

    office: str
    seq: int
    prev: bytes | None
    type: EventType
    case: str | None
    document: bytes | None
    position: str
    time: int
    data: Mapping[str, Any] = field(default_factory=dict)
    seen: Seen | None = None
    declared: int | None = None

    def __post_init__(self) -> None:
        if self.prev is not None and len(self.prev) != 32:
            raise MalformedError("prev must be a 32-byte hash")
        if self.document is not None and len(self.document) != 32:
            raise MalformedError("document must be a 32-byte SHA-256 digest")
        if (self.seq == 0) != (self.prev is None):
            raise MalformedError("exactly the first event of a chain (seq 0) has no prev")
        if not 0 <= self.seq <= _MAX_SEQ:
            raise MalformedError("seq is out of range")
        if not self.office or not self.position:
            raise MalformedError("office and position must be non-empty")
        canonical.encode(self.to_json())  # refuses floats and other non-canonical data

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "data": dict(self.data),
            "declared": self.declared,
            "document": self.document.hex() if self.document is not None else None,
            "format": EVENT_FORMAT,
            "office": self.office,
            "position": self.position,
            "prev": self.prev.hex() if self.prev is not None else None,
            "seen": self.seen.to_json() if self.seen is not None else None,
            "seq": self.seq,
            "time": self.time,
            "type": self.type.value,
        }

    def signing_bytes(self) -> bytes:
        """What the actor signs: the domain prefix and the canonical record."""
        return SIGNING_DOMAIN + canonical.encode(self.to_json())

    def sign(self, key: Ed25519Key) -> SignedEvent:
        return SignedEvent(record=self, signature=key.sign(self.signing_bytes()))

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EventRecord:
        """Parse a record object.

        Raises:
            MalformedError: missing, unknown or ill-typed fields, an unknown type or format.
        """
        if set(obj) != _FIELDS:
            raise MalformedError(f"an event has exactly the fields {', '.join(sorted(_FIELDS))}")
        if obj["format"] != EVENT_FORMAT:
            raise MalformedError(f"unknown event format {obj['format']!r}")
        try:
            kind = EventType(obj["type"])
        except ValueError:
            raise MalformedError(f"unknown event type {obj['type']!r}") from None
        if not isinstance(obj["data"], dict):
            raise MalformedError("event field 'data' must be an object")
        office, position = _opt_str(obj, "office"), _opt_str(obj, "position")
        if office is None or position is None:
            raise MalformedError("event fields 'office' and 'position' are required")
        prev = obj["prev"]
        document = obj["document"]
        declared = None if obj["declared"] is None else _int(obj, "declared", _MAX_TIME)
        return cls(
            office=office,
            seq=_int(obj, "seq", _MAX_SEQ),
            prev=None if prev is None else parse_hex_digest(prev, what="prev"),
            type=kind,
            case=_opt_str(obj, "case"),
            document=None if document is None else parse_hex_digest(document, what="document"),
            position=position,
            time=_int(obj, "time", _MAX_TIME),
            data=obj["data"],
            seen=None if obj["seen"] is None else Seen.from_json(obj["seen"]),
            declared=declared,
        )


@dataclass(frozen=True, kw_only=True)
class SignedEvent:
    """An event record and its actor's 64-byte Ed25519 signature."""

    record: EventRecord
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signature) != SIGNATURE_SIZE:
            raise MalformedError(f"an event signature is {SIGNATURE_SIZE} bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.record.to_json(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    def encode(self) -> bytes:
        """The canonical bytes whose SHA-256 is the event hash."""
        return self._encoded

    # Computed once per event (the record is frozen and its data never mutated): a chain's
    # fold, its trail and its verification ask for each event's hash several times.
    @cached_property
    def _encoded(self) -> bytes:
        return canonical.encode(self.to_json())

    @cached_property
    def hash(self) -> bytes:
        """The event hash: ``prev`` of the next event and the digest anchored in the ledger."""
        return canonical.sha256(self._encoded)

    def verify(self, public_key: bytes) -> None:
        """Check the actor's signature with the position's public key.

        Raises:
            VerificationError: the signature does not verify.
        """
        verify_ed25519(public_key, self.record.signing_bytes(), self.signature)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SignedEvent:
        """Parse ``{"event": ..., "signature": ...}``.

        Raises:
            MalformedError: any deviation from the format.
        """
        if set(obj) != {"event", "signature"} or not isinstance(obj["event"], dict):
            raise MalformedError("a signed event is {'event': {...}, 'signature': '...'}")
        if not isinstance(obj["signature"], str):
            raise MalformedError("an event signature must be base64 text")
        return cls(
            record=EventRecord.from_json(obj["event"]),
            signature=b64decode_strict(obj["signature"], what="event signature"),
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedEvent:
        """Parse canonical bytes (as stored); non-canonical bytes are refused.

        Raises:
            MalformedError: see :func:`ledger.eod.canonical.decode` and :meth:`from_json`.
        """
        return cls.from_json(canonical.decode(data, what="event"))
