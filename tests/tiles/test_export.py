"""``ledger.tiles.export`` on real LMDB stores: a complete tiled log, incremental re-exports,
and refusals (a fork, another log, a newer or garbled checkpoint) that replace nothing."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.crypto import ValidatorKeys
from ledger.prover import LocalLog
from ledger.storage.lmdb_store import LmdbStore
from ledger.tiles import read_tile, tile_refs
from ledger.tiles.export import (
    CHECKPOINT_FILE,
    ExportRefusedError,
    TileConflictError,
    export_tiles,
)

ORIGIN = "tiles.test/log"
T0 = 1_800_000_000


def digest(i: int, salt: str = "") -> bytes:
    return hashlib.sha256(f"export {salt} {i}".encode()).digest()


@pytest.fixture(scope="module")
def validators() -> list[ValidatorKeys]:
    return [ValidatorKeys.generate(name=f"v{i}", origin=ORIGIN) for i in range(1, 5)]


def make_log(path: Path, validators: list[ValidatorKeys], count: int,
             salt: str = "") -> tuple[LmdbStore, LocalLog]:
    store = LmdbStore.open(path)
    log = LocalLog(store, validators=validators)
    log.append([digest(i, salt) for i in range(count)])
    log.checkpoint(timestamp=T0)
    return store, log


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def log600(tmp_path: Path, validators: list[ValidatorKeys]) -> Iterator[tuple[LmdbStore,
                                                                               LocalLog]]:
    store, log = make_log(tmp_path / "store", validators, 600)
    yield store, log
    store.close()


def test_an_export_is_every_tile_and_bundle_of_the_checkpoints_tree(
        tmp_path: Path, log600: tuple[LmdbStore, LocalLog]) -> None:
    store, _ = log600
    out = tmp_path / "site"
    seen: list[tuple[int, int]] = []
    report = export_tiles(store, out, progress=lambda d, t: seen.append((d, t)))
    refs = list(tile_refs(600))
    exported = files(out)
    assert set(exported) == {CHECKPOINT_FILE, *(r.path for r in refs)}
    assert exported[CHECKPOINT_FILE] == store.latest_checkpoint()
    for ref in refs:
        assert exported[ref.path] == read_tile(store, ref, 600)
    assert (report.size, report.previous, report.written, report.kept) == (600, 0, len(refs), 0)
    assert report.checkpoint_written and seen[-1] == (len(refs), len(refs))
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in out.rglob("*") if p.is_file())
    assert not [p for p in out.rglob("*.tmp")]


def test_a_re_export_writes_only_what_the_tree_added(
        tmp_path: Path, log600: tuple[LmdbStore, LocalLog]) -> None:
    store, log = log600
    out = tmp_path / "site"
    export_tiles(store, out)
    before = {p: os.stat(out / p) for p in files(out)}
    old_partial = out / "tile/0/002.p/88"
    assert old_partial.exists()
    log.append([digest(i) for i in range(600, 800)])
    log.checkpoint(timestamp=T0 + 60)
    report = export_tiles(store, out)
    added = {r.path for r in tile_refs(800, since=600)}
    assert report.written == len(added) and report.previous == 600 and report.checkpoint_written
    after = files(out)
    assert set(after) == set(before) | added | {CHECKPOINT_FILE}
    for path, st in before.items():
        if path != CHECKPOINT_FILE:  # a tile once written is never written again
            now = os.stat(out / path)
            assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), path
    assert old_partial.exists()  # a client holding the older checkpoint still finds it
    assert after[CHECKPOINT_FILE] == store.latest_checkpoint()
    # Nothing new: nothing written, the checkpoint left alone.
    again = export_tiles(store, out, verify=True)
    assert (again.written, again.checkpoint_written) == (0, False)
    assert again.kept == len(list(tile_refs(800)))


def test_a_fork_is_refused_and_nothing_in_the_directory_is_replaced(
        tmp_path: Path, validators: list[ValidatorKeys],
        log600: tuple[LmdbStore, LocalLog]) -> None:
    store, _ = log600
    out = tmp_path / "site"
    export_tiles(store, out)
    original = files(out)
    other, _ = make_log(tmp_path / "fork", validators, 700, salt="fork")
    try:
        with pytest.raises(TileConflictError, match="not a checkpoint of this store's tree"):
            export_tiles(other, out)
        assert files(out) == original
        # Without the checkpoint to compare with, the first tile that differs stops it.
        (out / CHECKPOINT_FILE).unlink()
        del original[CHECKPOINT_FILE]
        with pytest.raises(TileConflictError, match="holds other bytes than the tree"):
            export_tiles(other, out)
        assert files(out) == original
    finally:
        other.close()


def test_damaged_tiles_are_reported_not_replaced(
        tmp_path: Path, log600: tuple[LmdbStore, LocalLog]) -> None:
    store, _ = log600
    out = tmp_path / "site"
    export_tiles(store, out)
    tile = out / "tile/0/001"
    flipped = bytearray(tile.read_bytes())
    flipped[100] ^= 1
    tile.write_bytes(bytes(flipped))
    # Only the tiles the tree added are compared byte for byte, unless asked for all.
    assert export_tiles(store, out).written == 0
    with pytest.raises(TileConflictError, match="tile/0/001 holds other bytes"):
        export_tiles(store, out, verify=True)
    assert tile.read_bytes() == bytes(flipped)
    tile.write_bytes(bytes(flipped[:-1]))  # a truncated tile is found without --verify
    with pytest.raises(TileConflictError):
        export_tiles(store, out)
    tile.unlink()  # a missing one is written again
    assert export_tiles(store, out).written == 1
    assert tile.read_bytes() == read_tile(store, next(r for r in tile_refs(600)
                                                      if r.path == "tile/0/001"), 600)


def test_another_log_a_newer_or_garbled_checkpoint_and_no_checkpoint_are_refused(
        tmp_path: Path, validators: list[ValidatorKeys],
        log600: tuple[LmdbStore, LocalLog]) -> None:
    store, _ = log600
    out = tmp_path / "site"
    others = [ValidatorKeys.generate(name=f"w{i}", origin="other.test/log") for i in range(4)]
    foreign, _ = make_log(tmp_path / "foreign", others, 10)
    newer, _ = make_log(tmp_path / "newer", validators, 601)
    empty = LmdbStore.open(tmp_path / "empty")
    try:
        export_tiles(foreign, out)
        snapshot = files(out)
        with pytest.raises(ExportRefusedError, match="another log"):
            export_tiles(store, out)
        assert files(out) == snapshot
        out2 = tmp_path / "site2"
        export_tiles(newer, out2)
        snapshot = files(out2)
        with pytest.raises(ExportRefusedError, match="newer than the store's"):
            export_tiles(store, out2)
        assert files(out2) == snapshot
        out3 = tmp_path / "site3"
        out3.mkdir()
        (out3 / CHECKPOINT_FILE).write_text("not a checkpoint\n")
        with pytest.raises(ExportRefusedError, match="is not a checkpoint"):
            export_tiles(store, out3)
        assert files(out3) == {CHECKPOINT_FILE: b"not a checkpoint\n"}
        with pytest.raises(ExportRefusedError, match="no cosigned checkpoint"):
            export_tiles(empty, tmp_path / "site4")
        assert not (tmp_path / "site4").exists()
    finally:
        for s in (foreign, newer, empty):
            s.close()
