"""The consensus driver's rules (CORE_API.md): Persist before Broadcast, halt on a failed write,
commits stored with their certificates, and the batch window parking an idle node."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from ledger.consensus import Proposal, SafetyState, Step, Vote, decode_message
from ledger.errors import ConfigError, CorruptionError, StorageError
from ledger.node import Node
from ledger.node.server import replica_config
from ledger.replica import Replica
from ledger.replica.safety_log import SAFETY_KEY
from ledger.replica.wire import KIND_CONSENSUS

from .harness import auth, client_session, digest, eventually, make_cluster, run


def test_every_signed_message_is_persisted_before_it_is_sent(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        events: list[tuple[str, bytes]] = []
        store = cluster.stores[0]
        original_put = store.put_meta

        def put_meta(items):  # type: ignore[no-untyped-def]
            value = items.get(SAFETY_KEY)
            if value is not None:
                events.append(("persist", value))
            original_put(items)

        store.put_meta = put_meta  # type: ignore[method-assign]
        await cluster.start_all()
        node = cluster.node(0)
        original_send = node.transport.send

        def send(to: str | None, kind: int, payload: bytes) -> None:
            if kind == KIND_CONSENSUS:
                events.append(("send", payload))
            original_send(to, kind, payload)

        node.transport.send = send  # type: ignore[method-assign]
        try:
            async with client_session() as http:
                for k in range(3):
                    async with http.post(cluster.url(k % 4) + "/v1/anchors?wait=true",
                                         json={"digests": [digest(k).hex()]},
                                         headers=auth()) as r:
                        assert r.status == 200
            me = cluster.keys[0].consensus_key.public_key
            persisted: set[bytes] = set()
            own_sent = 0
            for kind, data in events:
                if kind == "persist":
                    persisted.add(SafetyState.decode(data).signed)
                    continue
                msg = decode_message(data)
                if isinstance(msg, Proposal | Vote) and msg.validator == me:
                    own_sent += 1
                    assert data in persisted, "a signed message left before it was persisted"
            assert own_sent >= 3  # it did sign and send votes of several heights
        finally:
            await cluster.stop_all()

    run(main())


def test_a_failed_persist_halts_the_node_and_nothing_more_is_sent(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=False)
        node = await cluster.start(0)
        try:
            store = cluster.stores[0]

            def broken(items):  # type: ignore[no-untyped-def]
                raise StorageError("disk full (test)")

            store.put_meta = broken  # type: ignore[method-assign]
            height = store.last_height()
            async with client_session() as http:
                async with http.post(cluster.url(0) + "/v1/anchors",
                                     json={"digests": [digest(1).hex()]}, headers=auth()) as r:
                    assert r.status == 202
                await eventually(lambda: node.halted is not None, what="the node to halt")
                assert node.halted is not None and "disk full" in node.halted
                assert store.last_height() == height  # the height never committed
                async with http.get(cluster.url(0) + "/healthz") as r:
                    assert r.status == 503
        finally:
            await cluster.stop_all()

    run(main())


def test_idle_cluster_makes_no_empty_blocks(tmp_path: Path) -> None:
    """After the start-up block, a cluster with nothing to anchor parks instead of committing
    empty heights; one anchor starts exactly the heights it needs."""

    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        await cluster.start_all()
        try:
            async with client_session() as http:
                async with http.post(cluster.url(1) + "/v1/anchors?wait=true",
                                     json={"digests": [digest(1).hex()]}, headers=auth()) as r:
                    assert r.status == 200
                stores = cluster.stores
                await eventually(lambda: len({s.last_height() for s in stores}) == 1,
                                 what="equal heights")
                height = stores[0].last_height()
                await asyncio.sleep(1.5)  # a bounded observation: three housekeeping ticks
                assert {s.last_height() for s in stores} == {height}
                for s in stores:
                    record = s.block(height)
                    assert record is not None and record.certificate
        finally:
            await cluster.stop_all()

    run(main())


def test_one_lying_peer_cannot_hold_a_node_in_catch_up(tmp_path: Path) -> None:
    """Peer heights are unverified claims: the node trusts the (f + 1)-th highest."""
    cluster = make_cluster(tmp_path, lmdb=False)
    replica = Replica(replica_config(cluster.configs[0], [cluster.keys[0]]), cluster.stores[0])
    peers = list(replica.sync.peers)
    for peer, height in zip(peers, (10**9, 0, 0), strict=True):
        peer.height = height
    assert replica.sync.target() == 0
    peers[1].height = 5
    assert replica.sync.target() == 5


def test_a_store_whose_safety_record_outlived_its_blocks_is_refused(tmp_path: Path) -> None:
    """Signing again at heights the safety record covers could double-sign: refuse to start."""

    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=False)
        store = cluster.stores[0]
        record = SafetyState(height=5, round=0, step=Step.PREVOTE)
        store.put_meta({SAFETY_KEY: record.encode()})
        node = Node(cluster.configs[0], keys=cluster.keys[0], store=store)
        with pytest.raises(CorruptionError):
            await node.start()
        await node.stop()
        await cluster.stop_all()

    run(main())


def test_a_data_directory_of_another_chain_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        first = make_cluster(tmp_path / "a", n=1)
        await first.start(0)
        async with (
            client_session() as http,
            http.post(first.url(0) + "/v1/anchors?wait=true",
                      json={"digests": [digest(1).hex()]}, headers=auth()) as r,
        ):
            assert r.status == 200
        await first.stop_all()
        other = make_cluster(tmp_path / "b", n=1)  # fresh keys: another validator set
        config = dataclasses.replace(other.configs[0], data_dir=first.configs[0].data_dir)
        node = Node(config, keys=other.keys[0])
        with pytest.raises(ConfigError, match="did not make"):
            await node.start()
        await node.stop()
        await other.stop_all()

    run(main())
