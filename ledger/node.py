"""The validator node: the one module with sockets, clocks and signals.

A :class:`Node` wires the pieces that are pure elsewhere:

::

    HTTP client --POST /v1/anchors--> Mempool --gossip--> peers' mempools
                                         |
    peers <--envelopes (node_peer)--> ConsensusCore (sans-I/O) --Commit--> Store (LMDB)
                                         |                                   |
                              timers (loop.call_at)            checkpoint: log signature +
                                                               cosignature, exchanged with
                                                               peers, stored at a quorum

**Driver rules** (``ledger/consensus/CORE_API.md``). Every core event runs synchronously in the
event loop and its actions are executed in order before anything else happens: a ``Persist``
is written with ``Store.put_meta`` (LMDB, sync on) before the next action, so before any later
``Broadcast`` is even queued; a ``Commit`` appends the block's digests together with the block
and its certificate in one store transaction (the block record is the end-of-height marker),
then the block is applied (mempool, waiters, checkpoint) before the next event. Timers are
``loop.call_at`` and never cancelled (the core ignores stale ones). A storage failure during an
action halts the node: it stops taking events rather than broadcast something it did not
persist.

**Batching.** The core starts height ``h + 1`` on its ``COMMIT`` timer, which we set to the batch
window. When the timer fires with an empty mempool the node *parks* it instead of starting an
empty height; it starts the height as soon as an anchor arrives (its own or gossiped), when a
peer's consensus message for the new height arrives, or when catch-up needs the core running.
A mempool that reaches the batch size starts the height early. So an idle cluster makes no
empty blocks and a busy one cuts a block per window or per ``max_batch_digests``.

**No anchor lost, none twice.** An accepted digest is checked against the store and the
mempool, gossiped to every peer, and stays in each mempool until a committed block carries it,
so whichever validator proposes next proposes it; the store de-duplicates again at append.
The mempool itself is memory only: a ``202`` (pending) answer is not a durability promise (the
digest survives a crash of this node only through the peers it was gossiped to); a ``200``
with receipts (``?wait=true``) is, since the block and a quorum checkpoint are on disk.

**Checkpoints.** After each commit that grew the tree, the node signs the tree head with its log
key (type 0x01) and cosigns it (type 0x04, timestamp = its clock), sends the cosignature to every
peer (and re-sends its latest one on every tick), and stores the checkpoint note once it holds
a quorum (2f + 1) of verified cosignatures; receipts are cut against the latest stored note.

**Catch-up.** Peers tell their committed height in every envelope (and in ``/v1/status``, polled
when a peer has been quiet). A node behind its peers fetches ``/v1/blocks/{h}`` (block and
certificate), verifies the certificate against the validator set, and feeds it to the core as a
``Decision``; the core checks the tree head through the application and emits the ``Commit``.
It then adopts a peer's quorum checkpoint after verifying it against the trust policy and its
own tree. ``/readyz`` is ready when the node is caught up and hears from a quorum.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ledger.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint_body
from ledger.config import Genesis, NodeConfig, validator_for_keys
from ledger.consensus import (
    Action,
    Block,
    Broadcast,
    Commit,
    CommitCertificate,
    ConsensusCore,
    Decision,
    Ed25519Signer,
    Persist,
    SafetyState,
    ScheduleTimeout,
    TimeoutKind,
    ValidatorSet,
    verify_certificate,
)
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.consensus.messages import MAX_MESSAGE_BYTES, decode_block, decode_certificate
from ledger.consensus.reconfig import ValidatorSetChange
from ledger.crypto import ValidatorKeys, read_key_file
from ledger.errors import (
    ConfigError,
    CorruptionError,
    LedgerError,
    MalformedError,
    NotFoundError,
    ProtocolError,
    VerificationError,
)
from ledger.merkle.hashing import HASH_SIZE, leaf_hash
from ledger.merkle.proof import verify_inclusion
from ledger.node_openapi import openapi_document
from ledger.node_peer import (
    KIND_CHANGE,
    KIND_CONSENSUS,
    KIND_COSIGNATURE,
    KIND_GOSSIP,
    MAX_ENVELOPE_BYTES,
    MAX_GOSSIP_DIGESTS,
    MAX_ITEMS,
    UnknownSenderError,
    decode_cosignature,
    decode_gossip,
    encode_cosignature,
    encode_gossip,
    open_envelope,
    seal_envelope,
)
from ledger.node_reconfig import (
    ChangePool,
    NodeValidators,
    ReconfigApplication,
    add_reconfig_routes,
    decode_change_item,
    held_keys,
)
from ledger.node_state import CosignatureCollector, LogApplication, Mempool, OverloadedError
from ledger.node_verify import add_verify_routes
from ledger.node_witness import add_witness_routes
from ledger.note import MAX_NOTE_SIZE
from ledger.policy import Policy
from ledger.policy_chain import genesis_roster
from ledger.prover import fault_tolerance, quorum_threshold
from ledger.receipt import RECEIPT_HEADER, build_receipt
from ledger.storage.base import BlockRecord, Store
from ledger.storage.lmdb_store import LmdbStore

__all__ = [
    "MAX_ANCHOR_BODY_BYTES",
    "MAX_DIGESTS_PER_REQUEST",
    "ApiError",
    "Node",
    "build_app",
    "run_node",
]

log = logging.getLogger("ledger.node")

#: ``POST /v1/anchors`` takes 1 to this many digests.
MAX_DIGESTS_PER_REQUEST: Final = 10_000
#: 10,000 quoted hex digests with separators are ~680 KB; a larger anchor body is refused.
MAX_ANCHOR_BODY_BYTES: Final = 1024 * 1024
#: Pending anchors a node holds at most (about 100 MB of dict entries).
MEMPOOL_CAPACITY: Final = 1_000_000
#: Meta key of the consensus safety record (the newest ``Persist``).
SAFETY_KEY: Final = b"node/consensus-safety"

#: Housekeeping tick: re-broadcast when stuck, re-send our cosignature, check for catch-up.
TICK_SECONDS: Final = 0.5
#: A peer counts as connected if we exchanged a message with it this recently.
PEER_FRESH_SECONDS: Final = 5.0
#: Poll a peer's /v1/status when it has sent nothing for this long.
STATUS_POLL_SECONDS: Final = 2.0
#: Items queued for one peer at most; the oldest are dropped beyond (all are re-sent or kept).
MAX_PEER_QUEUE: Final = 20_000
_PEER_BATCH_BYTES: Final = MAX_ENVELOPE_BYTES - 64 * 1024
#: Verified envelopes waiting for delivery at most; beyond, delivery is inline (backpressure).
MAX_INBOX_ENVELOPES: Final = 64

#: On SIGTERM, how long the node keeps serving (consensus, peers, waiting requests) after it
#: stopped taking anchors, so that waiting requests get their receipts and peers our gossip.
SHUTDOWN_GRACE_SECONDS: Final = 5.0
#: The follower core's signing key (until the initial catch-up is done): a key of no validator.
_FOLLOWER_SEED: Final = hashlib.sha256(b"ledger/node/follower-core/v1").digest()

#: A block response: the block (<= 4 MiB) and its certificate, base64 in JSON.
_MAX_BLOCK_RESPONSE: Final = 8 * MAX_MESSAGE_BYTES // 5 + 1024 * 1024

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]*")


class ApiError(LedgerError):
    """An HTTP-level refusal with its own status and code (auth, size, bad parameters)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _status_for(exc: LedgerError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, UnknownSenderError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, OverloadedError):
        return 503
    if isinstance(exc, MalformedError):  # ProtocolError included
        return 400
    if isinstance(exc, VerificationError):
        return 403
    return 500  # StorageError, CorruptionError, ConfigError: our fault, not the client's


