"""A separate listener for peers (``peer_listen_port``): validators reach each other there, the
public port refuses ``/peer/``, and the peer port serves only what peers use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ledger.config import Peer
from ledger.node import Node

from .harness import auth, bind_free_port, client_session, digest, make_cluster, run


def test_peers_talk_on_their_own_listener_and_the_public_port_refuses_peer_routes(
        tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path)
        peer_socks = [bind_free_port() for _ in cluster.configs]
        peer_urls = {c.name: f"http://127.0.0.1:{s.getsockname()[1]}"
                     for c, s in zip(cluster.configs, peer_socks, strict=True)}
        configs = [replace(c, peer_listen_port=s.getsockname()[1],
                           peers=tuple(Peer(name=p.name, url=peer_urls[p.name])
                                       for p in c.peers))
                   for c, s in zip(cluster.configs, peer_socks, strict=True)]
        nodes = []
        try:
            for i, config in enumerate(configs):
                node = Node(config, keys=cluster.keys[i])
                sock = cluster.sockets[i]
                cluster.sockets[i] = None
                await node.start(sock=sock, peer_sock=peer_socks[i])
                nodes.append(node)
            assert [n.peer_url for n in nodes] == [peer_urls[c.name] for c in configs]
            async with client_session() as http:
                body = {"digests": [digest(i, "peer-port").hex() for i in range(3)]}
                async with http.post(cluster.url(1) + "/v1/anchors?wait=true", json=body,
                                     headers=auth()) as r:
                    assert r.status == 200, await r.text()  # consensus ran on the peer ports
                async with http.post(cluster.url(0) + "/peer/v1/messages", data=b"x") as r:
                    assert r.status == 404
                peer0 = peer_urls[configs[0].name]
                async with http.post(peer0 + "/v1/anchors", json=body, headers=auth()) as r:
                    assert r.status == 404
                async with http.get(peer0 + "/v1/status") as r:
                    assert r.status == 200  # catch-up reads are served to peers
                async with http.get(peer0 + "/verify/") as r:
                    assert r.status == 404
            assert all(len(n.listeners) == 2 for n in nodes)
        finally:
            for node in nodes:
                await node.stop()
            for sock in cluster.sockets:
                if sock is not None:
                    sock.close()

    run(main())
