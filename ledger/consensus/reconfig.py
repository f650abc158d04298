"""Validator-set changes: who may vote from which height on, decided by the chain itself.

A chain starts with the genesis *roster* (:class:`ValidatorRoster`: for each validator its name,
consensus key, log vkey and cosigner vkey, in proposer order). The roster changes only through
a :class:`ValidatorSetChange` carried in a block. The rules (``docs/reconfiguration.md`` has the
operator's procedure):

* **What a change does.** An ordered list of operations (:data:`MAX_CHANGE_OPS` at most):
  ``ADD`` a validator (appended at the end of the proposer order), ``REMOVE`` the validator with a
  given consensus key, ``ROTATE`` the validator with a given consensus key to a new identity
  (any of name, consensus key, log vkey, cosigner vkey; it keeps its place in the order). The
  result must again be a valid roster: non-empty, distinct names, every public key used once in
  one role only, one log origin, cosigner vkeys named after their validator.
* **Who approves it.** A quorum (``ValidatorSet.quorum``, 2f + 1 for n = 3f + 1) of distinct
  validators of the roster it modifies, each signing with its *consensus* key over
  ``CHANGE_SIGN_DOMAIN || msgpack([chain_id, effective_height, prev_set_hash, ops])``. The
  signed bytes bind the chain (no replay on another chain), the height at which the change takes
  effect (no replay later) and ``prev_set_hash``, the :attr:`ValidatorRoster.hash` of the roster
  being modified (no replay onto another set, even one that happens to contain the signers). The
  domain prefix differs from every other signed format of this package (consensus messages sign
  ``ledger/consensus/sign/v1``, notes and cosignatures sign their own texts), so an approval is
  never a vote or a checkpoint signature.
* **When it takes effect.** The change names its ``effective_height`` ``E``. A block at height
  ``h`` may carry it only if ``2 <= E - h <= MAX_CHANGE_LEAD`` and no earlier change is still
  pending (every scheduled change already took effect at or before ``h``); at most
  :data:`MAX_CHANGES_PER_BLOCK` (one) change per block. Blocks ``< E`` are decided by the old set,
  blocks ``>= E`` by the new one. The lead of at least 2 is what makes the switch safe without
  extra messages: when a node starts height ``E - 1`` it has committed block ``E - 2`` and thus
  knows the set of ``E - 1`` and ``E``, so it can verify the messages of the next height it
  buffers, and every node switches at the same height because the height is in the committed
  block. A change not included by height ``E - 2`` is void; the operators sign a new one.
* **Which set applies to what.** Everything about height ``h`` uses the set of ``h``: proposer
  selection, quorums, the commit certificate of block ``h`` (in ``block h + 1``'s
  ``last_commit`` it is checked against the set of ``h``, not of ``h + 1``), evidence of votes
  at ``h``, and the trust policy of the checkpoint after block ``h``.

:class:`ValidatorHistory` is the value a driver keeps (and can rebuild from stored blocks after
a restart with :meth:`ValidatorHistory.replay` or :func:`validator_set_at`): the genesis roster
plus every committed change, answering "which set at height h". Everything here is pure: no I/O,
no clock. Decoding untrusted change bytes raises :class:`~ledger.errors.ProtocolError` only;
checking a well-formed change raises :class:`~ledger.errors.VerificationError`.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

import msgpack

from ledger.consensus.validators import MAX_VALIDATORS, PUBLIC_KEY_SIZE, ValidatorSet, quorum
from ledger.crypto import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    ValidatorKeys,
    check_key_name,
    verify_ed25519,
)
from ledger.errors import ConfigError, LedgerError, MalformedError, ProtocolError, VerificationError
from ledger.merkle.hashing import HASH_SIZE
from ledger.note import Verifier
from ledger.policy import Group, Log, Policy, Witness

if TYPE_CHECKING:
    from ledger.consensus.block import Block
    from ledger.consensus.messages import Signer

#: Domain-separation prefix of a validator's approval signature of a change.
CHANGE_SIGN_DOMAIN: Final = b"ledger/consensus/validator-set-change/v1\n"
#: Domain-separation prefix of :attr:`ValidatorRoster.hash`.
ROSTER_HASH_DOMAIN: Final = b"ledger/consensus/validator-roster/v1\n"
#: Domain-separation prefix of :attr:`ValidatorSetChange.change_id`.
CHANGE_ID_DOMAIN: Final = b"ledger/consensus/validator-set-change-id/v1\n"

#: First element of an encoded change; bump on any schema change.
CHANGE_VERSION: Final = 1
#: A change takes effect at least this many heights after the block that carries it.
MIN_CHANGE_LEAD: Final = 2
#: ... and at most this many (bounds how long one pending change blocks the next).
MAX_CHANGE_LEAD: Final = 100_000
#: Operations in one change.
MAX_CHANGE_OPS: Final = 16
#: Changes one block may carry.
MAX_CHANGES_PER_BLOCK: Final = 1
#: Longest name or vkey text (UTF-8 bytes) a change may carry.
MAX_TEXT_BYTES: Final = 512
#: Largest encoded change (ops plus MAX_VALIDATORS approvals fit with room to spare).
MAX_CHANGE_BYTES: Final = 64 * 1024

_SIGNATURE_SIZE: Final = 64
_MAX_UINT63: Final = 2**63 - 1


class OpKind(enum.IntEnum):
    """The operations of a change; the value is the first element of the op's wire list."""

    ADD = 1
    REMOVE = 2
    ROTATE = 3


