"""Upgrade of a format-1 store (``ledger-lmdb/1``) to format 2, in place.

The upgrade rebuilds the store with the current code and swaps it in atomically:

1. Refuse if another process holds the store open, or if the file system lacks the room for
   a second copy (the new file is smaller than the old one).
2. Build a format-2 store in ``DIR/.upgrade-2/`` by replaying the old one through
   :meth:`LmdbStore.append <ledger.storage.lmdb_store.LmdbStore.append>`: each block with the
   digests it carries (so the new store keeps it compactly when they are exactly the leaves it
   appended), leaves no block carries in between, then every checkpoint note and every
   metadata value.
3. Verify the new store against the old before anything is replaced: the same tree head, the
   same bytes in every tile (hence the same inclusion and consistency proofs), byte-identical
   blocks and certificates, checkpoint notes and metadata. Any difference aborts the upgrade
   and leaves the old store as it was.
4. Keep the old data file as ``DIR/data-format1.mdb`` (a hard link, so nothing is copied),
   then rename the new file over ``DIR/data.mdb`` and sync the directory. Each step is atomic:
   a crash leaves either the old store (and the upgrade runs again at the next open) or the new
   one.

The old file is never deleted: remove ``data-format1.mdb`` once the node runs well on the new
store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from ledger.errors import CorruptionError, StorageError
from ledger.storage._tiles import FULL_TILE_BYTES, OFFSETS, TILE_HEIGHT, TILE_WIDTH
from ledger.storage.base import BlockRecord, DiskFullError

__all__ = ["KEPT_NAME", "STAGING_NAME", "MigrationReport", "migrate", "upgrade_if_needed"]

#: The old data file, kept beside the upgraded one.
KEPT_NAME = "data-format1.mdb"
#: The directory the new store is built in.
STAGING_NAME = ".upgrade-2"
_U64 = struct.Struct(">Q")
_BATCH = 100_000
_MAP = 64 << 30  # address space only (LMDB maps at most the file's length)


@dataclass(frozen=True, kw_only=True)
class MigrationReport:
    """A finished upgrade."""

    path: Path
    kept: Path
    leaves: int
    blocks: int
    checkpoints: int
    meta: int
    old_bytes: int
    new_bytes: int


def _format_of(directory: Path) -> int | None:
    from ledger.storage.lmdb_store import check_file_length, open_environment, stored_format

    data = directory / "data.mdb"
    if not data.exists() or data.stat().st_size == 0:
        return None  # nothing to upgrade (opening reports an emptied file)
    env = open_environment(directory, map_size=_MAP, readonly=True)
    try:
        check_file_length(env, data)  # before any read: a truncated map would SIGBUS
        return stored_format(env)
    finally:
        env.close()


def upgrade_if_needed(directory: Path, *, map_size: int) -> int | None:
    """Upgrade the store in ``directory`` if it is of format 1; return 1 if it was.

    :raises StorageError: another process holds it open, or the upgrade fails (the old store
        is then unchanged).
    :raises DiskFullError: not enough free space for the new copy.
    """
    if _format_of(directory) != 1:
        return None
    migrate(directory, map_size=map_size)
    return 1


class _V1:
    """Read access to a format-1 store, raw (format 1 had no checksums)."""

    def __init__(self, directory: Path) -> None:
        self.env = lmdb.open(str(directory), max_dbs=32, readonly=True, lock=True,
                             map_size=_MAP, subdir=True)
        names = (b"state", b"edge", b"blocks", b"checkpoints", b"meta",
                 *(b"tiles%02d" % s for s in range(16)))
        self.db = {n: self.env.open_db(n, create=False) for n in names}
        with self.env.begin() as txn:
            head = txn.get(b"head", db=self.db[b"state"])
        if head is None or len(head) != 40:
            raise CorruptionError("the format-1 store's tree head is missing or malformed")
        self.size, self.root = _U64.unpack(head[:8])[0], head[8:]

    def close(self) -> None:
        self.env.close()

    def digests(self, start: int, end: int) -> Iterator[bytes]:
        """Leaves ``[start, end)`` from stratum 0's full tiles and edge tile."""
        full = self.size >> TILE_HEIGHT
        with self.env.begin() as txn:
            for t in range(start >> TILE_HEIGHT, -(-end // TILE_WIDTH)):
                if t < full:
                    tile = txn.get(_U64.pack(t), db=self.db[b"tiles00"])
                else:
                    tile = txn.get(b"\x00", db=self.db[b"edge"])
                if tile is None:
                    raise CorruptionError(f"format-1 tile {t} of stratum 0 is missing")
                for j in range(TILE_WIDTH):
                    i = (t << TILE_HEIGHT) + j
                    if start <= i < end:
                        o = OFFSETS[0][j]
                        yield bytes(tile[o : o + 32])

    def blocks(self) -> Iterator[BlockRecord]:
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self.db[b"blocks"]):
                height = _U64.unpack(key)[0]
                length = struct.unpack(">I", value[:4])[0]
                if 4 + length > len(value):
                    raise CorruptionError(f"format-1 block {height} is truncated")
                yield BlockRecord(height=height, block=bytes(value[4 : 4 + length]),
                                  certificate=bytes(value[4 + length :]))

    def checkpoints(self) -> list[tuple[int, bytes]]:
        with self.env.begin() as txn:
            return [(_U64.unpack(k)[0], bytes(v)) for k, v in
                    txn.cursor(db=self.db[b"checkpoints"])]

    def meta(self) -> dict[bytes, bytes]:
        with self.env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor(db=self.db[b"meta"])}

    def tiles(self, stratum: int) -> Iterator[tuple[int, bytes]]:
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self.db[b"tiles%02d" % stratum]):
                yield _U64.unpack(key)[0], bytes(value)

    def edge(self, stratum: int) -> bytes | None:
        with self.env.begin() as txn:
            value = txn.get(bytes((stratum,)), db=self.db[b"edge"])
            return None if value is None else bytes(value)


