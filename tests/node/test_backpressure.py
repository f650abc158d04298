"""Backpressure: a node refuses clients' new anchors (503, ``Retry-After``) while its backlog
is longer than ``max_pending_digests``, and still takes its peers' gossip."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.config import BatchLimits
from ledger.node.server import replica_config
from ledger.replica.batching import Mempool, OverloadedError
from ledger.replica.config import MIN_CLIENT_BACKLOG
from ledger.replica.wire import KIND_GOSSIP, encode_gossip, seal_envelope

from .harness import auth, client_session, digest, make_cluster, run


def test_mempool_limit_is_per_add_and_whole() -> None:
    pool = Mempool(capacity=10)
    assert pool.add([digest(i) for i in range(3)], limit=4) == [digest(i) for i in range(3)]
    with pytest.raises(OverloadedError):
        pool.add([digest(i) for i in range(3, 5)], limit=4)  # nothing of it is taken
    assert len(pool) == 3
    assert pool.add([digest(1), digest(3)], limit=4) == [digest(3)]  # repeats do not count
    assert len(pool.add([digest(i) for i in range(4, 10)])) == 6  # the capacity, no limit
    with pytest.raises(OverloadedError):
        pool.add([digest(10)])


def test_default_client_backlog_is_four_blocks_at_least_twenty_thousand(tmp_path: Path) -> None:
    small = make_cluster(tmp_path / "a", batch=BatchLimits(max_batch_digests=100))
    big = make_cluster(tmp_path / "b", batch=BatchLimits(max_batch_digests=50_000))
    assert replica_config(small.configs[0], small.keys[:1]).client_limit == MIN_CLIENT_BACKLOG
    assert replica_config(big.configs[0], big.keys[:1]).client_limit == 200_000


def test_clients_refused_with_retry_after_while_gossip_still_taken(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False, batch=BatchLimits(
            max_batch_digests=100, batch_window_ms=20, max_pending_digests=5))
        node = await cluster.start(0)  # alone: nothing commits, the backlog stays
        try:
            url = cluster.url(0) + "/v1/anchors"
            async with client_session() as http:
                async with http.post(url, json={"digests": [digest(i).hex() for i in range(5)]},
                                     headers=auth()) as r:
                    assert r.status == 202, await r.text()
                async with http.post(url, json={"digests": [digest(9).hex()]},
                                     headers=auth()) as r:
                    assert r.status == 503
                    assert r.headers["Retry-After"] == "1"
                    assert (await r.json())["error"]["code"] == "overloaded"
                assert digest(9) not in node.replica.driver.mempool
                envelope = seal_envelope(
                    key=cluster.keys[1].consensus_key, chain_id=cluster.genesis.chain_id,
                    height=0, seq=1, items=[(KIND_GOSSIP, encode_gossip([digest(20)]))])
                async with http.post(cluster.url(0) + "/peer/v1/messages",
                                     data=envelope) as r:
                    assert r.status == 204
                assert digest(20) in node.replica.driver.mempool
        finally:
            await cluster.stop_all()

    run(main())
