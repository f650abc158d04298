"""The validator node's process: the replica wired to a real clock, LMDB, HTTP and signals.

Everything a validator decides is in :class:`ledger.replica.Replica`; a :class:`Node` only
moves events in and executes the actions that come out, in order:

=========================  =================================================================
``Send``                   the peer transport (:mod:`ledger.node.peers`) queues the item
``SetTimer``               ``loop.call_at``; when it fires, ``replica.on_timer``
``Fetch``                  the peer transport fetches; the answer goes back to the replica
``Reply``                  the waiting ``?wait=true`` request of that ticket gets its receipts
``Committed``              metrics (commit latency, anchors), a debug line
``Halt``                   waiting requests answer now; the node keeps serving reads, and
                           :mod:`ledger.node.repair` builds the replica again once what
                           halted it (a full disk, a damaged stored value) is over
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

**Outside witnesses** (``[[witnesses]]``) get every new quorum checkpoint from tasks beside the
replica (:mod:`ledger.node.witnesses`); nothing the replica does waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from ledger.config import NodeConfig, load_node_config
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.crypto import ValidatorKeys, read_key_file
from ledger.errors import ConfigError, LedgerError
from ledger.node.guard import API, PEER, GuardedSite, Listener, ListenerLimits
from ledger.node.logs import (
    NODE_LOGGERS,
    ClientFaults,
    LogFloodFilter,
    ServerLog,
    loop_exception_handler,
)
from ledger.node.peers import FetchAnswer, HttpTransport, PeerTransport
from ledger.node.repair import UnrepairableError
from ledger.node.tls import client_context, server_context
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
from ledger.storage.base import DamageError, Store
from ledger.storage.lmdb_store import LmdbStore

__all__ = [
    "FD_RESERVE",
    "MAX_INBOX_ENVELOPES",
    "SHUTDOWN_GRACE_SECONDS",
    "Node",
    "SystemClock",
    "bind_listen_socket",
    "connection_budget",
    "peer_ssl_contexts",
    "run_node",
]

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
        max_pending=config.batch.max_pending_digests or None,
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
            config.peer_urls(), timeout=config.timeouts.peer_request_ms / 1000,
            ssl_contexts=peer_ssl_contexts(config),
            gossip_window=config.batch.gossip_window_ms / 1000)
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
        self.faults = ClientFaults()
        self.log_filter = LogFloodFilter()
        self.listeners: list[Listener] = []
        self.peer_url: str | None = None
        from ledger.node.metrics import NodeMetrics  # the metrics read the node back
        from ledger.node.repair import StoreCare

        self.care = StoreCare(self)
        self.metrics = NodeMetrics(self)
        from ledger.node.witnesses import WitnessCollector, WitnessPusher

        #: The push tasks to the outside witnesses of ``[[witnesses]]`` (docs/witness.md).
        self.witnesses = WitnessPusher(self, config.witnesses)
        self.metrics.registry.register(WitnessCollector(self.witnesses, self))

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """This validator's name."""
        return self.keys.name

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

    async def start(self, *, sock: Any = None, peer_sock: Any = None) -> None:
        """Open the store, start the replica, serve HTTP(S) and start the peer links.

        ``sock``: an already bound socket (tests bind free ports up front); default is
        ``config.listen_host:listen_port``. ``peer_sock`` likewise for the peer listener when
        ``config.peer_listen_port`` is set.

        Raises:
            StorageError: the store cannot be opened (``CorruptionError`` if damaged, and
                ``UnrepairableError`` for damage no peer repaired: one line, the value and
                the fix).
            ConfigError: the stored chain does not fit this genesis.
            OSError: the listen address is taken.
        """
        self._loop = asyncio.get_running_loop()
        self._halt_event = asyncio.Event()
        store = self._store_arg
        if store is None:
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            store = LmdbStore.open(self.config.data_dir)
        try:
            replica, actions = await self._start_replica(store)
        except BaseException:
            await self.care.stop()
            if self._store_arg is None:
                store.close()
            raise
        self.replica = replica
        try:
            await self._serve(sock, peer_sock)
        except BaseException:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._store_arg is None:
                store.close()
            raise
        self.transport.start(self)
        if self.config.source is not None:
            self._watcher = asyncio.ensure_future(_watch_config(self, self.config.source))
        self.care.start()
        self.perform(actions)
        self.witnesses.start()
        log.info("node %s serving on %s at height %d (follower until caught up)",
                 self.keys.name, self.url, store.last_height())

    async def _start_replica(self, store: Store) -> tuple[Replica, list[Action]]:
        """The replica started on ``store``, after repairing from peers what it needs and
        found damaged (:mod:`ledger.node.repair`).

        Raises:
            UnrepairableError: damage that cannot be repaired (one line: the value, the fix).
            ConfigError: the stored chain does not fit this genesis.
        """
        care = self.care
        care.attach(store)
        for _ in range(8):
            if care.collect():
                await care.repair_for_start()
            try:
                replica = Replica(replica_config(self.config, self.held), store)
                actions = replica.start(self.now())
            except DamageError as exc:
                care.note(exc.damage)
                continue
            if replica.halted is not None and care.collect():
                continue  # it met damage while starting: repair it and start again
            care.replica_built()
            return replica, actions
        raise UnrepairableError(
            "the store keeps failing after repairs: run `ledger db check` with the node "
            "stopped, then restore a backup or re-sync into an empty data directory")

    def restart_replica(self, why: str) -> None:
        """Build the replica again from the store, as a restart of the process would (after
        a repair, or when disk space is back; :mod:`ledger.node.repair`)."""
        old = self.replica
        if self._stopping or old is None:
            return
        try:
            replica = Replica(replica_config(self.config, self.held), old.store)
            actions = replica.start(self.now())
        except LedgerError as exc:
            log.error("node %s: the replica cannot be built again (%s): %s", self.keys.name,
                      why, exc.diagnostics())
            if isinstance(exc, DamageError):
                self.care.note(exc.damage)
            return
        self.replica = replica
        self._halt_event = asyncio.Event()
        self.care.replica_built()
        log.warning("node %s: replica built again from the store (%s), at height %d",
                    self.keys.name, why, old.store.last_height())
        self.perform(actions)

    def halt(self, reason: str) -> None:
        """Stop taking events for ``reason`` (the node keeps serving reads)."""
        if self.replica is not None:
            self.perform(self.replica.halt(reason))

    async def _serve(self, sock: Any, peer_sock: Any) -> None:
        """The listeners (module docstring of :mod:`ledger.node.guard`)."""
        from ledger.node.app import build_app

        config, limits = self.config, self.config.limits
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(loop_exception_handler(self.faults))
        for name in NODE_LOGGERS:
            logging.getLogger(name).addFilter(self.log_filter)
        cap = connection_budget(limits.max_connections + (
            limits.peer_max_connections if config.peer_listen_port is not None else 0))
        self.app = build_app(self)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False,
            keepalive_timeout=limits.idle_timeout_ms / 1000,
            logger=ServerLog(self.faults),
            # The parser's own caps on a head (aiohttp's defaults, stated).
            max_line_size=8190, max_field_size=8190, max_headers=128,
        )
        await self._runner.setup()
        server = self._runner.server
        assert server is not None
        separate = config.peer_listen_port is not None
        tls = config.tls
        listen: list[tuple[str, Any, str, int, int]] = [
            (API, sock, config.listen_host, config.listen_port,
             min(limits.max_connections, cap))]
        if separate:
            assert config.peer_listen_port is not None
            listen.append((PEER, peer_sock, config.peer_listen_host or config.listen_host,
                           config.peer_listen_port, limits.peer_max_connections))
        for name, given, host, port, max_conns in listen:
            context = None if tls is None else server_context(
                tls, peers=name == PEER or not separate, public=name == API)
            listener = Listener(name, ListenerLimits(
                max_connections=max_conns,
                max_per_address=limits.max_connections_per_address,
                header_timeout=limits.header_timeout_ms / 1000,
                idle_timeout=limits.idle_timeout_ms / 1000,
                trusted_proxies=limits.proxy_networks(),
            ), server, faults=self.faults, ssl_context=context)
            bound = given if given is not None else bind_listen_socket(host, port)
            site = GuardedSite(self._runner, bound, listener, backlog=limits.listen_backlog)
            await site.start()
            self.listeners.append(listener)
            if name == PEER:
                self.peer_url = site.name

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
        await self.witnesses.stop()
        await self.transport.stop()
        await self.care.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.replica is not None and self._store_arg is None:
            self.replica.store.close()
        for name in NODE_LOGGERS:
            logging.getLogger(name).removeFilter(self.log_filter)
        if self._loop is not None and self.listeners:
            self._loop.set_exception_handler(None)
        log.info("node %s stopped", self.keys.name)

    # -- peers from the config file -------------------------------------------------------------

    def reload_peers(self) -> None:
        """Read ``[peers]`` again from the config file and use them (module docstring); a file
        that does not load is reported and changes nothing."""
        reload_peers(self)

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
                loop.call_at(loop.time() + delay, self._on_timer, self.replica, action.timer)
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
                self.care.halted(action.reason)

    def _on_timer(self, replica: Replica | None, timer: Timer) -> None:
        # A timer of a replica built again since (restart_replica) is dropped.
        if self._stopping or self.replica is None or replica is not self.replica:
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
        if self.replica is not None and not self._stopping:
            self.perform(_fetched(self.replica, fetch, answer, self.now()))

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


