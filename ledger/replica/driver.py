"""The consensus driver: runs the core and executes its actions by the persistence rules.

**Driver rules** (``ledger/consensus/CORE_API.md``). Every core event runs to the end and its
actions are executed in order before the next event: a ``Persist`` is written to the safety
log (:mod:`ledger.replica.safety_log`) before any later action, so before the ``Send`` of the
message it signs is even returned; a ``Commit`` appends the block's digests with the block and
its certificate in one store transaction (the block record is the end-of-height marker), then
the block is applied (mempool, validator sets, change pool, waiting clients, the checkpoint
cosignature) before the next event. A storage failure during an action halts the replica: it
stops taking events rather than send what it did not persist.

**Follower, then signer.** The driver first builds a *follower* core: it verifies and commits
what the validators decide but holds a key of no validator, so it signs nothing. Once the
initial catch-up is done (:mod:`ledger.replica.catchup`) the signing core is built from the
store exactly as after a restart, so the persistence rules apply unchanged; a validator
restored from an older backup therefore never signs again at heights it signed before the
backup's safety record was lost: by then those heights are decided.

**Batching** (:mod:`ledger.replica.batching`): the ``COMMIT`` timer is the batch window; one
that fires with nothing to do parks, and work unparks it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger.consensus import Action as CoreAction
from ledger.consensus import (
    Block,
    Broadcast,
    Commit,
    CommitCertificate,
    ConsensusCore,
    Ed25519Signer,
    Persist,
    ScheduleTimeout,
    TimeoutKind,
    verify_certificate,
)
from ledger.consensus.messages import decode_block, decode_certificate
from ledger.errors import (
    ConfigError,
    CorruptionError,
    LedgerError,
    ProtocolError,
    VerificationError,
)
from ledger.replica.actions import Action, Committed, Halt, Send, SetTimer, Timer
from ledger.replica.application import LogApplication, commit_block
from ledger.replica.batching import BatchTimer, Mempool
from ledger.replica.checkpoints import CheckpointBook
from ledger.replica.clients import Clients
from ledger.replica.config import ReplicaConfig
from ledger.replica.evidence import EvidenceLog
from ledger.replica.safety_log import SafetyLog
from ledger.replica.validators import ChangePool, NodeValidators
from ledger.replica.wire import KIND_CONSENSUS, KIND_COSIGNATURE, encode_cosignature
from ledger.storage.base import Store

__all__ = ["CoreLog", "Driver", "ReplicaStats"]

_log = logging.getLogger("ledger.replica")


class CoreLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The replica's log lines, each prefixed with its validator, height and round."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(_log, {})
        self._driver = driver

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        core = self._driver.core
        height, rnd = (core.height, core.round) if core is not None else (0, 0)
        return f"[height {height} round {rnd}] {self._driver.name}: {msg}", kwargs

#: The follower core's signing key (until the initial catch-up is done): a key of no validator.
_FOLLOWER_SEED: Final = hashlib.sha256(b"ledger/node/follower-core/v1").digest()


@dataclass
class ReplicaStats:
    """Counters for metrics (the core's own are ``core.stats``)."""

    anchors: int = 0
    blocks_fetched: int = 0
    peer_invalid: int = 0
    commits: int = 0


class Driver:
    """The core, its store and everything a commit touches (module docstring)."""

    def __init__(self, config: ReplicaConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.name = config.name
        self.mempool = Mempool(capacity=config.mempool_capacity)
        self.changes = ChangePool()
        self.validators = NodeValidators(chain_id=config.chain_id, genesis=config.roster,
                                         keys=config.keys)
        self.safety_log = SafetyLog(store, keep_all=config.unsafe_defect != "keep_last_signed")
        self.batch = BatchTimer()
        self.checkpoints = CheckpointBook(store=store, validators=self.validators,
                                          origin=config.origin)
        self.clients = Clients(store=store, mempool=self.mempool, checkpoints=self.checkpoints,
                               client_limit=config.client_limit)
        self.evidence = EvidenceLog(store)
        self.evidence.load()
        self.stats = ReplicaStats()
        self.log = CoreLog(self)
        self.core: ConsensusCore | None = None
        self.halted: str | None = None
        #: False while catch-up is applying blocks: no cosignature per historical block.
        self.cosigning = True
        self.generation = 0
        self.out: list[Action] = []
        self.height_started = 0
        self.traffic_height = 0
        #: The core is built but its start is parked (see :meth:`start_core`).
        self.start_parked = False
        #: The time (ms) of the newest committed block (cosignatures count their tolerance
        #: from it).
        self.block_time = 0
        #: Safety records not written yet: only with the deliberate ``send_before_persist``.
        self.deferred: list[Persist] = []

    # -- building the core -----------------------------------------------------------------------

    def build_core(self, *, follower: bool) -> None:
        """(Re)build the consensus core from the store (module docstring).

        Raises:
            CorruptionError: the store is damaged, or its safety record is ahead of its blocks.
            ConfigError: the stored chain is not of this genesis.
        """
        store = self.store
        height = store.last_height()
        history = self.validators.sync(store)
        last_block: Block | None = None
        last_cert: CommitCertificate | None = None
        if height:
            record = store.block(height)
            if record is None:
                raise CorruptionError(f"block {height} is missing from the store")
            try:
                last_block = decode_block(record.block)
                last_cert = decode_certificate(record.certificate)
            except ProtocolError as exc:
                raise CorruptionError(f"stored block {height}: {exc.diagnostics()}") from None
            self.block_time = last_block.time
            try:
                verify_certificate(last_cert, block_hash=last_block.hash, height=height,
                                   validators=history.set_at(height),
                                   chain_id=self.config.chain_id)
            except VerificationError as exc:
                raise ConfigError(
                    f"the data directory holds a chain this genesis did not make (block "
                    f"{height}: {exc.diagnostics()}); wrong data_dir or genesis?") from None
        safety = self.safety_log.load()
        if safety is not None and safety.height > height + 1:
            raise CorruptionError(
                f"safety record at height {safety.height} but the store ends at {height}; "
                "restore the data directory or catch up from peers into a fresh one")
        held = self.validators.keys
        self.generation += 1
        self.batch.reset()
        self.start_parked = False
        self.core = ConsensusCore(
            chain_id=self.config.chain_id,
            history=history,
            signer=Ed25519Signer(seed=_FOLLOWER_SEED if follower else
                                 held[0].consensus_key.seed),
            # Every held key: the core signs with the one in each height's set (a rotation).
            signers=() if follower else tuple(
                Ed25519Signer(seed=k.consensus_key.seed) for k in held[1:]),
            app=LogApplication(store=store, mempool=self.mempool, changes=self.changes,
                               max_batch=self.config.max_batch),
            timeouts=self.config.timeouts,
            genesis_time=self.config.genesis_time,
            last_block=last_block,
            last_certificate=last_cert,
            safety=None if follower else safety,
            unsafe_skip_lock_persist=self.config.unsafe_skip_lock_persist,
        )

    def start_core(self, now: int, *, lazy: bool = False) -> None:
        """Start the core just built, and re-send (and feed back) everything signed at its
        height before a restart, byte-identical: peers may still wait for an earlier round's
        vote (module docstring of :mod:`ledger.replica.safety_log`).

        ``lazy``: if there is nothing to do and nothing was signed at this height yet, park
        the start like an idle batch timer (a validator that starts signing between heights
        must not start an empty one); work or a peer's traffic for the height starts it.
        """
        core = self.require_core()
        if lazy and not self.safety_log.at(core.height) and self.idle():
            self.start_parked = True
            return
        self.start_parked = False
        self.execute(core.start(now), now)
        for data in self.safety_log.at(core.height):
            self.send(None, KIND_CONSENSUS, data)
            self.execute(core.on_wire(data, now), now)

    def require_core(self) -> ConsensusCore:
        """The core (built by :meth:`build_core`)."""
        if self.core is None:
            raise ConfigError("the replica is not started")
        return self.core

    # -- running events --------------------------------------------------------------------------

    def run(self, now: int, step: Callable[[int], None]) -> None:
        """Run one event step; a storage failure or corruption halts (module docstring)."""
        if self.halted is not None or self.core is None:
            return
        try:
            while self.deferred:  # only with the deliberate defect (ReplicaConfig)
                late = self.deferred.pop(0)
                self.safety_log.persist(late.record, late.data)
            step(now)
        except LedgerError as exc:
            self.halt(f"{exc.code}: {exc.diagnostics()}")

    def halt(self, reason: str) -> None:
        """Stop taking events for ``reason`` (reads go on being served)."""
        if self.halted is None:
            self.halted = reason
            self.log.critical("halted: %s", reason)
            self.out.append(Halt(reason=reason))

    def flush(self) -> list[Action]:
        """The actions collected since the last flush."""
        out, self.out = self.out, []
        return out

    def send(self, to: str | None, kind: int, payload: bytes) -> None:
        """Queue a ``Send`` action."""
        self.out.append(Send(to=to, kind=kind, payload=payload))

    def core_event(self, now: int, feed: Callable[[ConsensusCore, int], list[CoreAction]]
                   ) -> None:
        """Deliver one event to the core and execute its actions in order."""
        core = self.require_core()
        before = (core.height, core.round, len(core.evidence))
        self.execute(feed(core, now), now)
        if core.round > before[1] and core.height == before[0]:
            self.log.info("round %d did not decide", before[1])
        if len(core.evidence) != before[2]:
            self.evidence.record(core.evidence.items)

    def execute(self, actions: Sequence[CoreAction], now: int) -> None:
        """Execute core actions in order, persisting before sending (module docstring)."""
        for action in actions:
            if isinstance(action, Persist):
                if self.config.unsafe_defect == "send_before_persist":
                    self.deferred.append(action)  # the deliberate defect: the next event
                else:
                    self.safety_log.persist(action.record, action.data)
            elif isinstance(action, Broadcast):
                self.send(None, KIND_CONSENSUS, action.data)
            elif isinstance(action, Commit):
                self.on_commit(action.block, action.certificate, now)
            elif isinstance(action, ScheduleTimeout):
                self.schedule(action)

    def schedule(self, timeout: ScheduleTimeout) -> None:
        """A core timeout as a ``SetTimer`` (the ``COMMIT`` one is the batch timer)."""
        if timeout.kind is TimeoutKind.COMMIT:
            self.batch.scheduled(timeout)
        self.out.append(SetTimer(at=timeout.at,
                                 timer=Timer(generation=self.generation, timeout=timeout)))

    # -- timers and batching ---------------------------------------------------------------------

    def on_core_timer(self, timeout: ScheduleTimeout, now: int) -> None:
        """A core timeout fired (a parked ``COMMIT`` is held back, module docstring)."""
        if timeout.kind is not TimeoutKind.COMMIT or self.batch.fired(timeout,
                                                                    idle=self.idle()):
            self.fire(timeout, now)

    def idle(self) -> bool:
        """Nothing to propose, nobody working on the next height and no committed
        validator-set change waiting for its effective height (the chain moves on to it, even
        with empty blocks, so that the switch does not wait for traffic): park the height."""
        core = self.core
        busy = core is not None and (self.traffic_height == core.height
                                     or core.stats.highest_seen_height >= core.height
                                     or self.validators.history.latest.start_height
                                     > core.height)
        return not (len(self.mempool) or self.changes or not self.cosigning or busy)

    def fire(self, timeout: ScheduleTimeout, now: int) -> None:
        """Hand a timeout to the core."""
        if timeout.kind is TimeoutKind.COMMIT:
            self.height_started = now
        self.core_event(now, lambda core, t: core.on_timeout(timeout, t))

    def unpark(self, now: int, *, early: bool = False) -> None:
        """Start the next height now: it was parked, or (``early``) the batch is full."""
        if self.start_parked:
            self.height_started = now
            self.start_core(now)
            return
        timeout = self.batch.release(early=early)
        if timeout is not None:
            self.fire(timeout, now)

    def work_arrived(self, now: int) -> None:
        """Digests or a change arrived: start a parked height, or a full batch early."""
        self.unpark(now, early=len(self.mempool) >= self.config.max_batch)

    def on_consensus(self, data: bytes, now: int) -> None:
        """Peer consensus bytes for the core."""
        core = self.require_core()
        height, stats = core.height, core.stats
        # Traffic for the current height is a message the core took: neither invalid, nor
        # late, nor dropped unverified beyond its future window (one forged far-future vote
        # must not start an idle height).
        before = (stats.late, stats.invalid, stats.future_dropped, stats.received)
        self.core_event(now, lambda c, t: c.on_wire(data, t))
        after = (stats.late, stats.invalid, stats.future_dropped, stats.received)
        if self.core is core and core.height == height and after[:3] == before[:3] \
                and after[3] > before[3]:
            self.traffic_height = height
            self.unpark(now)

    # -- commits and checkpoints -----------------------------------------------------------------

    def on_commit(self, block: Block, certificate: CommitCertificate, now: int) -> None:
        """Store the block with its certificate, then apply it (module docstring)."""
        meta = self.checkpoints.pending_meta(block.tree_size)
        meta.update(self.validators.index_meta(block))
        result = commit_block(self.store, block, certificate, meta=meta)
        self.block_time = block.time
        self.mempool.remove(block.digests)
        self.validators.apply(block)
        self.changes.on_commit(block, latest=self.validators.history.latest.roster)
        self.clients.committed(block.digests, result.indices, block.tree_size)
        new = sum(result.new)
        self.stats.anchors += new
        self.stats.commits += 1
        self.batch.reset()
        self.out.append(Committed(block=block, new=new, started=self.height_started))
        self.checkpoints.expect(block.tree_size, now)
        self.log.debug("committed block %d: %d digests (%d new), tree size %d", block.height,
                  len(block.digests), new, result.head.size)
        if self.cosigning:
            self.cosign(now)

    def cosign(self, now: int) -> None:
        """Cosign the current tree head, send the cosignature, answer covered clients."""
        cosig = self.checkpoints.cosign_head(now=now, block_time=self.block_time)
        if cosig is not None:
            self.send(None, KIND_COSIGNATURE, encode_cosignature(cosig))
        self.answer_waiting()

    def answer_waiting(self) -> None:
        """Reply to every waiting client the latest checkpoint covers."""
        self.out.extend(self.clients.answer_covered())
