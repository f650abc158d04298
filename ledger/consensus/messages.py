"""Consensus peer messages: proposals, prevotes, precommits, decisions and commit certificates.

**Wire form.** Every message is one msgpack array with a fixed schema (no maps, no floats, no
extension types), starting with :data:`WIRE_VERSION` and a :class:`Kind`::

    PROPOSAL   [1, 1, chain_id, height, round, pol_round, block, validator, signature]
    PREVOTE    [1, 2, chain_id, height, round, block_hash | nil, timestamp, validator, signature]
    PRECOMMIT  [1, 3, chain_id, height, round, block_hash | nil, timestamp, validator, signature]
    DECISION   [1, 4, block, certificate]
    block       = [height, prev_hash, time, proposer, tree_size, tree_root, [digest...],
                   certificate | nil (, [change])]   (the 9th element only when non-empty;
                   change: see ledger.consensus.reconfig)
    certificate = [height, round, block_hash, [PRECOMMIT...]]

There is exactly one encoding of each message: :func:`decode_message` re-encodes what it parsed
and rejects input whose bytes differ (a wider integer, a ``str`` where ``bin`` belongs, trailing
bytes). So a message has one byte string, which is what the safety rule "re-send only a
byte-identical message" (design brief section 4) relies on.

**Signatures.** Ed25519 (RFC 8032, PyNaCl) over ``SIGN_DOMAIN || msgpack([kind, chain_id,
height, round, validator, ...])``: the signed bytes name the message kind, the chain, the height
and the round, so a prevote is never a precommit, and a vote for chain A is never one for chain B.
A proposal signs the block *hash* and ``pol_round``, not the block bytes.

**Untrusted bytes.** :func:`decode_message`, :func:`decode_block` and
:func:`decode_certificate` raise :class:`~ledger.errors.ProtocolError` and nothing else, on any
input (see ``tests/consensus/test_messages.py``). Decoding checks structure and ranges only;
``verify`` methods check signatures and membership and raise
:class:`~ledger.errors.VerificationError`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ledger.consensus.block import MAX_BLOCK_DIGESTS, Block
from ledger.consensus.reconfig import MAX_CHANGES_PER_BLOCK, change_from_wire
from ledger.consensus.validators import MAX_VALIDATORS, PUBLIC_KEY_SIZE, ValidatorSet
from ledger.errors import ConfigError, ProtocolError, VerificationError
from ledger.merkle.hashing import HASH_SIZE

#: First element of every wire message; bump on any schema change.
WIRE_VERSION = 1

#: Domain-separation prefix of every consensus signature. No other signed object in this
#: package (notes, checkpoints, cosignatures) starts with these bytes.
SIGN_DOMAIN = b"ledger/consensus/sign/v1\n"

#: Largest encoded message accepted from a peer (a full block of MAX_BLOCK_DIGESTS fits).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

#: Largest chain id, in UTF-8 bytes.
MAX_CHAIN_ID_BYTES = 64

#: Rounds and heights are bounded so that every number fits a signed 64-bit integer.
MAX_ROUND = 2**31 - 1
MAX_UINT63 = 2**63 - 1

SIGNATURE_SIZE = 64


class Kind(enum.IntEnum):
    """The message kind: the second element of the wire array and the first of signed bytes."""

    PROPOSAL = 1
    PREVOTE = 2
    PRECOMMIT = 3
    DECISION = 4


class VoteType(enum.IntEnum):
    """The two vote kinds of Algorithm 1; values equal their :class:`Kind`."""

    PREVOTE = 2
    PRECOMMIT = 3


class Signer(Protocol):
    """What the core needs of a validator key: its public key and detached Ed25519 signing."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``data``."""
        ...