async def _watch_config(node: Node, source: Path) -> None:
    seen = _mtime(source)
    while True:
        await asyncio.sleep(CONFIG_CHECK_SECONDS)
        now = _mtime(source)
        if now != seen:
            seen = now
            node.reload_peers()


def reload_peers(node: Node) -> None:
    """:meth:`Node.reload_peers`."""
    source = node.config.source
    if source is None or node.replica is None:
        return
    try:
        peers = load_node_config(source).peers
    except ConfigError as exc:
        log.warning("config %s not reloaded: %s", source, exc.diagnostics())
        return
    if peers == node.config.peers:
        return
    config = dataclasses.replace(node.config, peers=peers)
    try:
        contexts = peer_ssl_contexts(config)
    except ConfigError as exc:
        log.warning("config %s not reloaded: %s", source, exc.diagnostics())
        return
    node.config = config
    urls = node.config.peer_urls()
    node.transport.set_peers(urls, contexts)
    node.replica.set_peers(list(urls))
    log.info("node %s: peers reloaded from %s: %s", node.keys.name, source,
             ", ".join(f"{n} {u}" for n, u in urls.items()))


def _fetched(replica: Replica, fetch: Fetch, answer: FetchAnswer, now: int) -> list[Action]:
    """The replica's actions on the answer to ``fetch``."""
    value, invalid = answer
    if fetch.what is FetchKind.STATUS:
        height = value if isinstance(value, int) else None
        if invalid:
            replica.stats.peer_invalid += 1
        return replica.on_status(fetch.peer, height, now)
    if fetch.what is FetchKind.BLOCK:
        block = value if isinstance(value, tuple) else None
        return replica.on_block(fetch.peer, fetch.height, block, now, invalid=invalid)
    text = value if isinstance(value, str) else None
    return replica.on_checkpoint(fetch.peer, text, now)



