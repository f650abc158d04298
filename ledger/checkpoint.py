"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and their signatures and cosignatures.

A checkpoint is a signed note whose text is at least three non-empty lines:

1. the **origin**, a non-empty identifier of the log;
2. the **tree size**, ASCII decimal without leading zeroes (``0`` for the empty tree);
3. the **root hash**, base64 of the RFC 6962 / RFC 9162 Merkle tree head (32 bytes, SHA-256);
4. optional, opaque, non-empty **extension lines**.

The log signs the text with type 0x01 under a key named like the origin; a cosigner signs
``cosignature/v1\\ntime <T>\\n`` + text with type 0x04 (c2sp.org/tlog-cosignature) and prefixes
the 8-byte big-endian timestamp to the signature. This ledger publishes the BFT commit of a block
as a checkpoint cosigned by at least 2f + 1 validators (design brief, section 3).

Nothing here reads a clock: the caller passes every timestamp in.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key, b64decode_strict
from ledger.errors import MalformedError
from ledger.inputs import parse_decimal as strict_decimal
from ledger.merkle.hashing import HASH_SIZE
from ledger.note import (
    MAX_SIGNATURES,
    Note,
    OpenedNote,
    Signature,
    Verifier,
    cosignature_message,
    open_note,
    parse_note,
    sign_ed25519,
)

__all__ = [
    "MAX_TREE_SIZE",
    "Checkpoint",
    "OpenedCheckpoint",
    "checkpoint_note",
    "cosign",
    "open_checkpoint",
    "parse_checkpoint_body",
    "parse_decimal",
    "sign_checkpoint",
]

#: Tree sizes and indices are unsigned 64-bit integers in RFC 9162 and in every tlog tool.
MAX_TREE_SIZE: Final = (1 << 64) - 1

# A checkpoint body is three short lines and rarely any extensions; bound what we accept.
_MAX_EXTENSIONS: Final = 64


def parse_decimal(text: str, *, what: str, limit: int = MAX_TREE_SIZE) -> int:
    """Parse ASCII decimal with no leading zeroes (unless it is ``0``), at most ``limit``
    (:func:`ledger.inputs.parse_decimal`, the one decimal parser of untrusted text).

    ``int()`` alone would accept ``+7``, `` 7``, ``7_0`` and non-ASCII digits; only the
    canonical spelling is admitted, so each number has exactly one encoding.

    Raises:
        MalformedError: not canonical decimal, or above ``limit``.
    """
    # The messages are those the browser verifier (ledger/static/verify.js) gives too.
    if len(text) > 20 or text == "" or not text.isascii() or not text.isdigit() or (
            len(text) > 1 and text[0] == "0"):
        raise MalformedError(f"{what} is not a decimal number without leading zeroes")
    try:
        return strict_decimal(text, what=what, high=limit)
    except MalformedError:
        raise MalformedError(f"{what} is out of range") from None


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A tree head: origin, size, root hash and extension lines, as in tlog-checkpoint.

    Raises (on construction):
        MalformedError: empty origin or a line that contains a newline or control character, a
            size out of range, a root that is not 32 bytes, or an empty extension line.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise MalformedError("checkpoint origin is empty")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedError("checkpoint size is out of range")
        if len(self.root) != HASH_SIZE:
            raise MalformedError(f"checkpoint root must be {HASH_SIZE} bytes")
        if len(self.extensions) > _MAX_EXTENSIONS:
            raise MalformedError("checkpoint has too many extension lines")
        for line in (self.origin, *self.extensions):
            if not line:
                raise MalformedError("checkpoint extension line is empty")
            if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in line):
                raise MalformedError("checkpoint line contains a newline or control character")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse a checkpoint note text (without signatures).

    Raises:
        MalformedError: fewer than three lines, no final newline, an empty line, a size that is
            not canonical decimal, or a root that is not canonical base64 of 32 bytes.
    """
    if not text.endswith("\n"):
        raise MalformedError("checkpoint does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedError("checkpoint has fewer than three lines")
    if any(not line for line in lines):
        raise MalformedError("checkpoint contains an empty line")
    origin, size_text, root_text, *extensions = lines
    size = parse_decimal(size_text, what="checkpoint size")
    root = b64decode_strict(root_text, what="checkpoint root")
    return Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, *, key: Ed25519Key) -> Signature:
    """The log's type-0x01 signature of the checkpoint, under key name = origin.

    Raises:
        MalformedError: the origin is not a valid key name (it contains a space or '+').
    """
    return sign_ed25519(checkpoint.body(), name=checkpoint.origin, key=key)


def cosign(checkpoint: Checkpoint, *, name: str, key: Ed25519Key, timestamp: int) -> Signature:
    """A type-0x04 timestamped cosignature of the checkpoint by cosigner ``name``.

    The signature bytes are the 8-byte big-endian ``timestamp`` followed by the Ed25519 signature
    of :func:`ledger.note.cosignature_message` (c2sp.org/tlog-cosignature).

    Raises:
        MalformedError: ``name`` is not a valid key name or ``timestamp`` is out of range.
    """
    verifier = Verifier.for_key(
        name=name, sig_type=SIG_TYPE_COSIGNATURE_V1, public_key=key.public_key
    )
    message = cosignature_message(checkpoint.body().encode("utf-8"), timestamp)
    blob = timestamp.to_bytes(8, "big") + key.sign(message)
    return Signature(name=name, key_id=verifier.key_id, signature=blob)


def checkpoint_note(checkpoint: Checkpoint, signatures: Iterable[Signature]) -> str:
    """The signed checkpoint note text: body, blank line, one line per signature.

    Raises:
        MalformedError: no signatures, or more than the note limit.
    """
    sigs = tuple(signatures)
    if len(sigs) > MAX_SIGNATURES:
        raise MalformedError(f"a checkpoint carries at most {MAX_SIGNATURES} signatures")
    return Note(text=checkpoint.body(), signatures=sigs).format()


@dataclass(frozen=True, kw_only=True)
class OpenedCheckpoint:
    """A checkpoint whose note opened: the parsed body and the verified signatures."""

    checkpoint: Checkpoint
    note: OpenedNote


def open_checkpoint(data: str | bytes | Note, verifiers: Iterable[Verifier]) -> OpenedCheckpoint:
    """Parse and open a checkpoint note with :func:`ledger.note.open_note`.

    This proves only that known keys signed; whether those keys form a trusted quorum is a
    policy decision (:mod:`ledger.policy`).

    Raises:
        MalformedError: the note or its checkpoint body does not parse.
        VerificationError: a known key's signature fails, or no known key signed.
    """
    note = data if isinstance(data, Note) else parse_note(data)
    checkpoint = parse_checkpoint_body(note.text)
    return OpenedCheckpoint(checkpoint=checkpoint, note=open_note(note, verifiers))
