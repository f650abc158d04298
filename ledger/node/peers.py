"""How a node reaches its peers: the :class:`PeerTransport` interface, its HTTP implementation
and an in-memory twin for tests.

A transport does two things for the replica:

- **send** envelope items (``Send`` actions) to one peer or to all. Items queue per peer and
  leave as signed envelopes (sealed by the replica when they leave, so the transport holds no
  key), each one binary frame of one long-lived websocket per peer (``GET /peer/v1/stream``):
  no HTTP request and answer per envelope. A peer (or a proxy on the way) that does not take
  the stream gets each envelope as ``POST /peer/v1/messages`` instead, and the stream is tried
  again a minute later. Items that wait while an envelope leaves go together in the next one;
  gossiped anchors alone wait for the gossip window after the previous envelope, so under load
  they cross in one envelope per window, never one per client request. A queue holds at most
  :data:`MAX_PEER_QUEUE` items; beyond, the oldest are dropped: everything a replica sends is
  re-sent (consensus messages, cosignatures, changes) or kept until committed (anchors, which
  stay in the sender's mempool), so a drop costs time, never an anchor;
- **fetch** what catch-up asks for (``Fetch`` actions): a peer's status (``GET /v1/status``),
  a block with its certificate (``GET /v1/blocks/{h}``) or its latest checkpoint (``GET
  /v1/checkpoint``), and hand the answer back to the replica, or ``None`` when the request
  failed. A peer that answers with something malformed is reported as such (it counts as an
  invalid peer message), one that cannot be reached only as a failure.

The replica never learns which transport runs it. :class:`MemoryTransport` connects nodes of
one process directly (no sockets), with a switch to cut a link, for tests of the node's own
logic; the simulator has its own network model (:mod:`ledger.sim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, Protocol

import aiohttp

from ledger.consensus.messages import MAX_MESSAGE_BYTES
from ledger.errors import LedgerError, MalformedError
from ledger.inputs import parse_base64, parse_json_object
from ledger.node.logs import LIMITED
from ledger.note import MAX_NOTE_SIZE
from ledger.replica import Fetch, FetchKind
from ledger.replica.wire import KIND_GOSSIP, MAX_ENVELOPE_BYTES, MAX_ITEMS

__all__ = [
    "MAX_PEER_QUEUE",
    "MESSAGES_PATH",
    "STREAM_PATH",
    "FetchAnswer",
    "HttpTransport",
    "MemoryHub",
    "MemoryTransport",
    "PeerTransport",
    "TransportHost",
]

log = logging.getLogger("ledger.node")

#: Items queued for one peer at most; the oldest are dropped beyond (see the module docstring).
MAX_PEER_QUEUE: Final = 20_000
_ENVELOPE_BUDGET: Final = MAX_ENVELOPE_BYTES - 64 * 1024
#: Where envelopes go: frames of one websocket per peer, or one POST each.
STREAM_PATH: Final = "/peer/v1/stream"
MESSAGES_PATH: Final = "/peer/v1/messages"
#: A peer that refused the stream gets POSTs for this long before the stream is tried again.
_POST_FALLBACK_SECONDS: Final = 60.0
#: A block answer: the block (<= 4 MiB) and its certificate, base64 in JSON.
_MAX_BLOCK_ANSWER: Final = 8 * MAX_MESSAGE_BYTES // 5 + 1024 * 1024
_MAX_STATUS_ANSWER: Final = 64 * 1024

#: The answer to a fetch: a height (status), (block, certificate) bytes, or note text;
#: ``None`` if the request failed; the flag says whether the peer answered malformed.
FetchAnswer = tuple[int | tuple[bytes, bytes] | str | None, bool]


class TransportHost(Protocol):
    """What a transport needs of its node."""

    def seal(self, items: Sequence[tuple[int, bytes]]) -> bytes:
        """One signed envelope of ``items``."""
        ...

    def sent(self, peer: str) -> None:
        """An envelope reached ``peer``."""
        ...

    def fetched(self, fetch: Fetch, answer: FetchAnswer) -> None:
        """The answer to ``fetch``."""
        ...


class PeerTransport(Protocol):
    """Moves envelope items and fetches between a node and its peers (module docstring)."""

    def start(self, host: TransportHost) -> None:
        """Start the links (inside the running event loop)."""
        ...

    async def stop(self) -> None:
        """Stop every link and drop what is queued."""
        ...

    def send(self, to: str | None, kind: int, payload: bytes) -> None:
        """Queue one item for ``to`` (``None``: every peer)."""
        ...

    def fetch(self, fetch: Fetch) -> None:
        """Start a fetch; its answer goes to ``host.fetched``."""
        ...

    def set_peers(self, peers: Mapping[str, str],
                  ssl_contexts: Mapping[str, ssl.SSLContext] | None = None) -> None:
        """The peers (name -> base URL) are now ``peers``: links to new ones start, links to
        dropped ones stop, a changed URL is used from the next request; ``ssl_contexts`` has
        the client TLS context of peers reached over https."""
        ...

    def unsent(self) -> bool:
        """Whether items are still queued for a peer that answered recently."""
        ...


class _Queue:
    """One peer's outgoing items, its stream, and when it last answered.

    ``urgent`` is set while an item other than gossiped anchors waits: consensus traffic,
    cosignatures and changes leave at once, gossip alone may wait for the gossip window.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: deque[tuple[int, bytes]] = deque()
        self.wakeup = asyncio.Event()
        self.urgent = asyncio.Event()
        self.dropped = 0
        self.live = False
        self.task: asyncio.Task[None] | None = None
        self.stream: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Future[None] | None = None
        self.post_until = 0.0

    def put(self, kind: int, payload: bytes) -> None:
        self.items.append((kind, payload))
        while len(self.items) > MAX_PEER_QUEUE:
            self.items.popleft()
            self.dropped += 1
        if kind != KIND_GOSSIP:
            self.urgent.set()
        self.wakeup.set()

    def take(self) -> list[tuple[int, bytes]]:
        """The next envelope's worth of items."""
        out: list[tuple[int, bytes]] = []
        size = 0
        while self.items and len(out) < MAX_ITEMS:
            kind, payload = self.items[0]
            if out and size + len(payload) + 16 > _ENVELOPE_BUDGET:
                break
            self.items.popleft()
            out.append((kind, payload))
            size += len(payload) + 16
        if not any(kind != KIND_GOSSIP for kind, _ in self.items):
            self.urgent.clear()
        return out

    async def gossip_window(self, last_sent: float, window: float) -> None:
        """Wait until ``window`` seconds after ``last_sent``, or until an urgent item is
        queued: gossiped anchors that arrive meanwhile leave together, in one envelope."""
        delay = last_sent + window - time.monotonic()
        if delay > 0 and not self.urgent.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and the link would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.urgent.wait()

    async def drop_stream(self) -> None:
        """Forget the stream (it failed); the next envelope opens a new one."""
        stream, reader, self.stream, self.reader = self.stream, self.reader, None, None
        if reader is not None:
            reader.cancel()
        if stream is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await stream.close()


