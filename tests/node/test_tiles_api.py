"""The node's tlog-tiles routes: byte-identical tiles on every node of a live 4-node cluster,
receipts built from a node's tiles alone, cache headers, and 400/404 in the one error model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from ledger.checkpoint import parse_checkpoint_body
from ledger.node.tiles_api import CHECKPOINT_CACHE, FULL_TILE_CACHE, PARTIAL_TILE_CACHE
from ledger.note import parse_note
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt
from ledger.tiles import parse_entry_bundle, tile_refs
from ledger.tiles.client import TileSource, prove_from_tiles

from .harness import auth, client_session, digest, eventually, make_cluster, run

#: One full level-0 tile and bundle, a partial one of width 44, a partial level-1 tile.
COUNT = 300


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with http.get(url) as r:
        return r.status, await r.read(), dict(r.headers)


def test_every_node_serves_the_same_tiles_and_a_receipt_from_them_verifies(
        tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path)
        await cluster.start_all()
        try:
            async with client_session() as http:
                digests = [digest(i, "tiles") for i in range(COUNT)]
                async with http.post(cluster.url(1) + "/v1/anchors?wait=true", headers=auth(),
                                     json={"digests": [d.hex() for d in digests]}) as r:
                    assert r.status == 200, await r.text()

                async def all_at_count() -> bool:
                    for i in range(4):
                        status, body, _ = await _get(http, cluster.url(i) + "/checkpoint")
                        if status != 200 or parse_checkpoint_body(
                                parse_note(body).text).size != COUNT:
                            return False
                    return True
                await eventually(all_at_count, what=f"checkpoint of size {COUNT} on every node")

                notes = []
                for i in range(4):
                    status, body, headers = await _get(http, cluster.url(i) + "/checkpoint")
                    assert status == 200 and headers["Cache-Control"] == CHECKPOINT_CACHE
                    assert headers["Content-Type"] == "text/plain; charset=utf-8"
                    notes.append(parse_note(body).text)
                assert len(set(notes)) == 1  # the same tree head (each node signs it itself)

                refs = list(tile_refs(COUNT))
                assert [r.path for r in refs] == [
                    "tile/entries/000", "tile/0/000", "tile/entries/001.p/44",
                    "tile/0/001.p/44", "tile/1/000.p/1"]
                for ref in refs:
                    served = set()
                    for i in range(4):
                        status, body, headers = await _get(http, f"{cluster.url(i)}/{ref.path}")
                        assert status == 200, (ref.path, body)
                        assert headers["Content-Type"] == "application/octet-stream"
                        assert headers["Cache-Control"] == (
                            FULL_TILE_CACHE if ref.full else PARTIAL_TILE_CACHE)
                        served.add(body)
                    assert len(served) == 1, f"{ref.path} differs between nodes"
                    if ref.entries:
                        entries = parse_entry_bundle(served.pop(), ref.width)
                        assert entries == digests[ref.first_node:ref.first_node + ref.width]

                # A receipt from a node's tiles alone, as a tlog-tiles client builds it.
                policy = parse_policy(cluster.genesis.trust_policy())

                def from_tiles(url: str, target: bytes) -> str:
                    with TileSource(url) as source:
                        return prove_from_tiles(source, target, policy=policy).receipt

                for k in (0, 255, 256, COUNT - 1):
                    receipt = await asyncio.to_thread(from_tiles, cluster.url(3), digests[k])
                    verified = verify_receipt(receipt, policy, digests[k])
                    assert (verified.index, verified.size) == (k, COUNT)
        finally:
            await cluster.stop_all()

    run(main())


def test_bad_tile_paths_are_400_and_tiles_beyond_the_tree_404(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=False)
        node = await cluster.start(0)
        try:
            async with client_session() as http:
                url = cluster.url(0)
                status, body, _ = await _get(http, url + "/checkpoint")
                assert status == 404  # nothing cosigned yet: no tree to serve
                async with http.post(url + "/v1/anchors?wait=true", headers=auth(),
                                     json={"digests": [digest(i).hex() for i in range(3)]}) as r:
                    assert r.status == 200
                await eventually(lambda: node.replica is not None
                                 and node.replica.checkpoint is not None
                                 and node.replica.checkpoint[0] == 3)
                for path in ["/tile/0/x000/000", "/tile/0/00", "/tile/0/000.p/0",
                             "/tile/0/000.p/256", "/tile/64/000", "/tile/01/000",
                             "/tile/a/000", "/tile/entries/000.p/03", "/tile/0/%C2%B2%C2%B2%C2%B2",
                             "/tile/0/" + "x001/" * 7 + "000"]:
                    async with http.get(url + path) as r:
                        assert r.status == 400, path
                        assert (await r.json())["error"]["code"] == "invalid_parameter", path
                for path in ["/tile/0/000", "/tile/0/000.p/4", "/tile/0/001.p/1", "/tile/1/000.p/1",
                             "/tile/entries/000", "/tile/entries/x999/999.p/1"]:
                    async with http.get(url + path) as r:
                        assert r.status == 404, path
                        assert (await r.json())["error"]["code"] == "not_found", path
                for path, length in [("/tile/0/000.p/3", 3 * 32), ("/tile/0/000.p/1", 32),
                                     ("/tile/entries/000.p/2", 2 * 34)]:
                    status, body, headers = await _get(http, url + path)
                    assert status == 200 and headers["Cache-Control"] == PARTIAL_TILE_CACHE
                    assert len(body) == length
        finally:
            await cluster.stop_all()

    run(main())