# --- identities and rosters ---------------------------------------------------------------


def _vkey(name: str, role: str, text: str) -> Verifier:
    try:
        return Verifier.from_vkey(text)
    except MalformedError as exc:
        raise ConfigError(f"validator {name!r}: {role} vkey: {exc.diagnostics()}") from None



@dataclass(frozen=True, kw_only=True)
class ValidatorInfo:
    """The public identity of one validator: what a roster, a policy and a change carry.

    ``consensus_key`` is the raw Ed25519 key of consensus messages; ``log_vkey`` the type-0x01
    checkpoint key (key name = the log origin); ``cosigner_vkey`` the type-0x04 cosignature key
    (key name = ``name``).

    Raises (on construction):
        ConfigError: invalid or reserved name, a consensus key that is not 32 bytes, a vkey that
            does not parse, has the wrong signature type, or (cosigner) another name.
    """

    name: str
    consensus_key: bytes
    log_vkey: str
    cosigner_vkey: str
    #: Where the validator's node is reached, as the genesis file names it: a hint for peers,
    #: not part of the identity (never encoded, hashed, signed or compared; the genesis
    #: checks it, :func:`ledger.genesis.check_url`).
    url: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            check_key_name(self.name, what="validator name")
            for text in (self.name, self.log_vkey, self.cosigner_vkey):
                if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
                    raise MalformedError(f"validator field longer than {MAX_TEXT_BYTES} bytes")
        except MalformedError as exc:
            raise ConfigError(f"validator {self.name!r}: {exc.diagnostics()}") from None
        log = _vkey(self.name, "log", self.log_vkey)
        cosigner = _vkey(self.name, "cosigner", self.cosigner_vkey)
        if self.name == "none":
            raise ConfigError("validator name 'none' is reserved by tlog-policy")
        if type(self.consensus_key) is not bytes or len(self.consensus_key) != PUBLIC_KEY_SIZE:
            raise ConfigError(f"validator {self.name!r}: consensus key must be 32 bytes")
        if log.sig_type != SIG_TYPE_ED25519:
            raise ConfigError(f"validator {self.name!r}: log vkey must have type 0x01")
        if cosigner.sig_type != SIG_TYPE_COSIGNATURE_V1:
            raise ConfigError(f"validator {self.name!r}: cosigner vkey must have type 0x04")
        if cosigner.name != self.name:
            raise ConfigError(f"validator {self.name!r}: cosigner vkey is named {cosigner.name!r}, "
                              "expected the validator name")

    @classmethod
    def from_keys(cls, keys: ValidatorKeys, *, url: str | None = None) -> ValidatorInfo:
        """The public identity of a validator key file (:class:`ledger.crypto.ValidatorKeys`),
        with ``url`` as its node's address.

        Raises:
            ConfigError: cannot happen for a valid key file.
        """
        return cls(name=keys.name, consensus_key=keys.consensus_key.public_key,
                   log_vkey=keys.log_vkey, cosigner_vkey=keys.cosigner_vkey, url=url)

    @property
    def log_verifier(self) -> Verifier:
        """The parsed log vkey (valid by construction)."""
        return Verifier.from_vkey(self.log_vkey)

    @property
    def cosigner_verifier(self) -> Verifier:
        """The parsed cosigner vkey (valid by construction)."""
        return Verifier.from_vkey(self.cosigner_vkey)

    def to_wire(self) -> list[Any]:
        """``[name, consensus_key, log_vkey, cosigner_vkey]``."""
        return [self.name, self.consensus_key, self.log_vkey, self.cosigner_vkey]