def _error_response(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


#: Test hook, never for production: ``LEDGER_CLOCK_SKEW_MS`` (integer milliseconds, may be
#: negative) is added to this node's wall clock, read once at start. The chaos suite
#: (tests/chaos) skews one validator's clock with it.
_CLOCK_SKEW_MS: Final = int(os.environ.get("LEDGER_CLOCK_SKEW_MS") or 0)


def _now_ms() -> int:
    """The node's wall clock in milliseconds: every consensus time and cosignature timestamp."""
    return int(time.time() * 1000) + _CLOCK_SKEW_MS


class _PeerLink:
    """One peer: a queue of items and a worker that POSTs them as signed envelopes over one
    kept-open ``ClientSession``."""

    def __init__(self, *, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.queue: deque[tuple[int, bytes]] = deque()
        self.wakeup = asyncio.Event()
        self.height = 0
        self.last_heard = float("-inf")  # loop.time() of the last good exchange
        self.dropped = 0
        self.session: aiohttp.ClientSession | None = None
        self.task: asyncio.Task[None] | None = None

    def send(self, kind: int, payload: bytes) -> None:
        self.queue.append((kind, payload))
        while len(self.queue) > MAX_PEER_QUEUE:
            self.queue.popleft()
            self.dropped += 1
        self.wakeup.set()

    def take(self) -> list[tuple[int, bytes]]:
        items: list[tuple[int, bytes]] = []
        size = 0
        while self.queue and len(items) < MAX_ITEMS:
            kind, payload = self.queue[0]
            if items and size + len(payload) + 16 > _PEER_BATCH_BYTES:
                break
            self.queue.popleft()
            items.append((kind, payload))
            size += len(payload) + 16
        return items


class Node:
    """One validator: store, consensus core, mempool, checkpoints, HTTP API and peer links.

    Build from a :class:`~ledger.config.NodeConfig`; ``keys`` defaults to reading
    ``config.key_file`` and ``store`` to ``LmdbStore.open(config.data_dir)``. Then ``await
    start()`` and, at the end, ``await stop()``. ``extra_keys``: further key files of this
    validator (a key rotation, :mod:`ledger.node_reconfig`): at each height the node signs with
    the held key of that height's validator set.

    Raises (on construction):
        ConfigError: the key file is unreadable or is for another name. (Keys that are in no
            validator set of the chain are refused by :meth:`start`, once the stored blocks
            tell the sets after the genesis.)
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        keys: ValidatorKeys | None = None,
        store: Store | None = None,
        extra_keys: Sequence[ValidatorKeys] = (),
    ) -> None:
        self.config = config
        genesis = config.genesis
        self.keys = keys if keys is not None else read_key_file(config.key_file)
        if self.keys.name != config.name:
            raise ConfigError(f"key file is for {self.keys.name!r}, the config for {config.name!r}")
        held = held_keys(self.keys, extra_keys)
        if not any(_in_genesis(genesis, k) for k in held):
            # Possibly a rotated key: start() checks it against the sets of the stored chain.
            log.info("key of %s is not in the genesis: expecting a committed rotation",
                     self.keys.name)
        self.chain_id = genesis.chain_id
        self.origin = genesis.origin
        self.validators = ValidatorSet(keys=list(genesis.consensus_keys()))
        self.policy: Policy = genesis.policy()
        self.policy_text = genesis.trust_policy()
        self.quorum = quorum_threshold(genesis.n)
        self.names = {v.consensus_key: v.name for v in genesis.validators}
        self.max_batch = min(config.batch.max_batch_digests, MAX_BLOCK_DIGESTS)
        consensus_timeouts = config.timeouts.consensus()
        self.timeouts = replace(
            consensus_timeouts,
            commit=max(consensus_timeouts.commit, config.batch.batch_window_ms),
        )
        self._store_arg = store
        self.store: Store | None = None
        self.mempool = Mempool(capacity=MEMPOOL_CAPACITY)
        #: Validator sets after changes, the keys of each, cosignature collectors per period.
        self.validator_state = NodeValidators(
            chain_id=genesis.chain_id, genesis=genesis_roster(genesis), keys=held
        )
        self.changes = ChangePool()
        self.peers = {p.name: _PeerLink(name=p.name, url=p.url) for p in config.peers}
        self.core: ConsensusCore | None = None
        self.registry = CollectorRegistry()
        self.commit_latency = Histogram(
            "ledger_commit_latency_seconds",
            "Time from the start of a height to its commit.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.registry.register(_NodeCollector(self))
        self.app = build_app(self)
        self.anchors_total = 0
        self.blocks_fetched = 0
        self.peer_invalid = 0
        self.halted: str | None = None
        self.caught_up = False
        #: False until the initial catch-up is done: the core runs as a follower and signs
        #: nothing (see :meth:`_start_signing`).
        self.signing = False
        #: True once a shutdown began: anchors are refused with 503 (see :meth:`shutdown`).
        self.draining = False
        self._core_gen = 0  # bumped when the core is rebuilt: its old timers are ignored
        self._waiting = 0  # ?wait=true requests in progress
        self.catching_up = False
        self._parked: ScheduleTimeout | None = None
        self._traffic_height = 0  # the last height a valid peer message was received for
        self._commit_timer: ScheduleTimeout | None = None
        self._height_started = time.monotonic()
        self._checkpoint: tuple[int, str] | None = None
        self._receipt_note: str | None = None  # the note build_receipt last validated
        self._served_root: tuple[str, bytes] | None = None  # (note, its root) for _check_paths
        self._progress = asyncio.Event()
        self._seq = 0
        self._inbox = 0  # envelopes verified and waiting for delivery
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick_state: tuple[int, int] = (0, 0)
        self._stopping = False
        self.url = config.public_url

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, sock: Any = None) -> None:
        """Open the store, rebuild the core from it, serve HTTP and start the peer links.

        ``sock``: an already bound listening socket (tests bind free ports up front); default is
        ``config.listen_host:listen_port``.

        Raises:
            StorageError: the store cannot be opened (``CorruptionError`` if damaged).
            ConfigError: the stored chain does not fit this genesis.
            OSError: the listen address is taken.
        """
        self._loop = asyncio.get_running_loop()
        self._progress = asyncio.Event()
        store = self._store_arg
        if store is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            store = LmdbStore.open(self.config.data_dir)
        self.store = store
        self._build_core(store, follower=True)
        latest = store.latest_checkpoint()
        if latest is not None:
            text = latest.decode("utf-8")
            self._checkpoint = (parse_checkpoint_body(_note_body(text)).size, text)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock)
        else:
            site = web.TCPSite(
                self._runner, self.config.listen_host, self.config.listen_port,
                reuse_address=True,
            )
        await site.start()
        timeout = aiohttp.ClientTimeout(total=self.config.timeouts.peer_request_ms / 1000)
        for peer in self.peers.values():
            peer.session = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=4)
            )
            peer.task = asyncio.create_task(self._peer_worker(peer))
        assert self.core is not None
        self._event(lambda core, now: core.start(now))
        self._maybe_start_signing()  # at once only without peers (a one-validator chain)
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        self._clog(logging.INFO, "node %s serving on %s at height %d (follower until caught "
                   "up)", self.keys.name, self.url, store.last_height())

    def _build_core(self, store: Store, *, follower: bool) -> None:
        """(Re)build the consensus core from the store.

        ``follower``: the core verifies and commits what the validators decide but holds a key
        of no validator, so it signs nothing. A node starts so and becomes a signing validator
        only once its initial catch-up is done (:meth:`_start_signing`): a validator restored
        from an older backup must not sign again at heights it signed before the backup's
        safety record was lost (docs/operators-db.md); by then those heights are decided.
        """
        last_block: Block | None = None
        last_cert: CommitCertificate | None = None
        height = store.last_height()
        if height:
            record = store.block(height)
            if record is None:
                raise CorruptionError(f"block {height} is missing from the store")
            try:
                last_block = decode_block(record.block)
                last_cert = decode_certificate(record.certificate)
            except ProtocolError as exc:
                raise CorruptionError(f"stored block {height}: {exc.diagnostics()}") from None
            history = self.validator_state.sync(store)
            try:
                verify_certificate(last_cert, block_hash=last_block.hash, height=height,
                                   validators=history.set_at(height), chain_id=self.chain_id)
            except VerificationError as exc:
                raise ConfigError(
                    f"the data directory holds a chain this genesis did not make (block "
                    f"{height}: {exc.diagnostics()}); wrong data_dir or genesis?"
                ) from None
        raw_safety = store.get_meta(SAFETY_KEY)
        safety = None if raw_safety is None else SafetyState.decode(raw_safety)
        if safety is not None and safety.height > height + 1:
            # The safety record outlived the blocks (a restored backup): sign nothing at the
            # old heights again; start where the blocks end, the record still guards them.
            raise CorruptionError(
                f"safety record at height {safety.height} but the store ends at {height}; "
                "restore the data directory or catch up from peers into a fresh one"
            )
        self._core_gen += 1
        self._parked = self._commit_timer = None  # timers of the previous core
        history = self.validator_state.sync(store)
        self.validator_state.check_keys()
        held = self.validator_state.keys
        seed = _FOLLOWER_SEED if follower else held[0].consensus_key.seed
        log_app = LogApplication(store=store, mempool=self.mempool, max_batch=self.max_batch)
        self.core = ConsensusCore(
            chain_id=self.chain_id,
            history=history,
            signer=Ed25519Signer(seed=seed),
            # Every held key: the core signs with the one in each height's set (a rotation).
            signers=() if follower else tuple(
                Ed25519Signer(seed=k.consensus_key.seed) for k in held[1:]),
            app=ReconfigApplication(log_app=log_app, pool=self.changes),
            timeouts=self.timeouts,
            genesis_time=self.config.genesis.genesis_time,
            last_block=last_block,
            last_certificate=last_cert,
            safety=None if follower else safety,
        )

    def _start_signing(self) -> None:
        """The initial catch-up is done: replace the follower core by the signing one.

        The signing core is rebuilt from the store (the newest block and the persisted safety
        record), exactly as after a restart, so the persistence rules apply unchanged: a record
        for the current height resumes it and re-sends only the byte-identical message.
        """
        assert self.store is not None
        self.signing = True
        self._build_core(self.store, follower=False)
        self._clog(logging.INFO, "caught up: signing as validator %s from here",
                   self.keys.name)
        self._event(lambda core, now: core.start(now))

    def _clog(self, level: int, message: str, *args: object) -> None:
        """Log a line about consensus, prefixed with the core's height and round."""
        core = self.core
        height, rnd = (core.height, core.round) if core is not None else (0, 0)
        log.log(level, "[height %d round %d] " + message, height, rnd, *args)

    async def shutdown(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop gracefully (SIGTERM, SIGINT): then :meth:`stop`.

        1. From now on ``POST /v1/anchors`` answers 503 ``unavailable``; everything else is
           served as before, and the node stays in consensus.
        2. For up to ``grace`` seconds it waits while ``?wait=true`` requests are waiting (they
           get their receipts as soon as the next checkpoint is stored) and while its queues to
           live peers hold gossip or cosignatures not sent yet.
        3. :meth:`stop` closes the server, the peer links and the store.

        A block being applied is always finished: a commit runs start to end inside one event
        loop callback (block, certificate, tree and index in one synced LMDB transaction, then
        the checkpoint), so no signal handler runs in the middle of it. A ``200`` answer is only
        ever sent after the block and its quorum checkpoint are on disk, so a restart loses no
        acknowledged anchor; waiting requests cut short by the grace get ``202`` (pending),
        which promises nothing.
        """
        if self._stopping:
            return
        self.draining = True
        loop = self._loop
        if loop is not None:
            self._clog(logging.INFO, "node %s shutting down: refusing anchors, up to %.1f s "
                       "for %d waiting requests and the peer queues", self.keys.name, grace,
                       self._waiting)
            deadline = loop.time() + grace
            while loop.time() < deadline and self.halted is None:
                fresh = loop.time() - PEER_FRESH_SECONDS
                unsent = any(p.queue and p.last_heard >= fresh for p in self.peers.values())
                if not self._waiting and not unsent:
                    break
                await asyncio.sleep(0.02)
        await self.stop()

    async def stop(self) -> None:
        """Stop serving, close the peer sessions and the store. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self.halted = self.halted or "stopped"
        self._progress.set()  # waiting ?wait=true requests answer now (202), not at their deadline
        for task in self._tasks:
            task.cancel()
        for peer in self.peers.values():
            if peer.task is not None:
                peer.task.cancel()
        for task in [*self._tasks, *(p.task for p in self.peers.values() if p.task)]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for peer in self.peers.values():
            if peer.session is not None:
                await peer.session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None and self._store_arg is None:
            self.store.close()
        self._clog(logging.INFO, "node %s stopped", self.keys.name)

    # -- the consensus driver --------------------------------------------------------------

    def _event(self, feed: Callable[[ConsensusCore, int], list[Action]]) -> None:
        """Deliver one event to the core and execute its actions in order."""
        if self.halted is not None or self.core is None:
            return
        core = self.core
        before = (core.height, core.round)
        try:
            self._execute(feed(core, _now_ms()))
            if core.round > before[1] and core.height == before[0]:
                self._clog(logging.INFO, "round %d did not decide; now round %d", before[1],
                           core.round)
        except LedgerError as exc:
            # Never continue after a failed Persist or Commit: a later Broadcast could announce
            # what is not on disk. The operator restarts the node; it recovers from the store.
            self.halted = f"{exc.code}: {exc.diagnostics()}"
            self._clog(logging.CRITICAL, "node %s halted: %s", self.keys.name, self.halted)
            self._progress.set()  # waiting requests answer now

    def _execute(self, actions: Sequence[Action]) -> None:
        assert self.store is not None
        for action in actions:
            if isinstance(action, Persist):
                self.store.put_meta({SAFETY_KEY: action.data})
            elif isinstance(action, Broadcast):
                self._broadcast(KIND_CONSENSUS, action.data)
            elif isinstance(action, Commit):
                self._apply_commit(action.block, action.certificate)
            elif isinstance(action, ScheduleTimeout):
                self._schedule(action)

    def _schedule(self, timeout: ScheduleTimeout) -> None:
        assert self._loop is not None
        if timeout.kind is TimeoutKind.COMMIT:
            self._commit_timer = timeout
        delay = max(0, timeout.at - _now_ms()) / 1000
        self._loop.call_at(self._loop.time() + delay, self._on_timer, timeout, self._core_gen)

    def _on_timer(self, timeout: ScheduleTimeout, generation: int) -> None:
        if generation != self._core_gen:
            return  # a timer of a core since replaced (follower -> signing)
        if timeout.kind is TimeoutKind.COMMIT:
            if self._commit_timer is not timeout:
                return  # fired early already
            self._commit_timer = None
            core = self.core
            busy = core is not None and (
                self._traffic_height == core.height
                or core.stats.highest_seen_height >= core.height
            )
            if (len(self.mempool) == 0 and not self.changes and not self.catching_up
                    and not busy):
                self._parked = timeout  # nothing to propose: wait for work (module docstring)
                return
        self._fire(timeout)

    def _fire(self, timeout: ScheduleTimeout) -> None:
        if timeout.kind is TimeoutKind.COMMIT:
            self._height_started = time.monotonic()
        self._event(lambda core, now: core.on_timeout(timeout, now))

    def _unpark(self, *, early: bool = False) -> None:
        """Start the next height now: parked on an empty mempool, or (``early``) the batch is
        full before the window ends."""
        if self._parked is not None:
            timeout, self._parked = self._parked, None
            self._fire(timeout)
        elif early and self._commit_timer is not None:
            timeout, self._commit_timer = self._commit_timer, None
            self._fire(timeout)

    def _on_consensus_bytes(self, data: bytes) -> None:
        core = self.core
        if core is None:
            return
        height = core.height
        # Traffic for the current height is a message the core took: neither invalid, nor late,
        # nor dropped unverified beyond its future window (one forged far-future vote must not
        # start an idle height).
        before = (core.stats.late, core.stats.invalid, core.stats.future_dropped,
                  core.stats.received)
        self._event(lambda c, now: c.on_wire(data, now))
        after = (core.stats.late, core.stats.invalid, core.stats.future_dropped,
                 core.stats.received)
        if core.height == height and after[:3] == before[:3] and after[3] > before[3]:
            # A valid message for our current height (or a later one): a peer is working on
            # it, so never park it. (A message that made us commit was for the old height.)
            self._traffic_height = height
            self._unpark()

    def _apply_commit(self, block: Block, certificate: CommitCertificate) -> None:
        assert self.store is not None and self._loop is not None
        record = BlockRecord(
            height=block.height, block=block.encode(), certificate=certificate.encode()
        )
        result = self.store.append(block.digests, block=record)
        self.mempool.remove(block.digests)
        self.validator_state.apply(block)
        self.changes.on_commit(block, latest=self.validator_state.history.latest.roster)
        self.anchors_total += sum(result.new)
        self.commit_latency.observe(time.monotonic() - self._height_started)
        self._clog(logging.DEBUG, "committed block %d: %d digests (%d new), tree size %d",
                   block.height, len(block.digests), sum(result.new), result.head.size)
        self._parked = None
        if not self.catching_up:
            self._cosign_head()

    def _cosign_head(self) -> None:
        """Sign and cosign the current tree head, send the cosignature, store a quorum note."""
        assert self.store is not None
        head = self.store.tree_head()
        if head.size == 0 or (self._checkpoint is not None and self._checkpoint[0] >= head.size):
            return
        collector = self.validator_state.collector(head.size)
        if collector is None:
            return  # not a validator of this period's set (removed, or not yet added)
        body = Checkpoint(origin=self.origin, size=head.size, root=head.root)
        cosig = collector.sign_local(body, timestamp=_now_ms() // 1000)
        self._broadcast(KIND_COSIGNATURE, encode_cosignature(cosig))
        self._store_checkpoint(head.size)

    def _store_checkpoint(self, size: int) -> None:
        assert self.store is not None
        # Store once per size, as soon as a quorum is held: each store is an fsync, and a later
        # cosignature adds nothing a verifier needs (the policy asks for the quorum, not all).
        # The count can jump past the quorum (peers' cosignatures buffered before our own).
        current = self._checkpoint
        if current is not None and current[0] >= size:
            return
        collector = self.validator_state.collector(size)
        note = None if collector is None else collector.note(size)
        if note is None:
            return
        self.store.put_checkpoint(size, note.encode("utf-8"))
        self._checkpoint = (size, note)
        self._progress.set()
        self._progress = asyncio.Event()

    def _broadcast(self, kind: int, payload: bytes) -> None:
        for peer in self.peers.values():
            peer.send(kind, payload)

    # -- anchors ---------------------------------------------------------------------------

    def accept_digests(self, digests: Sequence[bytes]) -> None:
        """Queue digests not yet in the log or the mempool, and gossip them to every peer.

        Raises:
            OverloadedError: the mempool is full (nothing was queued).
            StorageError: the store failed.
        """
        assert self.store is not None
        candidates = [d for d in dict.fromkeys(digests) if d not in self.mempool]
        known = self.store.index_of_many(candidates)  # one read transaction per request
        fresh = self.mempool.add(d for d, i in zip(candidates, known, strict=True) if i is None)
        for start in range(0, len(fresh), MAX_GOSSIP_DIGESTS):
            self._broadcast(KIND_GOSSIP, encode_gossip(fresh[start:start + MAX_GOSSIP_DIGESTS]))
        if fresh:
            self._unpark(early=len(self.mempool) >= self.max_batch)

    def submit_change(self, change: ValidatorSetChange) -> bool:
        """Take a quorum-approved validator-set change (an operator's or a peer's): check it
        against the newest validator set, queue it for a block and gossip it if it is new.

        Returns whether it was new here.

        Raises:
            VerificationError: see :meth:`ledger.node_reconfig.NodeValidators.check_change`,
                or too many changes are pending.
        """
        assert self.store is not None
        self.validator_state.check_change(change, next_height=self.store.last_height() + 1)
        if not self.changes.add(change):
            return False
        self._clog(logging.INFO, "validator-set change %s pending, effective at height %d",
                   change.change_id.hex()[:16], change.effective_height)
        self._broadcast(KIND_CHANGE, change.encode())
        self._unpark()
        return True

    def digest_status(self, digest: bytes) -> dict[str, Any]:
        """``{"digest", "status"[, "index"]}`` of one digest (see the OpenAPI document).

        Raises:
            NotFoundError: the digest is neither in the log nor pending.
        """
        assert self.store is not None
        index = self.store.index_of(digest)
        if index is None:
            if digest in self.mempool:
                return {"digest": digest.hex(), "status": "pending", "index": None}
            raise NotFoundError(f"digest {digest.hex()} is not known to this node")
        covered = self._checkpoint is not None and index < self._checkpoint[0]
        return {"digest": digest.hex(), "status": "anchored" if covered else "committed",
                "index": index}

    def digest_statuses(self, digests: Sequence[bytes]) -> list[dict[str, Any]]:
        """:meth:`digest_status` of each digest, in order, with one store read for all.

        Raises:
            NotFoundError: a digest is neither in the log nor pending.
        """
        assert self.store is not None
        covered = 0 if self._checkpoint is None else self._checkpoint[0]
        out: list[dict[str, Any]] = []
        for digest, index in zip(digests, self.store.index_of_many(digests), strict=True):
            if index is None:
                if digest not in self.mempool:
                    raise NotFoundError(f"digest {digest.hex()} is not known to this node")
                out.append({"digest": digest.hex(), "status": "pending", "index": None})
            else:
                out.append({"digest": digest.hex(),
                            "status": "anchored" if index < covered else "committed",
                            "index": index})
        return out

    def receipts(self, indices: Sequence[int], digests: Sequence[bytes]) -> list[str]:
        """:meth:`receipt` of each leaf index (holding the digest beside it) against the latest
        quorum checkpoint, with the inclusion proofs of all of them read in one transaction.

        Raises:
            NotFoundError: no checkpoint covers one of the leaves yet.
        """
        assert self.store is not None
        if not indices:
            return []
        if self._checkpoint is None or max(indices) >= self._checkpoint[0]:
            raise NotFoundError("a leaf is not covered by a cosigned checkpoint yet")
        size, note = self._checkpoint
        proofs = self.store.inclusion_proofs(indices, size)
        self._check_paths(indices, digests, proofs, size, note)
        out: list[str] = []
        if self._receipt_note is not note:
            out.append(build_receipt(index=indices[0], proof=proofs[0], checkpoint_note=note))
            self._receipt_note = note
        for index, path in zip(indices[len(out):], proofs[len(out):], strict=True):
            out.append(_format_receipt(index, path, note))
        return out

    def _check_paths(self, indices: Sequence[int], digests: Sequence[bytes],
                     proofs: Sequence[list[bytes]], size: int, note: str) -> None:
        """Never serve a receipt the stored tree cannot back: each path must lead from the
        leaf to the cosigned root (about log2(size) hashes). The digests are the callers': the
        store's index lookup that gave each index already matched it against the stored digest,
        so no leaf is read again here. The cheap open-time check
        reads O(log n) records, so a flipped byte in a tile would otherwise become a wrong
        receipt; instead the node halts and says to run ``ledger db check``.

        Raises:
            CorruptionError: a path does not reach the checkpoint's root.
        """
        root = self._served_root
        if root is None or root[0] is not note:
            root = self._served_root = (note, parse_checkpoint_body(_note_body(note)).root)
        for index, digest, path in zip(indices, digests, proofs, strict=True):
            try:
                verify_inclusion(leaf_hash(digest), index, size, path, root[1])
            except LedgerError as exc:
                self.halted = (f"corruption: the stored tree does not back leaf {index} of the "
                               f"cosigned checkpoint of size {size}; run `ledger db check`")
                self._clog(logging.CRITICAL, "node %s halted: %s", self.keys.name, self.halted)
                raise CorruptionError(self.halted) from exc

    def waiting_requests(self, delta: int) -> None:
        """Count ``?wait=true`` requests in progress (a graceful shutdown waits for them)."""
        self._waiting += delta

    def receipt(self, index: int, digest: bytes) -> str:
        """The tlog-proof receipt of leaf ``index`` (holding ``digest``) against the latest
        quorum checkpoint.

        Raises:
            NotFoundError: no checkpoint covers the leaf yet.
        """
        assert self.store is not None
        if self._checkpoint is None or index >= self._checkpoint[0]:
            raise NotFoundError(f"leaf {index} is not covered by a cosigned checkpoint yet")
        size, note = self._checkpoint
        proof = self.store.inclusion_proof(index, size)
        self._check_paths([index], [digest], [proof], size, note)
        if self._receipt_note is not note:
            # The first receipt of a checkpoint goes through ledger.receipt, which checks the
            # note parses; later ones reuse that check (it was 60% of the cost of a receipt).
            text = build_receipt(index=index, proof=proof, checkpoint_note=note)
            self._receipt_note = note
            return text
        return _format_receipt(index, proof, note)

    async def wait_progress(self, deadline: float) -> bool:
        """Wait until the next stored checkpoint or ``deadline`` (loop time); false on timeout."""
        assert self._loop is not None
        event = self._progress
        remaining = deadline - self._loop.time()
        if remaining <= 0 or self.halted is not None:
            return False
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            return False
        return True

    # -- peers -----------------------------------------------------------------------------

    def _seal(self, items: Sequence[tuple[int, bytes]]) -> bytes:
        assert self.store is not None
        self._seq += 1
        core_height = self.core.height if self.core is not None else 1
        return seal_envelope(
            key=self.validator_state.envelope_key(core_height), chain_id=self.chain_id,
            height=self.store.last_height(), seq=self._seq, items=items,
        )

    async def _peer_worker(self, peer: _PeerLink) -> None:
        assert peer.session is not None and self._loop is not None
        backoff = 0.1
        url = f"{peer.url}/peer/v1/messages"
        while True:
            await peer.wakeup.wait()
            peer.wakeup.clear()
            while peer.queue:
                items = peer.take()
                try:
                    data = self._seal(items)
                    async with peer.session.post(
                        url, data=data, headers={"Content-Type": "application/octet-stream"}
                    ) as response:
                        if response.status != 204:
                            text = (await response.text())[:200]
                            raise aiohttp.ClientResponseError(
                                response.request_info, (), status=response.status, message=text
                            )
                    peer.last_heard = self._loop.time()
                    backoff = 0.1
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    # The items are dropped: consensus messages are re-broadcast, anchors stay in
                    # our mempool until committed, cosignatures are re-sent every tick.
                    self._clog(logging.DEBUG, "peer %s unreachable: %s", peer.name, exc)
                    # Short: the link is sequential, so every second here delays this peer's
                    # consensus traffic once the link heals (seen as ~7 s stalls after a
                    # partition healed in the chaos run with a 2 s cap).
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)

    def handle_envelope(self, data: bytes) -> None:
        """Verify a peer envelope, then deliver its items in order.

        Delivery runs right after the HTTP answer (``loop.call_soon``, first in, first out) so
        that a peer's next message is not held up by our fsyncs; once
        :data:`MAX_INBOX_ENVELOPES` deliveries are waiting, it runs inline, which slows the
        sender down instead of letting the backlog grow.

        Raises:
            ProtocolError: a malformed envelope or item, or another chain's.
            UnknownSenderError: the sender is not a validator.
            VerificationError: the signature does not verify.
        """
        assert self.store is not None and self._loop is not None
        try:
            senders = self.validator_state.senders(self.store.last_height())
            envelope = open_envelope(data, chain_id=self.chain_id, senders=senders)
        except LedgerError:
            self.peer_invalid += 1
            raise
        name = senders[envelope.sender]
        peer = self.peers.get(name)
        if peer is None:  # our own key: a loop-back or a clone of this validator
            self.peer_invalid += 1
            raise UnknownSenderError("envelope claims to come from this node itself")
        peer.last_heard = self._loop.time()
        peer.height = envelope.height  # the latest claim: a peer restored from backup goes down
        if self._inbox < MAX_INBOX_ENVELOPES:
            self._inbox += 1
            self._loop.call_soon(self._deliver_later, name, envelope.items)
        else:
            self._deliver(name, envelope.items)

    def _deliver_later(self, name: str, items: Sequence[tuple[int, bytes]]) -> None:
        self._inbox -= 1
        if self._stopping:
            return
        try:
            self._deliver(name, items)
        except LedgerError as exc:  # a failed checkpoint write; consensus errors halt in _event
            self._clog(logging.ERROR, "node %s: delivering %s's message failed: %s",
                       self.keys.name, name, exc.diagnostics())

    def _deliver(self, name: str, items: Sequence[tuple[int, bytes]]) -> None:
        assert self.store is not None
        for kind, payload in items:
            if kind == KIND_CONSENSUS:
                self._on_consensus_bytes(payload)
            elif kind == KIND_GOSSIP:
                try:
                    digests = [d for d in decode_gossip(payload) if d not in self.mempool]
                    known = self.store.index_of_many(digests)
                    fresh = self.mempool.add(
                        d for d, i in zip(digests, known, strict=True) if i is None
                    )
                except (ProtocolError, OverloadedError) as exc:
                    self.peer_invalid += isinstance(exc, ProtocolError)
                    continue  # the sender keeps them in its own mempool
                if fresh:
                    self._unpark(early=len(self.mempool) >= self.max_batch)
            elif kind == KIND_CHANGE:
                try:
                    self.submit_change(decode_change_item(payload))
                except ProtocolError as exc:
                    self.peer_invalid += 1
                    self._clog(logging.WARNING, "bad validator-set change from %s: %s", name,
                               exc.diagnostics())
                except VerificationError as exc:
                    # Not necessarily hostile: a peer behind us re-sends a change we already
                    # committed (or one that expired) until it commits that block itself.
                    self._clog(logging.DEBUG, "validator-set change from %s not taken: %s",
                               name, exc.diagnostics())
            else:
                try:
                    cosig = decode_cosignature(payload)
                    size = self.store.size
                    added = False
                    for collector in self.validator_state.collectors_for_peer(
                            cosig.size, latest_size=size):
                        added = collector.add(cosig, latest_size=size) or added
                    if added:
                        self._store_checkpoint(cosig.size)
                except (MalformedError, VerificationError) as exc:
                    self.peer_invalid += 1
                    self._clog(logging.WARNING, "bad cosignature from %s: %s", name,
                               exc.diagnostics())

    # -- housekeeping: re-broadcast, cosignature re-send, catch-up --------------------------

    async def _tick_loop(self) -> None:
        assert self._loop is not None
        await self._sync_once(initial=True)
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._tick()
                await self._sync_once(initial=False)
            except LedgerError as exc:
                self._clog(logging.WARNING, "node %s housekeeping: %s", self.keys.name,
                           exc.diagnostics())

    def _tick(self) -> None:
        core = self.core
        if core is None or self.halted is not None or self.store is None:
            return
        state = (core.height, core.round)
        my_height = self.store.last_height()
        fresh = self._loop.time() - PEER_FRESH_SECONDS if self._loop is not None else 0.0
        lagging_peer = any(p.height < my_height and p.last_heard >= fresh
                           for p in self.peers.values())
        stuck = state == self._last_tick_state and self._parked is None
        if stuck or lagging_peer:
            self._event(lambda c, now: c.rebroadcast(now))
        self._last_tick_state = state
        # Re-send our cosignature of the newest head: a peer that missed it (down, or its
        # queue overflowed) may lack a quorum for that head until it gets it.
        collector = self.validator_state.collector(self.store.size)
        own = None if collector is None else collector.own(self.store.size)
        if own is not None:
            self._broadcast(KIND_COSIGNATURE, encode_cosignature(own))
        # Re-send pending validator-set changes: a peer that missed one cannot propose it.
        for change in self.changes.changes():
            self._broadcast(KIND_CHANGE, change.encode())

    async def _sync_once(self, *, initial: bool) -> None:
        """Poll quiet peers' status, catch up if behind, and update :attr:`caught_up`."""
        assert self._loop is not None and self.store is not None
        now = self._loop.time()
        quiet = [p for p in self.peers.values()
                 if initial or now - p.last_heard > STATUS_POLL_SECONDS]
        if quiet:
            await asyncio.gather(*(self._poll_status(p) for p in quiet))
        core = self.core
        if core is None or self.halted is not None:
            return
        if (self._peer_target() > self.store.last_height()
                or core.stats.highest_seen_height > core.height + 1):
            await self._catch_up()
        self.caught_up = self._peer_target() <= self.store.last_height() + 1
        self._maybe_start_signing()

    def _maybe_start_signing(self) -> None:
        """Start signing once a quorum's worth of peers told us their height (the (f + 1)-th
        highest of them is then an honest one) and our store reached it. Consensus needs
        those peers anyway, so waiting for them delays nothing."""
        if self.signing or self.halted is not None or self.store is None:
            return
        heard = sum(1 for p in self.peers.values() if p.last_heard > float("-inf"))
        if heard >= self.quorum - 1 and self._peer_target() <= self.store.last_height():
            self._start_signing()

    def _peer_target(self) -> int:
        """The height at least one honest peer has reached: the (f + 1)-th highest claim.

        Heights are unverified claims; taking the maximum would let one lying validator keep
        every node "catching up" (never ready) forever.
        """
        heights = sorted((p.height for p in self.peers.values()), reverse=True)
        f = fault_tolerance(len(self.validators))
        return heights[f] if len(heights) > f else 0

    async def _poll_status(self, peer: _PeerLink) -> None:
        assert peer.session is not None and self._loop is not None
        try:
            async with peer.session.get(f"{peer.url}/v1/status") as response:
                if response.status != 200:
                    return
                status = await response.json()
            height = status.get("height") if isinstance(status, dict) else None
            if isinstance(height, int) and not isinstance(height, bool) and height >= 0:
                peer.height = height
                peer.last_heard = self._loop.time()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return

    async def _catch_up(self) -> None:
        """Fetch, verify and commit the blocks peers have and we lack, in height order."""
        assert self.store is not None
        self.catching_up = True
        caught = False
        try:
            while self.halted is None and self.core is not None:
                height = self.store.last_height() + 1
                sources = sorted(
                    (p for p in self.peers.values() if p.height >= height),
                    key=lambda p: -p.height,
                )
                if not sources:
                    break
                for peer in sources:
                    if await self._fetch_and_apply(peer, height):
                        caught = True
                        break
                else:
                    break
        finally:
            self.catching_up = False
        if caught:
            self._cosign_head()
            await self._adopt_checkpoint()
            if len(self.mempool) and self._parked is not None:
                self._unpark()

    async def _fetch_and_apply(self, peer: _PeerLink, height: int) -> bool:
        assert peer.session is not None and self.store is not None
        try:
            async with peer.session.get(f"{peer.url}/v1/blocks/{height}") as response:
                if response.status != 200:
                    return False
                body = json.loads(await _read_limited(response.content, _MAX_BLOCK_RESPONSE))
            block = decode_block(base64.b64decode(body["block"], validate=True))
            cert = decode_certificate(base64.b64decode(body["certificate"], validate=True))
            verify_certificate(cert, block_hash=block.hash, height=height,
                               validators=self.validator_state.history.set_at(height),
                               chain_id=self.chain_id)
            if block.height != height:
                raise VerificationError(f"peer sent block {block.height} for height {height}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._clog(logging.DEBUG, "catch-up from %s failed: %s", peer.name, exc)
            return False
        except (LedgerError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            self.peer_invalid += 1
            self._clog(logging.WARNING, "peer %s served a bad block %d: %s", peer.name, height,
                       exc)
            return False
        if self.store.last_height() >= height:
            return True  # committed meanwhile through consensus
        # After a Commit the core takes no Decision until its COMMIT timer started the height.
        self._unpark(early=True)
        self._event(lambda core, now: core.on_message(
            Decision(block=block, certificate=cert), now))
        if self.store.last_height() < height:
            # The core records a Decision's block but re-evaluates its rules only when the
            # Decision brings a new precommit; a node that saw every precommit but lost the
            # proposal would hold the block and never decide. A propose timeout of the current
            # round re-runs the rules (at worst it prevotes nil early, which is always safe).
            self._event(lambda core, now: core.on_timeout(ScheduleTimeout(
                kind=TimeoutKind.PROPOSE, height=core.height, round=core.round, at=now), now))
        if self.store.last_height() < height:
            self.peer_invalid += 1
            self._clog(logging.WARNING, "peer %s block %d was refused by consensus (tree head?)",
                       peer.name, height)
            return False
        self.blocks_fetched += 1
        return True

    async def _adopt_checkpoint(self) -> None:
        """Take a peer's quorum checkpoint for our tree if ours is older (after catch-up)."""
        assert self.store is not None
        for peer in self.peers.values():
            mine = 0 if self._checkpoint is None else self._checkpoint[0]
            if mine >= self.store.size or peer.session is None:
                return
            try:
                async with peer.session.get(f"{peer.url}/v1/checkpoint") as response:
                    if response.status != 200:
                        continue
                    text = (await _read_limited(response.content, MAX_NOTE_SIZE)).decode()
                # The policy of the period of the checkpoint's size (a validator-set change).
                policy = self.validator_state.policy_for_size(
                    parse_checkpoint_body(_note_body(text)).size)
                opened = open_checkpoint(text, policy.verifiers())
                policy.evaluate((v.verifier for v in opened.note.verified),
                                origin=opened.checkpoint.origin)
                cp = opened.checkpoint
                if cp.origin != self.origin or cp.size <= mine or cp.size > self.store.size:
                    continue
                if self.store.root_at(cp.size) != cp.root:
                    raise VerificationError(f"peer checkpoint {cp.size} contradicts our tree")
            except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
                continue
            except LedgerError as exc:
                self.peer_invalid += 1
                self._clog(logging.WARNING, "peer %s served a bad checkpoint: %s", peer.name,
                           exc.diagnostics())
                continue
            self.store.put_checkpoint(cp.size, text.encode("utf-8"))
            self._checkpoint = (cp.size, text)
            self._progress.set()
            self._progress = asyncio.Event()

    # -- views -----------------------------------------------------------------------------

    @property
    def checkpoint(self) -> tuple[int, str] | None:
        """The latest quorum checkpoint this node serves: (tree size, note text), or ``None``."""
        return self._checkpoint

    @property
    def collector(self) -> CosignatureCollector | None:
        """The cosignature collector of the current tree size's validator set (``None`` if
        this node holds no key of it); every period's: :attr:`validator_state`."""
        size = self.store.size if self.store is not None else 0
        return self.validator_state.collector(size)

    def loop_time(self) -> float:
        """The event loop's clock (deadlines of :meth:`wait_progress`)."""
        assert self._loop is not None
        return self._loop.time()

    def peers_connected(self) -> int:
        """Peers we exchanged a message with in the last :data:`PEER_FRESH_SECONDS`."""
        if self._loop is None:
            return 0
        now = self._loop.time()
        return sum(1 for p in self.peers.values() if now - p.last_heard <= PEER_FRESH_SECONDS)

    def readiness(self) -> list[str]:
        """Why the node is not ready (empty list = ready)."""
        reasons = []
        if self.halted is not None:
            reasons.append(f"halted: {self.halted}")
        if self.core is None or self.store is None:
            reasons.append("not started")
        if not self.caught_up:
            reasons.append("catching up with peers")
        elif not self.signing:
            reasons.append("initial catch-up: not signing consensus messages yet")
        if self.peers_connected() < self.quorum - 1:
            reasons.append(
                f"hears from {self.peers_connected()} peers, consensus needs {self.quorum - 1}"
            )
        return reasons

    def status(self) -> dict[str, Any]:
        """The JSON of ``/v1/status``."""
        assert self.store is not None and self.core is not None
        head = self.store.tree_head()
        return {
            "name": self.keys.name,
            "chain_id": self.chain_id,
            "origin": self.origin,
            "height": self.store.last_height(),
            "consensus_height": self.core.height,
            "round": self.core.round,
            "tree_size": head.size,
            "tree_root": base64.b64encode(head.root).decode("ascii"),
            "checkpoint_size": 0 if self._checkpoint is None else self._checkpoint[0],
            "mempool": len(self.mempool),
            "peers_connected": self.peers_connected(),
            "peers": {p.name: {"height": p.height} for p in self.peers.values()},
            "ready": not self.readiness(),
        }


def _format_receipt(index: int, proof: Sequence[bytes], note: str) -> str:
    """tlog-proof@v1 text exactly as :meth:`ledger.receipt.Receipt.format` writes it (no extra
    data), for a note already checked; tests compare the two on every path length."""
    lines = [RECEIPT_HEADER, f"index {index}"]
    lines.extend(base64.b64encode(h).decode("ascii") for h in proof)
    return "\n".join(lines) + "\n\n" + note


def _in_genesis(genesis: Genesis, keys: ValidatorKeys) -> bool:
    try:
        validator_for_keys(genesis, keys)
    except ConfigError:
        return False
    return True


def _note_body(text: str) -> str:
    split = text.rfind("\n\n")
    return text[: split + 1] if split >= 0 else text


class _NodeCollector:
    """Prometheus collector reading the node's state at scrape time."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterable[Any]:
        node = self._node
        core, store = node.core, node.store
        height = store.last_height() if store is not None else 0
        yield GaugeMetricFamily("ledger_height", "Last committed block height.", value=height)
        yield GaugeMetricFamily("ledger_round", "Current consensus round.",
                                value=core.round if core is not None else 0)
        yield GaugeMetricFamily("ledger_tree_size", "Leaves in the Merkle log.",
                                value=store.size if store is not None else 0)
        yield GaugeMetricFamily("ledger_mempool_depth", "Anchors waiting for a block.",
                                value=len(node.mempool))
        yield CounterMetricFamily("ledger_anchors", "Anchors committed by this process.",
                                  value=node.anchors_total)
        yield GaugeMetricFamily("ledger_peers_connected", "Peers heard from recently.",
                                value=node.peers_connected())
        stats = core.stats if core is not None else None
        yield CounterMetricFamily("ledger_messages_late", "Consensus messages for past heights.",
                                  value=stats.late if stats else 0)
        yield CounterMetricFamily(
            "ledger_messages_invalid",
            "Rejected peer messages (consensus, envelopes, cosignatures, blocks).",
            value=(stats.invalid if stats else 0) + node.peer_invalid
            + node.validator_state.rejected(),
        )
        yield CounterMetricFamily("ledger_catchup_blocks", "Blocks fetched from peers.",
                                  value=node.blocks_fetched)
        yield GaugeMetricFamily("ledger_evidence", "Equivocation evidence held.",
                                value=len(core.evidence) if core is not None else 0)
        usage = store.disk_usage() if isinstance(store, LmdbStore) else 0
        yield GaugeMetricFamily("ledger_storage_bytes", "Size of the store on disk.", value=usage)


# --------------------------------------------------------------------------- HTTP handlers

NODE_KEY: Final = web.AppKey("node", Node)


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as ``{"error": {"code", "message"}}`` with one status per class."""
    try:
        return await handler(request)
    except LedgerError as exc:
        status = _status_for(exc)
        if status >= 500 and status != 503:  # 503 (overloaded, shutting down) is expected
            log.error("%s %s failed: %s", request.method, request.path, exc.diagnostics())
        return _error_response(status, exc.code, exc.diagnostics())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        code = codes.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        return _error_response(exc.status, code, message)


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Read a body of at most ``limit`` bytes.

    Raises:
        ApiError: 413 ``body_too_large`` beyond ``limit``.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    return await _read_limited(request.content, limit)


def _parse_digest(text: object) -> bytes:
    if not isinstance(text, str):
        raise ApiError(400, "invalid_request", "each digest must be a string of 64 hex digits")
    if not _HEX_DIGEST.fullmatch(text) or len(text) % 2:
        raise ApiError(400, "invalid_hex", f"digest {text[:80]!r} is not hexadecimal")
    if len(text) != 2 * HASH_SIZE:
        raise ApiError(400, "invalid_length",
                       f"a digest is 64 hex digits (SHA-256), got {len(text)}")
    return bytes.fromhex(text)


def _authorize(request: web.Request, node: Node) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "a bearer token is required")
    client = node.config.client_for_token(token.strip())
    if client is None:
        raise ApiError(401, "unauthorized", "unknown bearer token")
    if client.revoked:
        raise ApiError(403, "forbidden", f"the token of client {client.name!r} is revoked")


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None or value in ("false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


async def _post_anchors(request: web.Request) -> web.Response:
    node = _node(request)
    _authorize(request, node)
    wait = _flag(request, "wait")
    body = await _read_body(request, MAX_ANCHOR_BODY_BYTES)
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"digests"}:
        raise ApiError(400, "invalid_request", 'the body must be {"digests": [...]}')
    raw = obj["digests"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "invalid_request", "digests must be a non-empty list")
    if len(raw) > MAX_DIGESTS_PER_REQUEST:
        raise ApiError(400, "too_many_digests",
                       f"at most {MAX_DIGESTS_PER_REQUEST} digests per request, got {len(raw)}")
    digests = [_parse_digest(d) for d in raw]
    if node.halted is not None:
        raise ApiError(503, "unavailable", f"the node is not running: {node.halted}")
    if node.draining:
        raise ApiError(503, "unavailable", "the node is shutting down; send to another node")
    node.accept_digests(digests)
    if not wait:
        return _anchor_response(node, node.digest_statuses(digests), wait=False)
    node.waiting_requests(+1)
    try:
        return await _wait_anchored(node, digests)
    finally:
        node.waiting_requests(-1)


async def _wait_anchored(node: Node, digests: list[bytes]) -> web.Response:
    """Wait until every digest is anchored (or the wait times out), then answer with receipts."""
    deadline = node.loop_time() + node.config.timeouts.anchor_wait_ms / 1000
    statuses = node.digest_statuses(digests)
    while True:
        # A leaf index never changes: only digests still pending are looked up again (all of
        # them in one store read), the others only compare their index with the checkpoint.
        pending = [i for i, s in enumerate(statuses) if s["index"] is None]
        if pending:
            for i, s in zip(pending, node.digest_statuses([digests[i] for i in pending]),
                            strict=True):
                statuses[i] = s
        covered = 0 if node.checkpoint is None else node.checkpoint[0]
        done = True
        for s in statuses:
            index = s["index"]
            if index is not None and index < covered:
                s["status"] = "anchored"
            else:
                done = False
        if done or not await node.wait_progress(deadline):
            break
    if not done:  # one last look after the deadline
        statuses = node.digest_statuses(digests)
    return _anchor_response(node, statuses, wait=True)


def _anchor_response(node: Node, statuses: list[dict[str, Any]], *, wait: bool) -> web.Response:
    done = all(s["status"] == "anchored" for s in statuses)
    result: dict[str, Any] = {"anchors": statuses}
    if wait:
        anchored = [s for s in statuses if s["status"] == "anchored"]
        receipts = node.receipts([s["index"] for s in anchored],
                                 [bytes.fromhex(s["digest"]) for s in anchored])
        for s, text in zip(anchored, receipts, strict=True):
            s["receipt"] = text
        for s in statuses:
            s.setdefault("receipt", None)
        if not done:
            result["timed_out"] = True
    cp = node.checkpoint
    result["tree_size"] = 0 if cp is None else cp[0]
    return web.json_response(result, status=200 if done else 202)


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


async def _get_proof(request: web.Request) -> web.Response:
    node = _node(request)
    digest = _parse_digest(request.match_info["digest"])
    status = node.digest_status(digest)
    if status["status"] != "anchored":
        return web.json_response(status, status=202)
    receipt = node.receipt(status["index"], digest)
    if _wants_json(request):
        assert node.checkpoint is not None
        return web.json_response({**status, "tree_size": node.checkpoint[0],
                                  "receipt": receipt})
    return web.Response(text=receipt, content_type="text/plain")


async def _get_checkpoint(request: web.Request) -> web.Response:
    node = _node(request)
    if node.checkpoint is None:
        raise NotFoundError("no checkpoint has been cosigned yet")
    return web.Response(text=node.checkpoint[1], content_type="text/plain")


def _int_param(request: web.Request, name: str) -> int:
    value = request.query.get(name)
    if value is None:
        raise ApiError(400, "invalid_parameter", f"query parameter {name!r} is required")
    if not value.isdigit() or len(value) > 19 or (len(value) > 1 and value[0] == "0"):
        raise ApiError(400, "invalid_parameter", f"{name} must be a non-negative integer")
    return int(value)


async def _get_consistency(request: web.Request) -> web.Response:
    node = _node(request)
    assert node.store is not None
    first, second = _int_param(request, "from"), _int_param(request, "to")
    if first < 1 or first > second:
        raise ApiError(400, "invalid_parameter", "need 1 <= from <= to")
    proof = node.store.consistency_proof(first, second)
    return web.json_response({
        "from": first, "to": second,
        "proof": [base64.b64encode(h).decode("ascii") for h in proof],
    })


async def _get_block(request: web.Request) -> web.Response:
    node = _node(request)
    assert node.store is not None
    text = request.match_info["height"]
    if not text.isdigit() or len(text) > 19:
        raise ApiError(400, "invalid_parameter", "height must be a positive integer")
    height = int(text)
    record = node.store.block(height) if height >= 1 else None
    if record is None:
        raise NotFoundError(f"no block at height {height}")
    block = decode_block(record.block)
    return web.json_response({
        "height": block.height,
        "hash": block.hash.hex(),
        "prev_hash": block.prev_hash.hex(),
        "time": block.time,
        "proposer": block.proposer.hex(),
        "tree_size": block.tree_size,
        "tree_root": base64.b64encode(block.tree_root).decode("ascii"),
        "digest_count": len(block.digests),
        "block": base64.b64encode(record.block).decode("ascii"),
        "certificate": base64.b64encode(record.certificate).decode("ascii"),
    })


async def _get_policy(request: web.Request) -> web.Response:
    return web.Response(text=_node(request).policy_text, content_type="text/plain")


async def _get_status(request: web.Request) -> web.Response:
    node = _node(request)
    if node.store is None or node.core is None:
        raise ApiError(503, "unavailable", "the node is starting")
    return web.json_response(node.status())


async def _healthz(request: web.Request) -> web.Response:
    node = _node(request)
    if node.halted is not None or node.store is None:
        return web.json_response({"status": "failed", "reason": node.halted or "starting"},
                                 status=503)
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    reasons = _node(request).readiness()
    if reasons:
        return web.json_response({"ready": False, "reasons": reasons}, status=503)
    return web.json_response({"ready": True})


async def _metrics(request: web.Request) -> web.Response:
    data = generate_latest(_node(request).registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _openapi(request: web.Request) -> web.Response:
    node = _node(request)
    return web.json_response(
        openapi_document(origin=node.origin, max_digests=MAX_DIGESTS_PER_REQUEST)
    )


async def _peer_messages(request: web.Request) -> web.Response:
    node = _node(request)
    data = await _read_body(request, MAX_ENVELOPE_BYTES)
    if node.store is None or node.halted is not None:
        raise ApiError(503, "unavailable", "the node is not running")
    node.handle_envelope(data)
    return web.Response(status=204)


def build_app(node: Node) -> web.Application:
    """The aiohttp application of ``node``: public API, peer endpoint, health and metrics."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_ENVELOPE_BYTES)
    app[NODE_KEY] = node
    app.router.add_post("/v1/anchors", _post_anchors)
    app.router.add_get("/v1/proofs/{digest}", _get_proof)
    app.router.add_get("/v1/checkpoint", _get_checkpoint)
    app.router.add_get("/v1/consistency", _get_consistency)
    app.router.add_get("/v1/blocks/{height}", _get_block)
    app.router.add_get("/v1/policy", _get_policy)
    app.router.add_get("/v1/status", _get_status)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_post("/peer/v1/messages", _peer_messages)
    add_verify_routes(app)  # the offline verification page (static, strict CSP)
    add_witness_routes(app, node)  # C2SP tlog-witness POST /add-checkpoint (cosigner key)
    add_reconfig_routes(app, node)  # validator-set changes (admin) and the policy chain
    return app


async def run_node(config: NodeConfig) -> None:
    """Run a validator until cancelled, SIGTERM or SIGINT; then stop cleanly.

    Raises:
        ConfigError: the key file is unreadable or does not match the genesis.
        StorageError: the data directory cannot be opened (``CorruptionError`` if damaged).
        OSError: the listen address is taken.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    node = Node(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            pass
    try:
        await node.start()
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await node.shutdown()