def bind_listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` is an IPv6 address), not yet
    listening (the site calls ``listen`` with the configured backlog).

    Raises:
        OSError: the address is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


#: File descriptors kept out of the connection budget: LMDB, peer links, logs, the loop.
FD_RESERVE: Final = 256


def connection_budget(wanted: int) -> int:
    """How many connections this process can hold: the open-file limit is raised to its hard
    limit, and ``wanted`` is capped to what it leaves after :data:`FD_RESERVE` (a node that
    runs out of descriptors stops answering everyone, its peers included)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted
    budget = max(16, int(soft) - FD_RESERVE)
    if budget < wanted:
        log.warning("the open-file limit (%d) allows %d connections, not the %d configured",
                    soft, budget, wanted)
    return min(wanted, budget)


def peer_ssl_contexts(config: NodeConfig) -> dict[str, ssl.SSLContext]:
    """One client TLS context per peer reached over https (module :mod:`ledger.node.tls`).

    Raises:
        ConfigError: a certificate, key or CA bundle cannot be loaded.
    """
    out: dict[str, ssl.SSLContext] = {}
    for peer in config.peers:
        if peer.url.startswith("https://"):
            pins = config.tls.pins_for(peer.name) if config.tls is not None else ()
            out[peer.name] = client_context(config.tls, pins=pins)
    return out


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
