"""Four real nodes in one event loop on 127.0.0.1: anchoring, receipts, agreement, restart."""

from __future__ import annotations

from pathlib import Path

from ledger.checkpoint import parse_checkpoint_body
from ledger.note import parse_note
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt

from .harness import auth, client_session, digest, eventually, make_cluster, run


def _body(note: str) -> str:
    return parse_note(note).text


def test_four_nodes_anchor_on_different_nodes_and_agree(tmp_path: Path) -> None:
    """Digests sent to every node get receipts that verify against the trust policy, and all
    nodes end on the same cosigned tree head."""

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        await cluster.start_all()
        try:
            async with client_session() as http:
                async with http.get(cluster.url(0) + "/v1/policy") as r:
                    policy = parse_policy(await r.text())
                receipts: dict[bytes, str] = {}
                for i in range(4):
                    batch = [digest(k, f"node{i}") for k in range(5)]
                    async with http.post(
                        cluster.url(i) + "/v1/anchors?wait=true",
                        json={"digests": [d.hex() for d in batch]}, headers=auth(),
                    ) as r:
                        assert r.status == 200, await r.text()
                        body = await r.json()
                    for d, item in zip(batch, body["anchors"], strict=True):
                        assert item["digest"] == d.hex() and item["status"] == "anchored"
                        receipts[d] = item["receipt"]
                indices = set()
                for d, text in receipts.items():
                    verified = verify_receipt(text, policy, d)
                    indices.add(verified.index)
                assert indices == set(range(20))  # 20 distinct leaves, none twice

                async def same_head() -> bool:
                    bodies = set()
                    for i in range(4):
                        async with http.get(cluster.url(i) + "/v1/checkpoint") as r:
                            if r.status != 200:
                                return False
                            bodies.add(_body(await r.text()))
                    return len(bodies) == 1 and parse_checkpoint_body(
                        bodies.pop()).size == 20
                await eventually(same_head, what="the same checkpoint on every node")
        finally:
            await cluster.stop_all()

    run(main())


def test_late_empty_node_and_restarted_node_catch_up(tmp_path: Path) -> None:
    """A validator that starts empty after the others committed, and one restarted from its
    LMDB directory after missing blocks, both fetch the blocks with certificates, end on the
    same checkpoint and become ready; anchoring through them then works."""

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        for i in range(3):
            await cluster.start(i)
        try:
            async with client_session() as http:
                policy = parse_policy(cluster.genesis.trust_policy())

                async def anchor(i: int, salt: str, count: int) -> None:
                    batch = [digest(k, salt) for k in range(count)]
                    async with http.post(
                        cluster.url(i) + "/v1/anchors?wait=true",
                        json={"digests": [d.hex() for d in batch]}, headers=auth(),
                    ) as r:
                        assert r.status == 200, await r.text()
                        body = await r.json()
                    for d, item in zip(batch, body["anchors"], strict=True):
                        verify_receipt(item["receipt"], policy, d)

                async def agreed(nodes: range) -> bool:
                    bodies = set()
                    for i in nodes:
                        async with http.get(cluster.url(i) + "/v1/checkpoint") as r:
                            if r.status != 200:
                                return False
                            bodies.add(_body(await r.text()))
                    return len(bodies) == 1

                async def ready(i: int) -> bool:
                    async with http.get(cluster.url(i) + "/readyz") as r:
                        return r.status == 200

                for k in range(3):  # three heights without validator 4
                    await anchor(k % 3, f"early{k}", 4)
                late = await cluster.start(3)
                assert late.store is not None
                await eventually(lambda: ready(3), what="the late node ready")
                await eventually(lambda: agreed(range(4)), what="the late node's checkpoint")
                assert late.store.size == 12
                # three heights behind: fetched, not gossiped
                assert late.replica.stats.blocks_fetched >= 2

                await cluster.stop(3)
                for k in range(2):
                    await anchor(k, f"while-down{k}", 3)
                back = await cluster.start(3)
                assert back.store is not None
                await eventually(lambda: ready(3), what="the restarted node ready")
                await eventually(lambda: agreed(range(4)), what="the restarted node's checkpoint")
                assert back.store.size == 18
                assert back.replica.stats.blocks_fetched >= 1

                def same_height() -> bool:
                    stores = [cluster.node(i).store for i in range(4)]
                    return len({s.last_height() for s in stores if s is not None}) == 1
                # (a restarted proposer may add an empty block: heights agree, eventually)
                await eventually(same_height, what="the same height everywhere")
                await anchor(3, "via-restarted", 5)
                await eventually(lambda: agreed(range(4)), what="agreement after the restart")
        finally:
            await cluster.stop_all()

    run(main())