async def _drain(stream: aiohttp.ClientWebSocketResponse) -> None:
    """Read what the peer sends back on a stream (only control frames: pongs and the close,
    which is how the stream learns that it ended)."""
    with contextlib.suppress(Exception):
        async for _ in stream:
            pass


def describe_failure(exc: BaseException) -> str:
    """Why a request to a peer failed, in a few words: the TLS verdict when TLS refused it."""
    cert = getattr(exc, "certificate_error", None)
    if isinstance(cert, ssl.SSLCertVerificationError) or isinstance(
            exc, ssl.SSLCertVerificationError):
        error = cert if cert is not None else exc
        detail = getattr(error, "verify_message", None) or getattr(error, "reason", None) \
            or str(error)
        return f"its TLS certificate is not trusted ({detail})"
    ssl_error = exc if isinstance(exc, ssl.SSLError) else getattr(exc, "os_error", None)
    if isinstance(ssl_error, ssl.SSLError):
        return f"TLS handshake failed ({ssl_error.reason or ssl_error})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"it answered {exc.status}: {exc.message}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer in time"
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:200]


#: A flapping link writes at most this many lines a minute.
_LINES_PER_MINUTE: Final = 4


class _Link:
    """What the log says about one peer: a line when its link fails for a new reason, one when
    it works again; never one per retry."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.failure: str | None = None
        self.own = "?"
        self._lines: deque[float] = deque()

    def failed(self, exc: BaseException) -> None:
        reason = describe_failure(exc)
        now = time.monotonic()
        while self._lines and self._lines[0] < now - 60:
            self._lines.popleft()
        if reason != self.failure and len(self._lines) < _LINES_PER_MINUTE:
            self._lines.append(now)
            self.failure = reason
            log.warning("%s: peer %s at %s refused: %s", self.own, self.name, self.url, reason,
                        extra=LIMITED)
        else:
            log.debug("%s: peer %s at %s still failing: %s", self.own, self.name, self.url,
                      reason)

    def worked(self) -> None:
        if self.failure is not None:
            log.info("%s: peer %s at %s reachable again", self.own, self.name, self.url,
                     extra=LIMITED)
            self.failure = None


class HttpTransport:
    """The transport over HTTP(S) between validators (module docstring).

    ``peers`` maps each peer's validator name to its base URL; ``timeout`` is the budget of
    one request in seconds; ``ssl_contexts`` holds the client TLS context of each peer reached
    over https (:func:`ledger.node.tls.client_context`; a peer without one gets the system's
    default verification).
    """

    def __init__(self, peers: Mapping[str, str], *, timeout: float,
                 ssl_contexts: Mapping[str, ssl.SSLContext] | None = None,
                 gossip_window: float = 0.0) -> None:
        self._urls = dict(peers)
        self._timeout = timeout
        self._gossip_window = gossip_window
        self._ssl = dict(ssl_contexts or {})
        self._queues = {name: _Queue(name) for name in peers}
        self._links = {name: _Link(name, url) for name, url in peers.items()}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._host: TransportHost | None = None

    def start(self, host: TransportHost) -> None:
        self._host = host
        for link in self._links.values():
            link.own = str(getattr(host, "name", "?"))
        for name in self._urls:
            self._open_link(name)

    def _open_link(self, name: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        context = self._ssl.get(name)
        self._sessions[name] = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(
                limit=4, ssl=context if context is not None else True))
        queue = self._queues.setdefault(name, _Queue(name))
        queue.task = self._spawn(self._worker(queue))

    def set_peers(self, peers: Mapping[str, str],
                  ssl_contexts: Mapping[str, ssl.SSLContext] | None = None) -> None:
        self._urls.update(peers)
        self._ssl.update(ssl_contexts or {})
        own = "?" if self._host is None else str(getattr(self._host, "name", "?"))
        for name, url in peers.items():
            link = self._links.get(name)
            if link is None or link.url != url:
                self._links[name] = _Link(name, url)
                self._links[name].own = own
                queue = self._queues.get(name)
                if queue is not None and queue.stream is not None:
                    self._spawn(queue.drop_stream())  # it goes to the old URL
        for name in [n for n in self._queues if n not in peers]:
            queue = self._queues.pop(name)
            del self._urls[name]
            self._links.pop(name, None)
            if queue.task is not None:
                queue.task.cancel()
            self._spawn(queue.drop_stream())
            session = self._sessions.pop(name, None)
            if session is not None:
                self._spawn(session.close())
        if self._host is not None:
            for name in peers:
                if name not in self._sessions:
                    self._open_link(name)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for queue in self._queues.values():
            await queue.drop_stream()
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def send(self, to: str | None, kind: int, payload: bytes) -> None:
        if to is None:
            for queue in self._queues.values():
                queue.put(kind, payload)
        elif to in self._queues:
            self._queues[to].put(kind, payload)

    def unsent(self) -> bool:
        return any(q.items and q.live for q in self._queues.values())

    def dropped(self) -> int:
        """Items dropped from full queues so far."""
        return sum(q.dropped for q in self._queues.values())

    async def _worker(self, queue: _Queue) -> None:
        host = self._host
        assert host is not None
        backoff = 0.1
        last_sent = 0.0
        while True:
            await queue.wakeup.wait()
            queue.wakeup.clear()
            while queue.items:
                await queue.gossip_window(last_sent, self._gossip_window)
                last_sent = time.monotonic()
                items = queue.take()
                try:
                    data = host.seal(items)
                    await self._deliver(queue, data)
                    queue.live = True
                    self._links[queue.name].worked()
                    host.sent(queue.name)
                    backoff = 0.1
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    queue.live = False
                    await queue.drop_stream()
                    self._links[queue.name].failed(exc)
                    # Short: the link is sequential, so every second here delays this peer's
                    # consensus traffic once the link heals.
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                except LedgerError as exc:  # cannot seal (an item too large): drop them
                    log.error("cannot send to %s: %s", queue.name, exc.diagnostics())

    async def _deliver(self, queue: _Queue, data: bytes) -> None:
        """One envelope to ``queue``'s peer: a frame on the peer's stream, opened when needed;
        a POST when the peer (or a proxy on the way) does not take the stream.

        Raises:
            aiohttp.ClientError, TimeoutError, OSError: it did not leave.
        """
        base, session = self._urls[queue.name], self._sessions[queue.name]
        if queue.stream is None and time.monotonic() >= queue.post_until:
            try:
                queue.stream = await session.ws_connect(
                    base + STREAM_PATH, max_msg_size=MAX_ENVELOPE_BYTES, compress=0,
                    heartbeat=max(self._timeout, 1.0))
                queue.reader = asyncio.ensure_future(_drain(queue.stream))
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status not in (400, 404, 405, 426, 501):
                    raise
                queue.post_until = time.monotonic() + _POST_FALLBACK_SECONDS  # POST a while
        stream = queue.stream
        if stream is not None:
            if stream.closed:
                raise aiohttp.ServerDisconnectedError("the peer closed the stream")
            async with asyncio.timeout(self._timeout):
                await stream.send_bytes(data)
            return
        async with session.post(base + MESSAGES_PATH, data=data, headers={
                "Content-Type": "application/octet-stream"}) as response:
            if response.status != 204:
                raise aiohttp.ClientResponseError(
                    response.request_info, (), status=response.status,
                    message=(await response.text())[:200])

    def fetch(self, fetch: Fetch) -> None:
        if fetch.peer in self._sessions:
            self._spawn(self._fetch(fetch))

    async def _fetch(self, fetch: Fetch) -> None:
        host = self._host
        assert host is not None
        try:
            answer = await self._get(fetch)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._links[fetch.peer].failed(exc)
            answer = (None, False)
        host.fetched(fetch, answer)

    async def _get(self, fetch: Fetch) -> FetchAnswer:
        session, base = self._sessions[fetch.peer], self._urls[fetch.peer]
        path, limit = {
            FetchKind.STATUS: ("/v1/status", _MAX_STATUS_ANSWER),
            FetchKind.BLOCK: (f"/v1/blocks/{fetch.height}", _MAX_BLOCK_ANSWER),
            FetchKind.CHECKPOINT: (f"/v1/checkpoints/{fetch.height}" if fetch.height
                                   else "/v1/checkpoint", MAX_NOTE_SIZE),
        }[fetch.what]
        async with session.get(base + path) as response:
            self._links[fetch.peer].worked()
            if response.status != 200:
                return None, False
            body = await _read_limited(response.content, limit)
        if body is None:
            return None, True
        return parse_answer(fetch.what, body)


def parse_answer(what: FetchKind, body: bytes) -> FetchAnswer:
    """Parse a peer's answer to a fetch of ``what`` (untrusted bytes: never raises)."""
    try:
        if what is FetchKind.CHECKPOINT:
            return body.decode("utf-8"), False
        obj = parse_json_object(body, what="the peer's answer")
        if what is FetchKind.STATUS:
            height = obj.get("height")
            if isinstance(height, int) and not isinstance(height, bool) and height >= 0:
                return height, False
            return None, True
        block = parse_base64(obj.get("block"), what="block", max_bytes=MAX_MESSAGE_BYTES)
        certificate = parse_base64(obj.get("certificate"), what="certificate",
                                   max_bytes=MAX_MESSAGE_BYTES)
        return (block, certificate), False
    except (UnicodeDecodeError, MalformedError):
        return None, True


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