@dataclass(frozen=True)
class ValidatorRoster:
    """The full validator set of a period: identities in proposer order.

    Build with ``ValidatorRoster(members=(...))``.

    Raises (on construction):
        ConfigError: empty, more than ``MAX_VALIDATORS``, a repeated name, a public key used
            twice (by two validators or in two roles of one), or log vkeys of different origins.
    """

    members: tuple[ValidatorInfo, ...]

    def __init__(self, *, members: Sequence[ValidatorInfo]) -> None:
        members_t = tuple(members)
        if not members_t:
            raise ConfigError("validator roster is empty")
        if len(members_t) > MAX_VALIDATORS:
            raise ConfigError(f"validator roster has more than {MAX_VALIDATORS} members")
        names: set[str] = set()
        keys: set[bytes] = set()
        origins: set[str] = set()
        for m in members_t:
            if m.name in names:
                raise ConfigError(f"validator {m.name!r} is listed twice")
            names.add(m.name)
            log = m.log_verifier
            origins.add(log.name)
            # One key in two roles, or shared by two validators, would let one signature count
            # twice (in a consensus quorum, an approval quorum or the trust policy).
            for key in (m.consensus_key, log.public_key, m.cosigner_verifier.public_key):
                if key in keys:
                    raise ConfigError(f"validator {m.name!r}: a public key is used twice")
                keys.add(key)
        if len(origins) != 1:
            raise ConfigError("validators' log vkeys name different origins")
        object.__setattr__(self, "members", members_t)

    @property
    def origin(self) -> str:
        """The log origin every member's log vkey is named after."""
        return self.members[0].log_verifier.name

    @cached_property
    def validator_set(self) -> ValidatorSet:
        """The consensus view: the members' consensus keys, in proposer order."""
        return ValidatorSet(keys=[m.consensus_key for m in self.members])

    @cached_property
    def hash(self) -> bytes:
        """``SHA-256(ROSTER_HASH_DOMAIN || msgpack([member...]))``: what a change's
        ``prev_set_hash`` names."""
        body = msgpack.packb([m.to_wire() for m in self.members], use_bin_type=True)
        return hashlib.sha256(ROSTER_HASH_DOMAIN + body).digest()

    def member(self, consensus_key: bytes) -> ValidatorInfo | None:
        """The member with ``consensus_key``, or ``None``."""
        for m in self.members:
            if m.consensus_key == consensus_key:
                return m
        return None

    def policy(self) -> Policy:
        """The C2SP trust policy of this roster: every log key a ``log``, every cosigner key a
        ``witness``, quorum ``group validators <n - f> <names>``. The one builder of trust
        policies: the genesis's, the proving ground's and each period's after a change."""
        n = len(self.members)
        return Policy(
            logs=tuple(Log(verifier=m.log_verifier) for m in self.members),
            witnesses=tuple(
                Witness(name=m.name, verifier=m.cosigner_verifier) for m in self.members
            ),
            groups=(
                Group(
                    name="validators",
                    threshold=quorum(n),
                    members=tuple(m.name for m in self.members),
                ),
            ),
            quorum="validators",
        )


