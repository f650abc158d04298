"""Operator-facing behaviour of the node (issue 6 item 4): graceful shutdown, no signing
before the initial catch-up, and consensus log lines that name their height and round."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from ledger.consensus import Proposal, Vote, decode_message
from ledger.node import Node
from ledger.node.peers import HttpTransport
from ledger.replica.wire import KIND_CONSENSUS

from .harness import auth, client_session, digest, eventually, make_cluster, run


def test_shutdown_refuses_anchors_and_cuts_waits_short_with_202(tmp_path: Path) -> None:
    """While draining: new anchors get 503 and change nothing; a waiting request that cannot
    be anchored (no quorum: one node of four) is answered 202, never 200."""

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        node = await cluster.start(0)
        try:
            async with client_session() as http:
                waiting = asyncio.create_task(http.post(
                    cluster.url(0) + "/v1/anchors?wait=true",
                    json={"digests": [digest(1).hex()]}, headers=auth()))
                await eventually(lambda: node.waiting_requests() == 1, what="the request to wait")
                shutdown = asyncio.create_task(node.shutdown(grace=1.0))
                await eventually(lambda: node.draining, what="draining")
                pending = len(node.replica.driver.mempool)
                async with http.post(cluster.url(0) + "/v1/anchors",
                                     json={"digests": [digest(2).hex()]}, headers=auth()) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == "unavailable"
                assert len(node.replica.driver.mempool) == pending  # nothing taken
                async with await waiting as r:
                    assert r.status == 202
                    body = await r.json()
                assert body["anchors"][0]["status"] == "pending"
                assert body["anchors"][0]["receipt"] is None
                await shutdown
        finally:
            cluster.nodes[0] = None
            await cluster.stop_all()

    run(main())


def test_restart_after_graceful_shutdown_loses_no_acknowledged_anchor(tmp_path: Path) -> None:
    """Requests in flight when node 1 shuts down: every digest answered 200 is in its store,
    under a stored quorum checkpoint, after it restarts."""

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        await cluster.start_all()
        acknowledged: list[bytes] = []
        try:
            async with client_session() as http:

                async def send(k: int) -> int:
                    batch = [digest(j, f"req{k}") for j in range(20)]
                    try:
                        async with http.post(cluster.url(0) + "/v1/anchors?wait=true",
                                             json={"digests": [d.hex() for d in batch]},
                                             headers=auth()) as r:
                            if r.status == 200:
                                acknowledged.extend(batch)
                            return r.status
                    except aiohttp.ClientError:
                        return 0

                first = await send(-1)
                assert first == 200
                tasks = [asyncio.create_task(send(k)) for k in range(40)]
                await asyncio.sleep(0.05)
                await cluster.node(0).shutdown(grace=2.0)
                cluster.nodes[0] = None
                statuses = await asyncio.gather(*tasks)
                assert set(statuses) <= {0, 200, 202, 503}
                restarted = await cluster.start(0)
                store = restarted.store
                assert store is not None
                assert restarted.replica.checkpoint is not None
                covered = restarted.replica.checkpoint[0]
                indices = store.index_of_many(acknowledged)
                assert None not in indices
                assert all(i is not None and i < covered for i in indices)
                assert len(acknowledged) >= 20
        finally:
            await cluster.stop_all()

    run(main())


def test_a_validator_restored_from_an_old_backup_signs_nothing_it_may_have_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validator 4 restored from a backup taken heights ago catches up as a follower first:
    it signs no proposal or vote for a height the others had reached, then signs again."""
    sent: list[tuple[str, bytes]] = []
    original = HttpTransport.send

    def recording(self: HttpTransport, to: str | None, kind: int, payload: bytes) -> None:
        if kind == KIND_CONSENSUS:
            assert isinstance(self._host, Node)
            sent.append((self._host.keys.name, payload))
        original(self, to, kind, payload)

    monkeypatch.setattr(HttpTransport, "send", recording)

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        await cluster.start_all()
        try:
            async with client_session() as http:

                async def anchor(i: int, salt: str) -> None:
                    async with http.post(cluster.url(i) + "/v1/anchors?wait=true",
                                         json={"digests": [digest(k, salt).hex()
                                                           for k in range(3)]},
                                         headers=auth()) as r:
                        assert r.status == 200, await r.text()

                await anchor(0, "before-backup")
                await cluster.stop(3)
                data = cluster.configs[3].data_dir
                backup = tmp_path / "backup"
                shutil.copytree(data, backup)
                await cluster.start(3)
                for k in range(4):  # validator 4 signs at these heights
                    await anchor(k % 4, f"after-backup{k}")
                await cluster.stop(3)
                shutil.rmtree(data)
                shutil.copytree(backup, data)
                reached = max(cluster.node(i).store.last_height()  # type: ignore[union-attr]
                              for i in range(3))
                sent.clear()
                restored = await cluster.start(3)

                async def ready() -> bool:
                    async with http.get(cluster.url(3) + "/readyz") as r:
                        return r.status == 200

                await eventually(ready, what="the restored validator ready")
                assert restored.replica.sync.signing
                for k in range(4):
                    await anchor(k % 4, f"after-restore{k}")
                me = cluster.keys[3].consensus_key.public_key
                own = [m for name, data in sent if name == cluster.keys[3].name
                       for m in [decode_message(data)]
                       if isinstance(m, Proposal | Vote) and m.validator == me]
                assert own, "the restored validator never signed again"
                assert min(m.height for m in own) > reached
        finally:
            await cluster.stop_all()

    run(main())