class MemoryHub:
    """In-process links between :class:`MemoryTransport` endpoints (tests).

    ``cut`` holds the (from, to) name pairs whose messages are dropped.
    """

    def __init__(self) -> None:
        self.endpoints: dict[str, MemoryEndpoint] = {}
        self.cut: set[tuple[str, str]] = set()

    def transport(self, name: str, peers: Sequence[str]) -> MemoryTransport:
        """The transport of node ``name`` to ``peers``."""
        return MemoryTransport(self, name, list(peers))

    def register(self, name: str, endpoint: MemoryEndpoint) -> None:
        """The node ``name`` is reachable through ``endpoint``."""
        self.endpoints[name] = endpoint


class MemoryEndpoint(Protocol):
    """What a node offers its in-memory peers (the node's own request handlers)."""

    def receive(self, data: bytes) -> bool:
        """An envelope; whether it was taken."""
        ...

    def serve(self, what: FetchKind, height: int) -> FetchAnswer:
        """The answer to a fetch."""
        ...


class MemoryTransport:
    """:class:`PeerTransport` within one process (see :class:`MemoryHub`)."""

    def __init__(self, hub: MemoryHub, name: str, peers: list[str]) -> None:
        self._hub = hub
        self._name = name
        self._peers = peers
        self._host: TransportHost | None = None
        self._pending: deque[tuple[str, int, bytes]] = deque()
        self._scheduled = False

    def start(self, host: TransportHost) -> None:
        self._host = host

    async def stop(self) -> None:
        self._host = None
        self._pending.clear()

    def send(self, to: str | None, kind: int, payload: bytes) -> None:
        for peer in self._peers if to is None else [to]:
            self._pending.append((peer, kind, payload))
        self._schedule(self._flush)

    def _schedule(self, callback: Callable[[], None]) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(callback)

    def _flush(self) -> None:
        self._scheduled = False
        host = self._host
        if host is None:
            return
        by_peer: dict[str, list[tuple[int, bytes]]] = {}
        while self._pending:
            peer, kind, payload = self._pending.popleft()
            by_peer.setdefault(peer, []).append((kind, payload))
        for peer, items in by_peer.items():
            endpoint = self._hub.endpoints.get(peer)
            if endpoint is None or (self._name, peer) in self._hub.cut:
                continue
            for start in range(0, len(items), MAX_ITEMS):
                if endpoint.receive(host.seal(items[start:start + MAX_ITEMS])):
                    host.sent(peer)

    def fetch(self, fetch: Fetch) -> None:
        host = self._host
        endpoint = self._hub.endpoints.get(fetch.peer)
        if host is None:
            return
        if endpoint is None or (self._name, fetch.peer) in self._hub.cut:
            answer: FetchAnswer = (None, False)
        else:
            answer = endpoint.serve(fetch.what, fetch.height)
        asyncio.get_running_loop().call_soon(host.fetched, fetch, answer)

    def unsent(self) -> bool:
        return bool(self._pending)

    def set_peers(self, peers: Mapping[str, str],
                  ssl_contexts: Mapping[str, ssl.SSLContext] | None = None) -> None:
        self._peers = list(peers)
