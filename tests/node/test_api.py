"""The public HTTP API of one node: every route, every refusal, and that refusals change nothing.

A one-validator chain commits on its own, so these tests need no peers. The "slow" node has a
one-minute batch window and a batch size of 3, so anchors stay pending until a third arrives:
pending states are reached deterministically, without racing the clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ledger.config import BatchLimits
from ledger.consensus.messages import decode_block, decode_certificate, verify_certificate
from ledger.merkle.hashing import leaf_hash
from ledger.merkle.proof import verify_consistency, verify_inclusion
from ledger.node import Node
from ledger.node.openapi import openapi_document
from ledger.policy import parse_policy
from ledger.receipt import parse_receipt, verify_receipt

from .harness import REVOKED_TOKEN, Cluster, auth, client_session, digest, make_cluster, run


@asynccontextmanager
async def one_node(
    tmp: Path, *, batch: BatchLimits | None = None
) -> AsyncIterator[tuple[Cluster, Node, aiohttp.ClientSession]]:
    cluster = make_cluster(tmp, n=1, lmdb=False, batch=batch)
    node = await cluster.start(0)
    try:
        async with client_session() as http:
            yield cluster, node, http
    finally:
        await cluster.stop_all()


SLOW = BatchLimits(max_batch_digests=3, batch_window_ms=60_000)


def snapshot(node: Node) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    assert node.store is not None
    return (node.store.tree_head(), node.store.last_height(), len(node.replica.driver.mempool),
            node.store.latest_checkpoint())


async def anchor(http: aiohttp.ClientSession, url: str, digests: list[bytes],
                 wait: bool = True) -> tuple[int, dict[str, Any]]:
    query = "?wait=true" if wait else ""
    async with http.post(url + "/v1/anchors" + query, json={"digests": [d.hex() for d in digests]},
                         headers=auth()) as r:
        return r.status, await r.json()


def error_code(body: dict[str, Any]) -> str:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return str(body["error"]["code"])


BAD_ANCHOR_BODIES = [
    # (name, raw body, headers, expected status, expected code)
    ("bad hex", json.dumps({"digests": ["zz" * 32]}), 400, "invalid_hex"),
    ("odd hex", json.dumps({"digests": ["a" * 63]}), 400, "invalid_hex"),
    ("short digest", json.dumps({"digests": ["ab" * 31]}), 400, "invalid_length"),
    ("long digest", json.dumps({"digests": ["ab" * 33]}), 400, "invalid_length"),
    ("one bad among good", json.dumps({"digests": [digest(1).hex(), "ab"]}), 400,
     "invalid_length"),
    ("too many digests", json.dumps({"digests": [digest(i).hex() for i in range(10_001)]}),
     400, "too_many_digests"),
    ("empty list", json.dumps({"digests": []}), 400, "invalid_request"),
    ("not a list", json.dumps({"digests": digest(1).hex()}), 400, "invalid_request"),
    ("number digest", json.dumps({"digests": [7]}), 400, "invalid_request"),
    ("unknown field", json.dumps({"digests": [digest(1).hex()], "x": 1}), 400,
     "invalid_request"),
    ("not an object", json.dumps([digest(1).hex()]), 400, "invalid_request"),
    ("malformed json", '{"digests": [', 400, "malformed_json"),
    ("not utf-8", b'{"digests": ["\xff"]}', 400, "malformed_json"),
    ("oversized body", json.dumps({"digests": ["00" * 32] * 20_000}), 413, "body_too_large"),
]


@pytest.mark.parametrize(("name", "body", "status", "code"), BAD_ANCHOR_BODIES,
                         ids=[case[0] for case in BAD_ANCHOR_BODIES])
def test_bad_anchor_bodies_are_refused_and_change_nothing(
    tmp_path: Path, name: str, body: str | bytes, status: int, code: str
) -> None:
    async def main() -> None:
        async with one_node(tmp_path, batch=SLOW) as (cluster, node, http):
            await anchor(http, cluster.url(0), [digest(100)], wait=False)  # one pending
            before = snapshot(node)
            async with http.post(cluster.url(0) + "/v1/anchors", data=body,
                                 headers={**auth(), "Content-Type": "application/json"}) as r:
                assert r.status == status
                assert error_code(await r.json()) == code
            assert snapshot(node) == before

    run(main())


AUTH_CASES = [
    ("no header", {}, 401),
    ("empty bearer", {"Authorization": "Bearer "}, 401),
    ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ("unknown token", {"Authorization": "Bearer not-a-token"}, 401),
    ("revoked token", auth(REVOKED_TOKEN), 403),
]


@pytest.mark.parametrize(("name", "headers", "status"), AUTH_CASES,
                         ids=[case[0] for case in AUTH_CASES])
def test_anchoring_requires_a_valid_token(
    tmp_path: Path, name: str, headers: dict[str, str], status: int
) -> None:
    async def main() -> None:
        async with one_node(tmp_path, batch=SLOW) as (cluster, node, http):
            before = snapshot(node)
            async with http.post(cluster.url(0) + "/v1/anchors",
                                 json={"digests": [digest(1).hex()]}, headers=headers) as r:
                assert r.status == status
                body = await r.json()
                assert error_code(body) == ("unauthorized" if status == 401 else "forbidden")
                if status == 401:
                    assert r.headers["WWW-Authenticate"] == "Bearer"
            assert snapshot(node) == before

    run(main())


def test_unknown_routes_methods_and_parameters(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path, batch=SLOW) as (cluster, node, http):
            url = cluster.url(0)
            before = snapshot(node)
            cases = [
                ("GET", "/v2/anchors", 404, "not_found"),
                ("GET", "/nope", 404, "not_found"),
                ("GET", "/v1/anchors", 405, "method_not_allowed"),
                ("DELETE", "/v1/checkpoint", 405, "method_not_allowed"),
                ("POST", "/v1/anchors?wait=maybe", 400, "invalid_parameter"),
                ("GET", "/v1/proofs/xyz", 400, "invalid_hex"),
                ("GET", "/v1/proofs/" + "ab" * 31, 400, "invalid_length"),
                ("GET", "/v1/proofs/" + digest(9).hex(), 404, "not_found"),
                ("GET", "/v1/blocks/abc", 400, "invalid_parameter"),
                ("GET", "/v1/blocks/0", 404, "not_found"),
                ("GET", "/v1/blocks/999", 404, "not_found"),
                ("GET", "/v1/consistency", 400, "invalid_parameter"),
                ("GET", "/v1/consistency?from=1&to=x", 400, "invalid_parameter"),
                ("GET", "/v1/consistency?from=0&to=1", 400, "invalid_parameter"),
                ("GET", "/v1/consistency?from=3&to=2", 400, "invalid_parameter"),
                ("GET", "/v1/consistency?from=1&to=50", 404, "not_found"),
                ("GET", "/v1/checkpoint", 404, "not_found"),  # nothing anchored yet
            ]
            for method, path, status, code in cases:
                async with http.request(method, url + path,
                                        json={"digests": [digest(1).hex()]},
                                        headers=auth()) as r:
                    assert r.status == status, (method, path, await r.text())
                    assert error_code(await r.json()) == code, (method, path)
            assert snapshot(node) == before

    run(main())


def test_anchor_wait_returns_receipts_that_verify(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, _node, http):
            url = cluster.url(0)
            async with http.get(url + "/v1/policy") as r:
                assert r.status == 200 and r.content_type == "text/plain"
                policy_text = await r.text()
            assert policy_text == cluster.genesis.trust_policy()
            policy = parse_policy(policy_text)
            batch = [digest(i) for i in range(7)] + [digest(0)]  # a repeat within the request
            status, body = await anchor(http, url, batch)
            assert status == 200
            items = body["anchors"]
            assert [i["digest"] for i in items] == [d.hex() for d in batch]
            assert items[0]["index"] == items[7]["index"]
            for d, item in zip(batch, items, strict=True):
                assert item["status"] == "anchored"
                assert verify_receipt(item["receipt"], policy, d).index == item["index"]
            assert body["tree_size"] == 7

    run(main())


def test_reanchoring_a_known_digest_keeps_its_index(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, node, http):
            url = cluster.url(0)
            _, first = await anchor(http, url, [digest(1), digest(2)])
            size = node.store.size if node.store else -1
            status, again = await anchor(http, url, [digest(2)], wait=False)
            assert status == 200  # already anchored: nothing pending
            assert again["anchors"][0]["index"] == first["anchors"][1]["index"]
            assert again["anchors"][0]["status"] == "anchored"
            status, waited = await anchor(http, url, [digest(2), digest(1)])
            assert status == 200
            assert [a["index"] for a in waited["anchors"]] == [1, 0]
            assert node.store is not None and node.store.size == size == 2

    run(main())


def test_pending_then_batch_by_size_then_proofs(tmp_path: Path) -> None:
    """With a one-minute window and batch size 3, two anchors stay pending (202); the third
    fills the batch, which starts the height at once."""

    async def main() -> None:
        async with one_node(tmp_path, batch=SLOW) as (cluster, node, http):
            url = cluster.url(0)
            status, body = await anchor(http, url, [digest(1), digest(2)], wait=False)
            assert status == 202
            assert [a["status"] for a in body["anchors"]] == ["pending", "pending"]
            async with http.get(url + f"/v1/proofs/{digest(1).hex()}") as r:
                assert r.status == 202
                assert (await r.json())["status"] == "pending"
            status, body = await anchor(http, url, [digest(3)])
            assert status == 200, body
            # text/plain receipt
            async with http.get(url + f"/v1/proofs/{digest(1).hex().upper()}") as r:
                assert r.status == 200 and r.content_type == "text/plain"
                text = await r.text()
            receipt = parse_receipt(text)
            policy = parse_policy(cluster.genesis.trust_policy())
            assert verify_receipt(text, policy, digest(1)).index == receipt.index
            # JSON receipt
            async with http.get(url + f"/v1/proofs/{digest(2).hex()}",
                                headers={"Accept": "application/json"}) as r:
                assert r.status == 200
                proof = await r.json()
            assert proof["digest"] == digest(2).hex() and proof["tree_size"] == 3
            verify_receipt(proof["receipt"], policy, digest(2))
            assert node.store is not None and len(node.replica.driver.mempool) == 0

    run(main())


def test_checkpoint_consistency_and_blocks(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, node, http):
            url = cluster.url(0)
            await anchor(http, url, [digest(i) for i in range(3)])
            async with http.get(url + "/v1/checkpoint") as r:
                assert r.status == 200 and r.content_type == "text/plain"
                first = await r.text()
            await anchor(http, url, [digest(i) for i in range(3, 8)])
            async with http.get(url + "/v1/checkpoint") as r:
                second = await r.text()
            old_root = base64.b64decode(first.split("\n")[2])
            new_root = base64.b64decode(second.split("\n")[2])
            async with http.get(url + "/v1/consistency?from=3&to=8") as r:
                assert r.status == 200
                body = await r.json()
            proof = [base64.b64decode(h) for h in body["proof"]]
            verify_consistency(3, 8, old_root, new_root, proof)
            # every block is served with a certificate that verifies
            assert node.store is not None
            genesis = cluster.genesis
            from ledger.consensus import ValidatorSet
            validators = ValidatorSet(keys=list(genesis.consensus_keys()))
            for height in range(1, node.store.last_height() + 1):
                async with http.get(url + f"/v1/blocks/{height}") as r:
                    assert r.status == 200
                    info = await r.json()
                block = decode_block(base64.b64decode(info["block"]))
                cert = decode_certificate(base64.b64decode(info["certificate"]))
                assert info["height"] == block.height == height
                assert info["hash"] == block.hash.hex()
                assert info["digest_count"] == len(block.digests)
                verify_certificate(cert, block_hash=block.hash, height=height,
                                   validators=validators, chain_id=genesis.chain_id)
                for d in block.digests:
                    index = node.store.index_of(d)
                    assert index is not None
                    verify_inclusion(leaf_hash(d), index, block.tree_size,
                                     node.store.inclusion_proof(index, block.tree_size),
                                     node.store.root_at(block.tree_size))

    run(main())


def test_health_ready_metrics_status_openapi(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, node, http):
            url = cluster.url(0)
            await anchor(http, url, [digest(1)])
            async with http.get(url + "/healthz") as r:
                assert r.status == 200
            async with http.get(url + "/readyz") as r:
                assert r.status == 200, await r.text()
                assert (await r.json()) == {"ready": True}
            async with http.get(url + "/metrics") as r:
                assert r.status == 200
                metrics = await r.text()
            for name in ("ledger_height", "ledger_round", "ledger_commit_latency_seconds_bucket",
                         "ledger_mempool_depth", "ledger_anchors_total",
                         "ledger_peers_connected", "ledger_messages_late_total",
                         "ledger_messages_invalid_total", "ledger_cosignatures_rejected_total",
                         "ledger_evidence",
                         "ledger_storage_bytes", "ledger_tree_size"):
                assert f"\n{name}" in metrics, name
            assert "ledger_anchors_total 1.0" in metrics
            async with http.get(url + "/v1/status") as r:
                status = await r.json()
            assert status["tree_size"] == 1 and status["ready"] is True
            assert status["height"] == node.store.last_height() if node.store else False
            async with http.get(url + "/openapi.json") as r:
                doc = await r.json()
            assert doc == openapi_document(origin=cluster.genesis.origin, max_digests=10_000)
            served = set()
            assert node.app is not None
            for route in node.app.router.routes():
                info = route.resource.get_info() if route.resource else {}
                path = info.get("path") or info.get("formatter")
                if route.method != "HEAD":
                    served.add((route.method.lower(), path))
            described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
            assert served == described

    run(main())


def test_halted_node_refuses_anchors_and_reports_unhealthy(tmp_path: Path) -> None:
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, node, http):
            assert node.replica is not None
            node.replica.halt("storage: disk full (test)")
            async with http.post(cluster.url(0) + "/v1/anchors",
                                 json={"digests": [digest(1).hex()]}, headers=auth()) as r:
                assert r.status == 503
                assert error_code(await r.json()) == "unavailable"
            async with http.get(cluster.url(0) + "/healthz") as r:
                assert r.status == 503
            async with http.get(cluster.url(0) + "/readyz") as r:
                assert r.status == 503
                assert "halted" in (await r.json())["reasons"][0]
            assert len(node.replica.driver.mempool) == 0

    run(main())


def test_fast_receipt_format_matches_ledger_receipt() -> None:
    """The node's receipt fast path writes byte-for-byte what ledger.receipt writes, for every
    path length, and refuses a tree that does not lead to the note's root."""
    import hashlib

    from ledger.errors import CorruptionError
    from ledger.receipt import build_receipt
    from ledger.replica.receipts import ReceiptMaker
    from ledger.storage import MemoryStore

    store = MemoryStore()
    digests = [hashlib.sha256(b"%d" % i).digest() for i in range(300)]
    store.append(digests)
    maker = ReceiptMaker(store)
    for size in (1, 2, 3, 7, 64, 65, 300):
        note = (f"ledger.test/x\n{size}\n"
                + base64.b64encode(store.root_at(size)).decode() + "\n\n— k AAAAAAE=\n")
        indices = sorted({0, size // 2, size - 1})
        made = maker.receipts(indices, [digests[i] for i in indices], size=size, note=note)
        assert made == [build_receipt(index=i, proof=store.inclusion_proof(i, size),
                                      checkpoint_note=note) for i in indices]
    wrong = note.replace(base64.b64encode(store.root_at(300)).decode(),
                         base64.b64encode(b"x" * 32).decode())
    with pytest.raises(CorruptionError, match="does not back"):
        maker.receipts([5], [digests[5]], size=300, note=wrong)
    with pytest.raises(CorruptionError, match="does not back"):
        maker.receipts([5], [digests[6]], size=300, note=note)  # another digest at leaf 5


def test_node_serves_the_verification_page_with_a_strict_csp(tmp_path: Path) -> None:
    from ledger.node.verify_page import CONTENT_SECURITY_POLICY

    async def main() -> None:
        async with one_node(tmp_path) as (cluster, _node, http):
            url = cluster.url(0)
            async with http.get(url + "/verify", allow_redirects=False) as r:
                assert r.status == 308 and r.headers["Location"] == "/verify/"
            async with http.get(url + "/verify/") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/html")
                assert r.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert "verify.js" in await r.text()
            async with http.get(url + "/verify/verify.js") as r:
                assert r.status == 200 and "javascript" in r.headers["Content-Type"]
            async with http.get(url + "/verify/secret.key") as r:
                assert r.status == 404

    run(main())


def test_a_corrupted_stored_path_is_never_served_and_halts_the_node(tmp_path: Path) -> None:
    # The open-time check reads O(log n) records only; a flipped byte in a stored tree node
    # must not become a wrong receipt. Simulate the damaged read at the store boundary.
    async def main() -> None:
        async with one_node(tmp_path) as (cluster, node, http):
            url = cluster.url(0)
            status, body = await anchor(http, url, [digest(i) for i in range(1, 6)])
            assert status == 200, body
            assert node.store is not None
            store = node.store
            honest = store.node

            def damaged(level: int, index: int) -> bytes:
                # A stored node that reads back altered (past its checksum: memory, a bug).
                value = honest(level, index)
                return bytes([value[0] ^ 1]) + value[1:]

            store.node = damaged  # type: ignore[method-assign]
            async with http.get(url + f"/v1/proofs/{digest(2).hex()}") as r:
                assert r.status == 500
                assert (await r.json())["error"]["code"] == "corruption"
            assert node.halted is not None and "ledger db check" in node.halted
            async with http.get(url + "/readyz") as r:
                assert r.status == 503

    run(main())