class Ed25519Signer:
    """A :class:`Signer` over a PyNaCl signing key (pure computation: deterministic signatures)."""

    def __init__(self, *, seed: bytes) -> None:
        """Build from a 32-byte seed; raise :class:`ConfigError` on another length."""
        if len(seed) != 32:
            raise ConfigError("Ed25519 seed must be 32 bytes")
        self._key = SigningKey(seed)
        self._public = bytes(self._key.verify_key)

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data).signature)


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; raise :class:`VerificationError` if it does not verify."""
    try:
        VerifyKey(public_key).verify(data, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise VerificationError("bad Ed25519 signature") from exc
    except Exception as exc:  # PyNaCl raises its own CryptoError family on malformed keys
        raise VerificationError(f"signature check failed: {exc}") from exc


def _sign_bytes(fields: list[Any]) -> bytes:
    return SIGN_DOMAIN + bytes(msgpack.packb(fields, use_bin_type=True))


def _check_sender(
    validator: bytes, chain_id: str, msg_chain: str, validators: ValidatorSet
) -> None:
    if msg_chain != chain_id:
        raise VerificationError(f"message for chain {msg_chain!r}, expected {chain_id!r}")
    if validator not in validators:
        raise VerificationError("message from a key that is not a validator")


@dataclass(frozen=True, kw_only=True)
class Vote:
    """A signed prevote or precommit; ``block_hash`` is ``None`` for a nil vote.

    ``timestamp`` is the voter's clock in milliseconds (for a precommit of a block ``B``, a
    correct voter uses ``max(now, B.time + 1)``; see :mod:`ledger.consensus.block`).
    """

    type: VoteType
    chain_id: str
    height: int
    round: int
    block_hash: bytes | None
    timestamp: int
    validator: bytes
    signature: bytes

    @staticmethod
    def signing_bytes(
        *, type: VoteType, chain_id: str, height: int, round: int, block_hash: bytes | None,
        timestamp: int, validator: bytes,
    ) -> bytes:
        """The exact bytes a vote's signature covers."""
        return _sign_bytes(
            [int(type), chain_id, height, round, validator, block_hash, timestamp]
        )

    @cached_property
    def sign_bytes(self) -> bytes:
        """The bytes this vote's signature covers."""
        return Vote.signing_bytes(
            type=self.type, chain_id=self.chain_id, height=self.height, round=self.round,
            block_hash=self.block_hash, timestamp=self.timestamp, validator=self.validator,
        )

    @classmethod
    def create(
        cls, signer: Signer, *, type: VoteType, chain_id: str, height: int, round: int,
        block_hash: bytes | None, timestamp: int,
    ) -> Vote:
        """Sign a new vote with ``signer``."""
        validator = signer.public_key
        sig = signer.sign(
            Vote.signing_bytes(
                type=type, chain_id=chain_id, height=height, round=round, block_hash=block_hash,
                timestamp=timestamp, validator=validator,
            )
        )
        return cls(
            type=type, chain_id=chain_id, height=height, round=round, block_hash=block_hash,
            timestamp=timestamp, validator=validator, signature=sig,
        )

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Check chain, membership and signature; raise :class:`VerificationError` otherwise."""
        _check_sender(self.validator, chain_id, self.chain_id, validators)
        verify_signature(self.validator, self.sign_bytes, self.signature)

    def to_wire(self) -> list[Any]:
        return [
            WIRE_VERSION, int(self.type), self.chain_id, self.height, self.round,
            self.block_hash, self.timestamp, self.validator, self.signature,
        ]

    def encode(self) -> bytes:
        """Canonical wire bytes."""
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A signed proposal of ``block`` for ``(height, round)``; ``pol_round`` is Algorithm 1's
    ``validRound`` (``-1`` when the proposer has no valid value from an earlier round)."""

    chain_id: str
    height: int
    round: int
    pol_round: int
    block: Block
    validator: bytes
    signature: bytes

    @staticmethod
    def signing_bytes(
        *, chain_id: str, height: int, round: int, pol_round: int, block_hash: bytes,
        validator: bytes,
    ) -> bytes:
        """The exact bytes a proposal's signature covers (the block enters by its hash)."""
        return _sign_bytes(
            [int(Kind.PROPOSAL), chain_id, height, round, validator, block_hash, pol_round]
        )

    @cached_property
    def sign_bytes(self) -> bytes:
        return Proposal.signing_bytes(
            chain_id=self.chain_id, height=self.height, round=self.round,
            pol_round=self.pol_round, block_hash=self.block.hash, validator=self.validator,
        )

    @classmethod
    def create(
        cls, signer: Signer, *, chain_id: str, height: int, round: int, pol_round: int,
        block: Block,
    ) -> Proposal:
        """Sign a new proposal with ``signer``."""
        sig = signer.sign(
            Proposal.signing_bytes(
                chain_id=chain_id, height=height, round=round, pol_round=pol_round,
                block_hash=block.hash, validator=signer.public_key,
            )
        )
        return cls(
            chain_id=chain_id, height=height, round=round, pol_round=pol_round, block=block,
            validator=signer.public_key, signature=sig,
        )

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Check chain, membership and signature, and that the block's height matches.

        Whether the sender is the *proposer* of ``(height, round)`` is the core's check.
        Raises :class:`VerificationError`.
        """
        _check_sender(self.validator, chain_id, self.chain_id, validators)
        if self.block.height != self.height:
            raise VerificationError("proposal height differs from its block's height")
        verify_signature(self.validator, self.sign_bytes, self.signature)

    def to_wire(self) -> list[Any]:
        return [
            WIRE_VERSION, int(Kind.PROPOSAL), self.chain_id, self.height, self.round,
            self.pol_round, self.block.to_wire(), self.validator, self.signature,
        ]

    def encode(self) -> bytes:
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))


@dataclass(frozen=True, kw_only=True)
class CommitCertificate:
    """Proof that ``block_hash`` was decided at ``height``: precommits of a quorum of distinct
    validators for ``block_hash`` in one ``round``. Precommits are kept sorted by validator key
    so equal certificates encode to equal bytes (build with :meth:`from_votes`)."""

    height: int
    round: int
    block_hash: bytes
    precommits: tuple[Vote, ...]

    @classmethod
    def from_votes(cls, votes: Sequence[Vote]) -> CommitCertificate:
        """A certificate from precommits of one (height, round, block); at most one per
        validator. Raises :class:`VerificationError` on an empty or mixed set (signatures are
        checked by :meth:`verify`, not here)."""
        if not votes:
            raise VerificationError("a certificate needs precommits")
        first = votes[0]
        if first.block_hash is None:
            raise VerificationError("a certificate cannot commit nil")
        by_key: dict[bytes, Vote] = {}
        for v in votes:
            if (v.type, v.height, v.round, v.block_hash) != (
                VoteType.PRECOMMIT, first.height, first.round, first.block_hash
            ):
                raise VerificationError("certificate precommits disagree")
            if v.validator in by_key and by_key[v.validator] != v:
                raise VerificationError("two different precommits of one validator")
            by_key[v.validator] = v
        return cls(
            height=first.height, round=first.round, block_hash=first.block_hash,
            precommits=tuple(by_key[k] for k in sorted(by_key)),
        )

    def verify(self, validators: ValidatorSet, chain_id: str, block_hash: bytes) -> None:
        """Check the certificate commits ``block_hash`` with a quorum of distinct validators'
        valid precommits of this ``(height, round)`` on ``chain_id``.

        Raises :class:`VerificationError` on: a different block hash; a precommit of another
        height, round, type, block or chain; a non-validator; a repeated validator (a quorum is
        counted in *distinct* keys); a bad signature; fewer than ``validators.quorum`` signers.
        """
        if self.block_hash != block_hash:
            raise VerificationError("certificate commits a different block")
        seen: set[bytes] = set()
        for v in self.precommits:
            if v.type != VoteType.PRECOMMIT:
                raise VerificationError("certificate holds a vote that is not a precommit")
            if (v.height, v.round, v.block_hash) != (self.height, self.round, self.block_hash):
                raise VerificationError("certificate holds a precommit for something else")
            if v.validator in seen:
                raise VerificationError("certificate repeats a validator")
            seen.add(v.validator)
            v.verify(validators, chain_id)
        if len(seen) < validators.quorum:
            raise VerificationError(
                f"certificate has {len(seen)} precommits, quorum is {validators.quorum}"
            )

    def to_wire(self) -> list[Any]:
        return [self.height, self.round, self.block_hash, [v.to_wire() for v in self.precommits]]

    def encode(self) -> bytes:
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))


@dataclass(frozen=True, kw_only=True)
class Decision:
    """A decided block with its certificate: lets a node that missed the votes commit
    (catch-up). Carries no signature of its own: the certificate is the proof."""

    block: Block
    certificate: CommitCertificate

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Raise :class:`VerificationError` unless the certificate commits this block."""
        if self.certificate.height != self.block.height:
            raise VerificationError("decision certificate is for another height")
        self.certificate.verify(validators, chain_id, self.block.hash)

    def to_wire(self) -> list[Any]:
        return [WIRE_VERSION, int(Kind.DECISION), self.block.to_wire(), self.certificate.to_wire()]

    def encode(self) -> bytes:
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))


