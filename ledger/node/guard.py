"""The node's listeners: connection caps, timeouts and TLS in front of aiohttp's protocol.

aiohttp's request handler has an idle (keep-alive) timeout but no header read timeout, no
connection cap and no per-address cap: a client that opens connections and sends nothing, or
sends a request head one byte at a time (slowloris), holds a file descriptor each, for ever,
until the process runs out of them and stops answering anyone, its peers included. A
:class:`Listener` sits between the socket and aiohttp's handler (an :class:`asyncio.Protocol`
per connection, :class:`GuardedProtocol`) and enforces, per connection:

=================================  ===========================================================
``max_connections``                at the cap a new connection takes the place of the one
                                   idle longest (no request in progress: it has sent nothing,
                                   or half a head, or is a kept-alive connection between
                                   requests); with none idle, it is refused
``max_connections_per_address``    a client address beyond it is refused (a trusted proxy is
                                   exempt: it carries many clients)
``header_timeout_ms``              from the first byte of a request head (or the connection's
                                   start, or the TLS handshake's) to the complete head
``idle_timeout_ms``                a connection with no request in progress and no byte of a
                                   new one is closed
``body_timeout_ms``                in :func:`ledger.node.middleware.read_body`: the whole body
``listen_backlog``                 the kernel's queue of connections not accepted yet
=================================  ===========================================================

A refused connection gets ``503`` with ``Retry-After`` (plain HTTP) or is closed (TLS, before
any byte of the handshake), and costs one counter and at most one rate-limited log line
(:class:`ledger.node.logs.ClientFaults`). A request is "in progress" from the moment aiohttp
hands its parsed head to the middleware until the middleware returns; the middleware tells the
listener (:meth:`Connection.request_started` / :meth:`Connection.request_finished`).

**TLS** is done here too, with :meth:`asyncio.loop.start_tls` once a connection is admitted, so
the caps count a connection from its first packet, a handshake is bounded by the header
timeout, and a failed handshake is one rate-limited line (``tls_handshake``), never asyncio's
traceback.

**A second listener for peers** (``peer_listen_port``) has its own cap, so validators keep
reaching each other while the public port is flooded; its connections are told apart in the
middleware by :attr:`Connection.listener`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import ssl
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ledger.node.logs import ClientFaults

__all__ = ["API", "PEER", "Connection", "GuardedProtocol", "GuardedSite", "Listener",
           "ListenerLimits", "connection_of"]

#: Listener names.
API: Final = "api"
PEER: Final = "peer"

_REFUSED_BODY: Final = json.dumps(
    {"error": {"code": "too_many_connections",
               "message": "the node holds too many connections; retry shortly"}}).encode()
_REFUSED: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
    + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True)
class ListenerLimits:
    """The limits of one listener (seconds, counts)."""

    max_connections: int
    max_per_address: int
    header_timeout: float
    idle_timeout: float
    trusted_proxies: tuple[Network, ...] = ()


class Listener:
    """One listening socket's connections (module docstring).

    ``factory`` makes aiohttp's protocol for a connection (``web.Server``); ``ssl_context``
    (server side) turns on TLS; ``faults`` takes the client-caused events.
    """

    def __init__(self, name: str, limits: ListenerLimits, factory: Callable[[], Any], *,
                 faults: ClientFaults, ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.limits = limits
        self.factory = factory
        self.faults = faults
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.by_address: Counter[str] = Counter()
        #: Connections with no request in progress, the one idle longest first.
        self.idle: OrderedDict[Connection, None] = OrderedDict()
        #: Application transport (the TLS one under TLS) -> its connection.
        self.by_transport: dict[Any, Connection] = {}
        self.accepted = 0

    def protocol(self) -> GuardedProtocol:
        """A protocol for one new connection (the ``protocol_factory`` of the server)."""
        return GuardedProtocol(self)

    def trusted_proxy(self, address: str) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        if not self.limits.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.limits.trusted_proxies)

    def admit(self, conn: Connection) -> str | None:
        """Take ``conn`` in, making room if needed; the reason it is refused, or ``None``."""
        limits = self.limits
        if (self.by_address[conn.address] >= limits.max_per_address
                and not self.trusted_proxy(conn.address)):
            self.faults.note("refused_address",
                             "connection from %s refused: it holds %d connections (the cap "
                             "per address)", conn.address, self.by_address[conn.address])
            return "per-address cap"
        if len(self.connections) >= limits.max_connections:
            if not self.idle:
                self.faults.note("refused_busy", "connection from %s refused: %d connections "
                                 "open, none idle", conn.address, len(self.connections))
                return "connection cap"
            victim = next(iter(self.idle))
            self.faults.note("evicted", "%s connections open (the cap): closed the one idle "
                             "longest, from %s", len(self.connections), victim.address)
            victim.close()
        self.connections.add(conn)
        self.by_address[conn.address] += 1
        self.accepted += 1
        return None

    def release(self, conn: Connection) -> None:
        """``conn`` is gone."""
        if conn in self.connections:
            self.connections.discard(conn)
            self.by_address[conn.address] -= 1
            if self.by_address[conn.address] <= 0:
                del self.by_address[conn.address]
        self.idle.pop(conn, None)
        if conn.app_transport is not None:
            self.by_transport.pop(conn.app_transport, None)

    def connection(self, transport: Any) -> Connection | None:
        """The connection whose application transport is ``transport``."""
        return self.by_transport.get(transport)

    async def close_all(self) -> None:
        """Close every connection (the node stops)."""
        for conn in list(self.connections):
            conn.close()


class Connection:
    """The listener's view of one connection: address, requests in progress, deadlines."""

    def __init__(self, listener: Listener, raw: asyncio.Transport) -> None:
        self.listener = listener
        self.raw = raw
        peer = raw.get_extra_info("peername")
        self.address: str = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self.app_transport: Any = None
        self.busy = 0
        self.head_started: float | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._write_size = 0

    # -- requests (called by the middleware) -----------------------------------------------------

    def request_started(self) -> None:
        """A request head was parsed and its handler runs."""
        self.busy += 1
        self.head_started = None
        self.listener.idle.pop(self, None)
        self._cancel_timer()

    def request_finished(self) -> None:
        """The handler of a request returned (its response is being written)."""
        self.busy -= 1
        if self.busy == 0 and not self.closed:
            self._become_idle()

    # -- deadlines ------------------------------------------------------------------------------

    def _become_idle(self) -> None:
        self.listener.idle[self] = None
        self.listener.idle.move_to_end(self)
        self._arm(self.listener.limits.idle_timeout, self._idle_expired)

    def bytes_arrived(self) -> None:
        """Bytes of the stream arrived (called before they go to aiohttp)."""
        if self.busy == 0 and self.head_started is None:
            self.head_started = self._loop.time()
            self._arm(self.listener.limits.header_timeout, self._head_expired)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self.busy or self.closed:
            return
        self.listener.faults.note(
            "header_timeout", "connection from %s closed: no complete request head within "
            "%g s", self.address, self.listener.limits.header_timeout)
        self.close()

    def _idle_expired(self) -> None:
        self._timer = None
        if self.busy or self.closed or self.head_started is not None:
            return
        # A response still leaving at a rate: give it another round while it drains.
        size = self.raw.get_write_buffer_size() if not self.raw.is_closing() else 0
        if size and (not self._write_size or size < self._write_size):
            self._write_size = size
            self._arm(self.listener.limits.idle_timeout, self._idle_expired)
            return
        self.listener.faults.count("idle_closed")
        self.close()

    def close(self) -> None:
        """Drop the connection now (its file descriptor is free at once)."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        self.listener.release(self)
        self.raw.abort()


def connection_of(listeners: list[Listener], transport: Any) -> Connection | None:
    """The guarded connection of ``listeners`` a request arrived on (``None`` for a foreign
    transport)."""
    for listener in listeners:
        conn = listener.connection(transport)
        if conn is not None:
            return conn
    return None


class GuardedProtocol(asyncio.Protocol):
    """One connection's protocol: admission, deadlines and TLS in front of aiohttp's handler
    (which gets the plain or the TLS transport as if it had accepted the connection itself)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.conn: Connection | None = None
        self.inner: Any = None
        self._pending: list[bytes] = []
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        conn = Connection(self.listener, transport)
        if self.listener.admit(conn) is not None:
            if self.listener.ssl_context is None:
                transport.write(_REFUSED)
                transport.close()
            else:
                transport.abort()
            return
        self.conn = conn
        conn.head_started = conn._loop.time()  # the first head (or handshake) is due
        self.listener.idle[conn] = None  # no request in progress: it may give way
        conn._arm(self.listener.limits.header_timeout, conn._head_expired)
        if self.listener.ssl_context is None:
            self._attach(transport)
        else:
            transport.pause_reading()  # the ClientHello waits for start_tls
            task = asyncio.ensure_future(self._start_tls(conn, transport))
            task.add_done_callback(_consume)

    async def _start_tls(self, conn: Connection, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        context = self.listener.ssl_context
        assert context is not None
        try:
            tls = await loop.start_tls(transport, self, context, server_side=True,
                                       ssl_handshake_timeout=self.listener.limits
                                       .header_timeout)
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, ValueError) as exc:
            if not conn.closed:
                if isinstance(exc, ConnectionError):
                    reason = ("the client hung up during the handshake (does it trust this "
                              "node's certificate?)")
                elif isinstance(exc, TimeoutError):
                    reason = "no handshake in time"
                else:
                    reason = str(getattr(exc, "verify_message", None)
                                 or getattr(exc, "reason", None) or exc)
                self.listener.faults.note("tls_handshake", "TLS handshake with %s failed: %s",
                                          conn.address, reason)
                conn.close()
            return
        if conn.closed or tls is None:
            if tls is not None:
                tls.abort()
            return
        self._attach(tls)

    def _attach(self, transport: asyncio.Transport) -> None:
        conn = self.conn
        assert conn is not None
        conn.app_transport = transport
        self.listener.by_transport[transport] = conn
        self.inner = self.listener.factory()
        self.inner.connection_made(transport)
        pending, self._pending = self._pending, []
        for data in pending:
            self.inner.data_received(data)
        if self._eof:
            self.inner.eof_received()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        conn.bytes_arrived()
        if self.inner is None:
            self._pending.append(data)
        else:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            self._eof = True
            return None
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: BaseException | None) -> None:
        conn = self.conn
        if conn is not None:
            conn.closed = True
            conn._cancel_timer()
            self.listener.release(conn)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def _consume(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class GuardedSite(web.BaseSite):
    """An aiohttp site serving ``sock`` through a :class:`Listener` (module docstring).

    The runner's ``web.Server`` is aiohttp's per-connection protocol factory; the listener
    wraps each connection it makes.
    """

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, listener: Listener, *,
                 backlog: int) -> None:
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self.listener = listener
        host, port = sock.getsockname()[:2]
        scheme = "https" if listener.ssl_context is not None else "http"
        self._name = f"{scheme}://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.listener.protocol, sock=self._sock,
                                                backlog=self._backlog)

    async def stop(self) -> None:
        await super().stop()
        await self.listener.close_all()
