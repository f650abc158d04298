"""The replica: everything a validator decides, as one sans-I/O state machine.

The node (:mod:`ledger.node`) and the simulator (:mod:`ledger.sim`) run this same class. Events
come in as method calls, each with ``now`` (milliseconds since the epoch, the caller's clock);
each returns the :mod:`actions <ledger.replica.actions>` to execute in order. The replica reads
and writes its store through the ``Store`` protocol (LMDB in the node, ``MemoryStore`` in the
simulator) and does no other I/O: no sockets, no clock, no environment, no randomness.

=========================  =========================================================================
event                      what it is
=========================  =========================================================================
:meth:`Replica.start`      once: open the chain in the store, start following it
:meth:`Replica.on_timer`   a ``SetTimer`` is due (a consensus timeout or the housekeeping tick)
:meth:`Replica.open`,      peer envelope bytes: verify (the HTTP answer depends on it), then act on
:meth:`Replica.deliver`    the items; the node answers the peer between the two
:meth:`Replica.submit`     a client's digests (and, with ``wait``, a ticket for the receipts)
``on_status/_block/       the answer to a ``Fetch`` (or its failure)
_checkpoint``
:meth:`Replica.on_sent`    the transport delivered an envelope to a peer
=========================  =========================================================================

Where each rule lives: :mod:`~ledger.replica.driver` (the consensus driver: persist before
send, commit then apply, batching), :mod:`~ledger.replica.catchup` (peers, block sync, the switch
from follower to signer), :mod:`~ledger.replica.application` (blocks into the log),
:mod:`~ledger.replica.checkpoints` (cosignatures and served notes),
:mod:`~ledger.replica.validators` (the set of each height, the change pool),
:mod:`~ledger.replica.clients` and :mod:`~ledger.replica.receipts` (statuses, receipts, waiting
clients), :mod:`~ledger.replica.wire` (envelopes), :mod:`~ledger.replica.witness` (tlog-witness).
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from typing import Any

from ledger.consensus.reconfig import ValidatorSetChange
from ledger.errors import (
    CorruptionError,
    LedgerError,
    MalformedError,
    ProtocolError,
    VerificationError,
)
from ledger.replica.actions import Action, SetTimer, Timer
from ledger.replica.batching import OverloadedError
from ledger.replica.catchup import Peers, Sync
from ledger.replica.config import ReplicaConfig
from ledger.replica.driver import Driver, ReplicaStats
from ledger.replica.receipts import AnchorStatus
from ledger.replica.validators import decode_change_item
from ledger.replica.wire import (
    KIND_CHANGE,
    KIND_CONSENSUS,
    KIND_COSIGNATURE,
    KIND_GOSSIP,
    MAX_GOSSIP_DIGESTS,
    Envelope,
    UnknownSenderError,
    decode_cosignature,
    decode_gossip,
    encode_cosignature,
    encode_gossip,
    open_envelope,
    seal_envelope,
)
from ledger.replica.witness import Witness
from ledger.storage.base import BlockRecord, Store

__all__ = ["Replica"]


class Replica:
    """One validator's state machine (see the module docstring).

    Build it, call :meth:`start` once, then the event methods; the views (:meth:`status`,
    :meth:`statuses`, :meth:`proof`, ...) never change state.
    """

    def __init__(self, config: ReplicaConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.name = config.name
        self.driver = Driver(config, store)
        self.sync = Sync(self.driver, Peers(list(config.peers)))
        self._last_tick_state = (0, 0)
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, now: int) -> list[Action]:
        """Open the chain from the store and start following it.

        Raises:
            CorruptionError: the store is damaged.
            ConfigError: the stored chain does not fit this genesis.
            StorageError: the store failed.
        """
        driver = self.driver
        driver.build_core(follower=True)
        driver.run(now, driver.start_core)
        driver.out.append(SetTimer(at=now + self.config.tick_ms, timer=Timer(generation=-1)))
        self.sync.poll(now, initial=True)
        driver.run(now, self.sync.catch_up)
        driver.run(now, self.sync.maybe_start_signing)
        return driver.flush()

    @property
    def halted(self) -> str | None:
        """Why the replica stopped taking events, or ``None`` while it runs."""
        return self.driver.halted

    def halt(self, reason: str) -> list[Action]:
        """Stop taking events (the node's own decision, e.g. a failed write it did)."""
        self.driver.halt(reason)
        return self.driver.flush()

    # -- timers ----------------------------------------------------------------------------------

    def on_timer(self, timer: Timer, now: int) -> list[Action]:
        """A timer of a ``SetTimer`` action is due."""
        driver = self.driver
        timeout = timer.timeout
        if timeout is None:  # the housekeeping tick, re-armed every time
            driver.out.append(SetTimer(at=now + self.config.tick_ms, timer=timer))
            driver.run(now, self._tick)
        elif timer.generation == driver.generation:
            driver.run(now, lambda t: driver.on_core_timer(timeout, t))
        return driver.flush()

    def _tick(self, now: int) -> None:
        driver = self.driver
        core = driver.require_core()
        state = (core.height, core.round)
        stuck = state == self._last_tick_state and driver.batch.parked is None
        if stuck or self.sync.peers.lagging(self.store.last_height(), now):
            driver.core_event(now, lambda c, t: c.rebroadcast(t))
            for data in driver.safety_log.at(core.height):
                driver.send(None, KIND_CONSENSUS, data)
        self._last_tick_state = state
        # A peer that missed one may lack a quorum, or hold a note with fewer cosignatures
        # (so a later time bound), until it gets it.
        for own in driver.checkpoints.own_recent():
            driver.send(None, KIND_COSIGNATURE, encode_cosignature(own))
        for change in driver.changes.changes():  # a peer that missed one cannot propose it
            driver.send(None, KIND_CHANGE, change.encode())
        self.sync.tick(now)

    # -- peers -----------------------------------------------------------------------------------

    def seal(self, items: Sequence[tuple[int, bytes]]) -> bytes:
        """One envelope of ``items``, signed by this replica (for the transport).

        Raises:
            MalformedError: see :func:`ledger.replica.wire.seal_envelope`.
        """
        self._seq += 1
        core = self.driver.core
        key = self.driver.validators.envelope_key(core.height if core is not None else 1)
        return seal_envelope(key=key, chain_id=self.config.chain_id,
                             height=self.store.last_height(), seq=self._seq, items=items)

    def open(self, data: bytes, now: int) -> tuple[str, Envelope]:
        """Verify a peer envelope; its sender's name and the envelope, for :meth:`deliver`.

        Raises:
            ProtocolError: a malformed envelope, or another chain's.
            UnknownSenderError: the sender is not a validator, or claims to be this replica.
            VerificationError: the signature does not verify.
        """
        try:
            senders = self.driver.validators.senders(self.store.last_height())
            envelope = open_envelope(data, chain_id=self.config.chain_id, senders=senders)
            name = senders[envelope.sender]
            if name == self.name:  # our own key: a loop-back, or a clone of this validator
                raise UnknownSenderError("envelope claims to come from this node itself")
        except LedgerError:
            self.driver.stats.peer_invalid += 1
            raise
        self.sync.peers.heard(name, now, height=envelope.height)
        return name, envelope

    def deliver(self, name: str, envelope: Envelope, now: int) -> list[Action]:
        """Act on the items of an envelope :meth:`open` verified, in order; the gossip items
        of one envelope together (one store lookup for all their digests)."""
        gossip = [payload for kind, payload in envelope.items if kind == KIND_GOSSIP]
        if gossip:
            self.driver.run(now, functools.partial(self._on_gossip, gossip))
        for kind, payload in envelope.items:
            if kind != KIND_GOSSIP:
                self.driver.run(now, functools.partial(self._on_item, name, kind, payload))
        return self.driver.flush()

    def _on_gossip(self, payloads: list[bytes], now: int, /) -> None:
        driver = self.driver
        digests: list[bytes] = []
        for payload in payloads:
            try:
                digests += decode_gossip(payload)
            except ProtocolError:
                driver.stats.peer_invalid += 1
        try:
            fresh = driver.clients.take(digests)
        except OverloadedError:
            return  # the sender keeps them in its own mempool
        if fresh:
            driver.work_arrived(now)

    def _on_item(self, name: str, kind: int, payload: bytes, now: int, /) -> None:
        driver = self.driver
        if kind == KIND_CONSENSUS:
            driver.on_consensus(payload, now)
        elif kind == KIND_GOSSIP:
            self._on_gossip([payload], now)
        elif kind == KIND_CHANGE:
            self._on_change_item(name, payload, now)
        else:
            try:
                stored = driver.checkpoints.add_peer(decode_cosignature(payload), now=now)
            except (MalformedError, VerificationError) as exc:
                driver.stats.peer_invalid += 1
                self.driver.log.warning("bad cosignature from %s: %s", name,
                                        exc.diagnostics())
                return
            if stored:
                driver.answer_waiting()

    def _on_change_item(self, name: str, payload: bytes, now: int) -> None:
        try:
            self._submit_change(decode_change_item(payload), now)
        except ProtocolError as exc:
            self.driver.stats.peer_invalid += 1
            self.driver.log.warning("bad validator-set change from %s: %s", name,
                                    exc.diagnostics())
        except VerificationError as exc:
            # Not necessarily hostile: a peer behind us re-sends a change we already
            # committed (or one that expired) until it commits that block itself.
            self.driver.log.debug("validator-set change from %s not taken: %s", name,
                                  exc.diagnostics())

    def set_peers(self, names: Sequence[str]) -> None:
        """The node's configured peers changed (a validator joined, or one left)."""
        self.sync.peers.set([n for n in names if n != self.name])

    def on_sent(self, peer: str, now: int) -> None:
        """The transport delivered an envelope to ``peer`` (a good exchange)."""
        self.sync.peers.heard(peer, now)

    def on_status(self, peer: str, height: int | None, now: int) -> list[Action]:
        """A status request answered with the peer's committed height (``None``: failed)."""
        self.driver.run(now, lambda t: self.sync.on_status(peer, height, t))
        return self.driver.flush()

    def on_block(self, peer: str, height: int, answer: tuple[bytes, bytes] | None, now: int,
                 *, invalid: bool = False) -> list[Action]:
        """A block request answered with (block bytes, certificate bytes), or ``None`` (it
        failed; ``invalid``: the peer answered with something malformed)."""
        self.driver.stats.peer_invalid += invalid
        self.driver.run(now, lambda t: self.sync.on_block(peer, height, answer, t))
        return self.driver.flush()

    def on_checkpoint(self, peer: str, text: str | None, now: int) -> list[Action]:
        """A checkpoint request answered with the peer's note (of the size asked for, or its
        latest; ``None``: failed)."""
        if text is not None:
            self.driver.run(now, lambda t: self.sync.on_checkpoint(peer, text, t))
        return self.driver.flush()

    # -- clients ---------------------------------------------------------------------------------

    def submit(self, digests: Sequence[bytes], now: int, *, wait: bool = False
               ) -> tuple[list[AnchorStatus], int | None, list[Action]]:
        """Take a client's digests: queue the new ones and gossip them to every peer.

        Returns each digest's status; with ``wait`` a ticket (a ``Reply`` with it follows once
        every digest is anchored, possibly among the returned actions); and the actions.

        Raises:
            OverloadedError: the mempool is full (nothing was queued).
            StorageError: the store failed.
        """
        driver = self.driver
        size = driver.store.size
        fresh, statuses = driver.clients.accept(digests)
        for start in range(0, len(fresh), MAX_GOSSIP_DIGESTS):
            driver.send(None, KIND_GOSSIP,
                        encode_gossip(fresh[start:start + MAX_GOSSIP_DIGESTS]))
        if fresh:
            driver.run(now, driver.work_arrived)
        if driver.store.size != size:  # a block committed meanwhile (a one-validator chain)
            statuses = driver.clients.statuses(digests)
        ticket = None
        if wait:
            ticket = driver.clients.wait(statuses)
            driver.run(now, lambda _: driver.answer_waiting())
        return statuses, ticket, driver.flush()

    def cancel_wait(self, ticket: int) -> None:
        """The client of ``ticket`` stopped waiting."""
        self.driver.clients.cancel(ticket)

    def submit_change(self, change: ValidatorSetChange, now: int) -> tuple[bool, list[Action]]:
        """Take a quorum-approved validator-set change from an operator: check it against the
        newest validator set, queue it for a block and gossip it if it is new.

        Returns whether it was new here, and the actions.

        Raises:
            VerificationError: see :meth:`ledger.replica.validators.NodeValidators.check_change`,
                or too many changes are pending.
        """
        added = self._submit_change(change, now)
        return added, self.driver.flush()

    def _submit_change(self, change: ValidatorSetChange, now: int) -> bool:
        driver = self.driver
        driver.validators.check_change(change, next_height=self.store.last_height() + 1)
        if not driver.changes.add(change):
            return False
        self.driver.log.info("validator-set change %s pending, effective at height %d",
                 change.change_id.hex()[:16], change.effective_height)
        driver.send(None, KIND_CHANGE, change.encode())
        driver.run(now, driver.unpark)
        return True

    # -- views -----------------------------------------------------------------------------------

    @property
    def stats(self) -> ReplicaStats:
        """The replica's counters."""
        return self.driver.stats

    @property
    def checkpoint(self) -> tuple[int, str] | None:
        """The latest stored quorum checkpoint: (tree size, note text), or ``None``."""
        return self.driver.checkpoints.latest

    def statuses(self, digests: Sequence[bytes]) -> list[AnchorStatus]:
        """The status of each digest (one store read for all).

        Raises:
            NotFoundError: a digest is neither in the log nor pending.
        """
        return self.driver.clients.statuses(digests, strict=True)

    def proof(self, digest: bytes, *, latest: bool = False) -> tuple[AnchorStatus, int]:
        """The status of ``digest`` with its receipt if it is anchored: against the first
        checkpoint that holds it, or (``latest``) the latest, carrying the first as an
        earliest bridge; and the tree size of the receipt's checkpoint.

        Raises:
            NotFoundError: the digest is neither in the log nor pending.
            CorruptionError: the stored tree does not back the receipt (the replica halts).
        """
        try:
            return self.driver.clients.proof(digest, latest=latest)
        except CorruptionError as exc:
            self.driver.halt(exc.diagnostics())
            raise

    def block_record(self, height: int) -> BlockRecord | None:
        """The stored block of ``height`` with its certificate, or ``None``."""
        return self.store.block(height) if height >= 1 else None

    def witness(self) -> Witness:
        """This validator as a tlog-witness of its own log: its cosigner key of the current
        set, every log key of every period as the trusted logs, its store as state and tree."""
        validators = self.driver.validators
        keys = validators.keys_at(self.store.last_height() + 1)
        logs = {m.log_vkey: m.log_verifier for epoch in validators.history.epochs
                if epoch.roster is not None for m in epoch.roster.members}
        return Witness(name=keys.name, key=keys.cosigner_key, logs=logs.values(),
                       state=self.store, tree=self.store)

    def evidence(self) -> list[dict[str, Any]]:
        """Every stored equivocation evidence item, oldest first, as ``GET /v1/evidence``
        shows it: who, where, the two block hashes, and the evidence itself (base64 of its
        canonical encoding: the two signed votes, verifiable offline)."""
        out: list[dict[str, Any]] = []
        for item in self.driver.evidence.items:
            a, b = item.vote_a, item.vote_b
            member = self.driver.validators.roster_at(a.height).member(a.validator)
            out.append({
                "height": a.height, "round": a.round, "type": a.type.name.lower(),
                "validator": a.validator.hex(), "name": None if member is None else member.name,
                "block_hashes": [None if h is None else h.hex()
                                 for h in (a.block_hash, b.block_hash)],
                "evidence": base64.b64encode(item.encode()).decode("ascii"),
            })
        return out

    def peers_connected(self, now: int) -> int:
        """Peers heard from recently."""
        return self.sync.peers.connected(now)

    def readiness(self, now: int) -> list[str]:
        """Why the replica is not ready (empty list = ready)."""
        reasons = []
        if self.driver.halted is not None:
            reasons.append(f"halted: {self.driver.halted}")
        if self.driver.core is None:
            reasons.append("not started")
        if not self.sync.caught_up:
            reasons.append("catching up with peers")
        elif not self.sync.signing:
            reasons.append("initial catch-up: not signing consensus messages yet")
        height = self.store.last_height() + 1
        if not self.driver.validators.holds_key_at(height):
            reasons.append(f"this node holds no key of the validator set of height {height} "
                           "(a validator not added yet, one removed, or a wrong key file)")
        need = self.sync.quorum_at(height) - 1
        connected = self.sync.peers.connected(now)
        if connected < need:
            reasons.append(f"hears from {connected} peers, consensus needs {need}")
        return reasons

    def status(self, now: int) -> dict[str, Any]:
        """The JSON object of ``GET /v1/status``."""
        core = self.driver.require_core()
        head = self.store.tree_head()
        return {
            "name": self.name,
            "chain_id": self.config.chain_id,
            "origin": self.config.origin,
            "height": self.store.last_height(),
            "consensus_height": core.height,
            "round": core.round,
            "tree_size": head.size,
            "tree_root": base64.b64encode(head.root).decode("ascii"),
            "checkpoint_size": self.driver.checkpoints.latest_size,
            "mempool": len(self.driver.mempool),
            "peers_connected": self.sync.peers.connected(now),
            "peers": {p.name: {"height": p.height} for p in self.sync.peers},
            "evidence": len(self.driver.evidence.items) + self.driver.evidence.dropped,
            "ready": not self.readiness(now),
        }
