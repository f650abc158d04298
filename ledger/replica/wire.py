"""Signed envelopes for everything validators send each other over HTTP (package-private).

Consensus messages are signed by the core already, but the node also gossips anchors and
exchanges checkpoint cosignatures, and it must refuse traffic from anyone outside the validator
set *before* parsing a byte of consensus payload. So every POST between nodes carries exactly
one envelope, signed by the sender's validator **consensus key** (``ValidatorKeys.consensus_key``;
the log and cosigner keys never sign peer traffic, see :mod:`ledger.crypto` for why the three
keys are separate)::

    envelope = msgpack [ version=1, chain_id: str, sender: bin32, height: int, seq: int,
                         items: [[kind: int, payload: bin], ...], signature: bin64 ]
    signed   = ENVELOPE_DOMAIN || msgpack [ chain_id, sender, height, seq, items ]

``chain_id`` is bound into the signature, so an envelope of another chain (a test net whose
validators reuse keys) never verifies here. ``height`` is the sender's last committed height, a
hint used for catch-up; ``seq`` only makes envelopes distinct. A replayed envelope is harmless by
construction: every item is idempotent (a consensus message is de-duplicated by the core, a
gossiped digest by the mempool and the store, a cosignature by the collector), which is why there
is no replay window to keep.

Item kinds: :data:`KIND_CONSENSUS` (the core's wire bytes, parsed later by ``core.on_wire``),
:data:`KIND_GOSSIP` (msgpack list of 32-byte digests) and :data:`KIND_COSIGNATURE` (msgpack
``[size, root, signature line]``) and :data:`KIND_CHANGE` (a quorum-approved validator-set
change, its canonical bytes; :mod:`ledger.replica.validators`). Unknown kinds are refused: the
schema is fixed.

Everything here is pure: the replica seals and opens envelopes, the node's peer transport
(:mod:`ledger.node.peers`) only moves their bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from ledger.consensus.messages import MAX_MESSAGE_BYTES
from ledger.crypto import SIGNATURE_SIZE, Ed25519Key, verify_ed25519
from ledger.errors import MalformedError, ProtocolError, VerificationError
from ledger.merkle.hashing import HASH_SIZE

__all__ = [
    "ENVELOPE_DOMAIN",
    "ENVELOPE_VERSION",
    "KIND_CHANGE",
    "KIND_CONSENSUS",
    "KIND_COSIGNATURE",
    "KIND_GOSSIP",
    "MAX_ENVELOPE_BYTES",
    "MAX_GOSSIP_DIGESTS",
    "MAX_ITEMS",
    "Cosignature",
    "Envelope",
    "UnknownSenderError",
    "decode_cosignature",
    "decode_gossip",
    "encode_cosignature",
    "encode_gossip",
    "open_envelope",
    "seal_envelope",
]

#: Domain separation of envelope signatures: never a prefix of any other signed format.
ENVELOPE_DOMAIN: Final = b"ledger/peer/envelope/v1\n"
ENVELOPE_VERSION: Final = 1

KIND_CONSENSUS: Final = 1
KIND_GOSSIP: Final = 2
KIND_COSIGNATURE: Final = 3
KIND_CHANGE: Final = 4
_KINDS: Final = frozenset({KIND_CONSENSUS, KIND_GOSSIP, KIND_COSIGNATURE, KIND_CHANGE})

#: One consensus message may be 4 MiB (a full block); an envelope carries at most a little more.
MAX_ENVELOPE_BYTES: Final = MAX_MESSAGE_BYTES + 1024 * 1024
#: Items per envelope: bounds the work one POST can cause.
MAX_ITEMS: Final = 4096
#: Digests per gossip item (one anchor request holds at most 10,000).
MAX_GOSSIP_DIGESTS: Final = 10_000
#: A cosignature line is ~150 bytes; refuse anything absurd.
_MAX_COSIGNATURE_LINE: Final = 1024


class UnknownSenderError(VerificationError):
    """The envelope's sender is not a validator of this chain."""

    code = "unknown_sender"


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """An opened (verified) envelope: who sent it, their height, and the items in order."""

    chain_id: str
    sender: bytes
    height: int
    seq: int
    items: tuple[tuple[int, bytes], ...]


def _signed_bytes(
    chain_id: str, sender: bytes, height: int, seq: int, items: Sequence[tuple[int, bytes]]
) -> bytes:
    body = [chain_id, sender, height, seq, [[k, p] for k, p in items]]
    return ENVELOPE_DOMAIN + bytes(msgpack.packb(body, use_bin_type=True))


def seal_envelope(
    *,
    key: Ed25519Key,
    chain_id: str,
    height: int,
    seq: int,
    items: Sequence[tuple[int, bytes]],
) -> bytes:
    """Sign and encode an envelope from the holder of ``key`` (its consensus key).

    Raises:
        MalformedError: an unknown item kind, too many items, or a result above
            :data:`MAX_ENVELOPE_BYTES`.
    """
    if len(items) > MAX_ITEMS:
        raise MalformedError(f"an envelope carries at most {MAX_ITEMS} items")
    if any(k not in _KINDS for k, _ in items):
        raise MalformedError("unknown envelope item kind")
    sender = key.public_key
    signature = key.sign(_signed_bytes(chain_id, sender, height, seq, items))
    wire = [ENVELOPE_VERSION, chain_id, sender, height, seq, [[k, p] for k, p in items], signature]
    data = bytes(msgpack.packb(wire, use_bin_type=True))
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedError("envelope is too large")
    return data