def _refuse_if_open(directory: Path) -> None:
    """:raises StorageError: another process has the environment open."""
    lock = directory / "lock.mdb"
    if not lock.exists():
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError:
        raise StorageError(
            f"{directory} is open in another process (a running node?): stop it before the "
            "upgrade") from None
    finally:
        os.close(fd)


def _block_leaves(record: BlockRecord) -> tuple[int, list[bytes]] | None:
    """The tree size and digest list of a consensus block, or None if it is not one."""
    try:
        wire = msgpack.unpackb(record.block, raw=False)
        tree_size, digests = wire[4], wire[6]
        if type(tree_size) is int and type(digests) is list and all(
            type(d) is bytes and len(d) == 32 for d in digests
        ):
            return tree_size, digests
    except Exception:
        return None
    return None


def migrate(directory: str | os.PathLike[str], *, map_size: int | None = None) -> MigrationReport:
    """Upgrade the format-1 store in ``directory`` in place (see the module docstring).

    :raises StorageError: not a format-1 store, another process holds it open, or the
        upgraded copy differs from the old store (nothing is replaced then).
    :raises DiskFullError: the file system lacks room for the new copy.
    :raises CorruptionError: the old store is damaged.
    """
    from ledger.storage.lmdb_store import DEFAULT_MAP_SIZE, LmdbStore

    directory = Path(directory)
    if _format_of(directory) != 1:
        raise StorageError(f"{directory} does not hold a store of format 1")
    _refuse_if_open(directory)
    data = directory / "data.mdb"
    old_bytes = data.stat().st_size
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < old_bytes + (8 << 20):
        raise DiskFullError(
            f"no space left on device: upgrading {directory} needs about {old_bytes} bytes "
            f"free, there are {free}; the store was not changed"
        )
    staging = directory / STAGING_NAME
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    old = _V1(directory)
    try:
        new = LmdbStore._open(staging, map_size=map_size or DEFAULT_MAP_SIZE, readonly=False,
                              index_params=None)
        try:
            counts = _replay(old, new)
            _verify(old, new)
        finally:
            new.close()
    except BaseException:
        old.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old.close()
    _sync(staging / "data.mdb")
    kept = directory / KEPT_NAME
    with contextlib.suppress(FileNotFoundError):
        kept.unlink()
    os.link(data, kept)
    os.replace(staging / "data.mdb", data)
    with contextlib.suppress(FileNotFoundError):
        (directory / "lock.mdb").unlink()
    shutil.rmtree(staging, ignore_errors=True)
    _sync(directory)
    return MigrationReport(path=directory, kept=kept, leaves=counts[0], blocks=counts[1],
                           checkpoints=counts[2], meta=counts[3], old_bytes=old_bytes,
                           new_bytes=data.stat().st_size)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_leaves(old: _V1, new: Any, upto: int) -> None:
    while new.size < upto:
        end = min(upto, new.size + _BATCH)
        batch = list(old.digests(new.size, end))
        result = new.append(batch)
        if result.head.size != end or not all(result.new):
            raise StorageError("the format-1 store holds a digest twice: not upgraded")


