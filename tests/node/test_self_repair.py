"""A node whose store is damaged finds the damage, repairs it from its peers, and never serves
a wrong answer or a 404 for an anchored digest meanwhile (issue 16, item 4).

Every test runs real LMDB stores and real HTTP between the nodes on 127.0.0.1. One byte of a
stored value is flipped under a valid B-tree (raw LMDB, from another process, as bit rot would
while the node runs; or in the files of a stopped node). Then: a read that needs the value
answers ``503 store_damaged`` or, once repaired, the right answer; the scrub finds what no read
touched; the node fetches the value from the other validators, verifies it, rewrites it, and
every receipt of every anchored digest verifies again, on the damaged node too. Damage that
cannot be repaired (no peer) stops the node with one line naming the value and the fix.

The last test is the same on real node processes (``ledger node``): a stopped node's data file
gets a flipped byte, it restarts, repairs from its peers, and every receipt verifies.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ledger.config import StorageSettings, format_node_config, load_node_config
from ledger.errors import CorruptionError
from ledger.node.repair import peer_tile_nodes
from ledger.policy import Policy, parse_policy
from ledger.receipt import verify_receipt
from ledger.storage import Damage, LmdbStore
from ledger.storage._index import IndexParams
from ledger.storage.lmdb_store import DEFAULT_MAP_SIZE
from node.harness import Cluster, auth, client_session, eventually, make_cluster, run

#: A digest index small enough for a few hundred leaves to exercise all of it.
SMALL = IndexParams(stripe_bits=5, flush=4, fanout=4, filter_bits=3, persist_every=2)
#: Fast enough that a test's whole store is re-verified many times a second.
FAST_SCRUB = StorageSettings(scrub_units_per_second=200_000)

_FLIP = """
import lmdb, sys
path, db, key, offset = sys.argv[1], sys.argv[2].encode(), bytes.fromhex(sys.argv[3]), \\
    int(sys.argv[4])
env = lmdb.open(path, max_dbs=40, map_size=int(sys.argv[5]))
handle = env.open_db(db, create=False)
with env.begin(write=True) as txn:
    value = bytearray(txn.get(key, db=handle))
    value[offset % (len(value) - 4)] ^= 0x10
    txn.put(key, bytes(value), db=handle)
env.close()
"""


def flip(path: Path, db: bytes, key: bytes, offset: int = 5) -> None:
    """Flip one payload byte of a stored value (its checksum left as it was), from another
    process: the node may hold the store open."""
    subprocess.run([sys.executable, "-c", _FLIP, str(path), db.decode(), key.hex(),
                    str(offset), str(DEFAULT_MAP_SIZE)], check=True, timeout=60)


_KEYS = """
import lmdb, sys
env = lmdb.open(sys.argv[1], max_dbs=40, map_size=int(sys.argv[3]), readonly=True)
with env.begin() as txn:
    for key, _ in txn.cursor(db=env.open_db(sys.argv[2].encode(), txn=txn, create=False)):
        print(bytes(key).hex())
