"""The validator node's process: the replica wired to a real clock, LMDB, HTTP and signals.

Everything a validator decides is in :class:`ledger.replica.Replica`; a :class:`Node` only
moves events in and executes the actions that come out, in order:

=========================  =================================================================
``Send``                   the peer transport (:mod:`ledger.node.peers`) queues the item
``SetTimer``               ``loop.call_at``; when it fires, ``replica.on_timer``
``Fetch``                  the peer transport fetches; the answer goes back to the replica
``Reply``                  the waiting ``?wait=true`` request of that ticket gets its receipts
``Committed``              metrics (commit latency, anchors), a debug line
``Halt``                   waiting requests answer now; the node keeps serving reads
=========================  =================================================================

Every event runs synchronously in the event loop, start to end, with its actions: a commit
(block, certificate, tree and index in one synced LMDB transaction, then the checkpoint) can
never be interrupted by a signal handler or a request. An envelope from a peer is verified
while the peer waits for its answer (a bad one gets 4xx), then acted on right after the answer
(``loop.call_soon``, first in, first out), so the peer's next message is not held up by our
fsyncs; once :data:`MAX_INBOX_ENVELOPES` are waiting, delivery runs inline, which slows the
sender down instead of letting the backlog grow.

**The clock** is the system clock in milliseconds, plus a skew that only tests set
(``ledger node --unsafe-clock-skew-ms``): every consensus time and cosignature timestamp
comes from it, read once per event.

**Peers** are read again from the config file when it changes (checked every
:data:`CONFIG_CHECK_SECONDS`) or on SIGHUP: an operator adds the ``[peers]`` entry of a
validator that joins by a change without restarting the node. Nothing else of the file is
re-read while the node runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ledger.config import NodeConfig, load_node_config
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.crypto import ValidatorKeys, read_key_file
from ledger.errors import ConfigError
from ledger.node.peers import FetchAnswer, HttpTransport, PeerTransport
from ledger.replica import (
    Action,
    AnchorStatus,
    Committed,
    Fetch,
    FetchKind,
    Halt,
    Replica,
    ReplicaConfig,
    Reply,
    Send,
    SetTimer,
    Timer,
)
from ledger.replica.validators import held_keys
from ledger.replica.wire import Envelope
from ledger.storage.base import Store
from ledger.storage.lmdb_store import LmdbStore

__all__ = ["MAX_INBOX_ENVELOPES", "SHUTDOWN_GRACE_SECONDS", "Node", "SystemClock", "run_node"]

log = logging.getLogger("ledger.node")

#: Verified envelopes waiting for delivery at most; beyond, delivery is inline (backpressure).
MAX_INBOX_ENVELOPES: Final = 64
#: How often the node looks whether its config file changed (for ``[peers]``).
CONFIG_CHECK_SECONDS: Final = 2.0
#: On SIGTERM, how long the node keeps serving (consensus, peers, waiting requests) after it
#: stopped taking anchors, so that waiting requests get their receipts and peers our gossip.
SHUTDOWN_GRACE_SECONDS: Final = 5.0


class SystemClock:
    """Milliseconds since the epoch, plus ``skew_ms`` (tests only)."""

    def __init__(self, skew_ms: int = 0) -> None:
        self.skew_ms = skew_ms

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.skew_ms


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def replica_config(config: NodeConfig, keys: Sequence[ValidatorKeys]) -> ReplicaConfig:
    """The replica of a node config holding ``keys`` (the configured one first)."""
    genesis = config.genesis
    return ReplicaConfig(
        chain_id=genesis.chain_id, origin=genesis.origin, genesis_time=genesis.genesis_time,
        roster=genesis.roster(), keys=tuple(keys),
        peers=tuple(p.name for p in config.peers),
        timeouts=config.consensus_timeouts(),
        max_batch=min(config.batch.max_batch_digests, MAX_BLOCK_DIGESTS),
    )


class Node:
    """One validator process (see the module docstring).

    ``keys`` defaults to reading ``config.key_file``, ``store`` to ``LmdbStore.open(
    config.data_dir)``, ``transport`` to HTTP to ``config.peers``; ``extra_keys`` are further
    key files of this validator (a key rotation). Then ``await start()`` and, at the end,
    ``await shutdown()`` or ``await stop()``.

    Raises (on construction):
        ConfigError: the key file is unreadable or is for another name.
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        keys: ValidatorKeys | None = None,
        store: Store | None = None,
        extra_keys: Sequence[ValidatorKeys] = (),
        transport: PeerTransport | None = None,
        clock: SystemClock | None = None,
    ) -> None:
        self.config = config
        self.keys = keys if keys is not None else read_key_file(config.key_file)
        if self.keys.name != config.name:
            raise ConfigError(f"key file is for {self.keys.name!r}, the config for {config.name!r}")
        self.held = held_keys(self.keys, extra_keys)
        self.clock = clock or SystemClock()
        self._store_arg = store
        self.transport: PeerTransport = transport or HttpTransport(
            config.peer_urls(), timeout=config.timeouts.peer_request_ms / 1000)
        self.replica: Replica | None = None
        self.app: web.Application | None = None
        self.draining = False
        self.url = config.public_url
        self._waiting: dict[int, asyncio.Future[tuple[AnchorStatus, ...]]] = {}
        self._inbox = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._watcher: asyncio.Future[None] | None = None
        self._halt_event = asyncio.Event()
        from ledger.node.metrics import NodeMetrics  # the metrics read the node back

        self.metrics = NodeMetrics(self)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def store(self) -> Store | None:
        """The open store (``None`` before :meth:`start`)."""
        return None if self.replica is None else self.replica.store

    @property
    def halted(self) -> str | None:
        """Why the node stopped taking events (``stopped`` after :meth:`stop`), or ``None``."""
        if self._stopping:
            return "stopped"
        return None if self.replica is None else self.replica.halted

    def now(self) -> int:
        """The node's clock (ms)."""
        return self.clock.now_ms()

    async def start(self, *, sock: Any = None) -> None:
        """Open the store, start the replica, serve HTTP and start the peer links.

        ``sock``: an already bound listening socket (tests bind free ports up front); default
        is ``config.listen_host:listen_port``.

        Raises:
            StorageError: the store cannot be opened (``CorruptionError`` if damaged).
            ConfigError: the stored chain does not fit this genesis.
            OSError: the listen address is taken.
        """
        from ledger.node.app import build_app

        self._loop = asyncio.get_running_loop()
        self._halt_event = asyncio.Event()
        store = self._store_arg
        if store is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            store = LmdbStore.open(self.config.data_dir)
        replica = Replica(replica_config(self.config, self.held), store)
        try:
            actions = replica.start(self.now())
        except BaseException:
            if self._store_arg is None:
                store.close()
            raise
        self.replica = replica
        self.app = build_app(self)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock)
        else:
            site = web.TCPSite(self._runner, self.config.listen_host, self.config.listen_port,
                               reuse_address=True)
        await site.start()
        self.transport.start(self)
        if self.config.source is not None:
            self._watcher = asyncio.ensure_future(self._watch_config(self.config.source))
        self.perform(actions)
        log.info("node %s serving on %s at height %d (follower until caught up)",
                 self.keys.name, self.url, store.last_height())

    async def shutdown(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop gracefully (SIGTERM, SIGINT), then :meth:`stop`.

        1. From now on ``POST /v1/anchors`` answers 503 ``unavailable``; everything else is
           served as before, and the node stays in consensus.
        2. For up to ``grace`` seconds it waits while ``?wait=true`` requests are waiting (they
           get their receipts as soon as the next checkpoint is stored) and while its queues to
           live peers hold items not sent yet.
        3. :meth:`stop` closes the server, the peer links and the store.

        A ``200`` answer is only ever sent after the block and its quorum checkpoint are on
        disk, so a restart loses no acknowledged anchor; waiting requests cut short by the
        grace get ``202`` (pending), which promises nothing.
        """
        if self._stopping:
            return
        self.draining = True
        loop = self._loop
        if loop is not None:
            log.info("node %s shutting down: refusing anchors, up to %.1f s for %d waiting "
                     "requests and the peer queues", self.keys.name, grace, len(self._waiting))
            deadline = loop.time() + grace
            while loop.time() < deadline and self.halted is None:
                if not self._waiting and not self.transport.unsent():
                    break
                await asyncio.sleep(0.02)
        await self.stop()

    async def stop(self) -> None:
        """Stop serving, close the peer links and the store. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._halt_event.set()  # waiting requests answer now (202), not at their deadline
        if self._watcher is not None:
            self._watcher.cancel()
        await self.transport.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.replica is not None and self._store_arg is None:
            self.replica.store.close()
        log.info("node %s stopped", self.keys.name)

    # -- peers from the config file -------------------------------------------------------------

    async def _watch_config(self, source: Path) -> None:
        seen = _mtime(source)
        while True:
            await asyncio.sleep(CONFIG_CHECK_SECONDS)
            now = _mtime(source)
            if now != seen:
                seen = now
                self.reload_peers()

    def reload_peers(self) -> None:
        """Read ``[peers]`` again from the config file and use them (module docstring); a file
        that does not load is reported and changes nothing."""
        source = self.config.source
        if source is None or self.replica is None:
            return
        try:
            peers = load_node_config(source).peers
        except ConfigError as exc:
            log.warning("config %s not reloaded: %s", source, exc.diagnostics())
            return
        if peers == self.config.peers:
            return
        self.config = dataclasses.replace(self.config, peers=peers)
        urls = self.config.peer_urls()
        self.transport.set_peers(urls)
        self.replica.set_peers(list(urls))
        log.info("node %s: peers reloaded from %s: %s", self.keys.name, source,
                 ", ".join(f"{n} {u}" for n, u in urls.items()))

    # -- executing actions -----------------------------------------------------------------------

    def perform(self, actions: Sequence[Action]) -> None:
        """Execute a replica's actions in order (module docstring)."""
        loop = self._loop
        assert loop is not None
        for action in actions:
            if isinstance(action, Send):
                self.transport.send(action.to, action.kind, action.payload)
            elif isinstance(action, SetTimer):
                delay = max(0, action.at - self.now()) / 1000
                loop.call_at(loop.time() + delay, self._on_timer, action.timer)
            elif isinstance(action, Fetch):
                self.transport.fetch(action)
            elif isinstance(action, Reply):
                future = self._waiting.pop(action.ticket, None)
                if future is not None and not future.done():
                    future.set_result(action.anchors)
            elif isinstance(action, Committed):
                self.metrics.committed(action, now=self.now())
            elif isinstance(action, Halt):
                self._halt_event.set()

    def _on_timer(self, timer: Timer) -> None:
        if self._stopping or self.replica is None:
            return
        self.perform(self.replica.on_timer(timer, self.now()))

    # -- the transport's host --------------------------------------------------------------------

    def seal(self, items: Sequence[tuple[int, bytes]]) -> bytes:
        """One signed envelope of ``items`` (the transport calls this as items leave)."""
        assert self.replica is not None
        return self.replica.seal(items)

    def sent(self, peer: str) -> None:
        """An envelope reached ``peer``."""
        if self.replica is not None:
            self.replica.on_sent(peer, self.now())

    def fetched(self, fetch: Fetch, answer: FetchAnswer) -> None:
        """The answer to a fetch, to the replica."""
        replica = self.replica
        if replica is None or self._stopping:
            return
        value, invalid = answer
        now = self.now()
        if fetch.what is FetchKind.STATUS:
            height = value if isinstance(value, int) else None
            if invalid:
                replica.stats.peer_invalid += 1
            self.perform(replica.on_status(fetch.peer, height, now))
        elif fetch.what is FetchKind.BLOCK:
            block = value if isinstance(value, tuple) else None
            self.perform(replica.on_block(fetch.peer, fetch.height, block, now,
                                          invalid=invalid))
        else:
            text = value if isinstance(value, str) else None
            self.perform(replica.on_checkpoint(fetch.peer, text, now))

    # -- requests ------------------------------------------------------------------------------

    def receive_envelope(self, data: bytes) -> None:
        """Verify a peer envelope now; act on its items right after the answer.

        Raises:
            ProtocolError: a malformed envelope, or another chain's.
            UnknownSenderError: the sender is not a validator.
            VerificationError: the signature does not verify.
        """
        replica = self.replica
        loop = self._loop
        assert replica is not None and loop is not None
        name, envelope = replica.open(data, self.now())
        if self._inbox < MAX_INBOX_ENVELOPES:
            self._inbox += 1
            loop.call_soon(self._deliver_later, name, envelope)
        else:
            self._deliver(name, envelope)

    def _deliver_later(self, name: str, envelope: Envelope) -> None:
        self._inbox -= 1
        if not self._stopping:
            self._deliver(name, envelope)

    def _deliver(self, name: str, envelope: Envelope) -> None:
        assert self.replica is not None
        self.perform(self.replica.deliver(name, envelope, self.now()))

    async def anchor(self, digests: Sequence[bytes], *, wait: bool
                     ) -> tuple[list[AnchorStatus], bool]:
        """Take a client's digests; with ``wait``, wait (up to ``anchor_wait_ms``) for their
        receipts. Returns the statuses (with receipts when anchored after waiting) and whether
        every digest is anchored.

        Raises:
            OverloadedError: the mempool is full (nothing was queued).
            StorageError: the store failed.
        """
        replica = self.replica
        assert replica is not None
        statuses, ticket, actions = replica.submit(digests, self.now(), wait=wait)
        if ticket is None:
            self.perform(actions)
            return statuses, all(s.status == "anchored" for s in statuses)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[AnchorStatus, ...]] = loop.create_future()
        self._waiting[ticket] = future
        self.perform(actions)
        halted: asyncio.Future[Any] = asyncio.ensure_future(self._halt_event.wait())
        try:
            await asyncio.wait([future, halted], timeout=self.config.timeouts.anchor_wait_ms
                               / 1000, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            self._waiting.pop(ticket, None)
        if future.done():
            return list(future.result()), True
        replica.cancel_wait(ticket)
        return replica.statuses(digests), False

    def waiting_requests(self) -> int:
        """``?wait=true`` requests in progress."""
        return len(self._waiting)


async def run_node(config: NodeConfig, *, clock: SystemClock | None = None) -> None:
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
    node = Node(config, clock=clock)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    handlers = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set,
                signal.SIGHUP: node.reload_peers}
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
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
