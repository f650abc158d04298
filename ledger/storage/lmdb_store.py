"""``LmdbStore``: the durable :class:`~ledger.storage.base.Store`, one LMDB environment per node.

Durability
----------
One environment (a directory holding ``data.mdb`` and ``lock.mdb``), opened with ``sync`` and
``metasync`` on and without ``writemap``: a committed transaction is on disk before
``append`` returns, which the consensus persistence rules rely on (design brief, section 4:
"LMDB stays with sync on"). Every mutating call is exactly one write transaction, so a crash
or an exception leaves either all of its writes or none. Writes from several threads of one
process are serialised by a lock; run one writing process per store. A process may open a
store only once at a time (LMDB's locks are per process; a second open is refused).

Layout (named databases)
------------------------
``state``          ``format`` -> format tag; ``head`` -> 8-byte big-endian size || 32-byte root.
``tiles00``..``tiles15``
                   one per stratum ``s`` (levels ``4s .. 4s+3``): 8-byte big-endian tile index ->
                   the 960-byte *full* tile (see :mod:`ledger.storage._tiles`). Full tiles never
                   change and their keys only grow, so they are written with ``MDB_APPEND`` and
                   LMDB packs four per 4 KiB page with no page split, no overflow page.
``edge``           1-byte stratum -> that stratum's partial right-edge tile (a prefix of the
                   tile it will become). Kept apart so that rewriting the growing edge never
                   splits a page of full tiles (a split would leave those pages half empty).
``index``          ``MDB_DUPSORT | MDB_DUPFIXED``: 8-byte key -> 6-byte big-endian leaf
                   indices, the digest -> index map.
``blocks``         8-byte big-endian height -> 4-byte block length || block || certificate.
``checkpoints``    8-byte big-endian tree size -> signed checkpoint note.
``meta``           consensus safety state and node metadata, opaque to the store.

The digest index and hostile prefixes
-------------------------------------
A full 32-byte key per anchor would cost about 70 bytes after B-tree page fill. The index key
is instead the first 8 bytes of the *leaf hash* ``SHA-256(0x00 || digest)`` (not of the digest:
clients choose digests freely, so an attacker could file millions of digests sharing one
8-byte prefix and make every lookup of that prefix scan them all; to collide on the leaf hash
prefix they must grind SHA-256, about 2**32 work per colliding pair). Correctness never depends
on keys being unique: a key holds every index filed under it (sorted, so the first one is the
oldest) and a lookup compares the full stored digest of each candidate.

Size and speed, measured at 10**6 anchors appended in blocks of 1,000 (LMDB page counts, on
the shared 2-core development machine): stratum-0 tiles take 64.3 bytes per anchor (60 of
hashes: 32 for the digest, 28 for levels 1-3; the rest is page slack), strata 1-3 take 4.3,
the index 35.4 (random inserts leave its pages about 70% full); with the free pages that
copy-on-write leaves behind, the data file is 112 bytes per anchor. An inclusion proof is one
read transaction and about 24 node reads from at most 5 tiles (fewer with the cache of upper
tiles, see :class:`_Snapshot`): 20-35 us. Appends ran at about 40,000 anchors per second.

Integrity
---------
Opening a store runs a cheap check (``O(log n)`` reads): the data file is at least as long as
LMDB's own last page says (a truncated file would otherwise crash the process with SIGBUS on
first touch), every stratum holds exactly the number of full tiles and the edge-tile length its
size implies, the index holds ``size`` entries, and the root recomputed from the stored
frontier nodes equals the stored tree head. :meth:`LmdbStore.check` re-verifies every node
against its children, every digest against the index, and the block chain's heights. Any
inconsistency raises :class:`~ledger.errors.CorruptionError` naming it; nothing is served
silently.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from ledger.errors import CorruptionError, MalformedError, NotFoundError, StorageError
from ledger.merkle import proof
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_HASH_PREFIX,
    leaf_hash,
    leaf_hashes,
    node_hash,
)
from ledger.storage._tiles import (
    FULL_TILE_BYTES,
    MAX_STRATA,
    OFFSETS,
    TILE_HASHES,
    TILE_HEIGHT,
    TILE_WIDTH,
    extend_stratum,
)
from ledger.storage.base import (
    AppendResult,
    BlockRecord,
    TreeHead,
    check_block_follows,
    check_digest,
    check_meta_items,
    check_meta_key,
    check_non_negative,
    check_note,
    check_within,
    plan_append,
)

__all__ = ["DEFAULT_MAP_SIZE", "LmdbStore"]

#: Default LMDB map size (address space reserved, not disk used): 64 GiB, about 600 million
#: anchors. LMDB cannot grow the map while other threads read, so an operator who needs more
#: reopens the store with a larger ``map_size``.
DEFAULT_MAP_SIZE = 64 << 30

_FORMAT = b"ledger-lmdb/1 tiles=4 index=leafhash8"
_FORMAT_KEY = b"format"
_HEAD_KEY = b"head"
_HEAD = struct.Struct(">Q32s")
_U64 = struct.Struct(">Q")
_BLOCK_LEN = struct.Struct(">I")
_INDEX_KEY_BYTES = 8
_INDEX_VALUE_BYTES = 6
#: Leaf indices are stored in 6 bytes: the log holds at most 2**48 leaves.
MAX_LOG_SIZE = 1 << (8 * _INDEX_VALUE_BYTES)
_TILE_DB_NAMES = tuple(b"tiles%02d" % s for s in range(MAX_STRATA))
_OTHER_DB_NAMES = (b"state", b"index", b"edge", b"blocks", b"checkpoints", b"meta")
_MAX_DBS = 32
_CORRUPTION_ERRORS = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.IncompatibleError,
    lmdb.PanicError,
)
# Node addressing inside tiles (see _tiles): level = 4 * stratum + row.
_STRATUM_SHIFT = TILE_HEIGHT.bit_length() - 1
_ROW_MASK = TILE_HEIGHT - 1
_ROW_INDEX_MASKS = tuple((TILE_WIDTH >> row) - 1 for row in range(TILE_HEIGHT))
_sha256 = hashlib.sha256
#: Real paths of the stores open in this process, and the lock that guards the set.
_OPEN_PATHS: set[str] = set()
_OPEN_LOCK = threading.Lock()
#: Bound of the store-wide cache of full upper-stratum tiles (about 32 MiB at most).
_SHARED_TILES = 1 << 15
assert 1 << _STRATUM_SHIFT == TILE_HEIGHT and MAX_STRATA <= TILE_WIDTH  # the cache key packing


def _index_key(leaf: bytes) -> bytes:
    """The digest-index key of a leaf: the first 8 bytes of its leaf hash (see module doc)."""
    return leaf[:_INDEX_KEY_BYTES]


def _wrap(exc: lmdb.Error) -> StorageError:
    """Translate an LMDB exception into our error tree (python-tuf style wrapping)."""
    if isinstance(exc, lmdb.MapFullError):
        return StorageError("the LMDB map is full: reopen the store with a larger map_size")
    if isinstance(exc, _CORRUPTION_ERRORS):
        return CorruptionError(f"LMDB reports a damaged database: {exc}")
    return StorageError(f"LMDB error: {exc}")


def _edge_key(stratum: int) -> bytes:
    return bytes((stratum,))


def _encode_block(block: BlockRecord) -> bytes:
    return _BLOCK_LEN.pack(len(block.block)) + block.block + block.certificate


def _decode_block(height: int, value: bytes) -> BlockRecord:
    """:raises CorruptionError: the stored value is too short for its length prefix."""
    if len(value) < _BLOCK_LEN.size:
        raise CorruptionError(f"stored block {height} is truncated")
    (length,) = _BLOCK_LEN.unpack_from(value)
    end = _BLOCK_LEN.size + length
    if end > len(value):
        raise CorruptionError(f"stored block {height} is shorter than its length prefix")
    return BlockRecord(height=height, block=value[_BLOCK_LEN.size : end], certificate=value[end:])


@dataclass(frozen=True, slots=True)
class _Dbs:
    """Handles of the named databases of one environment."""

    state: Any
    index: Any
    edge: Any
    blocks: Any
    checkpoints: Any
    meta: Any
    tiles: tuple[Any, ...]


#: Bound of the shared cache of ragged subtree roots (a few per tree size ever proven against).
_SHARED_RANGES = 4096


class _TileCache:
    """Tiles kept in memory across snapshots, because every proof passes through them.

    - Full tiles of strata 1 and up (levels >= 4). A full tile never changes once written, so
      a cached copy is never stale. At 10**6 leaves they are 4,165 tiles (4 MB); the cache is
      bounded by :data:`_SHARED_TILES` entries and then simply stops growing.
    - The edge tile of each stratum *for one tree size*. An edge tile is determined by the
      size (the log is append-only), so a copy tagged with its size is valid for any snapshot
      of that size; between two appends every proof shares them.

    With both, a proof at 10**6 leaves reads one stratum-0 tile from LMDB instead of five.
    Entries are only ever replaced whole, which is safe under the GIL from several threads.
    """

    __slots__ = ("_edges", "_full", "ranges")

    def __init__(self) -> None:
        self._full: dict[int, bytes] = {}
        self._edges: dict[int, tuple[int, bytes]] = {}
        #: MTH(D[start:end]) of ragged right-edge subtrees, by (start, end). A range's root
        #: never changes once ``end`` leaves exist (append-only), so entries are never stale;
        #: nearly every proof against one tree size needs the same few of them.
        self.ranges: dict[tuple[int, int], bytes] = {}

    def get(self, stratum: int, t: int, full: int, size: int) -> bytes | None:
        """The cached tile ``t`` of ``stratum`` (``full`` full tiles) at ``size``, or None."""
        if t < full:
            return self._full.get((t << TILE_HEIGHT) | stratum) if stratum else None
        entry = self._edges.get(stratum)
        return entry[1] if entry is not None and entry[0] == size else None

    def put(self, stratum: int, t: int, full: int, size: int, tile: bytes) -> None:
        """Remember a tile just read and checked from LMDB."""
        if t >= full:
            self._edges[stratum] = (size, tile)
        elif stratum and len(self._full) < _SHARED_TILES:
            self._full[(t << TILE_HEIGHT) | stratum] = tile


class _Snapshot:
    """A :class:`~ledger.merkle.proof.NodeReader` over one LMDB transaction.

    Everything read through one snapshot is consistent (LMDB MVCC). Tiles are cached for the
    snapshot's short life, so a proof reads each tile once: about ``log2(n) / 4`` reads.

    ``shared`` is the store's :class:`_TileCache`, kept across snapshots; see there why that
    is safe. Write transactions and :meth:`LmdbStore.check` pass none: they must read what is
    on disk.
    """

    __slots__ = ("_cache", "_dbs", "_shared", "_txn", "root", "size")

    def __init__(self, txn: Any, dbs: _Dbs, shared: _TileCache | None = None) -> None:
        """:raises CorruptionError: the stored tree head is missing or malformed."""
        self._txn = txn
        self._dbs = dbs
        self._cache: dict[int, bytes] = {}
        self._shared = shared
        head: bytes | None = txn.get(_HEAD_KEY, db=dbs.state)
        if head is None or len(head) != _HEAD.size:
            raise CorruptionError("the stored tree head is missing or malformed")
        self.size: int
        self.root: bytes
        self.size, self.root = _HEAD.unpack(head)

    def tile(self, stratum: int, t: int) -> bytes:
        """Tile ``t`` of ``stratum`` as stored (full, or the partial edge tile).

        :raises CorruptionError: the tile is missing or has the wrong length.
        """
        cache_key = (t << TILE_HEIGHT) | stratum
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        count = self.size >> (TILE_HEIGHT * stratum)
        full = count >> TILE_HEIGHT
        shared = self._shared
        value: bytes | None = None
        if shared is not None:
            value = shared.get(stratum, t, full, self.size)
        if value is not None:
            self._cache[cache_key] = value
            return value
        if t < full:
            value = self._txn.get(_U64.pack(t), db=self._dbs.tiles[stratum])
            expected = FULL_TILE_BYTES
        else:
            value = self._txn.get(_edge_key(stratum), db=self._dbs.edge)
            expected = TILE_HASHES[count & (TILE_WIDTH - 1)] * HASH_SIZE
        if value is None or len(value) != expected:
            got = "missing" if value is None else f"{len(value)} bytes"
            raise CorruptionError(
                f"tile {t} of stratum {stratum} is {got}, expected {expected} bytes "
                f"for a log of size {self.size}"
            )
        self._cache[cache_key] = value
        if shared is not None:
            shared.put(stratum, t, full, self.size, value)
        return value

    def node(self, level: int, index: int) -> bytes:
        """Full node ``(level, index)``; level 0 is recomputed from the stored digest.

        This is the inner loop of every proof (about 20 calls at 10**6 leaves), so the tile
        cache lookup is inlined and the arithmetic is shifts and masks.

        :raises NotFoundError: not a full node of this snapshot's tree (or negative).
        :raises CorruptionError: its tile is damaged.
        """
        if level < 0 or index < 0 or ((index + 1) << level) > self.size:
            raise NotFoundError(f"no full node ({level}, {index}) in a log of size {self.size}")
        row = level & _ROW_MASK
        t = index >> (TILE_HEIGHT - row)
        tile = self._cache.get((t << TILE_HEIGHT) | (level >> _STRATUM_SHIFT))
        if tile is None:
            tile = self.tile(level >> _STRATUM_SHIFT, t)
        offset = OFFSETS[row][index & _ROW_INDEX_MASKS[row]]
        if level:
            return tile[offset : offset + HASH_SIZE]
        return _sha256(LEAF_HASH_PREFIX + tile[offset : offset + HASH_SIZE]).digest()

    def range_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]), memoised in the store's shared cache (see :class:`_TileCache`).

        :raises NotFoundError: ``end`` exceeds this snapshot's size.
        :raises CorruptionError: a tile is damaged.
        """
        shared = self._shared
        if shared is None:
            return proof.subtree_root(self, start, end)
        key = (start, end)
        root = shared.ranges.get(key)
        if root is None:
            root = proof.subtree_root(self, start, end)
            if len(shared.ranges) >= _SHARED_RANGES:
                shared.ranges.clear()
            shared.ranges[key] = root
        return root

    def digest(self, index: int) -> bytes:
        """The digest at leaf ``index``.

        :raises NotFoundError: ``index`` is not below the size.
        :raises CorruptionError: its tile is damaged.
        """
        if index < 0 or index >= self.size:
            raise NotFoundError(f"no leaf {index} in a log of size {self.size}")
        tile = self.tile(0, index >> TILE_HEIGHT)
        offset = OFFSETS[0][index & (TILE_WIDTH - 1)]
        return tile[offset : offset + HASH_SIZE]

    def lookup(self, cursor: Any, digest: bytes, leaf: bytes) -> int | None:
        """The index of ``digest`` (whose leaf hash is ``leaf``) via the index cursor, or None.

        :raises CorruptionError: an index entry points beyond the log, or at a damaged tile.
        """
        if not cursor.set_key(_index_key(leaf)):
            return None
        for value in cursor.iternext_dup(keys=False):
            index = int.from_bytes(value, "big")
            if index >= self.size:
                raise CorruptionError(
                    f"the digest index points at leaf {index} beyond the log size {self.size}"
                )
            if self.digest(index) == digest:
                return index
        return None