def _replay(old: _V1, new: Any) -> tuple[int, int, int, int]:
    blocks = 0
    for record in old.blocks():
        blocks += 1
        shape = _block_leaves(record)
        if shape is not None:
            tree_size, digests = shape
            added = sum(new.preview(digests).new)
            first = tree_size - added
            if new.size <= first and tree_size <= old.size:
                _append_leaves(old, new, first)
                expected = list(old.digests(first, tree_size))
                result = new.append(digests, block=record)
                if result.head.size == tree_size and [
                    d for d, fresh in zip(digests, result.new, strict=True) if fresh
                ] == expected:
                    continue
                raise StorageError(f"block {record.height} of the format-1 store does not "
                                   "match its leaves: not upgraded")
        new.append([], block=record)
    _append_leaves(old, new, old.size)
    checkpoints = old.checkpoints()
    for size, note in checkpoints:
        new.put_checkpoint(size, note)
    meta = old.meta()
    if meta:
        new.put_meta(meta)
    return old.size, blocks, len(checkpoints), len(meta)


def _verify(old: _V1, new: Any) -> None:
    """The new store holds exactly what the old one does.

    :raises StorageError: naming the first difference.
    """
    from ledger.storage._codec import unseal

    head = new.tree_head()
    if head.size != old.size or head.root != old.root:
        raise StorageError("the upgraded store's tree head differs: not upgraded")
    lm = __import__("ledger.storage.lmdb_store", fromlist=["_U64"])
    with new._env.begin() as txn:
        for stratum in range(16):
            db = new._dbs.tiles[stratum]
            for t, tile in old.tiles(stratum):
                key = lm._U64.pack(t)
                value = txn.get(key, db=db)
                if value is None or unseal(key, value, "tile") != tile or len(tile) != \
                        FULL_TILE_BYTES:
                    raise StorageError(f"tile {t} of stratum {stratum} differs after the "
                                       "upgrade: not upgraded")
            edge = old.edge(stratum)
            key = bytes((stratum,))
            value = txn.get(key, db=new._dbs.edge)
            if (edge is None) != (value is None) or (
                edge is not None and unseal(key, value, "edge") != edge
            ):
                raise StorageError(f"the edge tile of stratum {stratum} differs after the "
                                   "upgrade: not upgraded")
    for record in old.blocks():
        if new.block(record.height) != record:
            raise StorageError(f"block {record.height} differs after the upgrade: not upgraded")
    if new.last_height() != sum(1 for _ in old.blocks()):
        raise StorageError("the upgraded store holds other blocks: not upgraded")
    for size, note in old.checkpoints():
        if new.checkpoint(size) != note:
            raise StorageError(f"checkpoint {size} differs after the upgrade: not upgraded")
    for key, value in old.meta().items():
        if new.get_meta(key) != value:
            raise StorageError("a metadata value differs after the upgrade: not upgraded")