# --- operations and changes ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChangeOp:
    """One operation: ``ADD`` (``info``), ``REMOVE`` (``target``), ``ROTATE`` (``target`` and
    ``info``). Build with :meth:`add`, :meth:`remove`, :meth:`rotate`.

    Raises (on construction):
        ConfigError: fields that do not fit the kind.
    """

    kind: OpKind
    target: bytes | None = None
    info: ValidatorInfo | None = None

    def __post_init__(self) -> None:
        need_target = self.kind in (OpKind.REMOVE, OpKind.ROTATE)
        need_info = self.kind in (OpKind.ADD, OpKind.ROTATE)
        if (self.target is not None) != need_target or (self.info is not None) != need_info:
            raise ConfigError(f"{self.kind.name} operation has the wrong fields")
        if self.target is not None and len(self.target) != PUBLIC_KEY_SIZE:
            raise ConfigError("operation target must be a 32-byte consensus key")

    @classmethod
    def add(cls, info: ValidatorInfo) -> ChangeOp:
        """Add ``info`` at the end of the proposer order."""
        return cls(kind=OpKind.ADD, info=info)

    @classmethod
    def remove(cls, consensus_key: bytes) -> ChangeOp:
        """Remove the validator whose consensus key is ``consensus_key``."""
        return cls(kind=OpKind.REMOVE, target=consensus_key)

    @classmethod
    def rotate(cls, consensus_key: bytes, info: ValidatorInfo) -> ChangeOp:
        """Replace the validator whose consensus key is ``consensus_key`` by ``info``."""
        return cls(kind=OpKind.ROTATE, target=consensus_key, info=info)

    def to_wire(self) -> list[Any]:
        """``[1, info]``, ``[2, key]`` or ``[3, key, info]``."""
        if self.kind is OpKind.ADD:
            assert self.info is not None
            return [int(self.kind), self.info.to_wire()]
        if self.kind is OpKind.REMOVE:
            return [int(self.kind), self.target]
        assert self.info is not None
        return [int(self.kind), self.target, self.info.to_wire()]


def apply_ops(roster: ValidatorRoster, ops: Sequence[ChangeOp]) -> ValidatorRoster:
    """The roster after ``ops``, applied in order.

    Raises:
        VerificationError: an ``ADD`` of a present key or name, a ``REMOVE``/``ROTATE`` of an
            absent key, or a result that is not a valid roster (empty, duplicates, ...).
    """
    members = list(roster.members)
    for op in ops:
        keys = [m.consensus_key for m in members]
        if op.kind is OpKind.ADD:
            assert op.info is not None
            if op.info.consensus_key in keys:
                raise VerificationError("ADD of a validator that is already in the set")
            members.append(op.info)
            continue
        if op.target not in keys:
            raise VerificationError(f"{op.kind.name} of a key that is not in the set")
        i = keys.index(op.target)
        if op.kind is OpKind.REMOVE:
            del members[i]
        else:
            assert op.info is not None
            members[i] = op.info
    try:
        return ValidatorRoster(members=members)
    except ConfigError as exc:
        raise VerificationError(f"the change yields an invalid set: {exc.diagnostics()}") from None


@dataclass(frozen=True, kw_only=True)
class Approval:
    """One validator's signature of a change, by its consensus key."""

    validator: bytes
    signature: bytes


