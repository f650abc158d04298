"""A full disk: writes are refused with "no space left on device", the path and the bytes
free; reads go on; writes succeed again once space is freed; nothing is lost.

The store lives on a small tmpfs the test mounts (root is needed to mount one: the tests are
skipped, saying so, where the process may not mount file systems).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from ledger.merkle import InMemoryTree, leaf_hash
from ledger.storage import BlockRecord, DiskFullError, LmdbStore

from .conftest import digests

DOCS = digests(40_000, b"full")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for this test only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); not available here")
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the file system holding ``path`` until at most ``leave`` bytes are free."""
    filler = path / "filler"
    chunk = b"\xa5" * (64 << 10)
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            out.write(chunk[: max(4096, min(len(chunk), free - leave))])
            out.flush()
    return filler


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(small_fs: Path) -> None:
    data = small_fs / "data"
    with LmdbStore.open(data, map_size=1 << 26) as store:
        store.append(DOCS[:10_000], block=BlockRecord(height=1, block=b"b1", certificate=b""))
        store.put_meta({b"safety": b"h1"})
        head = store.tree_head()
        filler = fill(small_fs, leave=store.disk_reserve // 2)
        with pytest.raises(DiskFullError) as refused:
            store.append(DOCS[10_000:11_000], block=BlockRecord(height=2, block=b"b2",
                                                                certificate=b""),
                         meta={b"safety": b"h2"})
        message = str(refused.value)
        assert "no space left on device" in message and str(data) in message
        assert "bytes free" in message
        for write in (lambda: store.put_meta({b"k": b"v"}),
                      lambda: store.put_checkpoint(10, b"note\n")):
            with pytest.raises(DiskFullError):
                write()
        # Reads are served while the disk is full.
        assert store.tree_head() == head and store.get_meta(b"safety") == b"h1"
        assert store.index_of(DOCS[9_999]) == 9_999
        assert store.inclusion_proof(5, 10_000) == InMemoryTree(
            leaf_hash(d) for d in DOCS[:10_000]).inclusion_proof(5, 10_000)
        filler.unlink()  # space returns: the same write goes in
        store.append(DOCS[10_000:11_000], block=BlockRecord(height=2, block=b"b2",
                                                            certificate=b""),
                     meta={b"safety": b"h2"})
        assert store.get_meta(b"safety") == b"h2" and store.last_height() == 2
        store.check()
    with LmdbStore.open(data, map_size=1 << 26) as store:
        assert store.size == 11_000 and store.index_of(DOCS[10_500]) == 10_500
        store.check()


def test_a_disk_that_fills_during_a_commit(small_fs: Path) -> None:
    # Without the early check, LMDB itself runs out of space while it writes the transaction
    # (it may say ENOSPC, or EIO for a short write): the same error, the store stays usable.
    data = small_fs / "data"
    with LmdbStore.open(data, map_size=1 << 26) as store:
        store.append(DOCS[:2_000])
        head = store.tree_head()
        store.disk_reserve = store.reserve_per_digest = 0
        filler = fill(small_fs)
        with pytest.raises(DiskFullError, match="no space left on device") as failed:
            store.append(DOCS[2_000:40_000])
        assert isinstance(failed.value.__cause__, lmdb.Error)  # LMDB's own write failed
        assert store.tree_head() == head
        assert store.index_of(DOCS[1_999]) == 1_999
        assert store.index_of(DOCS[2_000]) is None  # nothing of the failed append is there
        filler.unlink()
        store.append(DOCS[2_000:40_000])
        assert store.index_of(DOCS[39_999]) == 39_999
        store.check()
