"""Receipts prove the earliest moment, on every node, however and whenever fetched (issue 11).

A real 4-validator devnet (one process per node). For many digests the receipt handed out by
anchoring, by a re-anchor seconds later at another node, and by ``GET /v1/proofs`` on every
node (also on a node that was down while some were anchored and caught up afterwards) has the
same index and tree size, a time bound no later than the first receipt's, and verifies offline.
``?against=latest`` is cut against a later checkpoint and carries the first one as an earliest
bridge; every node serves the cosigned checkpoint of each of those sizes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from ledger.policy import Policy, parse_policy
from ledger.receipt import VerifiedReceipt, verify_receipt

from .test_cluster_processes import Devnet, N, eventually, http

pytestmark = pytest.mark.slow

#: Digests anchored while all four run, and while the last node is down.
ALL_UP, ONE_DOWN = 40, 16


def digest(tag: str, k: int) -> bytes:
    return hashlib.sha256(f"earliest {tag} {k}".encode()).digest()


def anchor(net: Devnet, node: int, digests: list[bytes]) -> list[str]:
    code, body = http("POST", net.urls[node] + "/v1/anchors?wait=true",
                      {"digests": [d.hex() for d in digests]}, token=net.token, timeout=60)
    assert code == 200, (code, body, net.log(node))
    receipts = [a.get("receipt") for a in body["anchors"]]
    assert all(isinstance(r, str) for r in receipts), body
    return receipts


def proof(net: Devnet, node: int, d: bytes, against: str = "first") -> str:
    code, text = http("GET", f"{net.urls[node]}/v1/proofs/{d.hex()}?against={against}",
                      timeout=10)
    assert code == 200, (node, code, text)
    assert isinstance(text, str)
    return text


def check_no_weaker(first: VerifiedReceipt, receipt: str, policy: Policy, d: bytes,
                    where: str) -> None:
    """``receipt`` verifies for ``d`` at the same leaf and checkpoint size as ``first``, with a
    time bound no later than ``first``'s."""
    got = verify_receipt(receipt, policy, d)
    assert (got.index, got.size) == (first.index, first.size), where
    assert got.time_bound <= first.time_bound, (where, got.time_bound, first.time_bound)


def test_every_receipt_of_a_digest_proves_the_first_moment(tmp_path: Path) -> None:
    net = Devnet(tmp_path / "D")
    try:
        for i in range(N):
            net.start(i)
        eventually(lambda: all(net.ready(i) for i in range(N)), "all four nodes ready")
        policy = parse_policy((tmp_path / "D" / "trust-policy").read_text())

        # First receipts, from anchoring at each node in turn: small batches, many blocks.
        first: dict[bytes, VerifiedReceipt] = {}
        digests = [digest("up", k) for k in range(ALL_UP)]
        for b in range(0, ALL_UP, 4):
            batch = digests[b:b + 4]
            for d, receipt in zip(batch, anchor(net, (b // 4) % N, batch), strict=True):
                first[d] = verify_receipt(receipt, policy, d)
        assert len({v.size for v in first.values()}) >= ALL_UP // 4  # one checkpoint per block

        # One node goes down; more first receipts while it is away.
        net.terminate(3)
        late = [digest("down", k) for k in range(ONE_DOWN)]
        for b in range(0, ONE_DOWN, 4):
            batch = late[b:b + 4]
            for d, receipt in zip(batch, anchor(net, b // 4 % 3, batch), strict=True):
                first[d] = verify_receipt(receipt, policy, d)
        time.sleep(2)  # seconds later: the latest checkpoint's time bound has moved on

        # A re-anchor at another node: the known digests keep their first receipt's moment.
        everything = digests + late
        for b in range(0, len(everything), 8):
            batch = everything[b:b + 8]
            node = (b // 8 + 1) % 3
            for d, receipt in zip(batch, anchor(net, node, batch), strict=True):
                check_no_weaker(first[d], receipt, policy, d, f"re-anchor at node {node}")

        # The node that was down catches up (blocks and their cosigned checkpoints).
        net.start(3)
        eventually(lambda: net.ready(3), "the restarted node ready", timeout=90)
        height = net.status(0)["height"]
        eventually(lambda: net.status(3)["height"] >= height, "node 3 caught up", timeout=90)

        for i in range(N):
            for d in everything:
                check_no_weaker(first[d], proof(net, i, d), policy, d, f"GET at node {i}")
            for size in sorted({v.size for v in first.values()}):
                code, note = http("GET", f"{net.urls[i]}/v1/checkpoints/{size}", timeout=10)
                assert code == 200, (i, size, code, note)

        # Against the latest checkpoint: a larger tree, with the first one as a bridge.
        newest = net.status(0)["tree_size"]
        for d in everything[:: 7]:
            got = verify_receipt(proof(net, 1, d, against="latest"), policy, d)
            assert got.size >= newest > first[d].size
            assert got.earliest is not None
            assert got.earliest.size == first[d].size
            assert got.earliest.time_bound <= first[d].time_bound
        code, body = http("GET", f"{net.urls[0]}/v1/proofs/{digests[0].hex()}?against=oldest")
        assert code == 400, body
        code, body = http("GET", f"{net.urls[0]}/v1/checkpoints/{newest + 1000}")
        assert code == 404, body
    finally:
        net.stop_all()