Message = Proposal | Vote | Decision


def encode_message(msg: Message) -> bytes:
    """Canonical wire bytes of ``msg``."""
    return msg.encode()


# --- decoding of untrusted bytes ------------------------------------------------------------


def _int(x: Any, lo: int, hi: int, what: str) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise ProtocolError(f"{what} is not an integer in [{lo}, {hi}]")
    return x


def _bin(x: Any, size: int, what: str) -> bytes:
    if type(x) is not bytes or len(x) != size:
        raise ProtocolError(f"{what} is not {size} bytes")
    return x


def _digests(items: list[Any]) -> tuple[bytes, ...]:
    """A block's digests: every item 32 bytes (checked in C over the list, not item by item)."""
    if items and (set(map(type, items)) != {bytes} or set(map(len, items)) != {HASH_SIZE}):
        raise ProtocolError(f"a digest is not {HASH_SIZE} bytes")
    return tuple(items)


def _list(x: Any, length: int | None, what: str) -> list[Any]:
    if type(x) is not list or (length is not None and len(x) != length):
        raise ProtocolError(f"{what} is not a list" + (f" of {length}" if length else ""))
    return x


def _chain(x: Any) -> str:
    if type(x) is not str or not 0 < len(x.encode()) <= MAX_CHAIN_ID_BYTES:
        raise ProtocolError(f"chain id is not a string of 1..{MAX_CHAIN_ID_BYTES} bytes")
    return x


