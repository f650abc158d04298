"""The replica's side of validator-set changes: the active set by height, and the change pool.

The rules live in :mod:`ledger.consensus.reconfig` (what a change is, who approves it, when it
takes effect) and the consensus core applies them; docs/reconfiguration.md has the operator's
procedure. What a node adds, and what this module owns:

* :class:`NodeValidators`: the node's copy of the :class:`ValidatorHistory` (rebuilt on every
  start from the *history index*, store metadata written in the transaction of each block
  that carries a change or begins a period, so a start reads the changes, not every block:
  its cost does not grow with the log; a store without the index is replayed block by block
  once and indexed), then advanced by each committed block,
  the *boundary size* of every change in force (the tree size of block ``E - 1``, exactly as in
  :mod:`ledger.policy_chain`), and from those:

  - which roster a checkpoint of a given tree size belongs to. A checkpoint is cosigned by the
    set of the block that produced it; blocks from ``E`` on that add anchors make the tree larger
    than the boundary, so ``size <= boundary`` is the old set and ``size > boundary`` the new
    one -- the same rule an offline verifier applies with the policy chain, so what the node
    collects is what the auditor checks. One
    :class:`~ledger.replica.checkpoints.CosignatureCollector` per period, each with that
    roster's cosigner keys and quorum (2f + 1 of *that* set);
  - which of the keys the node holds is the one of a height (consensus messages, envelopes)
    or of a period (log signature and cosignature);
  - which consensus keys may send peer envelopes: the members of every roster from the one of
    the previous height on (a peer one height behind at the switch still gets through; a removed
    validator is refused once the chain is two heights past its last one);
  - the policy chain served at ``GET /v1/policy-chain``.

* **Keys across a rotation.** A node holds its key file plus optional further key files
  (``extra_keys`` of the node's config); at every height it signs with the one in that height's set.
  A rotated validator can therefore either (a) be restarted *before* ``E`` holding the old and
  the new key, and switch at ``E`` with no gap, or (b) be restarted *after* ``E`` with only the
  new key file in place of the old one (the simple procedure of docs/reconfiguration.md; the
  set has one validator fewer between ``E`` and the restart). A node whose keys are in no
  set of the current height follows without signing (:meth:`NodeValidators.holds_key_at`).

* :class:`ChangePool`: changes an operator submitted (``POST /v1/admin/validator-changes``, an
  ``admin`` client token) or a peer gossiped, already approved by a quorum of the newest
  roster. :class:`~ledger.replica.application.LogApplication` offers the oldest to the core in
  ``Batch.changes``; the
  core leaves out one that is not valid at that height, so offering early or twice is harmless.
  A change leaves the pool when a committed block carries it, when it can no longer be carried
  (``height >= E - 2``), or when the newest roster changed under it (it names another
  ``prev_set_hash``).

What is not here: ``/v1/policy`` keeps serving the *genesis* trust policy (it is the trust
anchor auditors pin; the policy chain extends it), and where a validator's node is reached: a
validator ADDed by a change needs a ``[peers]`` entry in every node's config (peers are
configured, not discovered; ``docs/operators.md`` has the procedure).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgpack

from ledger.consensus import Block
from ledger.consensus.messages import decode_block
from ledger.consensus.reconfig import (
    MAX_CHANGE_LEAD,
    MIN_CHANGE_LEAD,
    Epoch,
    ValidatorHistory,
    ValidatorRoster,
    ValidatorSetChange,
    decode_change,
)
from ledger.crypto import Ed25519Key, ValidatorKeys
from ledger.errors import ConfigError, CorruptionError, ProtocolError, VerificationError
from ledger.policy import Policy
from ledger.policy_chain import PolicyChain
from ledger.replica.checkpoints import CosignatureCollector
from ledger.storage.base import Store

__all__ = [
    "HISTORY_INDEX_KEY",
    "MAX_PENDING_CHANGES",
    "ChangePool",
    "NodeValidators",
    "decode_change_item",
    "held_keys",
]

#: Changes waiting for a block at most (an operator submits one at a time; gossip duplicates).
MAX_PENDING_CHANGES: Final = 16
#: Store metadata: the history index, msgpack ``[1, [[included_at, change bytes], ...],
#: [[effective height, boundary size], ...]]``: every committed change and every boundary.
HISTORY_INDEX_KEY: Final = b"validators/history/v1"


class ChangePool:
    """Pending quorum-approved changes in arrival order, each once (by ``change_id``)."""

    def __init__(self, *, capacity: int = MAX_PENDING_CHANGES) -> None:
        self._capacity = capacity
        self._pending: dict[bytes, ValidatorSetChange] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._pending

    def changes(self) -> list[ValidatorSetChange]:
        """The pending changes, oldest first."""
        return list(self._pending.values())

    def add(self, change: ValidatorSetChange) -> bool:
        """Add a change the caller verified; return false if it was pending already.

        A change with more approvals than the pending copy replaces it (same ``change_id``).

        Raises:
            VerificationError: the pool is full.
        """
        old = self._pending.get(change.change_id)
        if old is not None:
            if len(change.approvals) > len(old.approvals):
                self._pending[change.change_id] = change
            return False
        if len(self._pending) >= self._capacity:
            raise VerificationError(f"{self._capacity} validator-set changes are pending already")
        self._pending[change.change_id] = change
        return True

    def candidate(self, height: int) -> ValidatorSetChange | None:
        """The oldest change a block at ``height`` may carry under the lead rule."""
        for change in self._pending.values():
            if MIN_CHANGE_LEAD <= change.effective_height - height <= MAX_CHANGE_LEAD:
                return change
        return None

    def on_commit(self, block: Block, *, latest: ValidatorRoster | None) -> None:
        """Drop what ``block`` carried, what expired and what no longer fits the newest roster
        ``latest`` (see the module docstring)."""
        carried = {c.change_id for c in block.changes}
        for cid, change in list(self._pending.items()):
            if (cid in carried or block.height >= change.effective_height - MIN_CHANGE_LEAD
                    or latest is None or change.prev_set_hash != latest.hash):
                del self._pending[cid]


class NodeValidators:
    """The validator history as the node uses it (see the module docstring).

    ``keys``: every key file the node holds, the configured one first.
    """

    def __init__(
        self, *, chain_id: str, genesis: ValidatorRoster, keys: Sequence[ValidatorKeys]
    ) -> None:
        if not keys:
            raise ConfigError("a node holds at least one validator key")
        self.chain_id = chain_id
        self.genesis = genesis
        self.keys = tuple(keys)
        self.history = ValidatorHistory.genesis(genesis)
        #: (included_at, change bytes) of every committed change, for the history index
        self._changes: list[tuple[int, bytes]] = []
        #: whether the store holds the history index (a fresh store: from its first block)
        self._indexed = False
        #: effective height E -> tree size of block E - 1, for every change in force.
        self._boundaries: dict[int, int] = {}
        self._collectors: dict[int, CosignatureCollector | None] = {}
        self._senders: tuple[int, int, dict[bytes, str]] | None = None

    # -- following the chain ---------------------------------------------------------------

    def sync(self, store: Store) -> ValidatorHistory:
        """Bring :attr:`history` to the store's last block: on a start from the history index
        (module docstring), else, and after it, by applying the stored blocks.

        Raises:
            CorruptionError: the index or a stored block is missing or does not decode.
            ConfigError: a stored change is not one this chain can have made (the data
                directory is not of this genesis).
            StorageError: writing the index of a store that had none failed.
        """
        last = store.last_height()
        if self.history.height == 0 and last > 0:
            raw = store.get_meta(HISTORY_INDEX_KEY)
            if raw is not None:
                self._load_index(raw, last)
                self._indexed = True
                return self.history
        replayed = self.history.height == 0 and last > 0
        for height in range(self.history.height + 1, last + 1):
            record = store.block(height)
            if record is None:
                raise CorruptionError(f"block {height} is missing from the store")
            try:
                block = decode_block(record.block)
            except ProtocolError as exc:
                raise CorruptionError(f"stored block {height}: {exc.diagnostics()}") from None
            try:
                self.apply(block)
            except VerificationError as exc:
                raise ConfigError(
                    f"stored block {height} does not follow this genesis's validator sets: "
                    f"{exc.diagnostics()}"
                ) from None
        if replayed:  # a store written before the index: index it once
            store.put_meta({HISTORY_INDEX_KEY: self._index_bytes()})
            self._indexed = True
        return self.history

    def _index_bytes(self, changes: Sequence[tuple[int, bytes]] | None = None,
                     bounds: Mapping[int, int] | None = None) -> bytes:
        changes = self._changes if changes is None else changes
        bounds = self._boundaries if bounds is None else bounds
        return bytes(msgpack.packb([1, [list(c) for c in changes],
                                    sorted([e, b] for e, b in bounds.items())]))

    def _load_index(self, raw: bytes, last: int) -> None:
        try:
            obj: Any = msgpack.unpackb(raw)
            version, changes, boundaries = obj
            if version != 1:
                raise ValueError("unknown version")
            pairs = [(int(h), bytes(c)) for h, c in changes]
            bounds = {int(e): int(b) for e, b in boundaries}
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptionError(
                f"the validator history index in the store does not decode ({exc})") from None
        history = self.history
        for included_at, data in pairs:
            try:
                change = decode_change(data)
                history = history.scheduled(change, included_at=included_at,
                                            height=included_at, chain_id=self.chain_id)
            except (ProtocolError, VerificationError) as exc:
                raise ConfigError(
                    f"the change committed at height {included_at} does not follow this "
                    f"genesis's validator sets: {exc.diagnostics()}") from None
        if history.height > last:
            raise CorruptionError("the validator history index is ahead of the stored blocks")
        self.history = ValidatorHistory(epochs=history.epochs, height=last)
        self._changes = pairs
        self._boundaries = bounds

    def index_meta(self, block: Block) -> dict[bytes, bytes | None]:
        """The history index to write with ``block`` (the next height) when it carries a
        change or is the last block before a period: the index as it will be after
        :meth:`apply`; otherwise nothing."""
        starts = {e.start_height for e in self.history.epochs[1:]}
        if self._indexed and not block.changes and block.height + 1 not in starts:
            return {}
        changes, bounds = self._changes, self._boundaries
        if block.changes:
            changes = [*changes, (block.height, block.changes[0].encode())]
        if block.height + 1 in starts:
            bounds = {**bounds, block.height + 1: block.tree_size}
        self._indexed = True  # written with the block (a failed write halts the replica)
        return {HISTORY_INDEX_KEY: self._index_bytes(changes, bounds)}

    def apply(self, block: Block) -> None:
        """Advance by committed ``block`` (the next height).

        Raises:
            VerificationError: ``block`` is not the next height or carries an invalid change
                (the core never commits one: a bug or a foreign store).
        """
        self.history = self.history.apply(block, chain_id=self.chain_id)
        if block.changes:
            self._changes.append((block.height, block.changes[0].encode()))
        for epoch in self.history.epochs[1:]:
            if epoch.start_height == block.height + 1:
                self._boundaries[epoch.start_height] = block.tree_size

    def holds_key_at(self, height: int) -> bool:
        """Whether one of the held keys (with the configured name) is a validator of the set
        of ``height``. A node that holds none follows the chain without signing: a validator
        that joins by a change not in force yet, one that was removed, or a wrong key file
        (its readiness says so)."""
        return self._held(self.roster_at(height)) is not None

    # -- which set, which key -----------------------------------------------------------------

    def _held(self, roster: ValidatorRoster) -> ValidatorKeys | None:
        for keys in self.keys:
            member = roster.member(keys.consensus_key.public_key)
            if (member is not None and member.name == keys.name
                    and member.cosigner_vkey == keys.cosigner_vkey
                    and member.log_vkey == keys.log_vkey):
                return keys
        return None

    def roster_at(self, height: int) -> ValidatorRoster:
        """The roster of ``height`` (``max(height, 1)``)."""
        roster = self.history.roster_at(max(height, 1))
        assert roster is not None  # built from a roster: never a fixed history
        return roster

    def epoch_for_size(self, size: int) -> Epoch:
        """The period whose set cosigns checkpoints of tree size ``size`` (module docstring)."""
        chosen = self.history.epochs[0]
        for epoch in self.history.epochs[1:]:
            boundary = self._boundaries.get(epoch.start_height)
            if boundary is not None and size > boundary:
                chosen = epoch
        return chosen

    def roster_for_size(self, size: int) -> ValidatorRoster:
        """The roster that cosigns checkpoints of tree size ``size``."""
        roster = self.epoch_for_size(size).roster
        assert roster is not None
        return roster

    def policy_for_size(self, size: int) -> Policy:
        """The trust policy a checkpoint of tree size ``size`` must satisfy."""
        return self.roster_for_size(size).policy()

    def keys_at(self, height: int) -> ValidatorKeys:
        """The held keys of the set of ``height`` (the configured ones if none is)."""
        return self._held(self.roster_at(height)) or self.keys[0]

    def envelope_key(self, height: int) -> Ed25519Key:
        """The consensus key to sign peer envelopes with while working on ``height``."""
        return self.keys_at(height).consensus_key

    def senders(self, last_height: int) -> Mapping[bytes, str]:
        """Consensus key -> name of every validator that may send us envelopes when our last
        committed block is ``last_height`` (module docstring). Cached per height."""
        cached = self._senders
        if cached is not None and cached[:2] == (last_height, len(self.history.epochs)):
            return cached[2]
        floor = max(last_height - 1, 1)
        first = max(e.start_height for e in self.history.epochs if e.start_height <= floor)
        out: dict[bytes, str] = {}
        for epoch in self.history.epochs:
            if epoch.start_height >= first and epoch.roster is not None:
                out.update((m.consensus_key, m.name) for m in epoch.roster.members)
        self._senders = (last_height, len(self.history.epochs), out)
        return out

    # -- checkpoint cosignatures -------------------------------------------------------------

    def collector(self, size: int) -> CosignatureCollector | None:
        """The collector of the period of tree size ``size``; ``None`` if the node holds no key
        of that set (it then neither cosigns nor builds notes for it)."""
        return self._collector_of(self.epoch_for_size(size))

    def _collector_of(self, epoch: Epoch) -> CosignatureCollector | None:
        if epoch.start_height not in self._collectors:
            roster = epoch.roster
            assert roster is not None
            keys = self._held(roster)
            self._collectors[epoch.start_height] = None if keys is None else CosignatureCollector(
                keys=keys,
                cosigners={m.name: m.cosigner_verifier for m in roster.members},
                quorum=roster.validator_set.quorum,
            )
        return self._collectors[epoch.start_height]

    def collectors_for_peer(self, size: int, *, latest_size: int) -> list[CosignatureCollector]:
        """Where a peer's cosignature for ``size`` goes. Beyond our own tree the period may not
        be known yet (a pending change whose block ``E - 1`` we lack): then it is buffered in
        the collector of the newest period too, and verified once we reach that size."""
        out = [self.collector(size)]
        if size > latest_size and self.history.latest.start_height not in self._boundaries \
                and len(self.history.epochs) > 1:
            out.append(self._collector_of(self.history.latest))
        return [c for i, c in enumerate(out) if c is not None and c not in out[:i]]

    def rejected(self) -> int:
        """Peer cosignatures the collectors refused (for the metrics)."""
        return sum(c.rejected for c in self._collectors.values() if c is not None)

    # -- changes -----------------------------------------------------------------------------

    def check_change(self, change: ValidatorSetChange, *, next_height: int) -> None:
        """Check a change for the pool: approved by a quorum of the newest roster and still
        includable in a block at ``next_height`` or later.

        Raises:
            VerificationError: another chain or roster, an op that does not apply, too few or
                bad approvals (:meth:`ValidatorSetChange.verify`), or ``effective_height`` too
                close (``E - next_height < 2``: the change is void) or too far.
        """
        latest = self.history.latest.roster
        if latest is None:
            raise VerificationError("this chain's validator set is fixed")
        change.verify(latest, chain_id=self.chain_id)
        lead = change.effective_height - next_height
        if lead < MIN_CHANGE_LEAD:
            raise VerificationError(
                f"effective height {change.effective_height} is too close: the next block is "
                f"{next_height}, a change needs a lead of {MIN_CHANGE_LEAD}; sign a new one"
            )
        if lead > MAX_CHANGE_LEAD:
            raise VerificationError(f"effective height is more than {MAX_CHANGE_LEAD} ahead")

    def policy_chain(self) -> PolicyChain:
        """The policy chain of every change in force (equal to
        :func:`ledger.policy_chain.policy_chain_from_blocks` over the stored blocks)."""
        chain = PolicyChain(chain_id=self.chain_id, genesis=self.genesis)
        for epoch in self.history.epochs[1:]:
            boundary = self._boundaries.get(epoch.start_height)
            if epoch.change is not None and boundary is not None:
                chain = chain.with_change(epoch.change, boundary_size=boundary)
        return chain


def decode_change_item(payload: bytes) -> ValidatorSetChange:
    """A gossiped change (envelope item ``KIND_CHANGE``: the canonical change bytes).

    Raises:
        ProtocolError: as :func:`decode_change`.
    """
    return decode_change(payload)


def held_keys(keys: ValidatorKeys, extra: Iterable[ValidatorKeys]) -> tuple[ValidatorKeys, ...]:
    """The configured key then the extra ones, each once (by consensus key).

    Raises:
        ConfigError: an extra key has another name than the configured one (a node is one
            validator; a rotation may rename it only with a new config).
    """
    out = [keys]
    for k in extra:
        if k.name != keys.name:
            raise ConfigError(f"extra key file is for {k.name!r}, the node is {keys.name!r}")
        if all(k.consensus_key.public_key != o.consensus_key.public_key for o in out):
            out.append(k)
    return tuple(out)

