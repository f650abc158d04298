"""The office's own certification: an office CA key certifies the positions' signing keys.

Internal acceptances in an EOD system are usually signed with non-qualified signatures issued
by the system's own certification centre (eod-domain.md, "Signatures and time"). We model
exactly that, and nothing more: one Ed25519 **office CA key** per office signs **position
certificates**, each binding a position (stanowisko) of a unit to its Ed25519 public key and to
the roles it may record (:class:`ledger.eod.model.Role`). A position certificate is the
canonical JSON object::

    {"certificate": {"format": "ledger-eod-position/v1", "issued": <POSIX s>, "office": ...,
                     "position": ..., "public_key": "<base64>", "roles": [...], "title": ...,
                     "unit": ...},
     "signature": "<base64 Ed25519 by the office CA over CERT_DOMAIN || canonical(certificate)>"}

Verifying an event checks the chain: the event signature under the position key, the
certificate under the office CA key, the office and position names matching, and the
certificate issued no later than the event. The CA public key is the office's trust anchor:
an auditor pins it from a source other than the bundle (the office publishes its fingerprint),
exactly as the ledger's trust policy is pinned.

Titles name positions ("Główna księgowa"), never people: names stay in the office's HR records.
Not modelled: revocation and expiry (a position whose key is lost gets a new position id; the
old certificate stays valid for the events it signed before), qualified signatures.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ledger.crypto import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Ed25519Key,
    b64decode_strict,
    verify_ed25519,
)
from ledger.eod import canonical
from ledger.eod.model import Role
from ledger.errors import MalformedError, VerificationError

__all__ = [
    "CERT_DOMAIN",
    "CERT_FORMAT",
    "KEY_FILE_HEADER",
    "PositionCertificate",
    "SigningIdentity",
    "check_identifier",
    "fingerprint",
    "issue_certificate",
]

CERT_FORMAT: Final = "ledger-eod-position/v1"
CERT_DOMAIN: Final = b"ledger/eod-position-certificate/v1\n"
KEY_FILE_HEADER: Final = "ledger-eod-key/v1"
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CERT_FIELDS: Final = frozenset(
    {"format", "issued", "office", "position", "public_key", "roles", "title", "unit"}
)


def check_identifier(text: str, *, what: str) -> str:
    """Office and position identifiers: 1-64 of ``A-Z a-z 0-9 . _ -``, starting alnum.

    Raises:
        MalformedError: otherwise.
    """
    if not isinstance(text, str) or not _IDENTIFIER.fullmatch(text):
        raise MalformedError(f"{what} {text!r} must be 1-64 of A-Z a-z 0-9 . _ - (no spaces)")
    return text


def fingerprint(public_key: bytes) -> str:
    """A short, comparable fingerprint of a public key: ``SHA256:<base64 of SHA-256>``."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True, kw_only=True)
class SigningIdentity:
    """A named Ed25519 signing key (the office CA or a position), as held in a key file."""

    name: str
    key: Ed25519Key = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> SigningIdentity:
        return cls(name=name, key=Ed25519Key(os.urandom(SEED_SIZE)))

    def to_text(self) -> str:
        seed = base64.b64encode(self.key.seed).decode("ascii")
        return f"{KEY_FILE_HEADER}\nname {self.name}\nseed {seed}\n"

    @classmethod
    def from_text(cls, text: str) -> SigningIdentity:
        """Parse a key file.

        Raises:
            MalformedError: wrong header or fields.
        """
        lines = text.split("\n")
        if len(lines) != 4 or lines[0] != KEY_FILE_HEADER or lines[3] != "":
            raise MalformedError(f"not a {KEY_FILE_HEADER} key file")
        if not lines[1].startswith("name ") or not lines[2].startswith("seed "):
            raise MalformedError("a key file holds 'name' and 'seed' lines")
        seed = b64decode_strict(lines[2][5:], what="key file seed")
        return cls(name=lines[1][5:], key=Ed25519Key(seed))


