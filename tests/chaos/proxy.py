"""A fault-injecting HTTP proxy for the links between validator processes (chaos suite).

Every node of the chaos cluster reaches every peer through its own proxy port: node ``i`` is
configured with ``peers.<j> = http://127.0.0.1:<port of link (i, j)>``, and that port forwards
to node ``j``'s real listener. One :class:`Link` per *ordered* pair, so each direction is
faulted on its own: link ``(i, j)`` carries what ``i`` sends to ``j`` (envelopes, as frames of
its websocket ``/peer/v1/stream`` or POSTed to ``/peer/v1/messages``) and what ``i`` asks of
``j`` during catch-up (``/v1/status``, ``/v1/blocks/{h}``, ``/v1/checkpoint``), with the
answers.

Faults, per link (:class:`LinkFaults`):

- ``cut``: the link is down. ``cut_mode = "refuse"`` answers 502 at once (a peer that resets the
  connection); ``"blackhole"`` holds the request without an answer until the sender's own
  timeout gives up (packets that vanish), bounded by :data:`BLACKHOLE_SECONDS`.
- ``drop``: probability that a peer POST is *acknowledged with 204 and never forwarded*: the
  sender believes it delivered the envelope, which is the message loss the node's re-broadcast
  must cover. A dropped GET is answered 502.
- ``delay_ms``: a uniform ``(low, high)`` delay before forwarding.
- ``duplicate``: probability that a peer POST is forwarded and then *replayed* once more, the
  same bytes, after a random 0 to 3 s (the node must treat replays as no-ops).

The proxy also records every consensus message it forwards (:meth:`FaultProxy.consensus_messages`):
it opens the envelope's msgpack (schema of :mod:`ledger.replica.wire`, signature not checked here:
the receiving node does that) and keeps each distinct ``KIND_CONSENSUS`` payload once. The
checker decodes them later with :func:`ledger.consensus.messages.decode_message` to look for a
validator that signed two different messages for one (height, round, step).

The proxy runs its own asyncio loop in a daemon thread; every method of :class:`FaultProxy` is
safe to call from other threads. Only 127.0.0.1 is ever bound or contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgpack
from aiohttp import web

from ledger.replica.wire import KIND_CONSENSUS, MAX_ENVELOPE_BYTES

__all__ = ["BLACKHOLE_SECONDS", "FaultProxy", "Link", "LinkFaults"]

#: A blackholed request is held at most this long (the node's peer timeout is shorter).
BLACKHOLE_SECONDS: Final = 15.0
#: Upstream requests give up after this long (a SIGSTOPped node never answers).
UPSTREAM_TIMEOUT_SECONDS: Final = 10.0
#: Replays of duplicated POSTs waiting at most per link (beyond, no more duplicates).
MAX_PENDING_REPLAYS: Final = 64
#: Distinct consensus payloads kept at most (a memory bound for very long runs).
MAX_CAPTURED: Final = 2_000_000
PEER_PATH: Final = "/peer/v1/messages"
STREAM_PATH: Final = "/peer/v1/stream"
_HOP_HEADERS: Final = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
    "proxy-authorization", "proxy-authenticate", "host", "content-length",
})


@dataclass(frozen=True, kw_only=True)
class LinkFaults:
    """The faults active on one direction of one link (see the module docstring)."""

    cut: bool = False
    cut_mode: str = "refuse"  # "refuse" or "blackhole"
    drop: float = 0.0
    delay_ms: tuple[int, int] = (0, 0)
    duplicate: float = 0.0


@dataclass
class Link:
    """One ordered pair (source node, destination node) and its listening port."""

    src: int
    dst: int
    port: int
    upstream: str
    faults: LinkFaults = field(default_factory=LinkFaults)
    counts: Counter[str] = field(default_factory=Counter)
    replays: int = 0  # replays scheduled and not yet sent


class FaultProxy:
    """Per-link proxies between ``n`` nodes whose real base URLs are ``upstreams``.

    ``start()`` binds one port per ordered pair on 127.0.0.1 and returns once they listen;
    :meth:`url` gives the URL node ``src`` must use for peer ``dst``. ``baseline`` are the faults
    every link has when healed (for example a small duplicate rate).
    """

    def __init__(self, upstreams: list[str], *, seed: int,
                 baseline: LinkFaults | None = None) -> None:
        self._upstreams = list(upstreams)
        self._rng = random.Random(seed)
        self._baseline = baseline or LinkFaults()
        self._links: dict[tuple[int, int], Link] = {}
        self._lock = threading.Lock()
        self._captured: dict[bytes, bytes] = {}
        self._capture_errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None
        self._start_error: BaseException | None = None
        self._socks: dict[tuple[int, int], socket.socket] = {}
        n = len(upstreams)
        for src in range(n):
            for dst in range(n):
                if src == dst:
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                self._socks[(src, dst)] = sock
                self._links[(src, dst)] = Link(src=src, dst=dst, port=port,
                                               upstream=upstreams[dst], faults=self._baseline)

    # -- control (any thread) --------------------------------------------------------------

    def url(self, src: int, dst: int) -> str:
        return f"http://127.0.0.1:{self._links[(src, dst)].port}"

    def links(self) -> list[Link]:
        return list(self._links.values())

    def set_faults(self, src: int, dst: int, faults: LinkFaults) -> None:
        with self._lock:
            self._links[(src, dst)].faults = faults

    def heal(self) -> None:
        """Every link back to the baseline faults."""
        with self._lock:
            for link in self._links.values():
                link.faults = self._baseline

    def touching(self, node: int) -> list[tuple[int, int]]:
        """The links from and to ``node``."""
        return [k for k in self._links if node in k]

    def counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        with self._lock:
            for link in self._links.values():
                total.update(link.counts)
        return total

    def consensus_messages(self) -> list[bytes]:
        with self._lock:
            return list(self._captured.values())

    @property
    def capture_errors(self) -> int:
        return self._capture_errors

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the fault proxy did not start")
        if self._start_error is not None:
            raise RuntimeError(f"the fault proxy failed to start: {self._start_error}")

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        for sock in self._socks.values():
            with contextlib.suppress(OSError):
                sock.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); never kill the process
            self._start_error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=64), auto_decompress=False,
        )
        runners: list[web.AppRunner] = []
        try:
            for key, link in self._links.items():
                app = web.Application(client_max_size=MAX_ENVELOPE_BYTES)
                app.router.add_route("*", "/{tail:.*}", self._handler(link))
                runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                       shutdown_timeout=1.0)
                await runner.setup()
                await web.SockSite(runner, self._socks[key]).start()
                runners.append(runner)
            self._ready.set()
            await self._stop.wait()
        finally:
            for runner in runners:
                with contextlib.suppress(Exception):
                    await runner.cleanup()
            await self._session.close()

    # -- the proxy itself ------------------------------------------------------------------

    def _handler(self, link: Link) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._forward(link, request)
        return handle

    def _count(self, link: Link, what: str) -> None:
        with self._lock:
            link.counts[what] += 1

    async def _forward(self, link: Link, request: web.Request) -> web.StreamResponse:
        if (request.method == "GET" and request.path == STREAM_PATH
                and request.headers.get("Upgrade", "").lower() == "websocket"):
            return await self._relay_stream(link, request)
        faults = link.faults  # one consistent snapshot per request
        body = await request.read()
        is_peer_post = request.method == "POST" and request.path == PEER_PATH
        if faults.cut:
            self._count(link, f"cut_{faults.cut_mode}")
            if faults.cut_mode == "blackhole":
                await asyncio.sleep(BLACKHOLE_SECONDS)
            return web.Response(status=502, text="link cut by the chaos proxy")
        if faults.drop and self._rng.random() < faults.drop:
            self._count(link, "dropped")
            if is_peer_post:
                return web.Response(status=204)  # the sender thinks it was delivered
            return web.Response(status=502, text="dropped by the chaos proxy")
        low, high = faults.delay_ms
        if high > 0:
            self._count(link, "delayed")
            await asyncio.sleep(self._rng.uniform(low, high) / 1000)
        if is_peer_post:
            self._capture(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        url = link.upstream + request.path_qs
        try:
            response = await self._upstream(request.method, url, headers, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count(link, "upstream_error")
            return web.Response(status=502, text=f"upstream failed: {type(exc).__name__}")
        self._count(link, "forwarded")
        if (is_peer_post and faults.duplicate and self._rng.random() < faults.duplicate
                and link.replays < MAX_PENDING_REPLAYS):
            link.replays += 1
            self._count(link, "duplicated")
            delay = self._rng.uniform(0, 3)
            asyncio.get_running_loop().create_task(self._replay(link, url, headers, body, delay))
        return response

    async def _relay_stream(self, link: Link, request: web.Request) -> web.StreamResponse:
        """Relay a peer stream frame by frame, each frame (one envelope) faulted like a peer
        POST: dropped (the sender believes it sent it), delayed (and every frame behind it,
        as on a slow link), replayed later on the same stream. A ``refuse`` cut closes the
        stream and refuses new ones (502); a ``blackhole`` cut swallows frames silently."""
        faults = link.faults
        if faults.cut:
            self._count(link, f"cut_{faults.cut_mode}")
            if faults.cut_mode == "blackhole":
                await asyncio.sleep(BLACKHOLE_SECONDS)
            return web.Response(status=502, text="link cut by the chaos proxy")
        assert self._session is not None
        try:
            upstream = await self._session.ws_connect(
                link.upstream + STREAM_PATH, max_msg_size=MAX_ENVELOPE_BYTES, compress=0)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count(link, "upstream_error")
            return web.Response(status=502, text=f"upstream failed: {type(exc).__name__}")
        sender = web.WebSocketResponse(max_msg_size=MAX_ENVELOPE_BYTES, compress=False)
        await sender.prepare(request)
        self._count(link, "stream_opened")

        async def back() -> None:  # the upstream's close (or its end) ends the stream
            with contextlib.suppress(Exception):
                async for _ in upstream:
                    pass
            with contextlib.suppress(Exception):
                await sender.close()

        back_task = asyncio.get_running_loop().create_task(back())
        try:
            async for message in sender:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    continue
                faults = link.faults  # one snapshot per frame
                if faults.cut:
                    self._count(link, f"cut_{faults.cut_mode}")
                    if faults.cut_mode == "blackhole":
                        continue
                    break
                if faults.drop and self._rng.random() < faults.drop:
                    self._count(link, "dropped")
                    continue
                low, high = faults.delay_ms
                if high > 0:
                    self._count(link, "delayed")
                    await asyncio.sleep(self._rng.uniform(low, high) / 1000)
                self._capture(message.data)
                try:
                    await upstream.send_bytes(message.data)
                except (aiohttp.ClientError, OSError):
                    self._count(link, "upstream_error")
                    break
                self._count(link, "forwarded")
                if (faults.duplicate and self._rng.random() < faults.duplicate
                        and link.replays < MAX_PENDING_REPLAYS):
                    link.replays += 1
                    self._count(link, "duplicated")
                    asyncio.get_running_loop().create_task(self._replay_frame(
                        link, upstream, message.data, self._rng.uniform(0, 3)))
        finally:
            back_task.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await sender.close()
        return sender

    async def _replay_frame(self, link: Link, upstream: aiohttp.ClientWebSocketResponse,
                            data: bytes, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            if link.faults.cut or upstream.closed:
                return
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await upstream.send_bytes(data)
                self._count(link, "replayed")
        finally:
            link.replays -= 1

    async def _upstream(self, method: str, url: str, headers: dict[str, str],
                        body: bytes) -> web.Response:
        assert self._session is not None
        async with self._session.request(method, url, headers=headers,
                                         data=body or None) as upstream:
            data = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items()
                           if k.lower() not in _HOP_HEADERS}
            return web.Response(status=upstream.status, body=data, headers=out_headers)

    async def _replay(self, link: Link, url: str, headers: dict[str, str], body: bytes,
                      delay: float) -> None:
        try:
            await asyncio.sleep(delay)
            if link.faults.cut:
                return
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                await self._upstream("POST", url, headers, body)
                self._count(link, "replayed")
        finally:
            link.replays -= 1

    def _capture(self, body: bytes) -> None:
        """Keep each distinct consensus payload of a peer envelope (schema: ledger.replica.wire)."""
        try:
            envelope = msgpack.unpackb(body, raw=False, max_bin_len=MAX_ENVELOPE_BYTES)
            items = envelope[5]
            payloads = [bytes(p) for k, p in items if k == KIND_CONSENSUS]
        except Exception:  # a malformed envelope is the node's business; we only count it
            self._capture_errors += 1
            return
        with self._lock:
            for payload in payloads:
                if len(self._captured) >= MAX_CAPTURED:
                    return
                key = hashlib.sha256(payload).digest()
                self._captured.setdefault(key, payload)

