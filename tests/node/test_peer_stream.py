"""The peer stream: envelopes as websocket frames (``GET /peer/v1/stream``), refused frames
closing the stream, and the fallback to ``POST /peer/v1/messages`` through a hop that does not
carry websockets."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiohttp
from aiohttp import web

from ledger.config import Peer
from ledger.crypto import Ed25519Key
from ledger.node.peers import HttpTransport
from ledger.replica.wire import KIND_GOSSIP, encode_gossip, seal_envelope

from .harness import auth, bind_free_port, client_session, digest, make_cluster, run


def test_stream_takes_envelopes_and_closes_on_a_bad_frame(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        node = await cluster.start(0)  # the others stay down: nothing commits
        try:
            chain = cluster.genesis.chain_id
            url = cluster.url(0) + "/peer/v1/stream"
            peer_key = cluster.keys[1].consensus_key

            def envelope(key: Ed25519Key, seq: int, d: bytes) -> bytes:
                return seal_envelope(key=key, chain_id=chain, height=0, seq=seq,
                                     items=[(KIND_GOSSIP, encode_gossip([d]))])

            async with client_session() as http:
                async with http.ws_connect(url) as ws:
                    for i in range(1, 4):  # several frames on one stream, no answer each
                        await ws.send_bytes(envelope(peer_key, i, digest(i)))
                    await ws.ping()
                    for _ in range(100):
                        if all(digest(i) in node.replica.driver.mempool for i in range(1, 4)):
                            break
                        await asyncio.sleep(0.02)
                    assert all(digest(i) in node.replica.driver.mempool for i in range(1, 4))
                    assert not ws.closed
                    await ws.send_bytes(b"garbage")
                    message = await ws.receive(timeout=5)
                    assert message.type is aiohttp.WSMsgType.CLOSE
                    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
                cases = [
                    (envelope(Ed25519Key(b"\x05" * 32), 9, digest(9)),
                     aiohttp.WSCloseCode.POLICY_VIOLATION),  # not a validator
                    (envelope(peer_key, 10, digest(10)).replace(digest(10), digest(11)),
                     aiohttp.WSCloseCode.POLICY_VIOLATION),  # forged
                ]
                for frame, code in cases:
                    async with http.ws_connect(url) as ws:
                        await ws.send_bytes(frame)
                        message = await ws.receive(timeout=5)
                        assert message.type is aiohttp.WSMsgType.CLOSE
                        assert ws.close_code == code
                async with http.ws_connect(url) as ws:
                    await ws.send_str("text")
                    message = await ws.receive(timeout=5)
                    assert message.type is aiohttp.WSMsgType.CLOSE
                    assert ws.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA
                assert digest(9) not in node.replica.driver.mempool
                assert digest(11) not in node.replica.driver.mempool
                # a plain GET (no upgrade) is a clear 400, never a 5xx
                async with http.get(url) as r:
                    assert r.status == 400
        finally:
            await cluster.stop_all()

    run(main())


def _post_only_proxy(upstream: str) -> web.Application:
    """A hop that forwards POSTs and knows nothing of websockets (answers them 404)."""
    async def forward(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPNotFound()
        async with aiohttp.ClientSession() as session, session.post(
                upstream + request.path_qs, data=await request.read(),
                headers={"Content-Type": "application/octet-stream"}) as r:
            return web.Response(status=r.status, body=await r.read())
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def test_cluster_uses_streams_and_falls_back_to_posts(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        # v1 reaches v2 through a hop without websockets; every other link is a stream.
        sock = bind_free_port()
        proxy_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        runner = web.AppRunner(_post_only_proxy(cluster.url(1)), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        config = cluster.configs[0]
        peers = tuple(Peer(name=p.name, url=proxy_url) if p.name == "v2" else p
                      for p in config.peers)
        cluster.configs[0] = dataclasses.replace(config, peers=peers)
        try:
            await cluster.start_all()
            async with client_session() as http:
                for i in range(4):
                    batch = [digest(k, f"s{i}") for k in range(20)]
                    async with http.post(cluster.url(i) + "/v1/anchors?wait=true",
                                         json={"digests": [d.hex() for d in batch]},
                                         headers=auth()) as r:
                        assert r.status == 200, await r.text()
            for i in range(4):
                transport = cluster.node(i).transport
                assert isinstance(transport, HttpTransport)
                queues = transport._queues  # the links' state: which way envelopes go
                for name, queue in queues.items():
                    if (i, name) == (0, "v2"):
                        assert queue.stream is None and queue.post_until > 0, name
                    else:
                        assert queue.stream is not None and not queue.stream.closed, (i, name)
        finally:
            await cluster.stop_all()
            await runner.cleanup()

    run(main())