class LmdbStore:
    """The durable :class:`~ledger.storage.base.Store`; create it with :meth:`open`."""

    def __init__(
        self, *, env: Any, dbs: _Dbs, path: Path, frontier: Frontier, readonly: bool
    ) -> None:
        """Private: use :meth:`open`, which checks the store before handing it out."""
        self._env: Any = env
        self._dbs = dbs
        self._path = path
        self._frontier = frontier
        self._head = TreeHead(size=frontier.size, root=frontier.root())
        self._readonly = readonly
        self._write_lock = threading.Lock()
        self._tiles = _TileCache()
        self._identity = ""

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> LmdbStore:
        """Open (creating if needed and not ``readonly``) the store in directory ``path``.

        Runs the cheap integrity check of the module docstring before returning.

        :raises StorageError: the directory is not a ledger store, cannot be opened, or (when
            ``readonly``) holds no store.
        :raises CorruptionError: the data file is truncated or its contents contradict each
            other.
        """
        directory = Path(path)
        identity = os.path.realpath(directory)
        with _OPEN_LOCK:
            if identity in _OPEN_PATHS:
                # LMDB's locks are per process: a second environment on the same files in one
                # process would release the first one's locks when closed (LMDB docs, Caveats).
                raise StorageError(f"the store at {directory} is already open in this process")
            _OPEN_PATHS.add(identity)
        try:
            store = cls._open(directory, map_size=map_size, readonly=readonly)
        except BaseException:
            with _OPEN_LOCK:
                _OPEN_PATHS.discard(identity)
            raise
        store._identity = identity
        return store

    @classmethod
    def _open(cls, directory: Path, *, map_size: int, readonly: bool) -> LmdbStore:
        data = directory / "data.mdb"
        if data.exists() and data.stat().st_size == 0:
            raise CorruptionError(f"{data} is empty: the store was truncated")
        if readonly and not data.exists():
            raise StorageError(f"no store at {directory}")
        try:
            env = lmdb.open(
                str(directory),
                map_size=map_size,
                max_dbs=_MAX_DBS,
                subdir=True,
                readonly=readonly,
                create=not readonly,
                sync=True,
                metasync=True,
                readahead=False,
                lock=True,
            )
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        try:
            _check_file_length(env, data)
            dbs = _open_databases(env, readonly)
            with env.begin() as txn:
                snap = _Snapshot(txn, dbs)
                _check_shape(txn, dbs, snap)
                frontier = Frontier.from_reader(snap, snap.size)
                if frontier.root() != snap.root:
                    raise CorruptionError(
                        f"the stored tree head (size {snap.size}) does not match the root "
                        "recomputed from the stored frontier nodes"
                    )
        except lmdb.Error as exc:
            env.close()
            raise _wrap(exc) from exc
        except BaseException:
            env.close()
            raise
        return cls(env=env, dbs=dbs, path=directory, frontier=frontier, readonly=readonly)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The environment directory."""
        return self._path

    def _live_env(self) -> Any:
        env = self._env
        if env is None:
            raise StorageError("the store is closed")
        return env

    def _writable_env(self) -> Any:
        env = self._live_env()
        if self._readonly:
            raise StorageError("the store was opened read-only")
        return env

    # -- tree -----------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of leaves in the log.

        :raises StorageError: the store is closed.
        """
        self._live_env()
        return self._frontier.size

    def tree_head(self) -> TreeHead:
        """The current tree head.

        :raises StorageError: the store is closed.
        """
        self._live_env()
        return self._head

    def frontier(self) -> Frontier:
        """The frontier of the current tree.

        :raises StorageError: the store is closed.
        """
        self._live_env()
        return self._frontier

    def preview(self, digests: Iterable[bytes]) -> AppendResult:
        """What :meth:`append` would return for ``digests``; writes nothing.

        :raises MalformedError: a digest is not 32 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a stored record read on the way is damaged.
        """
        env = self._live_env()
        try:
            with env.begin() as txn:
                snap = _Snapshot(txn, self._dbs)
                frontier = self._frontier_for(snap)
                cursor = txn.cursor(db=self._dbs.index)
                plan = plan_append(
                    digests, snap.size, lambda d, leaf: snap.lookup(cursor, d, leaf)
                )
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        new_frontier, _ = frontier.extend(plan.leaves)
        head = TreeHead(size=new_frontier.size, root=new_frontier.root())
        return AppendResult(head=head, indices=plan.indices, new=plan.new)

    def append(
        self, digests: Iterable[bytes], *, block: BlockRecord | None = None
    ) -> AppendResult:
        """Append the digests not yet in the log and, if given, the block, in one transaction.

        Writes the new tiles, the new edge tiles, the index entries, the new tree head and the
        block with its certificate; LMDB syncs before this returns.

        :raises MalformedError: a digest is not 32 bytes, or ``block`` is not a BlockRecord.
        :raises StorageError: ``block.height`` is not ``last_height() + 1``, the log would
            exceed 2**48 leaves, the store is closed or read-only, or LMDB fails.
        :raises CorruptionError: a stored record read on the way is damaged.
        """
        env = self._writable_env()
        batch = list(digests)
        with self._write_lock:
            try:
                with env.begin(write=True) as txn:
                    result, frontier = self._append_in(txn, batch, block)
            except lmdb.Error as exc:
                raise _wrap(exc) from exc
            self._frontier, self._head = frontier, result.head
        return result

    def _frontier_for(self, snap: _Snapshot) -> Frontier:
        """The frontier matching ``snap``: ours, or rebuilt if another process appended.

        :raises CorruptionError: the rebuilt frontier contradicts the stored tree head.
        """
        if snap.size == self._frontier.size:
            return self._frontier
        frontier = Frontier.from_reader(snap, snap.size)
        if frontier.root() != snap.root:
            raise CorruptionError("the stored tree head does not match the stored nodes")
        return frontier

    def _append_in(
        self, txn: Any, batch: list[bytes], block: BlockRecord | None
    ) -> tuple[AppendResult, Frontier]:
        dbs = self._dbs
        snap = _Snapshot(txn, dbs)
        frontier = self._frontier_for(snap)
        cursor = txn.cursor(db=dbs.index)
        plan = plan_append(batch, snap.size, lambda d, leaf: snap.lookup(cursor, d, leaf))
        old = snap.size
        if old + len(plan.digests) > MAX_LOG_SIZE:
            raise StorageError("the log cannot hold more than 2**48 leaves")
        new_frontier, rows = frontier.extend(plan.leaves)
        new = new_frontier.size
        head = TreeHead(size=new, root=new_frontier.root())
        if plan.digests:
            rows[0] = plan.digests  # stratum 0 stores the digests, not their leaf hashes
            for stratum in range(MAX_STRATA):
                shift = TILE_HEIGHT * stratum
                old_count, new_count = old >> shift, new >> shift
                if old_count == new_count:
                    break
                key = _edge_key(stratum)
                edge: bytes = (txn.get(key, db=dbs.edge) or b"") if old_count % TILE_WIDTH else b""
                tiles, new_edge = extend_stratum(
                    old_count, new_count, edge, rows[shift : shift + TILE_HEIGHT]
                )
                if tiles:
                    first = old_count >> TILE_HEIGHT
                    items = [(_U64.pack(first + k), tile) for k, tile in enumerate(tiles)]
                    _, added = txn.cursor(db=dbs.tiles[stratum]).putmulti(items, append=True)
                    if added != len(items):
                        raise CorruptionError(f"stratum {stratum} already holds tile {first}")
                if new_edge:
                    txn.put(key, new_edge, db=dbs.edge)
                elif edge:
                    txn.delete(key, db=dbs.edge)
            entries = sorted(
                (_index_key(leaf), (old + k).to_bytes(_INDEX_VALUE_BYTES, "big"))
                for k, leaf in enumerate(plan.leaves)
            )
            _, added = cursor.putmulti(entries, dupdata=True)
            if added != len(entries):
                raise CorruptionError("the digest index already holds an entry for a new leaf")
            txn.put(_HEAD_KEY, _HEAD.pack(new, head.root), db=dbs.state)
        if block is not None:
            check_block_follows(block, _last_height(txn, dbs))
            if not txn.put(_U64.pack(block.height), _encode_block(block), db=dbs.blocks):
                raise CorruptionError(f"block {block.height} is already stored")
        return AppendResult(head=head, indices=plan.indices, new=plan.new), new_frontier

    def index_of(self, digest: bytes) -> int | None:
        """The leaf index of ``digest``, or ``None`` if it was never anchored.

        :raises MalformedError: ``digest`` is not 32 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: the index or a tile is damaged.
        """
        env = self._live_env()
        check_digest(digest)
        try:
            with env.begin() as txn:
                snap = _Snapshot(txn, self._dbs)
                return snap.lookup(txn.cursor(db=self._dbs.index), digest, leaf_hash(digest))
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def index_of_many(self, digests: Sequence[bytes]) -> list[int | None]:
        """:meth:`index_of` of each digest, in order, in one read transaction and one cursor.

        :raises MalformedError: a digest is not 32 bytes (checked before any read).
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: the index or a tile is damaged.
        """
        env = self._live_env()
        batch = [check_digest(d) for d in digests]
        if not batch:
            return []
        try:
            with env.begin() as txn:
                snap = _Snapshot(txn, self._dbs, self._tiles)
                cursor = txn.cursor(db=self._dbs.index)
                lookup = snap.lookup
                return [lookup(cursor, d, leaf) for d, leaf in zip(batch, leaf_hashes(batch),
                                                                    strict=True)]
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def digest_at(self, index: int) -> bytes:
        """The digest at leaf ``index``.

        :raises MalformedError: ``index`` is negative.
        :raises NotFoundError: ``index >= size``.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: its tile is damaged.
        """
        env = self._live_env()
        check_non_negative(index, "leaf index")
        try:
            with env.begin() as txn:
                return _Snapshot(txn, self._dbs).digest(index)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``.

        :raises MalformedError: ``level`` or ``index`` is negative.
        :raises NotFoundError: no such full node.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: its tile is damaged.
        """
        env = self._live_env()
        check_non_negative(level, "node level")
        check_non_negative(index, "node index")
        try:
            with env.begin() as txn:
                return _Snapshot(txn, self._dbs, self._tiles).node(level, index)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def _read(self, size: int, compute: Callable[[_Snapshot], Any]) -> Any:
        env = self._live_env()
        try:
            with env.begin() as txn:
                snap = _Snapshot(txn, self._dbs, self._tiles)
                check_within(size, snap.size, "tree size")
                return compute(snap)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        One read transaction, about ``log2(size) / 4`` tile reads.

        :raises MalformedError: ``index`` is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a tile on the path is damaged.
        """
        result: list[bytes] = self._read(size, lambda s: proof.inclusion_proof(s, index, size))
        return result

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each index against one tree ``size``, in order.

        One read transaction for all of them; the snapshot's tile cache serves the tiles the
        proofs share (the upper strata, and leaves of the same block sit in the same tiles).

        :raises MalformedError: an index is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a tile on a path is damaged.
        """
        wanted = list(indices)
        result: list[list[bytes]] = self._read(
            size, lambda s: [proof.inclusion_proof(s, i, size) for i in wanted]
        )
        return result

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 2.1.4.1 consistency proof from ``old_size`` to ``new_size``.

        :raises MalformedError: ``old_size < 1`` or ``old_size > new_size``.
        :raises NotFoundError: ``new_size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a tile on the path is damaged.
        """
        result: list[bytes] = self._read(
            new_size, lambda s: proof.consistency_proof(s, old_size, new_size)
        )
        return result

    def root_at(self, size: int) -> bytes:
        """The root of the first ``size`` leaves.

        :raises MalformedError: ``size`` is negative.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a tile on the path is damaged.
        """
        result: bytes = self._read(size, lambda s: proof.root_at(s, size))
        return result

    # -- checkpoints, blocks, metadata ----------------------------------------------------------

    def put_checkpoint(self, size: int, note: bytes) -> None:
        """Store the checkpoint note for tree ``size``, replacing an earlier one.

        :raises MalformedError: ``size`` is negative or ``note`` is not non-empty bytes.
        :raises StorageError: ``size`` exceeds the log, the store is closed or read-only, or
            LMDB fails.
        """
        env = self._writable_env()
        check_non_negative(size, "checkpoint size")
        check_note(note)
        with self._write_lock:
            try:
                with env.begin(write=True) as txn:
                    stored = _Snapshot(txn, self._dbs).size
                    if size > stored:
                        raise StorageError(f"checkpoint size {size} exceeds the log size {stored}")
                    txn.put(_U64.pack(size), note, db=self._dbs.checkpoints)
            except lmdb.Error as exc:
                raise _wrap(exc) from exc

    def checkpoint_sizes(self) -> list[int]:
        """The tree sizes of every stored checkpoint, ascending (for ``ledger db check``).

        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a checkpoint key is not an 8-byte size.
        """
        env = self._live_env()
        try:
            with env.begin() as txn:
                keys = list(txn.cursor(db=self._dbs.checkpoints).iternext(values=False))
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        return [_key_number(bytes(k), "checkpoint") for k in keys]

    def checkpoint(self, size: int) -> bytes | None:
        """The checkpoint note for ``size``, or ``None``.

        :raises MalformedError: ``size`` is negative.
        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        check_non_negative(size, "checkpoint size")
        try:
            with env.begin() as txn:
                note: bytes | None = txn.get(_U64.pack(size), db=self._dbs.checkpoints)
                return note
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def latest_checkpoint(self) -> bytes | None:
        """The checkpoint note with the largest size, or ``None``.

        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        try:
            with env.begin() as txn:
                cursor = txn.cursor(db=self._dbs.checkpoints)
                note: bytes | None = cursor.value() if cursor.last() else None
                return note
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def block(self, height: int) -> BlockRecord | None:
        """The block at ``height``, or ``None`` (also for height 0).

        :raises MalformedError: ``height`` is negative.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: the stored record is damaged.
        """
        env = self._live_env()
        check_non_negative(height, "block height")
        if height == 0:
            return None
        try:
            with env.begin() as txn:
                value: bytes | None = txn.get(_U64.pack(height), db=self._dbs.blocks)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        return None if value is None else _decode_block(height, value)

    def last_height(self) -> int:
        """The height of the last block (0 = none).

        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        try:
            with env.begin() as txn:
                return _last_height(txn, self._dbs)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def get_meta(self, key: bytes) -> bytes | None:
        """The metadata value of ``key``, or ``None``.

        :raises MalformedError: ``key`` is not 1 to 511 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        check_meta_key(key)
        try:
            with env.begin() as txn:
                value: bytes | None = txn.get(key, db=self._dbs.meta)
                return value
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def put_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        """Set (``None``: delete) metadata keys in one transaction.

        :raises MalformedError: a key is not 1 to 511 bytes or a value not bytes or ``None``.
        :raises StorageError: the store is closed or read-only, or LMDB fails.
        """
        env = self._writable_env()
        if not isinstance(items, Mapping):
            raise MalformedError("metadata items must be a mapping")
        check_meta_items(items)
        with self._write_lock:
            try:
                with env.begin(write=True) as txn:
                    for key, value in items.items():
                        if value is None:
                            txn.delete(key, db=self._dbs.meta)
                        else:
                            txn.put(key, value, db=self._dbs.meta)
            except lmdb.Error as exc:
                raise _wrap(exc) from exc

    # -- maintenance ------------------------------------------------------------------------------

    def disk_usage(self) -> int:
        """Bytes of the data file (``data.mdb``), free pages included.

        :raises StorageError: the store is closed or the file cannot be read.
        """
        self._live_env()
        try:
            return (self._path / "data.mdb").stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot stat the data file: {exc}") from exc

    def check(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Re-verify everything stored; return ``None`` or raise on the first inconsistency.

        Verifies, in one read transaction: the shape checks of :meth:`open`; every interior
        node against ``SHA-256(0x01 || left || right)`` of its children and every leaf hash
        recomputed from its digest (so a flipped byte anywhere in a tile is found); that every
        digest is in the index under its own index and no digest is stored twice; the stored
        tree head against the recomputed root; that blocks are contiguous from height 1 and
        decode; that no checkpoint is for a size beyond the log. ``progress(done, total)`` is
        called with tile counts as the scan proceeds. Cost: one pass over the data (about
        ``2n`` hashes and ``n`` index lookups).

        :raises CorruptionError: naming the first inconsistency found.
        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        try:
            with env.begin() as txn:
                _Checker(txn, self._dbs, progress).run()
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def copy_to(self, path: str | os.PathLike[str], *, compact: bool = True) -> None:
        """Write a consistent copy of the live store into the empty directory ``path``.

        A hot backup: LMDB's ``mdb_env_copy2`` copies one read snapshot while writers go on
        (with ``compact``, free pages are left out and the copy is renumbered). It must run in
        the process holding the store open (one environment per file per process). The copy
        is not fsynced here: the caller syncs and renames it into place.

        :raises StorageError: the store is closed, ``path`` is not an empty directory, or
            LMDB fails.
        """
        env = self._live_env()
        target = Path(path)
        try:
            if not target.is_dir() or any(target.iterdir()):
                raise StorageError(f"{target} is not an empty directory")
        except OSError as exc:
            raise StorageError(f"cannot use {target} for a copy: {exc}") from exc
        try:
            env.copy(str(target), compact=compact)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def close(self) -> None:
        """Close the environment; later calls raise :class:`~ledger.errors.StorageError`."""
        env, self._env = self._env, None
        if env is not None:
            env.close()
            with _OPEN_LOCK:
                _OPEN_PATHS.discard(self._identity)


# ------------------------------------------------------------------------------------------------
# Opening and checking


def _check_file_length(env: Any, data: Path) -> None:
    """A data file shorter than LMDB's last page would SIGBUS on first touch: refuse it.

    LMDB reads its meta pages with ``pread`` (so this check itself is safe) and maps the rest.

    :raises CorruptionError: the file is shorter than the pages the meta page claims.
    """
    info = env.info()
    needed = (info["last_pgno"] + 1) * env.stat()["psize"]
    actual = data.stat().st_size if data.exists() else 0
    if actual < needed:
        raise CorruptionError(
            f"{data} is truncated: {actual} bytes, but LMDB's meta page needs {needed}"
        )


def _open_databases(env: Any, readonly: bool) -> _Dbs:
    """Open (creating and initialising a fresh store) every named database.

    :raises StorageError: the environment holds something that is not a ledger store.
    :raises CorruptionError: some of our databases or the format tag are missing.
    """
    names = (*_OTHER_DB_NAMES, *_TILE_DB_NAMES)
    with env.begin() as txn:
        existing = {bytes(key) for key in txn.cursor().iternext(keys=True, values=False)}
    handles: dict[bytes, Any] = {}

    def open_all(txn: Any, create: bool) -> None:
        # Handles opened in a write transaction become visible when it commits; with
        # ``txn=None`` py-lmdb opens each one in a transaction of its own.
        for name in names:
            handles[name] = env.open_db(
                name,
                txn=txn,
                create=create,
                dupsort=name == b"index",
                dupfixed=name == b"index",
            )

    if not existing:
        if readonly:
            raise StorageError("the store is empty and was opened read-only")
        with env.begin(write=True) as txn:
            open_all(txn, create=True)
            state = handles[b"state"]
            txn.put(_FORMAT_KEY, _FORMAT, db=state)
            txn.put(_HEAD_KEY, _HEAD.pack(0, EMPTY_ROOT), db=state)
    else:
        if b"state" not in existing:
            raise StorageError("the LMDB environment is not a ledger store")
        missing = [name.decode() for name in names if name not in existing]
        if missing:
            raise CorruptionError(f"the store lacks the databases {', '.join(missing)}")
        open_all(None, create=False)
        with env.begin() as txn:
            tag = txn.get(_FORMAT_KEY, db=handles[b"state"])
        if tag != _FORMAT:
            raise StorageError(f"unsupported store format {tag!r}; this version reads {_FORMAT!r}")
    return _Dbs(
        state=handles[b"state"],
        index=handles[b"index"],
        edge=handles[b"edge"],
        blocks=handles[b"blocks"],
        checkpoints=handles[b"checkpoints"],
        meta=handles[b"meta"],
        tiles=tuple(handles[name] for name in _TILE_DB_NAMES),
    )


def _key_number(key: bytes, what: str) -> int:
    """Decode an 8-byte big-endian key.

    :raises CorruptionError: the key is not 8 bytes.
    """
    if len(key) != _U64.size:
        raise CorruptionError(f"a stored {what} key is {len(key)} bytes, expected 8")
    number: int = _U64.unpack(key)[0]
    return number


def _last_height(txn: Any, dbs: _Dbs) -> int:
    cursor = txn.cursor(db=dbs.blocks)
    return _key_number(cursor.key(), "block height") if cursor.last() else 0


def _check_shape(txn: Any, dbs: _Dbs, snap: _Snapshot) -> None:
    """The counts and lengths the tree size implies (``O(log n)`` reads).

    :raises CorruptionError: a stratum has the wrong number of full tiles or a wrong edge
        tile, the index has the wrong number of entries, or block heights have gaps.
    """
    size = snap.size
    for stratum in range(MAX_STRATA):
        count = size >> (TILE_HEIGHT * stratum)
        full = count >> TILE_HEIGHT
        db = dbs.tiles[stratum]
        entries = txn.stat(db)["entries"]
        cursor = txn.cursor(db=db)
        last = _key_number(cursor.key(), f"stratum {stratum} tile") if cursor.last() else -1
        if entries != full or last != full - 1:
            raise CorruptionError(
                f"stratum {stratum} holds {entries} full tiles (last {last}), a log of size "
                f"{size} needs {full} (last {full - 1})"
            )
        edge: bytes | None = txn.get(_edge_key(stratum), db=dbs.edge)
        expected = TILE_HASHES[count & (TILE_WIDTH - 1)] * HASH_SIZE
        if (0 if edge is None else len(edge)) != expected or (edge is not None and not expected):
            got = "no" if edge is None else f"a {len(edge)}-byte"
            raise CorruptionError(
                f"stratum {stratum} has {got} edge tile, a log of size {size} needs "
                f"{expected} bytes"
            )
    indexed = txn.stat(dbs.index)["entries"]
    if indexed != size:
        raise CorruptionError(f"the digest index holds {indexed} entries for {size} leaves")
    blocks = txn.stat(dbs.blocks)["entries"]
    last_height = _last_height(txn, dbs)
    if blocks != last_height:
        raise CorruptionError(f"{blocks} blocks stored but the last height is {last_height}")
    cursor = txn.cursor(db=dbs.checkpoints)
    if cursor.last() and _key_number(cursor.key(), "checkpoint size") > size:
        raise CorruptionError(f"a checkpoint is stored for a size beyond the log size {size}")


class _Checker:
    """The full scan of :meth:`LmdbStore.check`.

    Strata are verified bottom-up as a chain of generators: stratum ``s`` yields the top of
    each of its full tiles (a level ``4s + 4`` node, recomputed from the tile), and stratum
    ``s + 1`` compares its bottom row with them. Memory stays ``O(log n)`` tiles however large
    the log, and every tile is read once, in key order.
    """

    def __init__(self, txn: Any, dbs: _Dbs, progress: Callable[[int, int], None] | None) -> None:
        self._txn = txn
        self._dbs = dbs
        self._progress = progress
        self._snap = _Snapshot(txn, dbs)
        self._index = txn.cursor(db=dbs.index)
        self._done = 0
        self._total = 0

    def run(self) -> None:
        txn, dbs, snap = self._txn, self._dbs, self._snap
        _check_shape(txn, dbs, snap)
        size = snap.size
        strata = [s for s in range(MAX_STRATA) if size >> (TILE_HEIGHT * s)]
        self._total = sum(
            -(-(size >> (TILE_HEIGHT * s)) // TILE_WIDTH) for s in strata
        )  # full tiles plus the edge tile of each stratum
        lower: Iterator[bytes] | None = None
        for stratum in strata:
            lower = self._stratum(stratum, lower)
        if lower is not None and next(lower, None) is not None:
            raise CorruptionError("the top stratum has a full tile but no stratum above it")
        if Frontier.from_reader(snap, size).root() != snap.root:
            raise CorruptionError("the stored tree head does not match the stored nodes")
        self._check_blocks()
        if self._progress is not None:
            self._progress(self._done, self._total)

    def _tick(self) -> None:
        self._done += 1
        if self._progress is not None and self._done % 1024 == 0:
            self._progress(self._done, self._total)

    def _stratum(self, stratum: int, lower: Iterator[bytes] | None) -> Iterator[bytes]:
        count = self._snap.size >> (TILE_HEIGHT * stratum)
        full = count >> TILE_HEIGHT
        expected_t = 0
        for key, value in self._txn.cursor(db=self._dbs.tiles[stratum]):
            if key != _U64.pack(expected_t) or expected_t >= full:
                raise CorruptionError(
                    f"stratum {stratum}: found tile key {bytes(key).hex()} where tile "
                    f"{expected_t} was expected"
                )
            if len(value) != FULL_TILE_BYTES:
                raise CorruptionError(
                    f"tile {expected_t} of stratum {stratum} is {len(value)} bytes, expected "
                    f"{FULL_TILE_BYTES}"
                )
            top = self._tile(stratum, expected_t, value, TILE_WIDTH, lower)
            expected_t += 1
            self._tick()
            yield top
        if expected_t != full:
            raise CorruptionError(f"stratum {stratum} has {expected_t} full tiles, needs {full}")
        width = count & (TILE_WIDTH - 1)
        if width:
            edge = self._snap.tile(stratum, full)  # checks presence and length
            self._tile(stratum, full, edge, width, lower)
            self._tick()
        if lower is not None and next(lower, None) is not None:
            raise CorruptionError(
                f"stratum {stratum - 1} has more full tiles than stratum {stratum} has nodes"
            )

    def _tile(
        self, stratum: int, t: int, tile: bytes, width: int, lower: Iterator[bytes] | None
    ) -> bytes:
        """Verify one tile with ``width`` bottom-row nodes; return its top if it is full."""
        base = TILE_HEIGHT * stratum
        row = [tile[o : o + HASH_SIZE] for o in OFFSETS[0][:width]]
        first = t * TILE_WIDTH
        if lower is None:  # stratum 0: the bottom row holds digests
            for j, digest in enumerate(row):
                self._check_indexed(first + j, digest)
            row = leaf_hashes(row)
        else:
            for j, value in enumerate(row):
                expected = next(lower, None)
                if expected is None:
                    raise CorruptionError(
                        f"stratum {stratum - 1} has fewer full tiles than stratum {stratum} "
                        "has nodes"
                    )
                if value != expected:
                    raise CorruptionError(
                        f"node ({base}, {first + j}) does not match the hash of its children "
                        f"({base - 1}, {2 * (first + j)}) and ({base - 1}, {2 * (first + j) + 1})"
                    )
        for r in range(1, TILE_HEIGHT):
            n = width >> r
            upper = [tile[o : o + HASH_SIZE] for o in OFFSETS[r][:n]]
            for j in range(n):
                if upper[j] != node_hash(row[2 * j], row[2 * j + 1]):
                    index = (t << (TILE_HEIGHT - r)) + j
                    raise CorruptionError(
                        f"node ({base + r}, {index}) does not match the hash of its children "
                        f"({base + r - 1}, {2 * index}) and ({base + r - 1}, {2 * index + 1})"
                    )
            row = upper
        return node_hash(row[0], row[1]) if width == TILE_WIDTH else b""

    def _check_indexed(self, index: int, digest: bytes) -> None:
        """Digest ``index`` is filed under its key, and no other leaf holds the same digest."""
        cursor = self._index
        found = False
        if cursor.set_key(_index_key(leaf_hash(digest))):
            for value in cursor.iternext_dup(keys=False):
                other = int.from_bytes(value, "big")
                if other == index:
                    found = True
                elif other < self._snap.size and self._snap.digest(other) == digest:
                    raise CorruptionError(f"leaves {other} and {index} hold the same digest")
        if not found:
            raise CorruptionError(f"leaf {index} is missing from the digest index")

    def _check_blocks(self) -> None:
        expected = 1
        for key, value in self._txn.cursor(db=self._dbs.blocks):
            height = _key_number(key, "block height")
            if height != expected:
                raise CorruptionError(f"block height {height} found where {expected} expected")
            _decode_block(height, value)
            expected += 1
