"""``LmdbStore``: the durable :class:`~ledger.storage.base.Store`, one LMDB environment per node.

Durability
----------
One environment (a directory holding ``data.mdb`` and ``lock.mdb``), opened with ``sync`` and
``metasync`` on and without ``writemap``: a committed transaction is on disk before the call
returns, which the consensus persistence rules rely on (design brief, section 4). Every
mutating call is exactly one write transaction, so a crash or an exception leaves either all
of its writes or none. Writes from several threads of one process are serialised by a lock; run
one writing process per store. A process may open a store only once at a time (LMDB's locks are
per process; a second open is refused).

Layout, format 2 (named databases)
----------------------------------
Every value is sealed with a CRC-32 of its key and payload (:mod:`ledger.storage._codec`),
checked on every read.

``state``          ``format`` -> ``ledger-lmdb/2``; ``head`` -> the tree size, root, frontier
                   (the roots of the full subtrees the size decomposes into) and the index
                   generation; ``index`` -> the digest index's state
                   (:class:`~ledger.storage._index.IndexState`).
``tiles00``..``tiles15``
                   one per stratum ``s`` (levels ``4s .. 4s+3``): 8-byte big-endian tile index ->
                   the 960-byte *full* tile (:mod:`ledger.storage._tiles`). Full tiles never
                   change and their keys only grow, so they are written with ``MDB_APPEND``; four
                   fill a 4 KiB page.
``edge``           1-byte stratum -> that stratum's partial right-edge tile.
``runs``, ``merged``, ``stripes``
                   the digest index's sorted runs: flushed, merged, a completed stripe's
                   (:mod:`ledger.storage._index`).
``filters``        the index's per-stripe lookup filters.
``blocks``         8-byte big-endian height -> the block and its certificate, compact
                   (:func:`~ledger.storage._codec.pack_block_record`: a block's digest list is
                   re-read from the tree when it is exactly the leaves the block appended).
``checkpoints``    8-byte big-endian tree size -> the signed checkpoint note, compact.
``meta``           consensus safety state and node metadata, opaque to the store.
``dict``           4-byte id -> a byte string the compact records name (validator keys, chain
                   id, origin, signer names), each stored twice (id and id | 2**31).

Format 1 (``ledger-lmdb/1``, the stores written before) is upgraded in place when a store is
opened for writing (:mod:`ledger.storage._migrate`), or by ``ledger db migrate DIR``.

Opening reads a bounded amount, whatever the log's size: the state values, the dictionary,
the metadata values (each checked), the edge tiles, and what the index keeps in memory (the
leaves since its last flush, the filter of the stripe being filled).

Damage
------
A value whose checksum fails, or whose contents contradict the rest of the store, is never
served: the read raises :class:`~ledger.storage.base.DamageError` (a ``CorruptionError``)
carrying a :class:`~ledger.storage.base.Damage` that says how it is repaired.
:meth:`LmdbStore.scrub` finds damage a bounded step at a time; the ``repair_*`` calls and
:meth:`LmdbStore.rebuild` rewrite exactly the damaged value. Damage that cannot be repaired
(the state values, a metadata value, both copies of a dictionary entry) makes :meth:`open`
refuse with a one-line reason naming the value and the fix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import compress
from operator import and_, eq, itemgetter
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from ledger.errors import CorruptionError, MalformedError, NotFoundError, StorageError
from ledger.merkle import proof
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_HASH_PREFIX,
    leaf_hashes,
)
from ledger.merkle.proof import Chain
from ledger.storage import _index as ix
from ledger.storage._codec import (
    Dictionary,
    DictionaryTxn,
    checksum_ok,
    link_certificate,
    pack_block_record,
    pack_note,
    seal,
    unpack_block_record,
    unpack_note,
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
    REPAIR_LOCAL,
    REPAIR_NONE,
    REPAIR_OWNER,
    REPAIR_PEER,
    AppendResult,
    BlockRecord,
    Damage,
    DamageError,
    DiskFullError,
    ScrubReport,
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

__all__ = ["DEFAULT_MAP_SIZE", "FORMAT_VERSION", "LmdbStore"]

#: Default LMDB map size (address space reserved, not disk used): 64 GiB, about 700 million
#: anchors. LMDB cannot grow the map while other threads read, so an operator who needs more
#: reopens the store with a larger ``map_size``.
DEFAULT_MAP_SIZE = 64 << 30

#: The on-disk format this code writes. Format 1 stores are upgraded when opened for writing.
FORMAT_VERSION = 2
FORMAT_TAG = b"ledger-lmdb/2"
FORMAT_V1_TAG = b"ledger-lmdb/1 tiles=4 index=leafhash8"
_FORMAT_KEY = b"format"
_HEAD_KEY = b"head"
_INDEX_KEY = b"index"
_U64 = struct.Struct(">Q")
#: The log holds at most 2**48 leaves (the limit of format 1, kept).
MAX_LOG_SIZE = 1 << 48
_TILE_DB_NAMES = tuple(b"tiles%02d" % s for s in range(MAX_STRATA))
_OTHER_DB_NAMES = (
    b"state", b"edge", b"blocks", b"checkpoints", b"meta", b"dict", b"runs", b"merged",
    b"stripes", b"filters",
)
_MAX_DBS = 40
_TWIN = 1 << 31
#: Values longer than this are certainly in LMDB overflow pages (the node limit is about 2 KiB
#: on 4 KiB pages), which stay where they are until the value is rewritten or deleted.
_OVERFLOW_SAFE = 1 << 16
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
_OPEN_PATHS: set[str] = set()
_OPEN_LOCK = threading.Lock()
#: Bound of the store-wide cache of full tiles of strata 2 and up (about 4 MiB at most).
_SHARED_TILES = 1 << 12
#: Bound of the shared cache of ragged subtree roots.
_SHARED_RANGES = 4096
assert 1 << _STRATUM_SHIFT == TILE_HEIGHT and MAX_STRATA <= TILE_WIDTH
_sha256 = hashlib.sha256


def _wrap(exc: lmdb.Error) -> StorageError:
    """Translate an LMDB exception into our error tree."""
    if isinstance(exc, lmdb.MapFullError):
        return StorageError("the LMDB map is full: reopen the store with a larger map_size")
    if isinstance(exc, _CORRUPTION_ERRORS):
        return CorruptionError(f"LMDB reports a damaged database: {exc}")
    return StorageError(f"LMDB error: {exc}")


def _edge_key(stratum: int) -> bytes:
    return bytes((stratum,))


def _dict_key(ident: int) -> bytes:
    return ident.to_bytes(4, "big")


def _key_number(key: bytes | memoryview, what: str) -> int:
    """:raises CorruptionError: the key is not 8 bytes."""
    if len(key) != _U64.size:
        raise CorruptionError(f"a stored {what} key is {len(key)} bytes, expected 8")
    number: int = _U64.unpack(bytes(key))[0]
    return number


def _tile_damage(stratum: int, t: int, size: int, detail: str) -> Damage:
    count = size >> (TILE_HEIGHT * stratum)
    first = t * TILE_WIDTH
    end = min(first + TILE_WIDTH, count) if t >= count >> TILE_HEIGHT else first + TILE_WIDTH
    shift = TILE_HEIGHT * stratum
    full = t < count >> TILE_HEIGHT
    return Damage(
        kind="tile",
        key=f"tiles{stratum:02d}/{t}" if full else f"edge/{stratum}",
        repair=REPAIR_PEER,
        detail=detail,
        stratum=stratum,
        tile=t,
        levels=(TILE_HEIGHT * stratum, TILE_HEIGHT * stratum + TILE_HEIGHT - 1),
        nodes=(first, end),
        leaves=(first << shift, min(end << shift, size)),
    )


def _damage(damage: Damage) -> DamageError:
    return DamageError(damage)


@dataclass(frozen=True, slots=True)
class _Dbs:
    """Handles of the named databases of one environment."""

    state: Any
    edge: Any
    blocks: Any
    checkpoints: Any
    meta: Any
    dict: Any
    runs: Any
    merged: Any
    stripes: Any
    filters: Any
    tiles: tuple[Any, ...]

    def run_db(self, run: Any) -> Any:
        """Level-1 runs (flushes), level-2 runs (merges of level-1 runs) and level-3 runs (a
        completed stripe's) each have their database, so each is written in key order
        (MDB_APPEND: full pages) while a merge of each level runs."""
        return self.level_db(run.level)

    def level_db(self, level: int) -> Any:
        return self.runs if level == 1 else self.merged if level == 2 else self.stripes

    def tag_db(self, tag: bytes) -> Any:
        return {b"R": self.runs, b"M": self.merged, b"T": self.stripes}.get(tag, self.filters)


@dataclass(frozen=True, slots=True)
class _Head:
    """The stored tree head: size, root, frontier hashes and the index generation."""

    size: int
    root: bytes
    gen: int
    hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return seal(_HEAD_KEY, bytes(msgpack.packb(
            [self.size, self.root, self.gen, list(self.hashes)], use_bin_type=True)))


_HEAD_CACHE: list[tuple[bytes, _Head]] = []


def _decode_head(value: bytes | memoryview | None) -> _Head:
    """:raises DamageError: the stored tree head is missing, damaged or malformed.

    Every read transaction reads the head; the last one decoded is remembered by its exact
    bytes (comparing them is the same check as verifying them again).
    """
    if value is not None and _HEAD_CACHE:
        raw, head = _HEAD_CACHE[0]
        if len(raw) == len(value) and raw == bytes(value):  # bytes == bytes: one memcmp
            return head
    head = _decode_head_bytes(value)
    _HEAD_CACHE[:] = [(bytes(value), head)]  # type: ignore[arg-type]
    return head


def _decode_head_bytes(value: bytes | memoryview | None) -> _Head:
    what = "the stored tree head (state/head)"
    if value is None:
        raise _damage(_state_damage("head", f"{what} is missing"))
    if not checksum_ok(_HEAD_KEY, value):
        raise _damage(_state_damage("head", f"{what} is damaged (checksum mismatch)"))
    try:
        size, root, gen, hashes = msgpack.unpackb(bytes(value[:-4]), raw=False)
        head = _Head(int(size), bytes(root), int(gen), tuple(bytes(h) for h in hashes))
        frontier = Frontier(size=head.size, hashes=head.hashes)
    except Exception:
        raise _damage(_state_damage("head", f"{what} does not decode")) from None
    if frontier.root() != head.root:
        raise _damage(_state_damage("head", f"{what} does not match its frontier"))
    return head


def _state_damage(key: str, detail: str) -> Damage:
    return Damage(kind="state", key=f"state/{key}", repair=REPAIR_NONE, detail=detail)


class _TileCache:
    """Tiles kept in memory across snapshots.

    - Full tiles of strata 2 and up (levels >= 8): a full tile never changes once written, so a
      cached copy is never stale; at 10**7 leaves they are 2,441 tiles (2.3 MB). Bounded by
      :data:`_SHARED_TILES` entries.
    - The edge tile of each stratum *for one tree size*.
    - Ragged right-edge subtree roots by ``(start, end)``, never stale in an append-only log.

    Entries are checked (their checksums) before they enter, and replaced whole.
    """

    __slots__ = ("_edges", "_full", "ranges")

    def __init__(self) -> None:
        self._full: dict[int, bytes] = {}
        self._edges: dict[int, tuple[int, bytes]] = {}
        self.ranges: dict[tuple[int, int], bytes] = {}

    def get(self, stratum: int, t: int, full: int, size: int) -> bytes | None:
        if t < full:
            return self._full.get((t << TILE_HEIGHT) | stratum) if stratum > 1 else None
        entry = self._edges.get(stratum)
        return entry[1] if entry is not None and entry[0] == size else None

    def put(self, stratum: int, t: int, full: int, size: int, tile: bytes) -> None:
        if t >= full:
            self._edges[stratum] = (size, tile)
        elif stratum > 1 and len(self._full) < _SHARED_TILES:
            self._full[(t << TILE_HEIGHT) | stratum] = tile

    def forget(self, stratum: int, t: int) -> None:
        self._full.pop((t << TILE_HEIGHT) | stratum, None)
        self._edges.pop(stratum, None)
        self.ranges.clear()


class _Snapshot:
    """A :class:`~ledger.merkle.proof.NodeReader` over one LMDB transaction.

    Everything read through one snapshot is consistent (LMDB MVCC); tiles are verified
    (checksum) when read and cached for the snapshot's short life.
    """

    __slots__ = ("_cache", "_dbs", "_shared", "_txn", "gen", "head", "root", "size")

    def __init__(
        self, txn: Any, dbs: _Dbs, shared: _TileCache | None = None, head: _Head | None = None
    ) -> None:
        """:raises DamageError: the stored tree head is missing or damaged."""
        self._txn = txn
        self._dbs = dbs
        self._cache: dict[int, bytes] = {}
        self._shared = shared
        if head is None:
            head = _decode_head(txn.get(_HEAD_KEY, db=dbs.state))
        self.head = head
        self.size = head.size
        self.root = head.root
        self.gen = head.gen

    def tile(self, stratum: int, t: int) -> bytes:
        """Tile ``t`` of ``stratum`` as stored (full, or the partial edge tile), checked.

        :raises DamageError: the tile is missing, damaged, or of the wrong length.
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
            key = _U64.pack(t)
            raw = self._txn.get(key, db=self._dbs.tiles[stratum])
            expected = FULL_TILE_BYTES
        else:
            key = _edge_key(stratum)
            raw = self._txn.get(key, db=self._dbs.edge)
            expected = TILE_HASHES[count & (TILE_WIDTH - 1)] * HASH_SIZE
        if raw is None:
            raise _damage(_tile_damage(stratum, t, self.size, "missing"))
        if not checksum_ok(key, raw):
            raise _damage(_tile_damage(stratum, t, self.size, "damaged (checksum mismatch)"))
        value = bytes(raw[:-4])
        if len(value) != expected:
            raise _damage(_tile_damage(
                stratum, t, self.size,
                f"{len(value)} bytes, expected {expected} for a log of size {self.size}"))
        self._cache[cache_key] = value
        if shared is not None:
            shared.put(stratum, t, full, self.size, value)
        return value

    def node(self, level: int, index: int) -> bytes:
        """Full node ``(level, index)``; level 0 is recomputed from the stored digest.

        :raises NotFoundError: not a full node of this snapshot's tree (or negative).
        :raises DamageError: its tile is damaged.
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
        leaf: bytes = _sha256(LEAF_HASH_PREFIX + tile[offset : offset + HASH_SIZE]).digest()
        return leaf

    def range_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]), memoised in the store's shared cache."""
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
        :raises DamageError: its tile is damaged.
        """
        if index < 0 or index >= self.size:
            raise NotFoundError(f"no leaf {index} in a log of size {self.size}")
        tile = self.tile(0, index >> TILE_HEIGHT)
        offset = OFFSETS[0][index & (TILE_WIDTH - 1)]
        return tile[offset : offset + HASH_SIZE]

    def digests(self, start: int, end: int) -> list[bytes]:
        """The digests of leaves ``[start, end)``, in order.

        :raises NotFoundError: ``end`` exceeds the size.
        :raises DamageError: a tile is damaged.
        """
        if end > self.size or start < 0:
            raise NotFoundError(f"no leaves [{start}, {end}) in a log of size {self.size}")
        out: list[bytes] = []
        offsets = OFFSETS[0]
        i = start
        while i < end:
            t = i >> TILE_HEIGHT
            tile = self.tile(0, t)
            stop = min(end, (t + 1) << TILE_HEIGHT)
            for j in range(i & (TILE_WIDTH - 1), ((stop - 1) & (TILE_WIDTH - 1)) + 1):
                o = offsets[j]
                out.append(tile[o : o + HASH_SIZE])
            i = stop
        return out


@dataclass(frozen=True)
class _Previewed:
    """The work of a :meth:`LmdbStore.preview` of a tuple of digests, for the append of that
    same tuple at the same tree head (size and index generation)."""

    digests: tuple[bytes, ...]
    size: int
    gen: int
    plan: Any
    hashes: list[int]
    frontier: Frontier
    rows: list[list[bytes]]


@dataclass
class _Outcome:
    """What a committed append changes in memory (applied only after the commit)."""

    result: AppendResult
    frontier: Frontier
    head: _Head
    state: ix.IndexState
    current: array[int]
    digests: list[bytes]
    hashes: list[int]
    added: dict[int, bytes]


class LmdbStore:
    """The durable :class:`~ledger.storage.base.Store`; create it with :meth:`open`."""

    #: Free bytes below which a write is refused before LMDB tries it, plus
    #: :attr:`reserve_per_digest` for each digest it appends.
    disk_reserve = 1 << 20
    reserve_per_digest = 512

    def __init__(self, *, env: Any, dbs: _Dbs, path: Path, readonly: bool) -> None:
        """Private: use :meth:`open`, which checks the store before handing it out."""
        self._env: Any = env
        self._dbs = dbs
        self._path = path
        self._readonly = readonly
        self._write_lock = threading.RLock()
        #: Held by a :meth:`scrub` step (which may run in a thread of its own: a step can take
        #: a few hundred milliseconds) and by whatever closes or replaces the environment.
        self._env_guard = threading.Lock()
        self._tiles = _TileCache()
        self._identity = ""
        self._dictionary = Dictionary()
        self._frontier = Frontier.empty()
        self._previewed: _Previewed | None = None
        self._head = TreeHead(size=0, root=EMPTY_ROOT)
        self._view: ix.View | None = None
        self._filter_checked: dict[int, bytearray] = {}
        self._done_cache: dict[int, ix.DoneFilter] = {}
        #: Damage found while opening that blocks writes until it is repaired.
        self._blocking: list[Damage] = []
        self._noticed: dict[str, Damage] = {}
        #: Set when the store was upgraded from format 1 by this open.
        self.upgraded_from: int | None = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
        upgrade: bool = True,
        index_params: ix.IndexParams | None = None,
    ) -> LmdbStore:
        """Open (creating if needed and not ``readonly``) the store in directory ``path``.

        A format-1 store is upgraded in place first when ``upgrade`` and not ``readonly``
        (:func:`ledger.storage._migrate.migrate`; the old data file is kept beside it).
        ``index_params`` sets the digest index's geometry of a *new* store (tests use small
        ones); an existing store keeps its own.

        :raises StorageError: the directory is not a ledger store, cannot be opened, holds a
            format-1 store and ``readonly`` or not ``upgrade`` (the message says how to
            upgrade it), or (when ``readonly``) holds no store.
        :raises CorruptionError: the data file is truncated, or a value opening needs is
            damaged beyond repair (the message names it and the fix).
        """
        directory = Path(path)
        identity = os.path.realpath(directory)
        with _OPEN_LOCK:
            if identity in _OPEN_PATHS:
                raise StorageError(f"the store at {directory} is already open in this process")
            _OPEN_PATHS.add(identity)
        try:
            upgraded = None
            if not readonly and upgrade:
                from ledger.storage._migrate import upgrade_if_needed

                upgraded = upgrade_if_needed(directory, map_size=map_size)
            store = cls._open(
                directory, map_size=map_size, readonly=readonly, index_params=index_params
            )
            store.upgraded_from = upgraded
        except BaseException:
            with _OPEN_LOCK:
                _OPEN_PATHS.discard(identity)
            raise
        store._identity = identity
        return store

    @classmethod
    def _open(
        cls,
        directory: Path,
        *,
        map_size: int,
        readonly: bool,
        index_params: ix.IndexParams | None,
    ) -> LmdbStore:
        data = directory / "data.mdb"
        if data.exists() and data.stat().st_size == 0:
            raise CorruptionError(f"{data} is empty: the store was truncated")
        if readonly and not data.exists():
            raise StorageError(f"no store at {directory}")
        env = open_environment(directory, map_size=map_size, readonly=readonly)
        try:
            check_file_length(env, data)
            dbs = _open_databases(env, readonly, index_params or ix.DEFAULT_PARAMS, directory)
            store = cls(env=env, dbs=dbs, path=directory, readonly=readonly)
            store._load()
        except lmdb.Error as exc:
            env.close()
            raise _wrap(exc) from exc
        except BaseException:
            env.close()
            raise
        return store

    def _load(self) -> None:
        """Read and check what the store keeps in memory (a bounded amount).

        :raises CorruptionError: a value opening needs is damaged beyond repair.
        """
        env = self._env
        dbs = self._dbs
        with env.begin(buffers=True) as txn:
            head = _decode_head(txn.get(_HEAD_KEY, db=dbs.state))
            state = _read_index_state(txn, dbs)
            entries, twins_bad = _load_dictionary(txn, dbs)
            _check_meta_values(txn, dbs)
            snap = _Snapshot(txn, dbs, head=head)
            _check_shape(txn, dbs, snap, state)
            for stratum in range(MAX_STRATA):
                count = head.size >> (TILE_HEIGHT * stratum)
                if not count:
                    break
                if count & (TILE_WIDTH - 1):
                    try:
                        snap.tile(stratum, count >> TILE_HEIGHT)
                    except DamageError as exc:
                        self._blocking.append(exc.damage)
        self._dictionary = Dictionary(entries)
        self._frontier = Frontier(size=head.size, hashes=head.hashes)
        self._head = TreeHead(size=head.size, root=head.root)
        with env.begin(buffers=True) as txn:
            snap = _Snapshot(txn, dbs, head=head)
            self._view = self._build_view(txn, snap, state)
        self._blocking.extend(self._view.holes)
        if twins_bad and not self._readonly:
            self._write_dictionary_copies(entries, twins_bad)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The environment directory."""
        return self._path

    @property
    def index_params(self) -> ix.IndexParams:
        """The digest index's geometry (fixed when the store was created)."""
        assert self._view is not None
        return self._view.state.params

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

    # -- tree -------------------------------------------------------------------------------

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

    def _read(self, compute: Callable[[Any, _Snapshot], Any], shared: bool = True) -> Any:
        env = self._live_env()
        try:
            with env.begin(buffers=True) as txn:
                snap = _Snapshot(txn, self._dbs, self._tiles if shared else None)
                return compute(txn, snap)
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        except DamageError as exc:
            self._notice(exc.damage)  # the node repairs what its reads met (pending_damage)
            raise

    def preview(self, digests: Iterable[bytes]) -> AppendResult:
        """What :meth:`append` would return for ``digests``; writes nothing.

        :raises MalformedError: a digest is not 32 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a stored value read on the way is damaged.
        """
        batch = list(digests)

        def compute(txn: Any, snap: _Snapshot) -> AppendResult:
            view = self._view_for(txn, snap)
            frontier = self._frontier_for(snap)
            hashes: list[int] = []

            def lookup_many(ds: list[bytes], leaves: list[bytes]) -> list[int | None]:
                found, hs = self._lookup_many(txn, snap, view, ds, leaves)
                hashes[:] = hs
                return found

            plan = plan_append(batch, snap.size, lookup_many)
            new_frontier, rows = frontier.extend(plan.leaves)
            head = TreeHead(size=new_frontier.size, root=new_frontier.root())
            if isinstance(digests, tuple):
                # A block is previewed (validated) and then appended with the very same tuple:
                # the append reuses this work if nothing was appended in between.
                self._previewed = _Previewed(digests, snap.size, snap.gen, plan, hashes,
                                             new_frontier, rows)
            return AppendResult(head=head, indices=plan.indices, new=plan.new)

        result: AppendResult = self._read(compute)
        return result

    def append(
        self,
        digests: Iterable[bytes],
        *,
        block: BlockRecord | None = None,
        meta: Mapping[bytes, bytes | None] | None = None,
    ) -> AppendResult:
        """Append the digests not yet in the log and, if given, the block and the metadata
        items, in one transaction (one sync).

        Writes the new tiles, the index's changes, the tree head, the block with its
        certificate and the metadata items; LMDB syncs before this returns.

        :raises MalformedError: a digest is not 32 bytes, ``block`` is not a BlockRecord, or a
            metadata key or value is bad.
        :raises StorageError: ``block.height`` is not ``last_height() + 1``, the log would
            exceed 2**48 leaves, the store is closed or read-only, or LMDB fails.
        :raises DiskFullError: the disk is full (nothing was written).
        :raises DamageError: a stored value the append needs is damaged (repair it first).
        """
        env = self._writable_env()
        batch = list(digests)
        if meta is not None:
            check_meta_items(meta)
        if block is not None and not isinstance(block, BlockRecord):
            raise MalformedError("block must be a BlockRecord")
        with self._write_lock:
            if self._blocking:
                self._notice(self._blocking[0])
                raise _damage(self._blocking[0])
            self._check_space(len(batch))
            previewed, self._previewed = self._previewed, None
            if previewed is not None and previewed.digests is not digests:
                previewed = None
            try:
                with env.begin(write=True, buffers=True) as txn:
                    outcome = self._append_in(txn, batch, block, meta, previewed)
            except lmdb.Error as exc:
                raise self._write_error(exc) from exc
            except DamageError as exc:
                self._notice(exc.damage)
                raise
            self._publish(outcome)
        return outcome.result

    def _frontier_for(self, snap: _Snapshot) -> Frontier:
        if snap.size == self._frontier.size:
            return self._frontier
        return Frontier(size=snap.head.size, hashes=snap.head.hashes)

    def _append_in(
        self,
        txn: Any,
        batch: list[bytes],
        block: BlockRecord | None,
        meta: Mapping[bytes, bytes | None] | None,
        previewed: _Previewed | None = None,
    ) -> _Outcome:
        dbs = self._dbs
        snap = _Snapshot(txn, dbs)
        view = self._writer_view(txn, snap)
        if previewed is not None and (previewed.size, previewed.gen) == (snap.size, snap.gen):
            plan, hashes = previewed.plan, previewed.hashes
            new_frontier, rows = previewed.frontier, list(previewed.rows)
        else:
            frontier = self._frontier_for(snap)
            hashes = []

            def lookup_many(ds: list[bytes], leaves: list[bytes]) -> list[int | None]:
                found, hs = self._lookup_many(txn, snap, view, ds, leaves)
                hashes[:] = hs
                return found

            plan = plan_append(batch, snap.size, lookup_many)
            new_frontier, rows = frontier.extend(plan.leaves)
        old = snap.size
        if old + len(plan.digests) > MAX_LOG_SIZE:
            raise StorageError("the log cannot hold more than 2**48 leaves")
        if block is not None:
            check_block_follows(block, _last_height(txn, dbs))
        new = new_frontier.size
        result_head = TreeHead(size=new, root=new_frontier.root())
        new_hashes = [hashes[p] for p in plan.positions]
        if plan.digests:
            rows[0] = plan.digests  # stratum 0 stores the digests, not their leaf hashes
            self._write_tiles(txn, old, new, rows)
        state, current = self._index_write(txn, view, old, plan.digests, new_hashes)
        head = _Head(new, result_head.root, state.gen, new_frontier.hashes)
        txn.put(_HEAD_KEY, head.encode(), db=dbs.state)
        if state is not view.state:
            txn.put(_INDEX_KEY, seal(_INDEX_KEY, state.to_bytes()), db=dbs.state)
        ids = DictionaryTxn(self._dictionary)
        if block is not None:
            after = _Snapshot(txn, dbs, head=head)
            stored = pack_block_record(
                block.height,
                block.block,
                block.certificate,
                leaves=(old, plan.digests) if plan.digests else None,
                root_of=lambda size: (head.root if size == new else
                                      proof.root_at(after, size) if size <= new else None),
                ids=ids,
                digests_at=after.digests,
                root_at=lambda size: proof.root_at(after, size),
            )
            key = _U64.pack(block.height)
            # Heights only grow: MDB_APPEND fills pages (a plain insert at the end would
            # split each page in half).
            if not txn.put(key, seal(key, stored), db=dbs.blocks, append=True):
                raise CorruptionError(f"block {block.height} is already stored")
            self._link_previous(txn, block.height, stored)
        if meta:
            self._put_meta_in(txn, meta)
        self._write_dictionary(txn, ids.added)
        result = AppendResult(head=result_head, indices=plan.indices, new=plan.new)
        return _Outcome(result=result, frontier=new_frontier, head=head, state=state,
                        current=current, digests=plan.digests, hashes=new_hashes,
                        added=ids.added)

    def _link_previous(self, txn: Any, height: int, stored: bytes) -> None:
        """Let the previous block's certificate share the precommits this block's last commit
        carries (about 70 bytes each; see :func:`~ledger.storage._codec.link_certificate`).
        A damaged previous record is left as it is (the scrub reports it)."""
        if height < 2:
            return
        key = _U64.pack(height - 1)
        value = txn.get(key, db=self._dbs.blocks)
        if value is None or not checksum_ok(key, value):
            return
        linked = link_certificate(bytes(value[:-4]), stored)
        if linked is not None:
            txn.put(key, seal(key, linked), db=self._dbs.blocks)

    def _stored_block(self, txn: Any, height: int) -> bytes | None:
        """The stored (unsealed) record of ``height``, or None.

        :raises DamageError: it fails its checksum.
        """
        key = _U64.pack(height)
        value = txn.get(key, db=self._dbs.blocks)
        if value is None:
            return None
        if not checksum_ok(key, value):
            raise _damage(Damage(kind="block", key=f"blocks/{height}", repair=REPAIR_PEER,
                                 detail="damaged (checksum mismatch)", height=height))
        return bytes(value[:-4])

    def _write_tiles(self, txn: Any, old: int, new: int, rows: list[list[bytes]]) -> None:
        dbs = self._dbs
        for stratum in range(MAX_STRATA):
            shift = TILE_HEIGHT * stratum
            old_count, new_count = old >> shift, new >> shift
            if old_count == new_count:
                break
            key = _edge_key(stratum)
            edge = b""
            if old_count % TILE_WIDTH:
                raw = txn.get(key, db=dbs.edge)
                if raw is None or not checksum_ok(key, raw):
                    raise _damage(_tile_damage(stratum, old_count >> TILE_HEIGHT, old,
                                               "missing" if raw is None else
                                               "damaged (checksum mismatch)"))
                edge = bytes(raw[:-4])
            tiles, new_edge = extend_stratum(
                old_count, new_count, edge, rows[shift : shift + TILE_HEIGHT]
            )
            if tiles:
                first = old_count >> TILE_HEIGHT
                items = []
                for k, tile in enumerate(tiles):
                    tkey = _U64.pack(first + k)
                    items.append((tkey, seal(tkey, tile)))
                _, added = txn.cursor(db=dbs.tiles[stratum]).putmulti(items, append=True)
                if added != len(items):
                    raise CorruptionError(f"stratum {stratum} already holds tile {first}")
            if new_edge:
                txn.put(key, seal(key, new_edge), db=dbs.edge)
            elif edge:
                txn.delete(key, db=dbs.edge)

    def _publish(self, out: _Outcome) -> None:
        """Apply a committed append to the in-memory state (under the write lock)."""
        self._frontier = out.frontier
        self._head = out.result.head
        if out.added:
            self._dictionary.merge(out.added)
        view = self._view
        assert view is not None
        view.recent.extend(out.digests, out.hashes)
        if out.state is not view.state:
            recent = view.recent
            if out.state.ibase != recent.base:
                recent = recent.rebased(out.state.ibase)
            stripe = out.state.ibase >> out.state.params.stripe_bits
            # No view is kept for older snapshots (it would double L0's memory): a reader of
            # one builds its own (rare: only a reader racing a flush).
            self._view = ix.View(state=out.state, recent=recent, current=out.current,
                                 stripe=stripe)

    # -- the digest index -------------------------------------------------------------------

    def _writer_view(self, txn: Any, snap: _Snapshot) -> ix.View:
        """The view a write transaction works on (ours, unless another process wrote)."""
        view = self._view
        assert view is not None
        if view.state.gen == snap.gen and view.recent.upto == snap.size:
            return view
        state = _read_index_state(txn, self._dbs)
        view = self._build_view(txn, snap, state)
        self._view = view
        return view

    def _view_for(self, txn: Any, snap: _Snapshot) -> ix.View:
        """A view that covers ``snap``: ours, or one built for it (a snapshot older than our
        last flush, or newer than what we know when another process writes)."""
        view = self._view
        if view is not None and view.state.gen == snap.gen and view.recent.upto >= snap.size:
            return view
        with self._write_lock:  # a writer of this process may be publishing: wait for it
            view = self._view
            assert view is not None
            if view.state.gen == snap.gen and view.recent.upto >= snap.size:
                return view
            if view.state.gen == snap.gen and self._readonly:
                # Another process appended without flushing: read the new leaves.
                self._extend_recent(view, txn, snap)
                return view
            state = _read_index_state(txn, self._dbs)
            built = self._build_view(txn, snap, state)
            if state.gen >= view.state.gen and snap.size >= view.recent.upto:
                self._view = built
            return built

    def _extend_recent(self, view: ix.View, txn: Any, snap: _Snapshot) -> None:
        digests = snap.digests(view.recent.upto, snap.size)
        view.recent.extend(digests, ix.hashes_of(leaf_hashes(digests), view.state.secret))

    def _build_view(self, txn: Any, snap: _Snapshot, state: ix.IndexState) -> ix.View:
        """The in-memory index for one snapshot: L0 from the tiles since ``ibase`` and the
        filter of the stripe being filled (bounded reads, see :mod:`ledger.storage._index`).

        :raises DamageError: a tile of the L0 range is damaged.
        """
        params = state.params
        recent = ix.Recent(base=state.ibase, upto=state.ibase)
        holes: list[Damage] = []
        start = state.ibase
        while start < snap.size:
            end = min(snap.size, ((start >> TILE_HEIGHT) + 1) << TILE_HEIGHT)
            try:
                digests = snap.digests(start, end)
            except DamageError as exc:
                # Leaves we cannot read: lookups that miss must not say "not found", and no
                # write may go in before the tile is repaired (Store.repair_tile).
                holes.append(exc.damage)
                digests = [b""] * (end - start)
                recent.digests.extend(digests)
                recent.hashes.extend([0] * (end - start))
                recent.upto = end
            else:
                recent.extend(digests, ix.hashes_of(leaf_hashes(digests), state.secret))
            start = end
        stripe = state.ibase >> params.stripe_bits
        current = self._load_current_filter(txn, state, stripe)
        return ix.View(state=state, recent=recent, current=current, stripe=stripe,
                       holes=tuple(holes))

    def _load_current_filter(self, txn: Any, state: ix.IndexState, stripe: int) -> array[int]:
        """The filter of the filling stripe: its stored chunks, plus the level-1 runs written
        since they were stored. Rebuilt from the stripe's runs if a chunk is damaged."""
        params = state.params
        start = stripe << params.stripe_bits
        filt = ix.empty_filter(params)
        if state.ibase == start:
            return filt
        try:
            if state.fcover > start:
                target = memoryview(filt).cast("B")
                step = ix.FILTER_CHUNK_WORDS * 8
                for c, offset in enumerate(range(0, len(target), step)):
                    key = ix.cur_filter_key(stripe, c)
                    value = txn.get(key, db=self._dbs.filters)
                    if value is None or not checksum_ok(key, value) or \
                            len(value) - 4 != min(step, len(target) - offset):
                        raise CorruptionError(f"filter chunk {c} of stripe {stripe} is damaged")
                    target[offset : offset + len(value) - 4] = value[:-4]
                target.release()
                since = state.fcover
            else:
                since = start
            # The leaves flushed since the stored filter: their hashes from the tiles (at
            # most persist_every - 1 flushes of them).
            snap = _Snapshot(txn, self._dbs)
            step = 1 << 16
            for a in range(since, state.ibase, step):
                ds = snap.digests(a, min(a + step, state.ibase))
                ix.filter_insert(filt, params, ix.hashes_of(leaf_hashes(ds), state.secret))
        except DamageError:
            raise  # a tile it is rebuilt from: that damage, not the filter's
        except CorruptionError as exc:
            # The filter is derived data: rebuild it from the stripe's leaves (and say so).
            self._notice(self._filter_damage(state, stripe, exc.diagnostics()))
            filt = self._filter_from_tiles(txn, state, stripe)
        return filt

    def _filter_from_tiles(self, txn: Any, state: ix.IndexState, stripe: int) -> array[int]:
        params = state.params
        start = stripe << params.stripe_bits
        end = min(start + params.stripe, state.ibase)
        snap = _Snapshot(txn, self._dbs)
        filt = ix.empty_filter(params)
        step = 1 << 16
        for a in range(start, end, step):
            ds = snap.digests(a, min(a + step, end))
            ix.filter_insert(filt, params, ix.hashes_of(leaf_hashes(ds), state.secret))
        return filt

    def _done_filters(self, txn: Any, state: ix.IndexState) -> list[ix.DoneFilter | None]:
        """The completed stripes' filters, read in place; ``None`` for one that is missing or
        of the wrong size (its runs are then read for every lookup).

        A completed filter is written once and never changes until a rebuild in this process
        replaces it, and a value that large lives in overflow pages LMDB never moves, so the
        view into the memory map is kept across transactions (fetching an 8 MiB value costs
        LMDB about 15 us, a word test 0.1 us); closing the store, recovering its environment
        and a rebuild drop it. A small filter (tests) sits in a leaf page that later writes
        copy elsewhere: it is read again in every transaction.
        """
        out: list[ix.DoneFilter | None] = []
        nwords = 1 << state.params.filter_bits
        cache = self._done_cache
        for s in range(state.filters):
            cached = cache.get(s)
            if cached is not None:
                out.append(cached)
                continue
            key = ix.done_filter_key(s)
            value = txn.get(key, db=self._dbs.filters)
            checked = self._filter_checked.get(s)
            if checked is None:
                checked = bytearray(max(1, nwords // ix.FILTER_BLOCK_WORDS))
                self._filter_checked[s] = checked
            try:
                filt = None if value is None else ix.DoneFilter(key, value, nwords, checked)
            except CorruptionError:
                filt = None
            if filt is not None and len(value) > _OVERFLOW_SAFE:
                cache[s] = filt
            out.append(filt)
        return out

    def _lookup_many(
        self, txn: Any, snap: _Snapshot, view: ix.View, digests: Sequence[bytes],
        leaves: Sequence[bytes], recheck: bool = False,
    ) -> tuple[list[int | None], list[int]]:
        """The index of each digest in ``snap`` (or None), and the digests' keyed hashes.

        ``recheck``: a filter block that says "absent" is verified again even if this process
        verified it before (:meth:`index_of_rechecked`).

        :raises DamageError: an index entry names a leaf whose digest does not hash to it, or
            a value read on the way is damaged.
        """
        state = view.state
        hashes = ix.hashes_of(leaves, state.secret)
        get = view.recent.index.get
        size = snap.size
        out: list[int | None] = [get(d) for d in digests]
        if view.recent.upto > size:  # a newer L0 than this snapshot: hide what it lacks
            out = [None if i is None or i >= size else i for i in out]
        if state.ibase == 0:
            if view.holes and None in out:
                raise _damage(view.holes[0])
            return out, hashes
        pending = [i for i, found in enumerate(out) if found is None]
        if not pending:
            return out, hashes
        params = state.params
        shift = 64 - params.filter_bits
        pairs = ix.PAIRS
        # Each digest's filter word and bits (the same in every stripe's filter), then one
        # gather and compare per filter, in C (map/itemgetter): the test costs what reading
        # the word from memory costs.
        hs = [hashes[i] for i in pending]
        ws = [h >> shift for h in hs]
        ms = [pairs[h & 4095] | pairs[(h >> 12) & 4095] | pairs[(h >> 24) & 4095] for h in hs]
        for s, filt in enumerate(self._done_filters(txn, state) if state.filters else []):
            if not pending:
                break
            if filt is None:
                self._notice(self._filter_damage(state, s, "missing"))
                hits = [True] * len(pending)
            else:
                hits = _filter_hits(filt.words, ws, ms)
                if recheck:
                    bad = [not h and not filt.recheck_block(w) for h, w in
                           zip(hits, ws, strict=True)]
                    if any(bad):
                        self._notice(self._filter_damage(state, s, "damaged (checksum mismatch)"))
                        hits = [h or b for h, b in zip(hits, bad, strict=True)]
                elif not filt.all_checked():
                    bad = [not filt.block_ok(w) for w in ws]
                    if any(bad):
                        self._notice(self._filter_damage(state, s, "damaged (checksum mismatch)"))
                        hits = [h or b for h, b in zip(hits, bad, strict=True)]
            if any(hits):
                pending, ws, ms = self._probe_hits(txn, snap, state, s, digests, hashes, hits,
                                                   pending, ws, ms, out)
        if pending and state.ibase > (state.filters << params.stripe_bits):
            hits = _filter_hits(view.current, ws, ms)
            if any(hits):
                self._probe_hits(txn, snap, state, state.filters, digests, hashes, hits,
                                 pending, ws, ms, out)
        if view.holes and any(found is None for found in out):
            raise _damage(view.holes[0])
        return out, hashes

    def _probe_hits(
        self, txn: Any, snap: _Snapshot, state: ix.IndexState, stripe: int,
        digests: Sequence[bytes], hashes: Sequence[int], hits: list[bool], pending: list[int],
        ws: list[int], ms: list[int], out: list[int | None],
    ) -> tuple[list[int], list[int], list[int]]:
        """Probe a stripe's runs for the digests its filter let through; return the digests
        still unanswered, with their filter words and bits."""
        found = False
        for k in compress(range(len(pending)), hits):
            i = pending[k]
            index = self._probe_stripe(txn, snap, state, stripe, digests[i], hashes[i])
            if index is not None:
                out[i] = index
                found = True
        if not found:
            return pending, ws, ms
        keep = [out[i] is None for i in pending]
        return (list(compress(pending, keep)), list(compress(ws, keep)),
                list(compress(ms, keep)))

    def _probe_stripe(
        self, txn: Any, snap: _Snapshot, state: ix.IndexState, stripe: int, digest: bytes,
        h: int,
    ) -> int | None:
        bits = state.params.stripe_bits
        start = stripe << bits
        key = h >> bits
        for run in state.runs_of_stripe(stripe):
            try:
                offsets = ix.probe_run(txn, self._dbs.run_db(run), run.ident, key, bits)
            except CorruptionError as exc:
                raise _damage(self._run_damage(run, exc.diagnostics())) from None
            for offset in offsets:
                leaf = start + offset
                if not run.first <= leaf < run.end or leaf >= snap.size:
                    raise _damage(self._run_damage(
                        run, f"an entry names leaf {leaf}, outside the run's leaves"))
                stored = snap.digest(leaf)
                if stored == digest:
                    return leaf  # a digest is in the log once (check() proves it)
                # Another digest under the same key is a hash collision only if its own
                # key is this one; otherwise the entry (or the tile) is damaged.
                other = ix.hashes_of(leaf_hashes([stored]), state.secret)[0] >> bits
                if other != key:
                    raise _damage(self._run_damage(
                        run, f"an entry for leaf {leaf} does not match the digest stored there"))
        return None

    @staticmethod
    def _filter_damage(state: ix.IndexState, stripe: int, detail: str) -> Damage:
        start = stripe << state.params.stripe_bits
        return Damage(kind="filter", key=f"filters/{stripe}", repair=REPAIR_LOCAL,
                      detail=detail, leaves=(start, start + state.params.stripe))

    def _notice(self, damage: Damage) -> None:
        self._noticed.setdefault(damage.key, damage)

    def noticed(self) -> list[Damage]:
        """Damage met by reads that still answered correctly (a damaged lookup filter is
        bypassed: the runs are read instead). The caller rebuilds it (:meth:`rebuild`); a pass
        of :meth:`scrub` reports it too."""
        return [d for d in self._noticed.values() if d.kind == "filter"]

    def pending_damage(self) -> list[Damage]:
        """Every damaged value met since it was last repaired: by a read or write that raised
        :class:`~ledger.storage.base.DamageError`, by a read that answered around it (a
        filter), or while opening (an edge tile or an index hole that blocks appends). The
        node repairs these first (:mod:`ledger.node.repair`), then :meth:`forget` s them."""
        out = list(self._noticed.values())
        out += [d for d in self._blocking if d.key not in self._noticed]
        return out

    def forget(self, key: str) -> None:
        """Drop ``key`` from :meth:`pending_damage` (it was repaired, or a read of it now
        succeeds)."""
        self._noticed.pop(key, None)

    @staticmethod
    def _run_damage(run: ix.RunInfo, detail: str) -> Damage:
        return Damage(kind="index", key=f"runs/{run.ident}", repair=REPAIR_LOCAL,
                      detail=detail, leaves=(run.first, run.end))

    def _index_write(
        self, txn: Any, view: ix.View, old: int, digests: list[bytes], hashes: list[int]
    ) -> tuple[ix.IndexState, array[int]]:
        """Flush L0 into runs, advance a merge, delete garbage; return the new state and the
        filter of the filling stripe (the view's, or a new one after a stripe completed)."""
        state = view.state
        params = state.params
        bits = params.stripe_bits
        recent = view.recent
        size = old + len(digests)
        current = view.current
        dbs = self._dbs
        st = {
            "ibase": state.ibase, "fcover": state.fcover, "filters": state.filters,
            "next_run": state.next_run, "flushes": state.flushes, "gen": state.gen,
        }
        runs = list(state.runs)
        garbage = list(state.garbage)
        jobs = list(state.jobs)
        changed = False

        keep = ((1 << 64) - 1) ^ ((1 << bits) - 1)
        while size - st["ibase"] >= params.flush:
            first = st["ibase"]
            stripe = first >> bits
            start = stripe << bits
            a = first - recent.base
            part = list(recent.hashes[a : a + params.flush])
            if len(part) < params.flush:
                b = max(0, first - old)
                part += hashes[b : b + params.flush - len(part)]
            records = sorted([(h & keep) | o for h, o in
                              zip(part, range(first - start, first - start + params.flush),
                                  strict=True)])
            run = st["next_run"]
            ix.write_chunks(lambda k, v: txn.put(k, v, db=dbs.runs, append=True), run, records)
            runs.append(ix.RunInfo(run, 1, first, first + params.flush))
            ix.filter_insert(current, params, part)  # the full hashes: runs keep only the top
            st["next_run"] += 1
            st["ibase"] = first + params.flush
            st["flushes"] += 1
            st["gen"] += 1
            changed = True
            if st["ibase"] == start + params.stripe:
                key = ix.done_filter_key(stripe)
                txn.put(key, ix.seal_done_filter(key, current), db=dbs.filters)
                self._filter_checked.pop(stripe, None)
                self._done_cache.pop(stripe, None)
                st["filters"] += 1
                garbage.append(ix.cur_filter_prefix(stripe))  # b"C" + stripe
                st["fcover"] = st["ibase"]
                st["flushes"] = 0
                current = ix.empty_filter(params)
            elif st["flushes"] >= params.persist_every:
                self._persist_current(txn, stripe, current)
                st["fcover"] = st["ibase"]
                st["flushes"] = 0
        # Merge work, spread evenly over appends. Each entry is merged twice in its life
        # (into a level-2 run, then into its stripe's single run): three entries per appended
        # digest keep up with room to spare. One merge per output level may run at once (each
        # writes its own database in key order); level-2 merges go first (level-1 runs would
        # pile up behind a long stripe merge).
        budget = 3 * len(digests)
        first_step = True
        for level in (2, 3):
            job = next((j for j in jobs if j.level == level), None)
            while True:
                if job is None:
                    job = _next_job(runs, params, st["next_run"], st["ibase"], level)
                    if job is None:
                        break
                    st["next_run"] += 1
                    jobs.append(job)
                    changed = True
                if budget <= 0 and not first_step:
                    break
                first_step = False
                inputs = [r for r in runs if r.ident in job.inputs]
                lo, hi = ix.slice_range(job.next_slice, job.slices)
                merged: list[int] = []
                try:
                    for r in inputs:
                        merged.extend(ix.read_run_range(txn, dbs.run_db(r), r.ident, lo, hi,
                                                        "merge"))
                except CorruptionError:
                    break  # a damaged input: the merge waits for Store.rebuild
                merged.sort()
                out_db = dbs.level_db(job.level)

                def put(key: bytes, value: bytes, db: Any = out_db) -> Any:
                    return txn.put(key, value, db=db, append=True)

                ix.write_chunks(put, job.output, merged)
                advanced = replace(job, next_slice=job.next_slice + 1)
                jobs = [advanced if j.output == job.output else j for j in jobs]
                job = advanced
                changed = True
                budget -= max(1, len(merged))
                if job.next_slice == job.slices:
                    jobs = [j for j in jobs if j.output != job.output]
                    first, end = inputs[0].first, inputs[-1].end
                    runs = [r for r in runs if r.ident not in job.inputs]
                    runs.append(ix.RunInfo(job.output, job.level, first, end))
                    runs.sort(key=lambda r: r.first)
                    garbage.extend(ix.run_garbage(r) for r in inputs)
                    st["gen"] += 1
                    if first >> bits == st["ibase"] >> bits and \
                            st["ibase"] & (params.stripe - 1):
                        self._persist_current(txn, st["ibase"] >> bits, current)
                        st["fcover"] = st["ibase"]
                        st["flushes"] = 0
                    job = None
        # Garbage: delete a bounded number of dead chunks per append.
        budget = max(64, len(digests) // 16)
        while garbage and budget > 0:
            entry = garbage[0]
            tag = entry[:1]
            prefix = entry if tag == b"C" else entry[1:]
            cursor = txn.cursor(db=dbs.tag_db(tag))
            exhausted = True
            if cursor.set_range(prefix):
                while bytes(cursor.key()[: len(prefix)]) == prefix:
                    if budget == 0:
                        exhausted = False
                        break
                    cursor.delete()
                    budget -= 1
                    changed = True
                    if not cursor.key():
                        break
            if exhausted:
                garbage.pop(0)
                changed = True
        if not changed:
            return state, current
        new_state = replace(
            state, ibase=st["ibase"], fcover=st["fcover"], filters=st["filters"],
            next_run=st["next_run"], flushes=st["flushes"], gen=st["gen"],
            runs=tuple(runs), jobs=tuple(jobs), garbage=tuple(garbage),
        )
        return new_state, current

    def _persist_current(self, txn: Any, stripe: int, current: array[int]) -> None:
        raw = memoryview(current).cast("B")
        step = ix.FILTER_CHUNK_WORDS * 8
        for c, offset in enumerate(range(0, len(raw), step)):
            key = ix.cur_filter_key(stripe, c)
            txn.put(key, seal(key, bytes(raw[offset : offset + step])), db=self._dbs.filters)
        raw.release()

    def index_of(self, digest: bytes) -> int | None:
        """The leaf index of ``digest``, or ``None`` if it was never anchored.

        :raises MalformedError: ``digest`` is not 32 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the index or a tile is damaged (never "not found" for that).
        """
        return self.index_of_many([check_digest(digest)])[0]

    def index_of_many(self, digests: Sequence[bytes]) -> list[int | None]:
        """:meth:`index_of` of each digest, in order, in one read transaction.

        :raises MalformedError: a digest is not 32 bytes (checked before any read).
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the index or a tile is damaged.
        """
        batch = [check_digest(d) for d in digests]
        if not batch:
            self._live_env()
            return []

        def compute(txn: Any, snap: _Snapshot) -> list[int | None]:
            view = self._view_for(txn, snap)
            return self._lookup_many(txn, snap, view, batch, leaf_hashes(batch))[0]

        result: list[int | None] = self._read(compute)
        return result

    def recheck_filters(self) -> list[Damage]:
        """Verify every block of every completed stripe's filter again (a few milliseconds
        per stripe), also those this process verified before; failing ones are no longer
        trusted and are reported (and left in :meth:`pending_damage`). The node runs this when
        its replica halts on stored data that contradicts itself: a filter that went bad after
        it was verified makes lookups miss anchored digests.

        :raises StorageError: the store is closed or LMDB fails.
        """
        def compute(txn: Any, snap: _Snapshot) -> list[Damage]:
            state = _read_index_state(txn, self._dbs)
            out = []
            for s, filt in enumerate(self._done_filters(txn, state)):
                bad = [] if filt is None else filt.recheck()
                if filt is None or bad:
                    damage = self._filter_damage(
                        state, s, "missing" if filt is None
                        else f"block {bad[0]} is damaged (checksum mismatch)")
                    self._notice(damage)
                    out.append(damage)
            return out

        found: list[Damage] = self._read(compute)
        return found

    def index_of_rechecked(self, digest: bytes) -> int | None:
        """:meth:`index_of`, verifying again every filter block that says "absent", also one
        this process verified before (filter blocks are read in place from the memory map:
        a disk can damage one after it was verified). For an answer that would tell a client
        "never anchored" (the node's ``404``): a damaged block is reported, no longer trusted
        by later lookups, and the digest found through the runs.

        :raises MalformedError: ``digest`` is not 32 bytes.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the index or a tile is damaged.
        """
        batch = [check_digest(digest)]

        def compute(txn: Any, snap: _Snapshot) -> int | None:
            view = self._view_for(txn, snap)
            found: int | None = self._lookup_many(txn, snap, view, batch, leaf_hashes(batch),
                                                  recheck=True)[0][0]
            return found

        result: int | None = self._read(compute)
        return result

    def digest_at(self, index: int) -> bytes:
        """The digest at leaf ``index``.

        :raises MalformedError: ``index`` is negative.
        :raises NotFoundError: ``index >= size``.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: its tile is damaged.
        """
        check_non_negative(index, "leaf index")
        result: bytes = self._read(lambda txn, snap: snap.digest(index), shared=False)
        return result

    def digests_between(self, start: int, end: int) -> list[bytes]:
        """The digests of leaves ``[start, end)``, in order, from one snapshot (what a peer
        serves to repair a damaged stratum-0 tile, see :class:`Damage`).

        :raises MalformedError: ``start`` is negative or ``end < start``.
        :raises NotFoundError: ``end`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile in the range is damaged.
        """
        check_non_negative(start, "leaf index")
        if not isinstance(end, int) or end < start:
            raise MalformedError(f"no leaf range [{start}, {end!r})")
        result: list[bytes] = self._read(lambda txn, snap: snap.digests(start, end), False)
        return result

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``.

        :raises MalformedError: ``level`` or ``index`` is negative.
        :raises NotFoundError: no such full node.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: its tile is damaged.
        """
        check_non_negative(level, "node level")
        check_non_negative(index, "node index")
        result: bytes = self._read(lambda txn, snap: snap.node(level, index))
        return result

    def _sized(self, size: int, compute: Callable[[_Snapshot], Any]) -> Any:
        def run(txn: Any, snap: _Snapshot) -> Any:
            check_within(size, snap.size, "tree size")
            return compute(snap)

        return self._read(run)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        :raises MalformedError: ``index`` is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile on the path is damaged.
        """
        result: list[bytes] = self._sized(size, lambda s: proof.inclusion_proof(s, index, size))
        return result

    def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """:meth:`inclusion_proof` of each index against one tree ``size``, in order, from one
        snapshot.

        :raises MalformedError: an index is not in ``[0, size)``.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile on a path is damaged.
        """
        wanted = list(indices)
        result: list[list[bytes]] = self._sized(
            size, lambda s: proof.inclusion_proofs(s, wanted, size)[0]
        )
        return result

    def inclusion_chains(self, indices: Sequence[int], leaf_hashes: Sequence[bytes],
                         size: int) -> tuple[list[Chain], bytes]:
        """The paths of ``indices`` and the root they lead to from ``leaf_hashes``, from one
        snapshot (:func:`ledger.merkle.proof.inclusion_proofs`).

        :raises MalformedError: an index is not in ``[0, size)`` or a leaf hash is missing.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile on a path is damaged.
        """
        wanted, given = list(indices), list(leaf_hashes)
        result: tuple[list[Chain], bytes] = self._sized(
            size, lambda s: proof.inclusion_chains(s, wanted, size, given))
        return result

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 2.1.4.1 consistency proof from ``old_size`` to ``new_size``.

        :raises MalformedError: ``old_size < 1`` or ``old_size > new_size``.
        :raises NotFoundError: ``new_size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile on the path is damaged.
        """
        result: list[bytes] = self._sized(
            new_size, lambda s: proof.consistency_proof(s, old_size, new_size)
        )
        return result

    def root_at(self, size: int) -> bytes:
        """The root of the first ``size`` leaves.

        :raises MalformedError: ``size`` is negative.
        :raises NotFoundError: ``size`` exceeds the log.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: a tile on the path is damaged.
        """
        result: bytes = self._sized(size, lambda s: proof.root_at(s, size))
        return result

    # -- checkpoints, blocks, metadata ------------------------------------------------------

    def _write(self, work: Callable[[Any], Any], items: int = 0) -> Any:
        """Run ``work(txn)`` in one write transaction under the write lock.

        :raises DiskFullError: the disk is full (before or while writing).
        """
        env = self._writable_env()
        with self._write_lock:
            self._check_space(items)
            try:
                with env.begin(write=True, buffers=True) as txn:
                    return work(txn)
            except lmdb.Error as exc:
                raise self._write_error(exc) from exc
            except DamageError as exc:
                self._notice(exc.damage)
                raise

    def put_checkpoint(self, size: int, note: bytes) -> None:
        """Store the checkpoint note for tree ``size``, replacing an earlier one.

        :raises MalformedError: ``size`` is negative or ``note`` is not non-empty bytes.
        :raises StorageError: ``size`` exceeds the log, the store is closed or read-only, or
            LMDB fails (:class:`DiskFullError` when the disk is full).
        """
        check_non_negative(size, "checkpoint size")
        check_note(note)
        added = self._write(
            lambda txn: self._put_checkpoint_in(txn, size, note, replace_only=False))
        if added:
            self._dictionary.merge(added)

    def _put_checkpoint_in(
        self, txn: Any, size: int, note: bytes, *, replace_only: bool
    ) -> dict[int, bytes]:
        dbs = self._dbs
        snap = _Snapshot(txn, dbs)
        if size > snap.size:
            raise StorageError(f"checkpoint size {size} exceeds the log size {snap.size}")
        key = _U64.pack(size)
        if replace_only and txn.get(key, db=dbs.checkpoints) is None:
            raise StorageError(f"no checkpoint is stored for size {size}")
        root = proof.root_at(snap, size) if size else EMPTY_ROOT
        ids = DictionaryTxn(self._dictionary)
        stored = pack_note(size, note, root=root, ids=ids)
        value = seal(key, stored)
        # Sizes mostly grow: append (full pages) unless the note replaces one or comes late.
        if not txn.put(key, value, db=dbs.checkpoints, append=True):
            txn.put(key, value, db=dbs.checkpoints)
        self._write_dictionary(txn, ids.added)
        return ids.added

    def _write_dictionary(self, txn: Any, added: Mapping[int, bytes]) -> None:
        for ident, value in added.items():
            for k in (_dict_key(ident), _dict_key(ident | _TWIN)):
                txn.put(k, seal(k, value), db=self._dbs.dict)

    def _write_dictionary_copies(
        self, entries: Mapping[int, bytes], idents: Iterable[int]
    ) -> None:
        with self._write_lock, self._env.begin(write=True) as txn:
            for ident in idents:
                for k in (_dict_key(ident), _dict_key(ident | _TWIN)):
                    txn.put(k, seal(k, entries[ident]), db=self._dbs.dict)

    def checkpoint_sizes(self) -> list[int]:
        """The tree sizes of every stored checkpoint, ascending.

        :raises StorageError: the store is closed or LMDB fails.
        :raises CorruptionError: a checkpoint key is not an 8-byte size.
        """
        def compute(txn: Any, snap: _Snapshot) -> list[int]:
            keys = txn.cursor(db=self._dbs.checkpoints).iternext(values=False)
            return [_key_number(k, "checkpoint") for k in keys]

        result: list[int] = self._read(compute, shared=False)
        return result

    def _note_at(self, txn: Any, snap: _Snapshot, size: int, value: Any) -> bytes:
        key = _U64.pack(size)
        if not checksum_ok(key, value):
            raise _damage(Damage(kind="checkpoint", key=f"checkpoints/{size}",
                                 repair=REPAIR_PEER, detail="damaged (checksum mismatch)",
                                 size=size))
        stored = bytes(value[:-4])
        from ledger.storage._codec import note_uses_root

        root = None
        if note_uses_root(stored):
            root = proof.root_at(snap, size) if size else EMPTY_ROOT
        try:
            return unpack_note(size, stored, root=root, value=self._dictionary.value)
        except CorruptionError as exc:
            raise _damage(Damage(kind="checkpoint", key=f"checkpoints/{size}",
                                 repair=REPAIR_PEER, detail=exc.diagnostics(),
                                 size=size)) from None

    def checkpoint(self, size: int) -> bytes | None:
        """The checkpoint note for ``size``, or ``None``.

        :raises MalformedError: ``size`` is negative.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the stored note is damaged.
        """
        check_non_negative(size, "checkpoint size")

        def compute(txn: Any, snap: _Snapshot) -> bytes | None:
            value = txn.get(_U64.pack(size), db=self._dbs.checkpoints)
            return None if value is None else self._note_at(txn, snap, size, value)

        result: bytes | None = self._read(compute)
        return result

    def latest_checkpoint(self) -> bytes | None:
        """The checkpoint note with the largest size, or ``None``.

        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the stored note is damaged.
        """
        def compute(txn: Any, snap: _Snapshot) -> bytes | None:
            cursor = txn.cursor(db=self._dbs.checkpoints)
            if not cursor.last():
                return None
            size = _key_number(cursor.key(), "checkpoint")
            return self._note_at(txn, snap, size, cursor.value())

        result: bytes | None = self._read(compute)
        return result

    def earliest_checkpoint(self, leaf: int) -> tuple[int, bytes] | None:
        """``(size, note)`` of the smallest stored checkpoint size above ``leaf``, or None.

        One cursor seek, whatever the number of checkpoints.

        :raises MalformedError: ``leaf`` is negative.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the stored note is damaged.
        """
        check_non_negative(leaf, "leaf index")

        def compute(txn: Any, snap: _Snapshot) -> tuple[int, bytes] | None:
            cursor = txn.cursor(db=self._dbs.checkpoints)
            if not cursor.set_range(_U64.pack(leaf + 1)):
                return None
            size = _key_number(cursor.key(), "checkpoint")
            return size, self._note_at(txn, snap, size, cursor.value())

        result: tuple[int, bytes] | None = self._read(compute)
        return result

    def _block_at(self, txn: Any, snap: _Snapshot, height: int, value: Any) -> BlockRecord:
        key = _U64.pack(height)

        def damage(detail: str) -> DamageError:
            return _damage(Damage(kind="block", key=f"blocks/{height}", repair=REPAIR_PEER,
                                  detail=detail, height=height))

        if not checksum_ok(key, value):
            raise damage("damaged (checksum mismatch)")
        stored = bytes(value[:-4])
        try:
            block, certificate = unpack_block_record(
                height, stored, digests_at=snap.digests,
                root_at=lambda size: proof.root_at(snap, size),
                value=self._dictionary.value,
                next_record=lambda: self._stored_block(txn, height + 1),
            )
        except DamageError:
            raise
        except (CorruptionError, NotFoundError) as exc:
            raise damage(exc.diagnostics()) from None
        return BlockRecord(height=height, block=block, certificate=certificate)

    def block(self, height: int) -> BlockRecord | None:
        """The block at ``height``, or ``None`` (also for height 0).

        :raises MalformedError: ``height`` is negative.
        :raises StorageError: the store is closed or LMDB fails.
        :raises DamageError: the stored record (or a tile it re-reads digests from) is damaged.
        """
        check_non_negative(height, "block height")
        if height == 0:
            self._live_env()
            return None

        def compute(txn: Any, snap: _Snapshot) -> BlockRecord | None:
            value = txn.get(_U64.pack(height), db=self._dbs.blocks)
            return None if value is None else self._block_at(txn, snap, height, value)

        result: BlockRecord | None = self._read(compute)
        return result

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
        :raises DamageError: the stored value is damaged (``put_meta`` of the key repairs it).
        """
        env = self._live_env()
        check_meta_key(key)
        try:
            with env.begin(buffers=True) as txn:
                value = txn.get(key, db=self._dbs.meta)
                if value is None:
                    return None
                if not checksum_ok(key, value):
                    self._notice(_meta_damage(key))
                    raise _damage(_meta_damage(key))
                return bytes(value[:-4])
        except lmdb.Error as exc:
            raise _wrap(exc) from exc

    def put_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        """Set (``None``: delete) metadata keys in one transaction.

        :raises MalformedError: a key is not 1 to 511 bytes or a value not bytes or ``None``.
        :raises StorageError: the store is closed or read-only, or LMDB fails
            (:class:`DiskFullError` when the disk is full).
        """
        self._writable_env()
        check_meta_items(items)
        self._write(lambda txn: self._put_meta_in(txn, items))

    def _put_meta_in(self, txn: Any, items: Mapping[bytes, bytes | None]) -> None:
        for key, value in items.items():
            if value is None:
                txn.delete(key, db=self._dbs.meta)
            else:
                txn.put(key, seal(key, value), db=self._dbs.meta)

    # -- disk space -------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Bytes free for this store on its file system (for an unprivileged process).

        :raises StorageError: the file system cannot be queried.
        """
        try:
            st = os.statvfs(self._path)
        except OSError as exc:
            raise StorageError(f"cannot query free space of {self._path}: {exc}") from None
        return st.f_bavail * st.f_frsize

    def _check_space(self, items: int) -> None:
        free = self.free_bytes()
        if free < self.disk_reserve + self.reserve_per_digest * items:
            raise self._full(free)

    def _full(self, free: int) -> DiskFullError:
        return DiskFullError(
            f"no space left on device: {self._path} has {free} bytes free; the write was "
            "refused and nothing was lost (writes resume once space is freed)"
        )

    def _write_error(self, exc: lmdb.Error) -> StorageError:
        """A failed write: disk full (also when LMDB only says EIO: a short write), or else.

        An environment LMDB marked unusable after a failed commit is reopened, so reads go on
        and the next write can succeed.
        """
        if isinstance(exc, lmdb.MapFullError):
            return self._grow_map()
        code = getattr(exc, "code", 0)
        full = isinstance(exc, lmdb.DiskError) or code in (errno.ENOSPC, errno.EDQUOT)
        try:
            free = self.free_bytes()
        except StorageError:
            free = -1
        if code == errno.EIO and 0 <= free < self.disk_reserve * 4:
            full = True  # LMDB reports a short write (a disk that filled mid-write) as EIO
        self._recover_env()
        if full:
            return self._full(max(free, 0))
        return _wrap(exc)

    def _grow_map(self) -> DiskFullError:
        """LMDB's map (the address space reserved for the file) is full: reopen the
        environment with a map twice as large, so that the refused write succeeds when it is
        tried again. Nothing in memory changed (a write is only published after its commit).
        """
        old = self._env
        try:
            size = old.info()["map_size"]
        except lmdb.Error:
            size = DEFAULT_MAP_SIZE
        with self._env_guard:
            self._done_cache.clear()  # views into the old map
            old.close()
            env = open_environment(self._path, map_size=size * 2, readonly=self._readonly)
            self._env = env
            self._dbs = _open_databases(env, self._readonly, ix.DEFAULT_PARAMS, self._path)
        return DiskFullError(
            f"no space left in the LMDB map of {self._path} ({size} bytes); it is grown to "
            f"{size * 2} bytes: the write was refused, nothing was lost, and it succeeds when "
            "tried again")

    def _recover_env(self) -> None:
        """After a failed commit: keep the environment if LMDB still accepts transactions,
        else (it marks itself unusable when a meta page write fails) open it again. Nothing
        in memory changed (a write is only published after its commit), so nothing is lost."""
        old = self._env
        try:
            with old.begin(write=True):
                pass  # begun and aborted: the environment is usable
            return
        except lmdb.Error:
            pass
        try:
            map_size = old.info()["map_size"]
        except lmdb.Error:
            map_size = DEFAULT_MAP_SIZE
        with self._env_guard:
            self._done_cache.clear()
            old.close()
            env = open_environment(self._path, map_size=map_size, readonly=self._readonly)
            self._env = env
            self._dbs = _open_databases(env, self._readonly, ix.DEFAULT_PARAMS, self._path)

    # -- maintenance ------------------------------------------------------------------------

    def disk_usage(self) -> int:
        """Bytes of the data file (``data.mdb``), free pages included.

        :raises StorageError: the store is closed or the file cannot be read.
        """
        self._live_env()
        try:
            return (self._path / "data.mdb").stat().st_size
        except OSError as exc:
            raise StorageError(f"cannot stat the data file: {exc}") from None

    def stats(self) -> dict[str, int]:
        """Page counts per database and of the whole file (for benchmarks and metrics).

        :raises StorageError: the store is closed or LMDB fails.
        """
        env = self._live_env()
        out: dict[str, int] = {}
        try:
            with env.begin() as txn:
                names = [(n.decode(), getattr(self._dbs, n.decode())) for n in _OTHER_DB_NAMES]
                names += [(n.decode(), db) for n, db in zip(_TILE_DB_NAMES, self._dbs.tiles,
                                                           strict=True)]
                for name, db in names:
                    st = txn.stat(db)
                    out[name] = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            info = env.info()
            out["file_pages"] = info["last_pgno"] + 1
            out["page_size"] = env.stat()["psize"]
        except lmdb.Error as exc:
            raise _wrap(exc) from exc
        return out

    def check(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Re-verify everything stored, in one pass of :meth:`scrub`; raise on the first damage.

        ``progress(done, total)`` is called as the pass proceeds (units of :class:`ScrubReport`).

        :raises DamageError: naming the first damaged value found.
        :raises StorageError: the store is closed or LMDB fails.
        """
        from ledger.storage._scrub import full_check

        full_check(self, progress)

    def scrub(self, cursor: bytes | None = None, *, budget: int = 4096) -> ScrubReport:
        """Re-verify about ``budget`` units from ``cursor``; see
        :meth:`ledger.storage.base.Store.scrub` and :mod:`ledger.storage._scrub`. It only
        reads, and may run in another thread than the writer's (the node runs it in one).

        :raises MalformedError: a cursor this store did not return, or ``budget < 1``.
        :raises StorageError: the store is closed or LMDB fails.
        """
        from ledger.storage._scrub import scrub_step

        with self._env_guard:
            return scrub_step(self, cursor, budget)

    def repair_tile(self, stratum: int, tile: int, nodes: Sequence[bytes]) -> None:
        """Rewrite a tile from its bottom-row nodes; see :mod:`ledger.storage._scrub`.

        :raises MalformedError: wrong count or size of ``nodes``.
        :raises VerificationError: the nodes do not hash to the stored node above them.
        :raises DamageError: the tile above is damaged too (repair that one first).
        :raises StorageError: no such tile, the store is read-only, or the write fails.
        """
        from ledger.storage._scrub import repair_tile

        repair_tile(self, stratum, tile, nodes)

    def repair_block(self, record: BlockRecord) -> None:
        """Rewrite the stored block at ``record.height``; see :mod:`ledger.storage._scrub`.

        :raises StorageError: no block at that height, the store is read-only, or the write
            fails.
        :raises VerificationError: the record's digests or tree root contradict the tree.
        """
        from ledger.storage._scrub import repair_block

        repair_block(self, record)

    def repair_checkpoint(self, size: int, note: bytes) -> None:
        """Rewrite the stored checkpoint note of ``size``.

        :raises MalformedError: ``note`` is not non-empty bytes.
        :raises StorageError: no checkpoint at that size, read-only, or the write fails.
        """
        check_non_negative(size, "checkpoint size")
        check_note(note)
        added = self._write(
            lambda txn: self._put_checkpoint_in(txn, size, note, replace_only=True))
        if added:
            self._dictionary.merge(added)

    def rebuild(self, damage: Damage) -> None:
        """Rebuild ``"local"`` damage from the store's own data; see
        :mod:`ledger.storage._scrub`.

        :raises MalformedError: ``damage`` is not repairable locally.
        :raises DamageError: what it is rebuilt from is damaged too.
        """
        from ledger.storage._scrub import rebuild

        rebuild(self, damage)

    def copy_to(self, path: str | os.PathLike[str], *, compact: bool = True) -> None:
        """Write a consistent copy of the live store into the empty directory ``path``.

        A hot backup: LMDB's ``mdb_env_copy2`` copies one read snapshot while writers go on
        (with ``compact``, free pages are left out and the copy is renumbered). The copy is
        not fsynced here: the caller syncs and renames it into place.

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
        """Close the environment; later calls raise :class:`~ledger.errors.StorageError`.
        Waits for a :meth:`scrub` step running in another thread."""
        with self._env_guard:
            env, self._env = self._env, None
            self._done_cache.clear()  # views into the map: invalid once it is closed
            if env is not None:
                env.close()
        if env is not None:
            self._view = None
            with _OPEN_LOCK:
                _OPEN_PATHS.discard(self._identity)


# ------------------------------------------------------------------------------------------
# Opening and checking


def open_environment(directory: Path, *, map_size: int, readonly: bool) -> Any:
    """The LMDB environment with the store's durability settings.

    :raises StorageError: LMDB cannot open it.
    """
    try:
        return lmdb.open(
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


def check_file_length(env: Any, data: Path) -> None:
    """A data file shorter than LMDB's last page would SIGBUS on first touch: refuse it.

    :raises CorruptionError: the file is shorter than the pages the meta page claims.
    """
    info = env.info()
    needed = (info["last_pgno"] + 1) * env.stat()["psize"]
    actual = data.stat().st_size if data.exists() else 0
    if actual < needed:
        raise CorruptionError(
            f"{data} is truncated: {actual} bytes, but LMDB's meta page needs {needed}"
        )


def stored_format(env: Any) -> int | None:
    """The format of the store in ``env``: 1, 2, or None for an empty environment.

    :raises StorageError: the environment holds something that is not a ledger store.
    """
    with env.begin() as txn:
        existing = {bytes(key) for key in txn.cursor().iternext(keys=True, values=False)}
    if not existing:
        return None
    if b"state" not in existing:
        raise StorageError("the LMDB environment is not a ledger store")
    state = env.open_db(b"state", create=False)
    with env.begin() as txn:
        tag = txn.get(_FORMAT_KEY, db=state)
    if tag == FORMAT_V1_TAG:
        return 1
    if tag is not None and checksum_ok(_FORMAT_KEY, tag) and tag[:-4] == FORMAT_TAG:
        return 2
    raise StorageError(f"unsupported store format {bytes(tag or b'')[:40]!r}; this version "
                       f"reads {FORMAT_TAG!r} (and upgrades {FORMAT_V1_TAG[:13]!r})")


def stored_format_of(directory: str | os.PathLike[str]) -> int | None:
    """The format of the store in ``directory`` (1 or 2), or None if there is none.

    :raises StorageError: it holds something that is not a ledger store.
    :raises CorruptionError: the data file is truncated.
    """
    from ledger.storage._migrate import _format_of

    path = Path(directory)
    if not (path / "data.mdb").exists():
        return None
    found = _format_of(path)
    if found is None:
        raise CorruptionError(f"{path / 'data.mdb'} is empty: the store was truncated")
    return found


def _open_databases(
    env: Any, readonly: bool, params: ix.IndexParams, directory: Path
) -> _Dbs:
    """Open (creating and initialising a fresh store) every named database.

    :raises StorageError: not a ledger store, or a format-1 store (to be upgraded first).
    :raises CorruptionError: some of our databases are missing.
    """
    names = (*_OTHER_DB_NAMES, *_TILE_DB_NAMES)
    fmt = stored_format(env)
    if fmt == 1:
        raise StorageError(
            f"{directory} holds a store of format 1; upgrade it with `ledger db migrate "
            f"{directory}` (a node opening it upgrades it too)"
        )
    handles: dict[bytes, Any] = {}
    if fmt is None:
        if readonly:
            raise StorageError("the store is empty and was opened read-only")
        ix.check_params(params)
        with env.begin(write=True) as txn:
            for name in names:
                handles[name] = env.open_db(name, txn=txn, create=True)
            state = handles[b"state"]
            txn.put(_FORMAT_KEY, seal(_FORMAT_KEY, FORMAT_TAG), db=state)
            txn.put(_HEAD_KEY, _Head(0, EMPTY_ROOT, 0, ()).encode(), db=state)
            index = ix.IndexState.new(params)
            txn.put(_INDEX_KEY, seal(_INDEX_KEY, index.to_bytes()), db=state)
    else:
        with env.begin() as txn:
            existing = {bytes(key) for key in txn.cursor().iternext(keys=True, values=False)}
        missing = [name.decode() for name in names if name not in existing]
        if missing:
            raise CorruptionError(f"the store lacks the databases {', '.join(missing)}")
        for name in names:
            handles[name] = env.open_db(name, create=False)
    return _Dbs(
        state=handles[b"state"], edge=handles[b"edge"], blocks=handles[b"blocks"],
        checkpoints=handles[b"checkpoints"], meta=handles[b"meta"], dict=handles[b"dict"],
        runs=handles[b"runs"], merged=handles[b"merged"], stripes=handles[b"stripes"],
        filters=handles[b"filters"],
        tiles=tuple(handles[name] for name in _TILE_DB_NAMES),
    )


def _read_index_state(txn: Any, dbs: _Dbs) -> ix.IndexState:
    """:raises DamageError: the index state is missing or damaged (state/index)."""
    value = txn.get(_INDEX_KEY, db=dbs.state)
    if value is None:
        raise _damage(_state_damage("index", "the digest index's state (state/index) is "
                                             "missing"))
    if not checksum_ok(_INDEX_KEY, value):
        raise _damage(_state_damage("index", "the digest index's state (state/index) is "
                                             "damaged (checksum mismatch)"))
    try:
        return ix.IndexState.from_bytes(bytes(value[:-4]))
    except CorruptionError as exc:
        raise _damage(_state_damage("index", exc.diagnostics())) from None


def _load_dictionary(txn: Any, dbs: _Dbs) -> tuple[dict[int, bytes], list[int]]:
    """Every dictionary entry, each from whichever copy verifies; and the ids of entries
    with a bad copy (rewritten from the good one when the store is writable).

    :raises DamageError: both copies of an entry are damaged.
    """
    primary: dict[int, bytes | None] = {}
    twin: dict[int, bytes | None] = {}
    for key, value in txn.cursor(db=dbs.dict):
        k = bytes(key)
        ident = int.from_bytes(k, "big")
        good = bytes(value[:-4]) if checksum_ok(k, value) else None
        if ident & _TWIN:
            twin[ident & ~_TWIN] = good
        else:
            primary[ident] = good
    entries: dict[int, bytes] = {}
    bad: list[int] = []
    for ident in sorted(set(primary) | set(twin)):
        a, b = primary.get(ident), twin.get(ident)
        if a is None and b is None:
            raise _damage(Damage(
                kind="dictionary", key=f"dict/{ident}", repair=REPAIR_NONE,
                detail="both copies of a dictionary entry are damaged or missing"))
        if a is not None and b is not None and a != b:
            raise _damage(Damage(
                kind="dictionary", key=f"dict/{ident}", repair=REPAIR_NONE,
                detail="the two copies of a dictionary entry differ"))
        entries[ident] = a if a is not None else b  # type: ignore[assignment]
        if a is None or b is None:
            bad.append(ident)
    if sorted(entries) != list(range(len(entries))):
        raise _damage(Damage(kind="dictionary", key="dict", repair=REPAIR_NONE,
                             detail="dictionary entries are missing"))
    return entries, bad


def _meta_damage(key: bytes) -> Damage:
    return Damage(kind="meta", key=f"meta/{key.decode('utf-8', 'replace')}",
                  repair=REPAIR_OWNER, detail="damaged (checksum mismatch)", meta_key=key)


def _check_meta_values(txn: Any, dbs: _Dbs) -> None:
    """Every metadata value verifies (the node keeps few: its safety record, its indexes).

    :raises DamageError: one does not; the message names its key and the fix.
    """
    for key, value in txn.cursor(db=dbs.meta):
        k = bytes(key)
        if not checksum_ok(k, value):
            damage = _meta_damage(k)
            raise _damage(replace(damage, repair=REPAIR_NONE, detail=(
                "damaged (checksum mismatch): it is this node's own state, which no peer "
                "holds")))


def _last_height(txn: Any, dbs: _Dbs) -> int:
    cursor = txn.cursor(db=dbs.blocks)
    return _key_number(cursor.key(), "block height") if cursor.last() else 0


def _check_shape(txn: Any, dbs: _Dbs, snap: _Snapshot, state: ix.IndexState) -> None:
    """The counts the tree size implies (``O(log n)`` reads).

    :raises CorruptionError: a stratum has the wrong number of full tiles, an edge tile is
        missing, block heights have gaps, or the index state contradicts the tree.
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
        edge = txn.get(_edge_key(stratum), db=dbs.edge)
        needs_edge = bool(count & (TILE_WIDTH - 1))
        if (edge is not None) != needs_edge:
            raise CorruptionError(
                f"stratum {stratum} has {'an' if edge is not None else 'no'} edge tile, a log "
                f"of size {size} needs {'one' if needs_edge else 'none'}"
            )
    blocks = txn.stat(dbs.blocks)["entries"]
    last_height = _last_height(txn, dbs)
    if blocks != last_height:
        raise CorruptionError(f"{blocks} blocks stored but the last height is {last_height}")
    cursor = txn.cursor(db=dbs.checkpoints)
    if cursor.last() and _key_number(cursor.key(), "checkpoint size") > size:
        raise CorruptionError(f"a checkpoint is stored for a size beyond the log size {size}")
    if state.ibase > size or state.gen != snap.gen:
        raise _damage(_state_damage("index", "the digest index's state does not match the "
                                             "tree head"))
    expected = 0
    for run in state.runs:
        if run.first != expected or run.end <= run.first:
            raise _damage(_state_damage("index", "the digest index's runs do not cover the "
                                                 "log's leaves in order"))
        expected = run.end
    if expected != state.ibase:
        raise _damage(_state_damage("index", f"the digest index's runs cover {expected} "
                                             f"leaves, its state says {state.ibase}"))


def _filter_hits(words: Any, ws: list[int], ms: list[int]) -> list[bool]:
    """For each (word, bits): whether the filter ``words`` has all those bits set."""
    if len(ws) == 1:
        return [words[ws[0]] & ms[0] == ms[0]]
    return list(map(eq, map(and_, itemgetter(*ws)(words), ms), ms))


def _next_job(
    runs: list[ix.RunInfo], params: ix.IndexParams, output: int, ibase: int, level: int
) -> ix.MergeJob | None:
    """The next merge producing a run of ``level``, oldest stripe first: level 2, a stripe's
    oldest ``fanout`` level-1 runs or, once the stripe is complete, the level-1 runs left in
    it; level 3, all the level-2 runs of a completed stripe that has no level-1 run left (a
    completed stripe ends as a single run: a lookup its filter lets through reads one)."""
    bits = params.stripe_bits
    by_stripe: dict[int, list[ix.RunInfo]] = {}
    for r in runs:
        by_stripe.setdefault(r.first >> bits, []).append(r)
    for stripe in sorted(by_stripe):
        group = by_stripe[stripe]
        level1 = [r for r in group if r.level == 1]
        complete = ibase >= (stripe + 1) << bits
        if level == 2:
            if len(level1) >= params.fanout:
                return _job(output, level1[: params.fanout])
            if complete and len(level1) >= 2:
                return _job(output, level1)
        elif complete and not level1 and len(group) >= 2:
            return _job(output, group, level=3)
    return None


def _job(output: int, chosen: list[ix.RunInfo], level: int = 2) -> ix.MergeJob:
    entries = sum(r.end - r.first for r in chosen)
    return ix.MergeJob(output, tuple(r.ident for r in chosen), 0, level,
                       ix.merge_slices(entries, len(chosen)))
