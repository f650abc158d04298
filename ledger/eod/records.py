"""Two records the office CA key signs besides certificates: the office record and trail heads.

**The office record** names the office: its id, name and time zone, and the CA public key that
signs it (canonical JSON, Ed25519 over :data:`OFFICE_DOMAIN` || canonical body)::

    {"office": {"ca_public_key": "<base64>", "format": "ledger-eod-office/v1", "id": ...,
                "name": ..., "zone": "Europe/Warsaw"},
     "signature": "<base64>"}

Anyone can make a key and sign "Urząd Miasta X" with it, so the record authenticates the name
and the zone only once the auditor has pinned the CA key (its fingerprint, published by the
office); otherwise the verifier shows them as unverified. The zone matters: every calendar rule
of a trail (register years, retention, deadlines) is computed in it.

**A trail head** closes a chain: how many events it holds and the hash of the last, signed by
the office CA and anchored in the ledger like an event::

    {"head": {"case": <sign> | null, "chain": "<64 hex: hash of event 0>", "count": n,
              "format": "ledger-eod-head/v1", "last": "<64 hex>", "office": ..., "time": <s>},
     "signature": "<base64>"}

``ledger eod trail`` and ``status`` refresh it whenever the chain has grown, so a bundle whose
last events were dropped no longer matches its head and fails. A bundle cut back to an older,
genuine head still verifies, but only "as of" that head's ledger time, which the verifier
prints: the auditor sees how current the trail is.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ledger.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Ed25519Key, b64decode_strict
from ledger.crypto import verify_ed25519 as _verify
from ledger.eod import canonical
from ledger.eod.calendar import OfficeCalendar
from ledger.eod.events import parse_hex_digest
from ledger.eod.pki import check_identifier
from ledger.errors import MalformedError, VerificationError

__all__ = [
    "HEAD_DOMAIN",
    "HEAD_FORMAT",
    "OFFICE_DOMAIN",
    "OFFICE_FORMAT",
    "OfficeRecord",
    "TrailHead",
]

OFFICE_FORMAT: Final = "ledger-eod-office/v1"
OFFICE_DOMAIN: Final = b"ledger/eod-office-record/v1\n"
HEAD_FORMAT: Final = "ledger-eod-head/v1"
HEAD_DOMAIN: Final = b"ledger/eod-trail-head/v1\n"
_MAX_NAME: Final = 200


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _signature(obj: Mapping[str, Any], what: str) -> bytes:
    text = obj.get("signature")
    if not isinstance(text, str):
        raise MalformedError(f"the {what} signature must be base64 text")
    raw = b64decode_strict(text, what=f"{what} signature")
    if len(raw) != SIGNATURE_SIZE:
        raise MalformedError(f"the {what} signature is {SIGNATURE_SIZE} bytes")
    return raw


@dataclass(frozen=True, kw_only=True)
class OfficeRecord:
    """The office's id, name, time zone and CA key, signed by that key."""

    office: str
    name: str
    zone: str
    ca_public_key: bytes
    signature: bytes

    def body(self) -> dict[str, Any]:
        return {
            "ca_public_key": _b64(self.ca_public_key),
            "format": OFFICE_FORMAT,
            "id": self.office,
            "name": self.name,
            "zone": self.zone,
        }

    def to_json(self) -> dict[str, Any]:
        return {"office": self.body(), "signature": _b64(self.signature)}

    @property
    def calendar(self) -> OfficeCalendar:
        return OfficeCalendar(self.zone)

    @classmethod
    def sign(cls, *, office: str, name: str, zone: str, ca: Ed25519Key) -> OfficeRecord:
        """Sign a new office record with the CA key.

        Raises:
            MalformedError: a bad id, an empty or too long name, an unknown zone.
        """
        check_identifier(office, what="office id")
        if not name or len(name) > _MAX_NAME or any(ord(c) < 0x20 for c in name):
            raise MalformedError(f"the office name must be 1-{_MAX_NAME} printable characters")
        OfficeCalendar(zone)
        unsigned = cls(
            office=office, name=name, zone=zone, ca_public_key=ca.public_key, signature=b""
        )
        signature = ca.sign(OFFICE_DOMAIN + canonical.encode(unsigned.body()))
        return cls(
            office=office, name=name, zone=zone, ca_public_key=ca.public_key, signature=signature
        )

    @classmethod
    def from_json(cls, obj: object) -> OfficeRecord:
        """Parse and check the self-signature (it proves the record is whole, not who made it).

        Raises:
            MalformedError: any deviation from the format, an unknown zone.
            VerificationError: the signature does not verify under the record's key.
        """
        if not isinstance(obj, Mapping) or set(obj) != {"office", "signature"}:
            raise MalformedError("the office record is {'office': {...}, 'signature': '...'}")
        body = obj["office"]
        fields = {"ca_public_key", "format", "id", "name", "zone"}
        if not isinstance(body, Mapping) or set(body) != fields:
            raise MalformedError(
                f"the office record has exactly the fields {', '.join(sorted(fields))}"
            )
        if body["format"] != OFFICE_FORMAT:
            raise MalformedError(f"the office record is not {OFFICE_FORMAT}")
        if not all(isinstance(body[k], str) for k in fields):
            raise MalformedError("the office record's fields must be strings")
        key = b64decode_strict(body["ca_public_key"], what="CA key")
        if len(key) != PUBLIC_KEY_SIZE:
            raise MalformedError("the office CA key must be 32 bytes")
        check_identifier(body["id"], what="office id")
        OfficeCalendar(body["zone"])
        record = cls(
            office=body["id"],
            name=body["name"],
            zone=body["zone"],
            ca_public_key=key,
            signature=_signature(obj, "office record"),
        )
        try:
            _verify(key, OFFICE_DOMAIN + canonical.encode(record.body()), record.signature)
        except VerificationError:
            raise VerificationError(
                "the office record is not signed by its CA key (its name or zone was changed)"
            ) from None
        return record