@dataclass(frozen=True, kw_only=True)
class ValidatorSetChange:
    """A validator-set change and its approvals (see the module docstring for the rules).

    Approvals are kept sorted by validator key, one per validator, so equal changes encode to
    equal bytes. Build with :meth:`create` and :meth:`approve` (or :meth:`signed`), check with
    :meth:`verify`.
    """

    chain_id: str
    effective_height: int
    prev_set_hash: bytes
    ops: tuple[ChangeOp, ...]
    approvals: tuple[Approval, ...] = ()

    @classmethod
    def create(
        cls, *, chain_id: str, effective_height: int, prev: ValidatorRoster,
        ops: Sequence[ChangeOp],
    ) -> ValidatorSetChange:
        """An unsigned change of ``prev``.

        Raises:
            ConfigError: no ops, too many, an effective height below 1 or a bad chain id.
        """
        change = cls(
            chain_id=chain_id, effective_height=effective_height, prev_set_hash=prev.hash,
            ops=tuple(ops),
        )
        try:
            change._check_shape()
        except ProtocolError as exc:
            raise ConfigError(exc.diagnostics()) from None
        return change

    def _check_shape(self) -> None:
        try:
            encoded = self.chain_id.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("change chain id is not valid UTF-8") from None
        if not 0 < len(encoded) <= 64:
            raise ProtocolError("change chain id is not 1..64 bytes")
        if not 1 <= self.effective_height <= _MAX_UINT63:
            raise ProtocolError("change effective height out of range")
        if len(self.prev_set_hash) != HASH_SIZE:
            raise ProtocolError("change previous-set hash is not 32 bytes")
        if not 0 < len(self.ops) <= MAX_CHANGE_OPS:
            raise ProtocolError(f"a change holds 1..{MAX_CHANGE_OPS} operations")
        if len(self.approvals) > MAX_VALIDATORS:
            raise ProtocolError("too many approvals")
        keys = [a.validator for a in self.approvals]
        if keys != sorted(set(keys)):
            raise ProtocolError("approvals not sorted by distinct validator key")

    def _checked(self) -> ValidatorSetChange:
        self._check_shape()
        return self

    @cached_property
    def sign_bytes(self) -> bytes:
        """The exact bytes each approval signs."""
        body = [self.chain_id, self.effective_height, self.prev_set_hash,
                [op.to_wire() for op in self.ops]]
        return CHANGE_SIGN_DOMAIN + bytes(msgpack.packb(body, use_bin_type=True))

    @cached_property
    def change_id(self) -> bytes:
        """SHA-256 of the signed content (approvals excluded): one id however it is signed."""
        return hashlib.sha256(CHANGE_ID_DOMAIN + self.sign_bytes).digest()

    def approve(self, signer: Signer) -> ValidatorSetChange:
        """A copy with ``signer``'s approval added (replacing an earlier one of that key)."""
        ap = Approval(validator=signer.public_key, signature=signer.sign(self.sign_bytes))
        by_key = {a.validator: a for a in self.approvals}
        by_key[ap.validator] = ap
        return ValidatorSetChange(
            chain_id=self.chain_id, effective_height=self.effective_height,
            prev_set_hash=self.prev_set_hash, ops=self.ops,
            approvals=tuple(by_key[k] for k in sorted(by_key)),
        )

    def signed(self, signers: Iterable[Signer]) -> ValidatorSetChange:
        """A copy approved by every signer in ``signers``."""
        out = self
        for s in signers:
            out = out.approve(s)
        return out

    def with_approvals(self, approvals: Iterable[Approval]) -> ValidatorSetChange:
        """A copy holding ``approvals`` merged with the present ones (operators collect
        approvals separately and merge them; signatures are checked by :meth:`verify`)."""
        by_key = {a.validator: a for a in self.approvals}
        for a in approvals:
            by_key[a.validator] = a
        return ValidatorSetChange(
            chain_id=self.chain_id, effective_height=self.effective_height,
            prev_set_hash=self.prev_set_hash, ops=self.ops,
            approvals=tuple(by_key[k] for k in sorted(by_key)),
        )

    def verify(
        self, prev: ValidatorRoster, *, chain_id: str, inclusion_height: int | None = None
    ) -> ValidatorRoster:
        """Check this change against the roster it modifies; return the new roster.

        ``inclusion_height`` (if given) is the height of the block carrying the change, which
        must satisfy ``MIN_CHANGE_LEAD <= effective_height - inclusion_height <=
        MAX_CHANGE_LEAD``.

        Raises:
            VerificationError: another chain; ``prev_set_hash`` is not ``prev.hash``; the lead
                rule fails; an op does not apply (see :func:`apply_ops`); an approval by a key
                outside ``prev``, or with a bad signature; fewer than ``prev``'s quorum of
                distinct approvals (an unsigned change has none).
        """
        try:
            self._check_shape()
        except ProtocolError as exc:
            raise VerificationError(exc.diagnostics()) from None
        if self.chain_id != chain_id:
            raise VerificationError(f"change for chain {self.chain_id!r}, expected {chain_id!r}")
        if self.prev_set_hash != prev.hash:
            raise VerificationError("change modifies another validator set")
        if inclusion_height is not None:
            lead = self.effective_height - inclusion_height
            if not MIN_CHANGE_LEAD <= lead <= MAX_CHANGE_LEAD:
                raise VerificationError(
                    f"change effective at {self.effective_height} cannot be carried at height "
                    f"{inclusion_height} (lead must be {MIN_CHANGE_LEAD}..{MAX_CHANGE_LEAD})"
                )
        new = apply_ops(prev, self.ops)
        current = prev.validator_set
        for a in self.approvals:
            if a.validator not in current:
                raise VerificationError("change approved by a key outside the current set")
            try:
                verify_ed25519(a.validator, self.sign_bytes, a.signature)
            except LedgerError:
                raise VerificationError("change approval signature does not verify") from None
        if len(self.approvals) < current.quorum:
            raise VerificationError(
                f"change has {len(self.approvals)} approvals, quorum is {current.quorum}"
            )
        return new

    def to_wire(self) -> list[Any]:
        """``[version, chain_id, effective_height, prev_set_hash, [op...],
        [[validator, signature]...]]``."""
        return [
            CHANGE_VERSION, self.chain_id, self.effective_height, self.prev_set_hash,
            [op.to_wire() for op in self.ops],
            [[a.validator, a.signature] for a in self.approvals],
        ]

    def encode(self) -> bytes:
        """Canonical msgpack bytes."""
        return bytes(msgpack.packb(self.to_wire(), use_bin_type=True))


