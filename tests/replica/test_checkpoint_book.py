"""Every block's cosigned checkpoint ends up stored on every node (issue 11 item 1).

A node restored from a backup taken after a block was stored but before its checkpoint note
was (the note comes a few milliseconds later, from the cosignatures) fetches that note from a
peer, and until it holds it answers "committed" for the block's digests rather than cut a
receipt against a later checkpoint.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.harness import auth, client_session, digest, eventually, make_cluster, run

from ledger.policy import parse_policy
from ledger.prover import trust_policy
from ledger.receipt import verify_receipt
from ledger.replica.checkpoints import PENDING_KEY
from ledger.storage import MemoryStore


def _drop_note(store: MemoryStore, size: int) -> None:
    """What a backup taken between the block and its note holds: the block, not the note."""
    del store._checkpoints[size]  # the test plays the backup tool


def test_a_restored_node_fetches_the_note_its_backup_missed(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        await cluster.start_all()
        policy = parse_policy(trust_policy(cluster.keys))
        try:
            async with client_session() as http:
                receipts = {}
                for k in range(3):  # three blocks, one digest each
                    d = digest(k, "restore")
                    async with http.post(cluster.url(0) + "/v1/anchors?wait=true",
                                         json={"digests": [d.hex()]}, headers=auth()) as r:
                        assert r.status == 200, await r.text()
                        receipts[d] = (await r.json())["anchors"][0]["receipt"]
                last = digest(2, "restore")
                first = verify_receipt(receipts[last], policy, last)
                store = cluster.stores[3]
                await eventually(lambda: store.checkpoint(first.size) is not None,
                                 what="node 4 holds the last block's note")
                await cluster.stop(3)
                _drop_note(store, first.size)
                assert store.get_meta(PENDING_KEY)  # written with each block
                # Meanwhile the others commit more: a later checkpoint exists everywhere.
                async with http.post(cluster.url(1) + "/v1/anchors?wait=true",
                                     json={"digests": [digest(9, "restore").hex()]},
                                     headers=auth()) as r:
                    assert r.status == 200
                await cluster.start(3)
                url = cluster.url(3)

                async def answer() -> tuple[int, str]:
                    async with http.get(f"{url}/v1/proofs/{last.hex()}") as r:
                        return r.status, await r.text()

                seen = set()
                for _ in range(400):
                    status, text = await answer()
                    seen.add(status)
                    if status == 200:
                        got = verify_receipt(text, policy, last)
                        # never a receipt against a later checkpoint
                        assert (got.index, got.size) == (first.index, first.size)
                        assert got.time_bound <= first.time_bound
                        break
                    assert status == 202, text
                    await asyncio.sleep(0.05)
                assert 200 in seen, seen
                assert store.checkpoint(first.size) is not None
        finally:
            await cluster.stop_all()

    run(main())