env.close()
"""


def keys_of(path: Path, db: bytes) -> list[bytes]:
    """The keys of one named database, read from another process."""
    done = subprocess.run([sys.executable, "-c", _KEYS, str(path), db.decode(),
                           str(DEFAULT_MAP_SIZE)], check=True, timeout=60,
                          capture_output=True, text=True)
    return [bytes.fromhex(line) for line in done.stdout.split()]


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def digest(tag: str, k: int) -> bytes:
    return hashlib.sha256(f"self-repair {tag} {k}".encode()).digest()


def fast_cluster(tmp: Path, n: int = 4) -> Cluster:
    """``n`` validators on LMDB stores with a tiny digest index (a few hundred anchors fill
    stripes, runs and filters) and a fast scrub."""
    cluster = make_cluster(tmp, n=n, lmdb=True)
    cluster.configs = [dataclasses.replace(c, storage=FAST_SCRUB) for c in cluster.configs]
    for config in cluster.configs:
        config.data_dir.mkdir(parents=True)
        LmdbStore.open(config.data_dir, index_params=SMALL).close()
    return cluster


async def anchor(http: Any, url: str, digests: list[bytes]) -> dict[bytes, str]:
    async with http.post(url + "/v1/anchors?wait=true", headers=auth(),
                         json={"digests": [d.hex() for d in digests]}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    return {d: a["receipt"] for d, a in zip(digests, body["anchors"], strict=True)}


async def proof(http: Any, url: str, d: bytes) -> tuple[int, str]:
    async with http.get(f"{url}/v1/proofs/{d.hex()}") as r:
        return r.status, await r.text()


async def all_verify(http: Any, url: str, digests: list[bytes], policy: Policy) -> bool:
    """Every digest's receipt from ``url`` verifies; a 503 is "not yet"; anything else (a
    404, a wrong receipt) fails the test."""
    for d in digests:
        status, text = await proof(http, url, d)
        if status == 503:
            assert "store_damaged" in text or "not running" in text, text
            return False
        assert status == 200, (status, text)
        verify_receipt(text, policy, d)
    return True


def test_every_kind_of_damage_is_repaired_while_serving(tmp_path: Path) -> None:
    cluster = fast_cluster(tmp_path)
    policy = parse_policy(cluster.genesis.trust_policy())
    data = cluster.configs[3].data_dir

    async def main() -> None:
        await cluster.start_all()
        try:
            async with client_session() as http:
                anchored: dict[bytes, str] = {}
                for b in range(4):
                    anchored |= await anchor(http, cluster.url(b % 4),
                                             [digest(f"b{b}", k) for k in range(70)])
                digests = list(anchored)
                node = cluster.node(3)
                store = node.store
                assert isinstance(store, LmdbStore)
                await eventually(lambda: all(cluster.node(i).store.size == len(digests)  # type: ignore[union-attr]
                                             for i in range(4)), what="all nodes hold all")
                await eventually(lambda: node.care.scrub_passes >= 1, what="a first pass")
                assert node.care.damaged == {} and node.care.repairs == {}

                # Bit rot in a leaf tile, a block and a checkpoint of the running node.
                # 280 leaves: 17 full leaf tiles and an edge of 8, a full stratum-1 tile.
                flip(data, b"tiles00", u64(2), 100)  # leaves 32-47
                flip(data, b"tiles01", u64(0), 300)  # level-4 nodes over leaves 0-255
                flip(data, b"edge", bytes((0,)), 40)  # leaves 272-279
                flip(data, b"blocks", u64(2))  # the block
                flip(data, b"blocks", u64(3), -10)  # its certificate
                flip(data, b"checkpoints", u64(store.checkpoint_sizes()[0]))
                flip(data, b"stripes", keys_of(data, b"stripes")[1])  # index entries
                flip(data, b"filters", keys_of(data, b"filters")[0])

                # A read of a damaged leaf: 503 (being repaired) or, once repaired, the
                # right receipt; never a 404, a 500 or a receipt that does not verify.
                status, text = await proof(http, cluster.url(3), digests[40])
                assert status in (200, 503), (status, text)
                if status == 200:
                    verify_receipt(text, policy, digests[40])
                else:  # it names what it met: the leaf's tile or the index run of it
                    assert "store_damaged" in text and ("tiles00/2" in text or "runs/" in text
                                                        or "stripes/" in text), text

                # Every damaged value is found (read or scrub) and repaired from the peers.
                try:
                    await eventually(lambda: node.care.repairs["peer"] >= 6
                                     and node.care.repairs["local"] >= 2, timeout=20)
                except AssertionError:
                    raise AssertionError(f"repairs {node.care.repairs}, found {node.care.found}, "
                                         f"left {list(node.care.damaged)}") from None
                assert set(node.care.found) >= {"tile", "block", "checkpoint", "index",
                                                "filter"}, node.care.found
                await eventually(lambda: all_verify(http, cluster.url(3), digests, policy),
                                 timeout=30, what="every receipt verifies on node 3")
                store.check()  # the whole store checks clean
                for d, receipt in anchored.items():  # receipts issued before still verify
                    verify_receipt(receipt, policy, d)

                # The node is still in consensus: a new anchor commits through it.
                await eventually(lambda: node.halted is None, timeout=30,
                                 what=f"running ({node.halted}, {node.care.damaged})")
                more = await anchor(http, cluster.url(3), [digest("after", k) for k in range(5)])
                for d, receipt in more.items():
                    verify_receipt(receipt, policy, d)
                async with http.get(cluster.url(3) + "/metrics") as r:
                    metrics = await r.text()
                assert 'ledger_store_repairs_total{source="peer"}' in metrics
                assert "ledger_scrub_passes_total" in metrics
                async with http.get(cluster.url(3) + "/v1/status") as r:
                    status_body = await r.json()
                assert status_body["storage"]["state"] == "ok", status_body
        finally:
            await cluster.stop_all()

    run(main())


def test_a_stopped_nodes_damaged_last_block_is_repaired_at_start(tmp_path: Path) -> None:
    # The last block is what the replica reads to start: the start repairs it first.
    cluster = fast_cluster(tmp_path)
    policy = parse_policy(cluster.genesis.trust_policy())
    data = cluster.configs[2].data_dir

    async def main() -> None:
        await cluster.start_all()
        try:
            async with client_session() as http:
                anchored = await anchor(http, cluster.url(0), [digest("s", k) for k in range(30)])
                await eventually(lambda: cluster.node(2).store.size == 30,  # type: ignore[union-attr]
                                 what="node 2 holds all")
                await cluster.stop(2)
                heights = keys_of(data, b"blocks")
                flip(data, b"blocks", heights[-1])
                flip(data, b"tiles00", u64(0), 40)
                node = await cluster.start(2)
                assert node.care.repairs["peer"] >= 1
                await eventually(lambda: node.care.repairs["peer"] >= 2 and not node.care.damaged,
                                 timeout=30, what="both repaired")
                await eventually(lambda: all_verify(http, cluster.url(2), list(anchored), policy),
                                 timeout=30, what="every receipt verifies on node 2")
                store = node.store
                assert isinstance(store, LmdbStore)
                store.check()
        finally:
            await cluster.stop_all()

    run(main())


def lying_proxy(real: str) -> web.Application:
    """A peer that forwards everything to ``real`` but alters what a repair fetches: every
    digest of an entry bundle, the bytes of a block, the root of a checkpoint."""
    session: list[aiohttp.ClientSession] = []

    async def forward(request: web.Request) -> web.Response:
        if not session:
            session.append(aiohttp.ClientSession())
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("authorization", "content-type", "accept")}
        async with session[0].request(request.method, real + request.path_qs,
                                      data=await request.read(), headers=headers) as r:
            body, status, kind = await r.read(), r.status, r.content_type
        path = request.path
        if status == 200 and path.startswith("/tile/entries/"):
            altered = bytearray(body)
            for at in range(10, len(altered), 34):  # one byte of every digest
                altered[at] ^= 1
            body = bytes(altered)
        elif status == 200 and path.startswith("/v1/blocks/"):
            obj = json.loads(body)
            raw = bytearray(base64.b64decode(obj["block"]))
            raw[-3] ^= 1
            obj["block"] = base64.b64encode(bytes(raw)).decode()
            body = json.dumps(obj).encode()
        elif status == 200 and path.startswith("/v1/checkpoints/"):
            lines = body.decode().split("\n")
            lines[2] = base64.b64encode(bytes(32)).decode()  # another root, same signatures
            body = "\n".join(lines).encode()
        return web.Response(body=body, status=status, content_type=kind)

    async def close(_: web.Application) -> None:
        for s in session:
            await s.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    return app


def test_a_lying_peer_is_not_believed_and_another_repairs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cluster = fast_cluster(tmp_path)
    policy = parse_policy(cluster.genesis.trust_policy())
    data = cluster.configs[3].data_dir

    async def main() -> None:
        await cluster.start_all()
        runner: web.AppRunner | None = None
        try:
            async with client_session() as http:
                anchored = await anchor(http, cluster.url(0), [digest("lie", k) for k in range(40)])
                await eventually(lambda: cluster.node(3).store.size == 40,  # type: ignore[union-attr]
                                 what="node 3 holds all")
                await cluster.stop(3)
                # Node 3 now asks v1 through a proxy that lies about what it repairs from.
                runner = web.AppRunner(lying_proxy(cluster.url(0)))
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                config = cluster.configs[3]
                peers = tuple(dataclasses.replace(p, url=f"http://127.0.0.1:{port}")
                              if p.name == "v1" else p for p in config.peers)
                cluster.configs[3] = dataclasses.replace(config, peers=peers)
                flip(data, b"tiles00", u64(1), 100)
                flip(data, b"blocks", u64(1))
                checkpoint = int.from_bytes(keys_of(data, b"checkpoints")[0], "big")
                flip(data, b"checkpoints", u64(checkpoint))
                with caplog.at_level(logging.WARNING, logger="ledger.node.repair"):
                    node = await cluster.start(3)
                    await eventually(lambda: node.care.repairs["peer"] >= 3, timeout=30,
                                     what="three repairs")
                repaired = [r.getMessage() for r in caplog.records
                            if r.getMessage().startswith("repaired ")]
                assert len(repaired) == 3 and not any(m.endswith(" v1") for m in repaired), \
                    repaired
                refused = {r.getMessage().split(" is refused")[0] for r in caplog.records
                           if " is refused: " in r.getMessage()}
                assert refused == {"v1's copy of tiles00/1", "v1's copy of blocks/1",
                                   f"v1's copy of checkpoints/{checkpoint}"}, refused
                await eventually(lambda: all_verify(http, cluster.url(3), list(anchored), policy),
                                 timeout=30, what="every receipt verifies on node 3")
                store = node.store
                assert isinstance(store, LmdbStore)
                store.check()
        finally:
            await cluster.stop_all()
            if runner is not None:
                await runner.cleanup()

    run(main())


def test_damage_without_a_peer_to_repair_it_stops_the_start_with_one_line(
        tmp_path: Path) -> None:
    cluster = fast_cluster(tmp_path, n=1)
    data = cluster.configs[0].data_dir

    async def main() -> None:
        await cluster.start_all()
        async with client_session() as http:
            await anchor(http, cluster.url(0), [digest("solo", k) for k in range(20)])
        await cluster.stop_all()
        flip(data, b"blocks", keys_of(data, b"blocks")[-1])
        cluster.sockets[0] = None
        with pytest.raises(CorruptionError) as caught:
            await cluster.start(0)
        message = caught.value.diagnostics()
        assert "\n" not in message
        assert "blocks/" in message and "ledger db check" in message, message
        assert "no peer" in message, message

    run(main())


def test_peer_tile_resources_cover_each_stratum() -> None:
    # The store's tiles hold 4 levels, tlog-tiles 8: a stratum-s tile's bottom row is in the
    # entry bundle (s = 0), a level-s/2 tile (s even) or 16 hashes apiece of a level-(s-1)/2
    # tile (s odd).
    def tile(stratum: int, t: int, nodes: tuple[int, int]) -> Damage:
        return Damage(kind="tile", key="k", repair="peer", detail="", stratum=stratum, tile=t,
                      nodes=nodes)

    ref, start, end, fold = peer_tile_nodes(tile(0, 17, (272, 288)), 10_000)
    assert (ref.path, start, end, fold) == ("tile/entries/001", 16, 32, 1)
    ref, start, end, fold = peer_tile_nodes(tile(1, 2, (32, 48)), 1 << 16)
    assert (ref.path, start, end, fold) == ("tile/0/002", 0, 256, 16)
    ref, start, end, fold = peer_tile_nodes(tile(2, 1, (16, 32)), 1 << 16)
    assert (ref.path, start, end, fold) == ("tile/1/000", 16, 32, 1)
    ref, start, end, fold = peer_tile_nodes(tile(0, 3, (48, 53)), 53)
    assert (ref.path, start, end, fold) == ("tile/entries/000.p/53", 48, 53, 1)
    from ledger.errors import NotFoundError
    with pytest.raises(NotFoundError):
        peer_tile_nodes(tile(0, 3, (48, 53)), 50)  # the peer is behind


# -- real node processes ------------------------------------------------------------------


@pytest.mark.slow
def test_a_restarted_node_process_repairs_a_flipped_byte_from_its_peers(
        tmp_path: Path) -> None:
    from node.test_cluster_processes import Devnet, N, http

    net = Devnet(tmp_path / "D")
    for path in net.configs:
        config = dataclasses.replace(load_node_config(path), storage=FAST_SCRUB)
        path.write_text(format_node_config(config, relative_to=path.parent))
    policy = parse_policy((net.root / "trust-policy").read_text())
    try:
        for i in range(N):
            net.start(i)
        deadline = time.monotonic() + 60
        while not all(net.ready(i) for i in range(N)):
            assert time.monotonic() < deadline, net.log(0)
            time.sleep(0.2)
        anchored: dict[bytes, str] = {}
        for b in range(3):
            ds = [digest(f"proc{b}", k) for k in range(30)]
            code, body = http("POST", net.urls[b] + "/v1/anchors?wait=true",
                              {"digests": [d.hex() for d in ds]}, token=net.token, timeout=60)
            assert code == 200, (code, body)
            anchored |= {d: a["receipt"] for d, a in zip(ds, body["anchors"], strict=True)}
        deadline = time.monotonic() + 30
        while net.status(3)["tree_size"] < len(anchored):
            assert time.monotonic() < deadline, net.log(3)
            time.sleep(0.2)
        net.terminate(3)
        data = net.data_dir(3)
        flip(data, b"tiles00", u64(1), 200)  # leaves 16-31
        flip(data, b"blocks", u64(2))
        flip(data, b"checkpoints", keys_of(data, b"checkpoints")[0])
        with LmdbStore.open(data, readonly=True) as damaged, pytest.raises(CorruptionError):
            damaged.check()
        net.start(3)

        def repaired() -> bool:
            code, text = http("GET", net.urls[3] + "/metrics", timeout=5)
            if code != 200:
                return False
            line = [x for x in text.splitlines()
                    if x.startswith('ledger_store_repairs_total{source="peer"}')]
            return bool(line) and float(line[0].split()[-1]) >= 3

        deadline = time.monotonic() + 45
        while not repaired():
            assert time.monotonic() < deadline, net.log(3)
            time.sleep(0.2)
        for d, receipt in anchored.items():
            verify_receipt(receipt, policy, d)
            code, text = http("GET", f"{net.urls[3]}/v1/proofs/{d.hex()}", timeout=10)
            assert code == 200, (code, text, net.log(3))
            verify_receipt(text, policy, d)
        assert "Traceback" not in net.log(3)
    finally:
        net.stop_all()
    with LmdbStore.open(net.data_dir(3), readonly=True) as store:
        store.check()



def test_damage_found_while_running_without_a_peer_halts_with_one_line(tmp_path: Path) -> None:
    cluster = fast_cluster(tmp_path, n=1)
    data = cluster.configs[0].data_dir

    async def main() -> None:
        await cluster.start_all()
        try:
            async with client_session() as http:
                anchored = await anchor(http, cluster.url(0),
                                        [digest("alone", k) for k in range(40)])
                node = cluster.node(0)
                flip(data, b"tiles00", u64(1), 7)  # leaves 16-31
                await eventually(lambda: node.care.fatal is not None, timeout=20,
                                 what="the scrub finds it")
                reason = node.halted
                assert reason is not None and "\n" not in reason
                assert "tiles00/1" in reason and "ledger db check" in reason, reason
                async with http.get(cluster.url(0) + "/healthz") as r:
                    assert r.status == 503
                # The damaged leaves: 503 with the reason; every other receipt still served.
                for d in list(anchored):
                    status, text = await proof(http, cluster.url(0), d)
                    if 16 <= list(anchored).index(d) < 32:
                        assert status == 503 and "tiles00/1" in text, (status, text)
                    else:
                        assert status == 200, (status, text)
                async with http.get(cluster.url(0) + "/v1/status") as r:
                    body = await r.json()
                assert body["storage"]["state"] == "damaged", body
        finally:
            await cluster.stop_all()

    run(main())


@pytest.mark.slow
def test_a_node_process_that_cannot_repair_its_store_refuses_to_start_with_one_line(
        tmp_path: Path) -> None:
    from hostile.test_damaged_store import build_data_dir, start_node

    config, _ = build_data_dir(tmp_path)
    data = tmp_path / "v1" / "data"
    flip(data, b"blocks", keys_of(data, b"blocks")[-1])
    result = start_node(config)
    assert result.returncode > 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "blocks/" in errors[0] and "ledger db check" in errors[0], errors[0]
    assert "serving on" not in result.stderr


def test_a_digest_stored_twice_in_the_log_is_reported_not_repaired_or_halted(
        tmp_path: Path) -> None:
    # Every validator's tree is the same: a duplicate the scrub finds is in all of them, so it
    # is said once, and neither "repaired" from a peer nor a reason to halt.
    from ledger.node import Node

    cluster = make_cluster(tmp_path, n=1, lmdb=True)
    care = Node(cluster.configs[0], keys=cluster.keys[0]).care
    twice = Damage(kind="index", key="leaves/3", repair="none",
                   detail="leaves 3 and 9 hold the same digest", leaves=(3, 10))
    care.note(twice)
    care.note(twice)
    assert care.damaged == {} and care.fatal is None and care.found["index"] == 1
    assert care.state()["state"] == "ok"


def test_an_anchored_digest_whose_filter_went_bad_is_never_a_404(tmp_path: Path) -> None:
    # A completed stripe's lookup filter verified earlier by this process, then damaged on
    # disk so that it says "absent" for an anchored digest: the proof is still served (the
    # node looks again, verifying the filter, before any 404), and the filter is rebuilt.
    from storage.test_damage_while_open import _CLEAR_BITS

    from ledger.merkle.hashing import leaf_hashes
    from ledger.storage import _index as ix

    cluster = fast_cluster(tmp_path, n=1)
    policy = parse_policy(cluster.genesis.trust_policy())
    data = cluster.configs[0].data_dir

    async def main() -> None:
        await cluster.start_all()
        try:
            async with client_session() as http:
                anchored = await anchor(http, cluster.url(0),
                                        [digest("filter", k) for k in range(120)])
                digests = list(anchored)
                assert await all_verify(http, cluster.url(0), digests, policy)
                store = cluster.node(0).store
                assert isinstance(store, LmdbStore)
                state = store._view.state  # type: ignore[union-attr]
                leaf = store.index_of(digests[40])
                assert leaf is not None and leaf < 64
                h = ix.hashes_of(leaf_hashes([digests[40]]), state.secret)[0]
                word, mask = ix.filter_position(h, state.params)
                subprocess.run([sys.executable, "-c", _CLEAR_BITS.replace("1 << 28", str(
                    DEFAULT_MAP_SIZE)), str(data), str(leaf >> 5), str(word), str(mask)],
                    check=True, timeout=60)
                status, text = await proof(http, cluster.url(0), digests[40])
                assert status == 200, (status, text)
                verify_receipt(text, policy, digests[40])
                node = cluster.node(0)
                await eventually(lambda: node.care.repairs["local"] >= 1, timeout=20,
                                 what="the filter rebuilt")
                assert await all_verify(http, cluster.url(0), digests, policy)
        finally:
            await cluster.stop_all()

    run(main())
