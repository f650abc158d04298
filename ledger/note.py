"""C2SP signed notes (c2sp.org/signed-note): parse, format, sign, open.

A signed note is UTF-8 text ending in a newline, then a blank line, then one or more signature
lines ``— <key name> <base64(4-byte key ID || signature)>`` (U+2014 EM DASH, a space). The
signatures cover the text including its final newline but not the blank line. The text MAY
contain empty lines: it is separated from the signatures by the *last* empty line.

The rules a verifier follows, from the spec's "Signatures" section, and how this module keeps
them:

* "Verifiers MUST ignore signatures from unknown keys, even if they share a name or ID (but not
  both) with a known key": :func:`open_note` matches a line to a :class:`Verifier` on the pair
  (name, key ID) and otherwise skips it.
* "If the key name and ID match a known key, verifiers MUST verify the signature. If a signature
  from a known key fails to verify, clients SHOULD reject the whole note": :func:`open_note`
  raises :class:`~ledger.errors.VerificationError`.
* "If no signature from a known key verifies successfully, clients MUST reject the note": it
  raises too.
* "Verifiers SHOULD apply a maximum limit to the number of signatures ... but MUST accept at
  least up to 16": the limit here is :data:`MAX_SIGNATURES` (100, Go's ``sumdb/note`` limit),
  and :data:`MAX_NOTE_SIZE` bounds the whole note.

One rule is ours: a note carrying two signature lines of the same known key is rejected. An
honest signer never emits that, and refusing it outright means no caller can ever count one key
twice towards a quorum.

Two signature types are implemented, the two this ledger uses: 0x01 (Ed25519 over the text) and
0x04 (timestamped Ed25519 cosignature of c2sp.org/tlog-cosignature, over
``cosignature/v1\\ntime <T>\\n`` followed by the text). Verifier keys of other types are refused
when parsed, so a policy cannot silently list a key that this verifier could never check.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ledger.crypto import (
    PUBLIC_KEY_SIZE,
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    SIGNATURE_SIZE,
    Ed25519Key,
    b64decode_strict,
    check_key_name,
    format_vkey,
    key_id,
    verify_ed25519,
)
from ledger.errors import MalformedError, VerificationError

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TIMESTAMP",
    "SIGNATURE_LINE_PREFIX",
    "Note",
    "OpenedNote",
    "Signature",
    "VerifiedSignature",
    "Verifier",
    "cosignature_message",
    "key_id",
    "open_note",
    "parse_note",
    "sign_ed25519",
]

#: U+2014 EM DASH and a space open every signature line.
SIGNATURE_LINE_PREFIX: Final = "\u2014 "
#: Go's sumdb/note rejects notes with more signatures than this; the spec requires >= 16.
MAX_SIGNATURES: Final = 100
#: An upper bound on a whole note: a checkpoint with 100 Ed25519 signatures is about 10 kB.
MAX_NOTE_SIZE: Final = 1 << 20
#: The header line of the type-0x04 signed message (c2sp.org/tlog-cosignature, "Ed25519 signed
#: message"); it is the domain separation between cosignatures and plain note signatures.
COSIGNATURE_V1_HEADER: Final = b"cosignature/v1\n"
#: "timestamp ... MUST NOT exceed 2^63 - 1" (c2sp.org/tlog-cosignature, "Format").
MAX_TIMESTAMP: Final = (1 << 63) - 1

_KEY_ID_SIZE: Final = 4
_TIMESTAMP_SIZE: Final = 8
_SUPPORTED_TYPES: Final = (SIG_TYPE_ED25519, SIG_TYPE_COSIGNATURE_V1)
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")
# Any ASCII control character other than newline (U+000A).
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _check_note_chars(text: str, *, what: str) -> None:
    if _FORBIDDEN_CONTROL.search(text):
        raise MalformedError(f"{what} contains an ASCII control character")


def _to_text(data: str | bytes, *, what: str) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_SIZE:
            raise MalformedError(f"{what} is larger than {MAX_NOTE_SIZE} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError(f"{what} is not valid UTF-8") from None
    try:
        size = len(data.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedError(f"{what} is not valid UTF-8") from None
    if size > MAX_NOTE_SIZE:
        raise MalformedError(f"{what} is larger than {MAX_NOTE_SIZE} bytes")
    return data


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    """The bytes a type-0x04 cosignature signs: ``cosignature/v1\\ntime <T>\\n`` || ``text``.

    ``text`` is the whole checkpoint note text, extension lines included, without signatures
    (c2sp.org/tlog-cosignature, "Ed25519 signed message"). The timestamp is written in ASCII
    decimal without leading zeroes, which ``str(int)`` guarantees.

    Raises:
        MalformedError: ``timestamp`` is negative or above 2^63 - 1.
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedError("cosignature timestamp out of range")
    return COSIGNATURE_V1_HEADER + b"time " + str(timestamp).encode("ascii") + b"\n" + text