def _field(obj: Any, kind: type, what: str) -> Any:
    if not isinstance(obj, kind) or isinstance(obj, bool):
        raise ProtocolError(f"envelope {what} has the wrong type")
    return obj


def open_envelope(data: bytes, *, chain_id: str, senders: Mapping[bytes, str]) -> Envelope:
    """Parse and verify an envelope; the one parser of peer HTTP bodies.

    ``senders`` maps every validator's consensus public key to its name.

    Raises:
        ProtocolError: the bytes are oversized, not msgpack, or not the fixed schema; or the
            envelope is for another chain.
        UnknownSenderError: the sender is not a validator.
        VerificationError: the signature does not verify.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise ProtocolError("envelope is too large")
    try:
        obj = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True,
            max_bin_len=MAX_ENVELOPE_BYTES, max_str_len=1024, max_array_len=MAX_ITEMS,
            max_map_len=0, max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.exceptions.ExtraData,
            msgpack.exceptions.FormatError, msgpack.exceptions.StackError,
            UnicodeDecodeError) as exc:
        raise ProtocolError(f"envelope is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, list) or len(obj) != 7:
        raise ProtocolError("envelope must be a list of 7 fields")
    version, chain, sender, height, seq, raw_items, signature = obj
    if _field(version, int, "version") != ENVELOPE_VERSION:
        raise ProtocolError(f"unsupported envelope version {version}")
    if _field(chain, str, "chain id") != chain_id:
        raise ProtocolError("envelope is for another chain")
    _field(sender, bytes, "sender")
    if not 0 <= _field(height, int, "height") < 2**63 or not 0 <= _field(seq, int, "seq") < 2**63:
        raise ProtocolError("envelope height or seq out of range")
    if len(_field(signature, bytes, "signature")) != SIGNATURE_SIZE:
        raise ProtocolError("envelope signature must be 64 bytes")
    items: list[tuple[int, bytes]] = []
    for raw in _field(raw_items, list, "items"):
        if not isinstance(raw, list) or len(raw) != 2:
            raise ProtocolError("envelope item must be [kind, payload]")
        kind, payload = raw
        if _field(kind, int, "item kind") not in _KINDS:
            raise ProtocolError(f"unknown envelope item kind {kind}")
        items.append((kind, _field(payload, bytes, "item payload")))
    if sender not in senders:
        raise UnknownSenderError("envelope sender is not a validator of this chain")
    try:
        verify_ed25519(sender, _signed_bytes(chain, sender, height, seq, items), signature)
    except MalformedError as exc:  # a 32-byte key was checked above; keep the contract anyway
        raise ProtocolError(exc.diagnostics()) from None
    return Envelope(chain_id=chain, sender=sender, height=height, seq=seq, items=tuple(items))


def _unpack_small(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(
            data, raw=False, max_bin_len=MAX_ENVELOPE_BYTES, max_str_len=_MAX_COSIGNATURE_LINE,
            max_array_len=MAX_GOSSIP_DIGESTS, max_map_len=0, max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.exceptions.ExtraData,
            msgpack.exceptions.FormatError, msgpack.exceptions.StackError,
            UnicodeDecodeError):
        raise ProtocolError(f"{what} is not valid msgpack") from None


def encode_gossip(digests: Sequence[bytes]) -> bytes:
    """Payload of a gossip item: a msgpack list of raw 32-byte digests.

    Raises:
        MalformedError: more than :data:`MAX_GOSSIP_DIGESTS` digests or one not 32 bytes.
    """
    if len(digests) > MAX_GOSSIP_DIGESTS:
        raise MalformedError(f"a gossip item carries at most {MAX_GOSSIP_DIGESTS} digests")
    if digests and set(map(len, digests)) != {HASH_SIZE}:
        raise MalformedError("a gossiped digest must be 32 bytes")
    return bytes(msgpack.packb(list(digests), use_bin_type=True))


def decode_gossip(payload: bytes) -> list[bytes]:
    """Parse a gossip payload.

    Raises:
        ProtocolError: not a list of at most :data:`MAX_GOSSIP_DIGESTS` 32-byte strings.
    """
    obj = _unpack_small(payload, "gossip item")
    if not isinstance(obj, list) or len(obj) > MAX_GOSSIP_DIGESTS:
        raise ProtocolError("gossip item must be a list of digests")
    if obj and (set(map(type, obj)) != {bytes} or set(map(len, obj)) != {HASH_SIZE}):
        raise ProtocolError("a gossiped digest must be 32 bytes")
    return obj


@dataclass(frozen=True, kw_only=True)
class Cosignature:
    """A validator's checkpoint cosignature for the tree head (size, root): its note line."""

    size: int
    root: bytes
    line: str


def encode_cosignature(cosig: Cosignature) -> bytes:
    """Payload of a cosignature item."""
    return bytes(msgpack.packb([cosig.size, cosig.root, cosig.line], use_bin_type=True))


def decode_cosignature(payload: bytes) -> Cosignature:
    """Parse a cosignature payload (the signature itself is checked by the collector).

    Raises:
        ProtocolError: not ``[size, 32-byte root, line]``.
    """
    obj = _unpack_small(payload, "cosignature item")
    if not isinstance(obj, list) or len(obj) != 3:
        raise ProtocolError("cosignature item must be [size, root, line]")
    size, root, line = obj
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 2**63:
        raise ProtocolError("cosignature size out of range")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise ProtocolError("cosignature root must be 32 bytes")
    if not isinstance(line, str) or not line:
        raise ProtocolError("cosignature line must be a string")
    return Cosignature(size=size, root=root, line=line)