# --- decoding untrusted change bytes -----------------------------------------------------------


def _list(x: Any, what: str, length: int | None = None) -> list[Any]:
    if type(x) is not list or (length is not None and len(x) != length):
        raise ProtocolError(f"{what} is not a list" + (f" of {length}" if length else ""))
    return x


def _bin(x: Any, size: int, what: str) -> bytes:
    if type(x) is not bytes or len(x) != size:
        raise ProtocolError(f"{what} is not {size} bytes")
    return x


def _text(x: Any, what: str) -> str:
    if type(x) is not str or not 0 < len(x.encode("utf-8", "surrogatepass")) <= MAX_TEXT_BYTES:
        raise ProtocolError(f"{what} is not a string of 1..{MAX_TEXT_BYTES} bytes")
    return x


def _info_from(obj: Any) -> ValidatorInfo:
    _list(obj, "validator", 4)
    try:
        return ValidatorInfo(
            name=_text(obj[0], "validator name"),
            consensus_key=_bin(obj[1], PUBLIC_KEY_SIZE, "consensus key"),
            log_vkey=_text(obj[2], "log vkey"),
            cosigner_vkey=_text(obj[3], "cosigner vkey"),
        )
    except (ConfigError, UnicodeError) as exc:
        raise ProtocolError(f"bad validator in change: {exc}") from None


def _op_from(obj: Any) -> ChangeOp:
    _list(obj, "change operation")
    if not obj or type(obj[0]) is not int or obj[0] not in tuple(OpKind):
        raise ProtocolError("unknown change operation")
    kind = OpKind(obj[0])
    if kind is OpKind.ADD:
        _list(obj, "ADD operation", 2)
        return ChangeOp.add(_info_from(obj[1]))
    if kind is OpKind.REMOVE:
        _list(obj, "REMOVE operation", 2)
        return ChangeOp.remove(_bin(obj[1], PUBLIC_KEY_SIZE, "REMOVE target"))
    _list(obj, "ROTATE operation", 3)
    return ChangeOp.rotate(_bin(obj[1], PUBLIC_KEY_SIZE, "ROTATE target"), _info_from(obj[2]))


def change_from_wire(obj: Any) -> ValidatorSetChange:
    """A :class:`ValidatorSetChange` from its decoded msgpack list (structure and ranges only;
    call :meth:`ValidatorSetChange.verify`). Raises :class:`ProtocolError` only."""
    _list(obj, "change", 6)
    if type(obj[0]) is not int or obj[0] != CHANGE_VERSION:
        raise ProtocolError("unknown change version")
    chain = obj[1]
    if type(chain) is not str:
        raise ProtocolError("change chain id is not a string")
    height = obj[2]
    if type(height) is not int:
        raise ProtocolError("change effective height is not an integer")
    ops = _list(obj[4], "change operations")
    approvals = _list(obj[5], "change approvals")
    if len(ops) > MAX_CHANGE_OPS or len(approvals) > MAX_VALIDATORS:
        raise ProtocolError("change has too many operations or approvals")
    return ValidatorSetChange(
        chain_id=chain,
        effective_height=height,
        prev_set_hash=_bin(obj[3], HASH_SIZE, "previous-set hash"),
        ops=tuple(_op_from(op) for op in ops),
        approvals=tuple(
            Approval(
                validator=_bin(_list(a, "approval", 2)[0], PUBLIC_KEY_SIZE, "approver key"),
                signature=_bin(a[1], _SIGNATURE_SIZE, "approval signature"),
            )
            for a in approvals
        ),
    )._checked()