def vote_from_wire(obj: Any) -> Vote:
    """A :class:`Vote` from its decoded msgpack list; raise :class:`ProtocolError` only."""
    _list(obj, 9, "vote")
    if obj[0] != WIRE_VERSION or type(obj[0]) is not int:
        raise ProtocolError("unknown wire version")
    kind = _int(obj[1], Kind.PREVOTE, Kind.PRECOMMIT, "vote kind")
    return Vote(
        type=VoteType(kind),
        chain_id=_chain(obj[2]),
        height=_int(obj[3], 1, MAX_UINT63, "height"),
        round=_int(obj[4], 0, MAX_ROUND, "round"),
        block_hash=None if obj[5] is None else _bin(obj[5], HASH_SIZE, "block hash"),
        timestamp=_int(obj[6], 0, MAX_UINT63, "timestamp"),
        validator=_bin(obj[7], PUBLIC_KEY_SIZE, "validator key"),
        signature=_bin(obj[8], SIGNATURE_SIZE, "signature"),
    )


def _certificate_from(obj: Any) -> CommitCertificate:
    _list(obj, 4, "certificate")
    votes = _list(obj[3], None, "certificate precommits")
    if not 0 < len(votes) <= MAX_VALIDATORS:
        raise ProtocolError("certificate precommit count out of range")
    precommits = tuple(vote_from_wire(v) for v in votes)
    cert = CommitCertificate(
        height=_int(obj[0], 1, MAX_UINT63, "certificate height"),
        round=_int(obj[1], 0, MAX_ROUND, "certificate round"),
        block_hash=_bin(obj[2], HASH_SIZE, "certificate block hash"),
        precommits=precommits,
    )
    keys = [v.validator for v in precommits]
    if keys != sorted(set(keys)):
        raise ProtocolError("certificate precommits not sorted by distinct validator key")
    return cert


