"""TLS between institutions: four in-process nodes serving HTTPS with certificates this test
makes (a private CA, ``ledger.devcerts``), every peer link over https with verification, and
the ways a peer is refused: a certificate of another CA, a pin that does not match, no client
certificate on ``/peer/``."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from ledger.client import LedgerClient
from ledger.config import Peer, TlsSettings
from ledger.devcerts import make_ca, make_node_certificate
from ledger.node.tls import certificate_fingerprint
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt

from .harness import TOKEN, Cluster, digest, eventually, make_cluster, run


def tls_cluster(tmp: Path, *, rogue: int | None = None,
                pins: dict[int, dict[int, str]] | None = None) -> Cluster:
    """A 4-node cluster whose every URL is https, certificates from one CA (node ``rogue``'s
    from another CA); ``pins[i][j]``: node i pins node j to that fingerprint."""
    cluster = make_cluster(tmp)
    ca_cert, ca_key = make_ca(tmp / "ca")
    other_cert, other_key = make_ca(tmp / "rogue-ca", name="someone else's CA")
    urls = {c.name: c.public_url.replace("http://", "https://") for c in cluster.configs}
    names = [c.name for c in cluster.configs]
    certs = {}
    for i, name in enumerate(names):
        issuer = (other_cert, other_key) if i == rogue else (ca_cert, ca_key)
        certs[name] = make_node_certificate(tmp / "certs", name, ["127.0.0.1", "localhost"],
                                            ca_cert=issuer[0], ca_key=issuer[1])
    configs = []
    for i, config in enumerate(cluster.configs):
        own_pins = {names[j]: (fp,) for j, fp in (pins or {}).get(i, {}).items()}
        configs.append(replace(
            config, public_url=urls[config.name],
            peers=tuple(Peer(name=p.name, url=urls[p.name]) for p in config.peers),
            tls=TlsSettings(cert_file=certs[config.name][0], key_file=certs[config.name][1],
                            ca_file=ca_cert, pins=tuple(own_pins.items()))))
    cluster.configs = configs
    return cluster


def client_context(tmp: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp / "ca" / "ca.crt"))


def anchored_receipt(cluster: Cluster, tmp: Path, node: int, doc: bytes) -> str:
    """Anchor ``doc`` at ``node`` over https (the real client, its own thread) and return the
    verified receipt."""
    with LedgerClient(cluster.url(node), TOKEN, ssl_context=client_context(tmp),
                      timeout=60) as client:
        policy = parse_policy(client.policy())
        [status] = client.anchor([doc], wait=True)
        receipt = status.receipt
        assert receipt is not None
        first = verify_receipt(receipt, policy, doc)
        # fetched again: the same leaf and checkpoint, with as many cosignatures or more
        again = verify_receipt(client.proof(doc), policy, doc)
        assert (again.index, again.size) == (first.index, first.size)
        assert again.time_bound <= first.time_bound
        return receipt


def test_four_nodes_with_tls_on_every_link_anchor_and_verify(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = tls_cluster(tmp_path)
        await cluster.start_all()
        try:
            assert all(c.public_url.startswith("https://") for c in cluster.configs)
            assert all(p.url.startswith("https://") for c in cluster.configs for p in c.peers)
            for i in range(4):  # every node anchors, over TLS to the client and its peers
                await asyncio.to_thread(anchored_receipt, cluster, tmp_path, i, digest(i, "tls"))
            # The listener speaks TLS only: plain HTTP gets no answer.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                with pytest.raises(aiohttp.ClientError):
                    async with http.get(cluster.url(0).replace("https", "http") + "/healthz"):
                        pass
        finally:
            await cluster.stop_all()

    run(main())


def test_a_node_with_an_untrusted_certificate_cannot_join(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """v4's certificate is from another CA: the others refuse it (one clear line each, naming
    the peer and why) and commit without it; v4 gets nothing in and learns no block."""
    caplog.set_level(logging.INFO)

    def refusals(lines: list[str], name: str, rogue_url: str) -> list[str]:
        return [line for line in lines if line.startswith(
            f"{name}: peer v4 at {rogue_url} refused: its TLS certificate is not trusted "
            "(unable to get local issuer certificate)")]

    async def main() -> None:
        cluster = tls_cluster(tmp_path, rogue=3)
        rogue = cluster.configs[3]
        await cluster.start_all()
        try:
            for i in range(3):
                await asyncio.to_thread(anchored_receipt, cluster, tmp_path, i,
                                        digest(i, "rogue"))

            anchors = iter(range(1000))

            async def all_refused() -> bool:
                lines = [r.getMessage() for r in caplog.records]
                if all(refusals(lines, c.name, rogue.public_url) for c in cluster.configs[:3]):
                    return True
                # A node tries v4 when it has something to send: give it blocks to send.
                k = next(anchors)
                await asyncio.to_thread(anchored_receipt, cluster, tmp_path, k % 3,
                                        digest(k, "more"))
                return False
            await eventually(all_refused, timeout=60, what="every node refusing v4")
            await asyncio.sleep(1.0)  # the links retry several times meanwhile
            assert cluster.node(3).store is not None
            assert cluster.node(3).store.last_height() == 0
            assert cluster.node(0).store is not None and cluster.node(0).store.last_height() > 0
        finally:
            await cluster.stop_all()
        lines = [r.getMessage() for r in caplog.records]
        for other in cluster.configs[:3]:
            # One line per refusing node naming the peer and the reason, not one per retry.
            assert len(refusals(lines, other.name, rogue.public_url)) == 1, (other.name, lines)
            # And v4's own link to it is refused (at the handshake, or the peer hangs up).
            assert any(line.startswith(f"{rogue.name}: peer {other.name} at ")
                       and "refused" in line for line in lines), (other.name, lines)
        assert not any(r.exc_info for r in caplog.records), "a traceback was logged"

    run(main())


def test_a_pinned_peer_must_present_the_pinned_certificate(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """v1 pins v2 to a fingerprint that is not v2's (and v3 to v3's own): the v2 link is
    refused at the handshake, the v3 link works."""
    caplog.set_level(logging.INFO)
    wrong = "00" * 32

    async def main() -> None:
        ca_dir = tmp_path / "certs"
        cluster = tls_cluster(tmp_path, pins={0: {1: wrong}})
        v3_print = certificate_fingerprint(ca_dir / f"{cluster.configs[2].name}.crt")
        c0 = cluster.configs[0]
        assert c0.tls is not None
        cluster.configs[0] = replace(c0, tls=replace(c0.tls, pins=(
            (cluster.configs[1].name, (wrong,)), (cluster.configs[2].name, (v3_print,)))))
        await cluster.start_all()
        try:
            await asyncio.to_thread(anchored_receipt, cluster, tmp_path, 0, digest(0, "pin"))

            def refused() -> bool:
                return any(r.getMessage().startswith(f"v1: peer {cluster.configs[1].name} ")
                           and "does not match the pins" in r.getMessage()
                           for r in caplog.records)
            await eventually(refused, timeout=20, what="v1 refusing v2's certificate")
            assert not any(r.getMessage().startswith(f"v1: peer {cluster.configs[2].name} ")
                           and "not trusted" in r.getMessage() for r in caplog.records)
        finally:
            await cluster.stop_all()

    run(main())


def test_peer_messages_need_a_client_certificate_of_the_ca(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = tls_cluster(tmp_path)
        await cluster.start(0)
        try:
            connector = aiohttp.TCPConnector(ssl=client_context(tmp_path))
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.post(cluster.url(0) + "/peer/v1/messages", data=b"x") as r:
                    assert r.status == 403
                    assert (await r.json())["error"]["code"] == "peer_certificate_required"
                async with http.get(cluster.url(0) + "/v1/status") as r:
                    assert r.status == 200  # the public API needs no client certificate
        finally:
            await cluster.stop_all()

    run(main())