@dataclass(frozen=True, kw_only=True)
class TrailHead:
    """The signed end of a chain (see the module docstring)."""

    office: str
    chain: bytes
    case: str | None
    count: int
    last: bytes
    time: int
    signature: bytes

    def body(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "chain": self.chain.hex(),
            "count": self.count,
            "format": HEAD_FORMAT,
            "last": self.last.hex(),
            "office": self.office,
            "time": self.time,
        }

    def to_json(self) -> dict[str, Any]:
        return {"head": self.body(), "signature": _b64(self.signature)}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @property
    def hash(self) -> bytes:
        """The digest anchored for the head."""
        return canonical.sha256(self.encode())

    @classmethod
    def sign(
        cls,
        *,
        office: str,
        chain: bytes,
        case: str | None,
        count: int,
        last: bytes,
        time: int,
        ca: Ed25519Key,
    ) -> TrailHead:
        unsigned = cls(
            office=office,
            chain=chain,
            case=case,
            count=count,
            last=last,
            time=time,
            signature=b"",
        )
        signature = ca.sign(HEAD_DOMAIN + canonical.encode(unsigned.body()))
        return cls(
            office=office,
            chain=chain,
            case=case,
            count=count,
            last=last,
            time=time,
            signature=signature,
        )

    def verify(self, ca_public_key: bytes) -> None:
        """Check the office CA's signature.

        Raises:
            VerificationError: it does not verify.
        """
        try:
            _verify(ca_public_key, HEAD_DOMAIN + canonical.encode(self.body()), self.signature)
        except VerificationError:
            raise VerificationError("the trail head is not signed by the office CA") from None

    @classmethod
    def from_json(cls, obj: object) -> TrailHead:
        """Parse a signed head (the signature is not checked here).

        Raises:
            MalformedError: any deviation from the format.
        """
        if not isinstance(obj, Mapping) or set(obj) != {"head", "signature"}:
            raise MalformedError("the trail head is {'head': {...}, 'signature': '...'}")
        body = obj["head"]
        fields = {"case", "chain", "count", "format", "last", "office", "time"}
        if not isinstance(body, Mapping) or set(body) != fields or body["format"] != HEAD_FORMAT:
            raise MalformedError(f"the trail head is not a {HEAD_FORMAT} record")
        count, time = body["count"], body["time"]
        for value in (count, time):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MalformedError("the trail head's count and time are non-negative integers")
        case = body["case"]
        if case is not None and (not isinstance(case, str) or not case):
            raise MalformedError("the trail head's case is a case sign or null")
        if not isinstance(body["office"], str):
            raise MalformedError("the trail head's office must be a string")
        return cls(
            office=body["office"],
            chain=parse_hex_digest(body["chain"], what="the trail head's chain"),
            case=case,
            count=count,
            last=parse_hex_digest(body["last"], what="the trail head's last event"),
            time=time,
            signature=_signature(obj, "trail head"),
        )