def test_consensus_log_lines_carry_height_and_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ledger.replica")

    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        await cluster.start_all()
        try:
            async with client_session() as http, http.post(
                cluster.url(1) + "/v1/anchors?wait=true",
                json={"digests": [digest(1).hex()]}, headers=auth(),
            ) as r:
                assert r.status == 200
        finally:
            await cluster.stop_all()

    run(main())
    records = [r.getMessage() for r in caplog.records if r.name == "ledger.replica"]
    assert any("committed block" in m for m in records)
    assert any("signing as a validator" in m for m in records)
    prefix = re.compile(r"\[height \d+ round \d+\] v\d: ")
    assert all(prefix.match(m) for m in records), [m for m in records if not prefix.match(m)]


def test_a_hot_backup_taken_under_load_restores_into_a_node_that_verifies_and_rejoins(
    tmp_path: Path,
) -> None:
    """Issue 6: `ledger db backup` semantics (a hot copy from the running node's own store)
    while anchors keep arriving; the backup restores into validator 4's data dir, passes the
    full `db check`, and the node started on it catches up, becomes ready and serves receipts
    that verify, including for anchors made after the backup."""
    from ledger.dbtools import backup_store, check_database, restore
    from ledger.policy import parse_policy
    from ledger.receipt import verify_receipt

    async def main() -> None:
        cluster = make_cluster(tmp_path)
        await cluster.start_all()
        try:
            async with client_session() as http:

                async def anchor(i: int, salt: str, n: int = 5) -> None:
                    async with http.post(cluster.url(i) + "/v1/anchors?wait=true",
                                         json={"digests": [digest(k, salt).hex()
                                                           for k in range(n)]},
                                         headers=auth()) as r:
                        assert r.status == 200, await r.text()

                await anchor(0, "before")
                # Load in flight on every node while the backup is taken.
                load = asyncio.gather(*(anchor(k % 4, f"load{k}") for k in range(8)))
                store = cluster.node(3).store
                assert store is not None
                result = await asyncio.to_thread(backup_store, store, tmp_path / "backup")
                await load
                assert result.height >= 1
                await cluster.stop(3)
                data = cluster.configs[3].data_dir
                await asyncio.to_thread(restore, tmp_path / "backup", data, force=True,
                                        genesis=cluster.genesis)
                report = await asyncio.to_thread(check_database, data, cluster.genesis)
                assert report.blocks == result.height
                await anchor(1, "while-down")
                await cluster.start(3)

                async def ready() -> bool:
                    async with http.get(cluster.url(3) + "/readyz") as r:
                        return r.status == 200

                await eventually(ready, what="the restored validator ready")
                await anchor(3, "after")
                policy = parse_policy(cluster.genesis.trust_policy())
                for salt in ("before", "load0", "while-down", "after"):
                    async with http.get(cluster.url(3) + f"/v1/proofs/{digest(0, salt).hex()}") \
                            as r:
                        assert r.status == 200, await r.text()
                        verify_receipt(await r.text(), policy, digest(0, salt))
        finally:
            await cluster.stop_all()

    run(main())