def decode_change(data: bytes) -> ValidatorSetChange:
    """Parse canonical change bytes (e.g. from a file or an API body).

    Raises:
        ProtocolError: not bytes, over :data:`MAX_CHANGE_BYTES`, not msgpack, a schema or range
            violation, or a non-canonical encoding.
    """
    if type(data) is not bytes:
        raise ProtocolError("change is not bytes")
    if len(data) > MAX_CHANGE_BYTES:
        raise ProtocolError(f"change of {len(data)} bytes exceeds {MAX_CHANGE_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    # msgpack raises ValueError subclasses, TypeError and its own exceptions on garbage.
    except Exception as exc:
        raise ProtocolError(f"change is not msgpack: {exc.__class__.__name__}") from None
    change = change_from_wire(obj)
    if change.encode() != data:
        raise ProtocolError("change is not in canonical encoding")
    return change


# --- history: the set of every height ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Epoch:
    """The validators in force from ``start_height`` on (until the next epoch starts).

    ``roster`` is ``None`` for a fixed, keys-only set (:meth:`ValidatorHistory.fixed`).
    ``change`` is the committed change that began this epoch (``None`` for genesis) and
    ``included_at`` the height of the block that carried it (0 for genesis).
    """

    start_height: int
    validators: ValidatorSet
    roster: ValidatorRoster | None
    change: ValidatorSetChange | None = None
    included_at: int = 0


@dataclass(frozen=True, kw_only=True)
class ValidatorHistory:
    """The validator set of every height, as far as committed blocks decide it.

    ``height`` is the last block applied (0 = none). Immutable: :meth:`apply` returns a new
    history. Build with :meth:`genesis` (changes supported) or :meth:`fixed` (a keys-only set
    that never changes: any block carrying a change is invalid). After a restart rebuild it with
    :meth:`replay` from the stored blocks.
    """

    epochs: tuple[Epoch, ...]
    height: int = 0
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.epochs or self.epochs[0].start_height != 1:
            raise ConfigError("a validator history starts with the genesis epoch at height 1")
        starts = tuple(e.start_height for e in self.epochs)
        if list(starts) != sorted(set(starts)):
            raise ConfigError("validator epochs must start at increasing heights")
        object.__setattr__(self, "_starts", starts)

    @classmethod
    def genesis(cls, roster: ValidatorRoster) -> ValidatorHistory:
        """A fresh chain whose genesis validators are ``roster``."""
        return cls(epochs=(Epoch(start_height=1, validators=roster.validator_set,
                                 roster=roster),))

    @classmethod
    def fixed(cls, validators: ValidatorSet, *, height: int = 0) -> ValidatorHistory:
        """A chain whose validators never change (no roster: set changes are refused), with
        blocks up to ``height`` applied (nothing to replay: they cannot carry changes)."""
        return cls(epochs=(Epoch(start_height=1, validators=validators, roster=None),),
                   height=height)

    @classmethod
    def replay(
        cls, genesis: ValidatorRoster | ValidatorSet, blocks: Iterable[Block], *, chain_id: str
    ) -> ValidatorHistory:
        """The history after applying committed ``blocks`` (heights 1, 2, ... in order).

        Raises:
            VerificationError: a block out of order, or a change a committed block should not
                hold (storage does not match this genesis).
        """
        history = (cls.genesis(genesis) if isinstance(genesis, ValidatorRoster)
                   else cls.fixed(genesis))
        for block in blocks:
            history = history.apply(block, chain_id=chain_id)
        return history

    def _epoch(self, height: int) -> Epoch:
        if height < 1:
            raise ConfigError(f"no validator set for height {height}")
        i = 0
        for j, start in enumerate(self._starts):
            if start <= height:
                i = j
            else:
                break
        return self.epochs[i]

    def set_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height``. Final for ``height <= self.height + 2`` (a block
        at ``self.height + 1`` can only schedule changes from ``self.height + 3`` on).

        Raises:
            ConfigError: ``height < 1``.
        """
        return self._epoch(height).validators

    def roster_at(self, height: int) -> ValidatorRoster | None:
        """The roster of ``height`` (``None`` for a fixed history). Raises as :meth:`set_at`."""
        return self._epoch(height).roster

    @property
    def latest(self) -> Epoch:
        """The last scheduled epoch (possibly starting in the future)."""
        return self.epochs[-1]

    def pending(self, height: int) -> bool:
        """Whether a committed change takes effect after ``height``."""
        return self.latest.start_height > height

    def check_changes(
        self, height: int, changes: Sequence[ValidatorSetChange], *, chain_id: str
    ) -> ValidatorRoster | None:
        """Check the changes a block at ``height`` carries (``height`` = ``self.height + 1``);
        return the roster they schedule, or ``None`` when there are none.

        Raises:
            VerificationError: more than :data:`MAX_CHANGES_PER_BLOCK`; a fixed history; an
                earlier change still pending; or the change fails
                :meth:`ValidatorSetChange.verify` against the current roster.
        """
        if not changes:
            return None
        if len(changes) > MAX_CHANGES_PER_BLOCK:
            raise VerificationError(f"a block carries at most {MAX_CHANGES_PER_BLOCK} change")
        current = self.latest.roster
        if current is None:
            raise VerificationError("this chain's validator set is fixed: no changes")
        if self.pending(height):
            raise VerificationError("an earlier validator-set change is still pending")
        return changes[0].verify(current, chain_id=chain_id, inclusion_height=height)

    def apply(self, block: Block, *, chain_id: str) -> ValidatorHistory:
        """The history after committed ``block`` (the next height).

        Raises:
            VerificationError: ``block`` is not at ``self.height + 1`` or its changes are
                invalid (see :meth:`check_changes`).
        """
        if block.height != self.height + 1:
            raise VerificationError(
                f"applying block {block.height} to a validator history at {self.height}"
            )
        new = self.check_changes(block.height, block.changes, chain_id=chain_id)
        epochs = self.epochs
        if new is not None:
            change = block.changes[0]
            epochs = (*epochs, Epoch(start_height=change.effective_height,
                                     validators=new.validator_set, roster=new, change=change,
                                     included_at=block.height))
        return ValidatorHistory(epochs=epochs, height=block.height)


    def scheduled(self, change: ValidatorSetChange, *, included_at: int, height: int,
                  chain_id: str) -> ValidatorHistory:
        """The history with ``change``, committed in the block at ``included_at``, and the
        blocks up to ``height`` applied (none of them after ``included_at`` carrying a
        change): what replaying the blocks would give, from an index of the changes alone.

        Raises:
            VerificationError: the change does not follow (see :meth:`check_changes`), or
                ``included_at`` is not after the history's height.
        """
        if not self.height < included_at <= height:
            raise VerificationError(
                f"a change included at {included_at} does not follow a history at "
                f"{self.height}")
        new = self.check_changes(included_at, (change,), chain_id=chain_id)
        assert new is not None
        epochs = (*self.epochs, Epoch(start_height=change.effective_height,
                                      validators=new.validator_set, roster=new, change=change,
                                      included_at=included_at))
        return ValidatorHistory(epochs=epochs, height=height)


def validator_set_at(
    height: int, genesis: ValidatorRoster | ValidatorSet, blocks: Iterable[Block], *,
    chain_id: str,
) -> ValidatorSet:
    """The validator set of ``height`` given the genesis and the committed ``blocks`` (in
    height order from 1; those up to ``height - 2`` suffice). Pure; for a restarting node.

    Raises:
        VerificationError: as :meth:`ValidatorHistory.replay`.
        ConfigError: ``height < 1``.
    """
    return ValidatorHistory.replay(genesis, blocks, chain_id=chain_id).set_at(height)