@dataclass(frozen=True, kw_only=True)
class PositionCertificate:
    """A position's public key and roles, signed by the office CA (see the module docstring)."""

    office: str
    position: str
    unit: str
    title: str
    roles: tuple[Role, ...]
    public_key: bytes
    issued: int
    signature: bytes

    def __post_init__(self) -> None:
        check_identifier(self.office, what="office id")
        check_identifier(self.position, what="position id")
        if not self.unit or not self.title:
            raise MalformedError("a certificate names the unit and the position's title")
        if len(self.public_key) != PUBLIC_KEY_SIZE or len(self.signature) != SIGNATURE_SIZE:
            raise MalformedError("certificate key or signature has the wrong length")
        if not self.roles or list(self.roles) != sorted(set(self.roles)):
            raise MalformedError("certificate roles must be non-empty, sorted and distinct")

    def body(self) -> dict[str, Any]:
        return {
            "format": CERT_FORMAT,
            "issued": self.issued,
            "office": self.office,
            "position": self.position,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "roles": [r.value for r in self.roles],
            "title": self.title,
            "unit": self.unit,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "certificate": self.body(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    def verify(self, ca_public_key: bytes) -> None:
        """Check the office CA's signature over this certificate.

        Raises:
            VerificationError: it does not verify.
        """
        try:
            verify_ed25519(ca_public_key, _signing_bytes(self.body()), self.signature)
        except VerificationError:
            raise VerificationError(
                f"certificate of position {self.position!r} is not signed by the office CA"
            ) from None

    def allows(self, role: Role) -> bool:
        return role in self.roles

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PositionCertificate:
        """Parse ``{"certificate": ..., "signature": ...}``.

        Raises:
            MalformedError: any deviation from the format.
        """
        body = obj.get("certificate")
        if set(obj) != {"certificate", "signature"} or not isinstance(body, dict):
            raise MalformedError("a certificate is {'certificate': {...}, 'signature': '...'}")
        if set(body) != _CERT_FIELDS or body["format"] != CERT_FORMAT:
            raise MalformedError(f"not a {CERT_FORMAT} certificate")
        strings = ("office", "position", "public_key", "title", "unit")
        if not all(isinstance(body[k], str) for k in strings) or not isinstance(
            obj["signature"], str
        ):
            raise MalformedError("certificate fields must be strings")
        issued = body["issued"]
        if isinstance(issued, bool) or not isinstance(issued, int) or issued < 0:
            raise MalformedError("certificate 'issued' must be a non-negative integer")
        raw_roles = body["roles"]
        if not isinstance(raw_roles, list):
            raise MalformedError("certificate 'roles' must be a list")
        try:
            roles = tuple(Role(r) for r in raw_roles)
        except ValueError:
            raise MalformedError(f"certificate lists an unknown role in {raw_roles!r}") from None
        return cls(
            office=body["office"],
            position=body["position"],
            unit=body["unit"],
            title=body["title"],
            roles=roles,
            public_key=b64decode_strict(body["public_key"], what="certificate public key"),
            issued=issued,
            signature=b64decode_strict(obj["signature"], what="certificate signature"),
        )


def _signing_bytes(body: Mapping[str, Any]) -> bytes:
    return CERT_DOMAIN + canonical.encode(body)


def issue_certificate(
    *,
    ca: SigningIdentity,
    office: str,
    position: str,
    unit: str,
    title: str,
    roles: Iterable[Role],
    public_key: bytes,
    issued: int,
) -> PositionCertificate:
    """Sign a position certificate with the office CA key.

    Raises:
        MalformedError: an invalid identifier, empty unit or title, no roles, a bad key.
    """
    ordered = tuple(sorted(set(roles)))
    unsigned = PositionCertificate(
        office=office,
        position=position,
        unit=unit,
        title=title,
        roles=ordered,
        public_key=public_key,
        issued=issued,
        signature=bytes(SIGNATURE_SIZE),
    )
    signature = ca.key.sign(_signing_bytes(unsigned.body()))
    return PositionCertificate(
        office=office,
        position=position,
        unit=unit,
        title=title,
        roles=ordered,
        public_key=public_key,
        issued=issued,
        signature=signature,
    )