@dataclass(frozen=True, kw_only=True)
class Signature:
    """One signature line: key name, 4-byte key ID, and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.key_id) != _KEY_ID_SIZE:
            raise MalformedError("key ID must be 4 bytes")
        if not self.signature:
            raise MalformedError("signature is empty")

    def line(self) -> str:
        """The signature line, ending in a newline."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIGNATURE_LINE_PREFIX}{self.name} {blob}\n"

    @classmethod
    def parse_line(cls, line: str) -> Signature:
        """Parse one signature line (without its newline).

        Raises:
            MalformedError: no em-dash prefix, invalid key name, bad base64, or fewer than five
                bytes (a key ID and at least one signature byte).
        """
        if not line.startswith(SIGNATURE_LINE_PREFIX):
            raise MalformedError("signature line does not start with an em dash and a space")
        name, sep, blob = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
        if not sep:
            raise MalformedError("signature line lacks a space between name and signature")
        raw = b64decode_strict(blob, what="signature")
        if len(raw) <= _KEY_ID_SIZE:
            raise MalformedError("signature is too short")
        return cls(name=name, key_id=raw[:_KEY_ID_SIZE], signature=raw[_KEY_ID_SIZE:])


@dataclass(frozen=True, kw_only=True)
class Note:
    """A note text and its signature lines, verified or not (parsing verifies nothing)."""

    text: str
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not self.text.endswith("\n"):
            raise MalformedError("note text does not end in a newline")
        _check_note_chars(self.text, what="note text")
        if not self.signatures:
            raise MalformedError("note has no signatures")
        if len(self.signatures) > MAX_SIGNATURES:
            raise MalformedError(f"note has more than {MAX_SIGNATURES} signatures")

    def format(self) -> str:
        """The note as text: body, blank line, signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def parse_note(data: str | bytes) -> Note:
    """Parse a signed note without verifying any signature.

    Raises:
        MalformedError: not UTF-8, too large, a forbidden control character, no blank line
            before the signatures, a malformed signature line, no signatures or too many.
    """
    text = _to_text(data, what="note")
    _check_note_chars(text, what="note")
    if not text.endswith("\n"):
        raise MalformedError("note does not end in a newline")
    # The text ends at the last "\n\n": the signatures that follow cannot contain empty lines.
    split = text.rfind("\n\n")
    if split < 0:
        raise MalformedError("note has no blank line before its signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block:
        raise MalformedError("note has no signatures")
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedError(f"note has more than {MAX_SIGNATURES} signatures")
    return Note(text=body, signatures=tuple(Signature.parse_line(line) for line in lines))


@dataclass(frozen=True, kw_only=True)
class Verifier:
    """A trusted public key: key name, key ID, signature type and the raw public key.

    Build one from verifier-key text with :meth:`from_vkey` or from parts with :meth:`for_key`;
    :attr:`vkey` gives the text back.
    """

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in _SUPPORTED_TYPES:
            raise MalformedError(f"unsupported signature type 0x{self.sig_type:02x}")
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise MalformedError(f"Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes")
        if self.key_id != key_id(self.name, self.sig_type, self.public_key):
            raise MalformedError(f"key ID of {self.name} does not match its key")

    @classmethod
    def for_key(cls, *, name: str, sig_type: int, public_key: bytes) -> Verifier:
        """The verifier of ``public_key`` under ``name`` and ``sig_type``, key ID derived.

        Raises:
            MalformedError: invalid name, unsupported type or a public key of the wrong size.
        """
        check_key_name(name)
        return cls(
            name=name,
            key_id=key_id(name, sig_type, public_key),
            sig_type=sig_type,
            public_key=public_key,
        )

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse verifier-key text ``<name>+<hex key ID>+<base64(type || public key)>``.

        The key ID must be eight lowercase hex digits and equal to the derivation of
        c2sp.org/signed-note (mandatory for both supported types).

        Raises:
            MalformedError: wrong shape, invalid name, non-canonical base64, unsupported type,
                wrong key size, or a key ID that does not match the key.
        """
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise MalformedError("verifier key must be <name>+<key ID>+<key>")
        name, hex_id, material = parts
        check_key_name(name)
        if not _HEX_KEY_ID.fullmatch(hex_id):
            raise MalformedError("verifier key ID must be 8 lowercase hex digits")
        raw = b64decode_strict(material, what="verifier key")
        if len(raw) < 2:
            raise MalformedError("verifier key material is too short")
        return cls(name=name, key_id=bytes.fromhex(hex_id), sig_type=raw[0], public_key=raw[1:])

    @property
    def vkey(self) -> str:
        """The verifier-key text of this key."""
        return format_vkey(self.name, self.sig_type, self.public_key)

    def verify(self, text: bytes, signature: Signature) -> int | None:
        """Verify ``signature`` (already matched to this key) over note ``text``.

        Returns the cosignature timestamp for type 0x04 and ``None`` for type 0x01.

        Raises:
            VerificationError: wrong length, a timestamp above 2^63 - 1, or a bad signature.
        """
        if self.sig_type == SIG_TYPE_ED25519:
            verify_ed25519(self.public_key, text, signature.signature)
            return None
        blob = signature.signature
        if len(blob) != _TIMESTAMP_SIZE + SIGNATURE_SIZE:
            raise VerificationError(f"cosignature by {self.name} has the wrong length")
        timestamp = int.from_bytes(blob[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise VerificationError(f"cosignature by {self.name} has a timestamp above 2^63-1")
        verify_ed25519(
            self.public_key, cosignature_message(text, timestamp), blob[_TIMESTAMP_SIZE:]
        )
        return timestamp


@dataclass(frozen=True, kw_only=True)
class VerifiedSignature:
    """A signature line that verified under ``verifier``; ``timestamp`` is set for type 0x04."""

    verifier: Verifier
    timestamp: int | None


@dataclass(frozen=True, kw_only=True)
class OpenedNote:
    """A note whose known signatures all verified; ``verified`` lists them in note order."""

    note: Note
    verified: tuple[VerifiedSignature, ...]

    @property
    def text(self) -> str:
        """The note text the signatures cover."""
        return self.note.text


def open_note(data: str | bytes | Note, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Parse ``data`` and verify every signature made by one of ``verifiers``.

    Signatures whose (name, key ID) pair matches no verifier are ignored, as the spec requires.

    Raises:
        MalformedError: the note does not parse, or two verifiers share a name and key ID
            (the note could not tell them apart).
        VerificationError: a signature by a known key fails, a known key signed twice, or no
            known key signed at all.
    """
    note = data if isinstance(data, Note) else parse_note(data)
    by_id: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        ident = (verifier.name, verifier.key_id)
        if ident in by_id and by_id[ident] != verifier:
            raise MalformedError(f"two verifier keys share the name and key ID of {verifier.name}")
        by_id[ident] = verifier
    text = note.text.encode("utf-8")
    verified: list[VerifiedSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for signature in note.signatures:
        ident = (signature.name, signature.key_id)
        known = by_id.get(ident)
        if known is None:
            continue
        if ident in seen:
            raise VerificationError(f"note carries two signatures by key {signature.name}")
        seen.add(ident)
        try:
            timestamp = known.verify(text, signature)
        except VerificationError as exc:
            raise VerificationError(
                f"signature by known key {signature.name} does not verify: {exc.diagnostics()}"
            ) from None
        verified.append(VerifiedSignature(verifier=known, timestamp=timestamp))
    if not verified:
        raise VerificationError("note is not signed by any known key")
    return OpenedNote(note=note, verified=tuple(verified))


def sign_ed25519(text: str, *, name: str, key: Ed25519Key) -> Signature:
    """A type-0x01 signature of note ``text`` by ``key`` under key name ``name``.

    Raises:
        MalformedError: ``text`` is not a valid note text or ``name`` is not a valid key name.
    """
    if not text.endswith("\n"):
        raise MalformedError("note text does not end in a newline")
    _check_note_chars(text, what="note text")
    verifier = Verifier.for_key(name=name, sig_type=SIG_TYPE_ED25519, public_key=key.public_key)
    return Signature(name=name, key_id=verifier.key_id, signature=key.sign(text.encode("utf-8")))