def _block_from(obj: Any) -> Block:
    _list(obj, None, "block")
    if len(obj) not in (8, 9):
        raise ProtocolError("block is not a list of 8 or 9")
    digests = _list(obj[6], None, "digests")
    if len(digests) > MAX_BLOCK_DIGESTS:
        raise ProtocolError(f"block has more than {MAX_BLOCK_DIGESTS} digests")
    changes: tuple[Any, ...] = ()
    if len(obj) == 9:
        # Present only when non-empty: an empty list would be a second encoding of a block.
        raw = _list(obj[8], None, "block changes")
        if not 0 < len(raw) <= MAX_CHANGES_PER_BLOCK:
            raise ProtocolError(f"block carries 1..{MAX_CHANGES_PER_BLOCK} changes when listed")
        changes = tuple(change_from_wire(c) for c in raw)
    return Block(
        height=_int(obj[0], 1, MAX_UINT63, "block height"),
        prev_hash=_bin(obj[1], HASH_SIZE, "previous block hash"),
        time=_int(obj[2], 0, MAX_UINT63, "block time"),
        proposer=_bin(obj[3], PUBLIC_KEY_SIZE, "proposer key"),
        tree_size=_int(obj[4], 0, MAX_UINT63, "tree size"),
        tree_root=_bin(obj[5], HASH_SIZE, "tree root"),
        digests=_digests(digests),
        last_commit=None if obj[7] is None else _certificate_from(obj[7]),
        changes=changes,
    )


def _proposal_from(obj: list[Any]) -> Proposal:
    _list(obj, 9, "proposal")
    rnd = _int(obj[4], 0, MAX_ROUND, "round")
    return Proposal(
        chain_id=_chain(obj[2]),
        height=_int(obj[3], 1, MAX_UINT63, "height"),
        round=rnd,
        pol_round=_int(obj[5], -1, rnd - 1, "pol_round"),
        block=_block_from(obj[6]),
        validator=_bin(obj[7], PUBLIC_KEY_SIZE, "validator key"),
        signature=_bin(obj[8], SIGNATURE_SIZE, "signature"),
    )


def _unpack(data: bytes) -> Any:
    if type(data) is not bytes:
        raise ProtocolError("message is not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True
        )
    # msgpack raises ValueError subclasses, TypeError, UnicodeDecodeError and its own
    # exceptions on garbage; any of them means "not a message", reported as ours.
    except Exception as exc:
        raise ProtocolError(f"not msgpack: {exc.__class__.__name__}") from exc


def _canonical(parsed: Message | Block | CommitCertificate, data: bytes) -> None:
    if parsed.encode() != data:
        raise ProtocolError("message is not in canonical encoding")


def decode_message(data: bytes) -> Message:
    """Parse untrusted peer bytes into a :data:`Message`; raise :class:`ProtocolError` only.

    Checks size, schema, ranges and canonical encoding. Does not check signatures: call the
    message's ``verify`` (the core does so before any state change).
    """
    obj = _unpack(data)
    head = _list(obj, None, "message")
    if len(head) < 2 or type(head[0]) is not int or head[0] != WIRE_VERSION:
        raise ProtocolError("unknown wire version")
    kind = _int(head[1], Kind.PROPOSAL, Kind.DECISION, "message kind")
    msg: Message
    if kind == Kind.PROPOSAL:
        msg = _proposal_from(head)
    elif kind == Kind.DECISION:
        _list(head, 4, "decision")
        msg = Decision(block=_block_from(head[2]), certificate=_certificate_from(head[3]))
    else:
        msg = vote_from_wire(head)
    _canonical(msg, data)
    return msg


def decode_block(data: bytes) -> Block:
    """Parse canonical block bytes (as stored); raise :class:`ProtocolError` only."""
    block = _block_from(_unpack(data))
    _canonical(block, data)
    return block


def decode_certificate(data: bytes) -> CommitCertificate:
    """Parse canonical certificate bytes (as stored); raise :class:`ProtocolError` only."""
    cert = _certificate_from(_unpack(data))
    _canonical(cert, data)
    return cert


def verify_certificate(
    cert: CommitCertificate, *, block_hash: bytes, height: int, validators: ValidatorSet,
    chain_id: str,
) -> None:
    """Check ``cert`` decides ``block_hash`` at ``height``: a quorum of distinct validators'
    valid precommits (:meth:`CommitCertificate.verify`). Raises :class:`VerificationError`."""
    if cert.height != height:
        raise VerificationError(f"certificate is for height {cert.height}, expected {height}")
    cert.verify(validators, chain_id, block_hash)
