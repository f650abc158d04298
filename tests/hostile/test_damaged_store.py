"""A damaged LMDB data directory stops ``ledger node`` at start: one clear line, non-zero exit.

A one-validator chain commits a few blocks into LMDB (in process), then the data file is
truncated or a stored value is damaged, and ``ledger node --config`` runs as a real process
against it. It must exit non-zero with an ``error: ...`` line naming the damage, print no
traceback, and never get as far as serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from node.harness import auth, client_session, digest, make_cluster, run

from ledger.config import format_node_config
from ledger.crypto import write_key_file
from ledger.genesis import format_genesis

LMDB_PAGE = 4096


def build_data_dir(tmp: Path) -> tuple[Path, bytes]:
    """A config file for a one-validator node whose LMDB holds 4 blocks; returns the config
    path and the current tree root (raw bytes, to find it on disk)."""
    cluster = make_cluster(tmp, n=1, lmdb=True)
    config = cluster.configs[0]
    root = b""

    async def main() -> None:
        nonlocal root
        node = await cluster.start(0)
        try:
            async with client_session() as http:
                for b in range(4):
                    body = {"digests": [digest(i, f"damage-{b}").hex() for i in range(200)]}
                    async with http.post(cluster.url(0) + "/v1/anchors?wait=true", json=body,
                                         headers=auth()) as r:
                        assert r.status == 200, await r.text()
            assert node.store is not None
            root = node.store.tree_head().root
        finally:
            await cluster.stop_all()

    run(main())
    config.genesis_file.write_text(format_genesis(config.genesis))
    write_key_file(config.key_file, cluster.keys[0])
    path = tmp / "node.toml"
    path.write_text(format_node_config(config, relative_to=tmp))
    return path, root


def start_node(config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``ledger node``; a node that starts would serve until killed: the timeout fails it."""
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", "node", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )


def truncate_to(size: Callable[[int], int]) -> Callable[[Path, bytes], None]:
    def damage(data: Path, _root: bytes) -> None:
        with open(data, "r+b") as handle:
            handle.truncate(size(data.stat().st_size))
    return damage


def flip_the_stored_root(data: Path, root: bytes) -> None:
    """Flip one bit in every raw copy of the tree root on disk (the stored tree head, the last
    block's header): the head no longer matches the root recomputed from the frontier."""
    buf = bytearray(data.read_bytes())
    found = 0
    start = buf.find(root)
    while start >= 0:
        buf[start + 7] ^= 0x01
        found += 1
        start = buf.find(root, start + 1)
    assert found, "the root is not stored raw: the test needs another way to damage it"
    data.write_bytes(bytes(buf))


DAMAGE = [
    ("empty data file", truncate_to(lambda size: 0), "truncated"),
    ("half the data file", truncate_to(lambda size: size // 2), ""),
    ("last page cut", truncate_to(lambda size: size - LMDB_PAGE), ""),
    ("cut inside a page", truncate_to(lambda size: size - LMDB_PAGE // 2 - 1), ""),
    ("stored tree head damaged", flip_the_stored_root, "tree head"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "damage", "words"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_store_stops_the_node_at_start_with_one_clear_line(
    tmp_path: Path, name: str, damage: Callable[[Path, bytes], None], words: str
) -> None:
    config, root = build_data_dir(tmp_path)
    data = tmp_path / "v1" / "data" / "data.mdb"
    assert data.exists()
    damage(data, root)
    result = start_node(config)
    stderr = result.stderr
    assert result.returncode not in (0, None), stderr
    assert result.returncode > 0, f"killed by signal {-result.returncode}: {stderr}"
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    message = errors[0]
    assert any(w in message for w in ("corrupt", "damaged", "truncated", "does not match")), \
        message
    assert words in message, message
    assert "serving on" not in stderr, stderr
