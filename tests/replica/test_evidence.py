"""Equivocation evidence is kept across restarts and served (issue 11 item 7)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from node.harness import auth, client_session, make_cluster, run

from ledger.consensus import DuplicateVoteEvidence, Ed25519Signer, Vote, VoteType
from ledger.node.server import replica_config
from ledger.replica import Replica
from ledger.replica.wire import KIND_CONSENSUS, seal_envelope


def _equivocate(cluster_keys: list, height: int, round: int = 7) -> list[bytes]:  # type: ignore[type-arg]
    # Validator v2 prevotes a block and nil in one (height, round): a round no honest
    # validator reaches in these tests, so the only conflict is this one.
    signer = Ed25519Signer(seed=cluster_keys[1].consensus_key.seed)
    votes = [Vote.create(signer, type=VoteType.PREVOTE, chain_id="node-test", height=height,
                         round=round, block_hash=h, timestamp=1) for h in (b"\x01" * 32, None)]
    return [v.encode() for v in votes]


def test_evidence_survives_a_restart_and_names_the_culprit(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, lmdb=False)
    config = replica_config(cluster.configs[0], [cluster.keys[0]])
    store = cluster.stores[0]
    replica = Replica(config, store)
    replica.start(1_000)
    envelope = seal_envelope(key=cluster.keys[1].consensus_key, chain_id="node-test", height=0,
                             seq=1, items=[(KIND_CONSENSUS, v) for v in
                                           _equivocate(cluster.keys, 1)])
    name, opened = replica.open(envelope, 1_001)
    replica.deliver(name, opened, 1_002)
    [item] = replica.evidence()
    assert item["name"] == "v2" and item["height"] == 1 and item["type"] == "prevote"
    assert sorted(item["block_hashes"], key=str) == ["01" * 32, None]

    again = Replica(config, store)  # a restart: the core's pool is empty, the store is not
    again.start(2_000)
    assert again.evidence() == [item]
    evidence = DuplicateVoteEvidence.decode(base64.b64decode(item["evidence"]))
    evidence.verify(again.driver.validators.roster_at(1).validator_set, "node-test")


def test_evidence_is_served_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        await cluster.start_all()
        try:
            core = cluster.node(0).replica.driver.core
            envelope = seal_envelope(key=cluster.keys[1].consensus_key, chain_id="node-test",
                                     height=0, seq=99, items=[
                                         (KIND_CONSENSUS, v)
                                         for v in _equivocate(cluster.keys, core.height)])
            async with client_session() as http:
                async with http.post(cluster.url(0) + "/peer/v1/messages",
                                     data=envelope) as r:
                    assert r.status == 204
                for _ in range(100):
                    async with http.get(cluster.url(0) + "/v1/evidence") as r:
                        body = await r.json()
                    if body["count"]:
                        break
                    await asyncio.sleep(0.05)
                assert body["count"] == 1, body
                assert (body["evidence"][0]["name"], body["evidence"][0]["round"]) == ("v2", 7)
                async with http.get(cluster.url(0) + "/v1/status", headers=auth()) as r:
                    assert (await r.json())["evidence"] == 1
                async with http.get(cluster.url(0) + "/metrics") as r:
                    assert "ledger_evidence 1.0" in await r.text()
        finally:
            await cluster.stop_all()

    run(main())
