"""C2SP tlog-tiles (c2sp.org/tlog-tiles): the tree as static, cacheable files (pure: no I/O).

A tiled log serves, instead of proofs, the Merkle tree itself as a finite set of immutable
resources that any web server, object store or CDN can hold:

``checkpoint``
    the signed tree head (c2sp.org/tlog-checkpoint), the only mutable file;
``tile/<L>/<N>[.p/<W>]``
    a *tile*: 256 (or, for the rightmost, ``W`` < 256) consecutive hashes of the tree at level
    ``8 L``. In RFC 6962 terms the ``i``-th hash of tile ``n`` at level ``l`` is
    ``MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l])``, i.e. the full node
    ``(8 l, n * 256 + i)`` of :mod:`ledger.merkle.proof`'s addressing. Level-0 tiles hold leaf
    hashes. The 7 levels between two tile levels are not served: a client rebuilds them by
    hashing (:class:`TileNodeReader`);
``tile/entries/<N>[.p/<W>]``
    an *entry bundle*: the entries (leaf data) of the leaves of level-0 tile ``N``, each a
    big-endian uint16 length followed by the entry bytes. The spec hashes entries by RFC 6962
    section 2.1, ``SHA-256(0x00 || entry)``, which is exactly our leaf hash
    (:mod:`ledger.merkle.hashing`) of the leaf data, the raw 32-byte document digest: so an
    entry here is the 32-byte digest, every bundle entry is ``00 20`` + 32 bytes, and each
    entry hashes to the hash at the same position of level-0 tile ``N``.

``<N>`` is written in 3-digit groups, all but the last prefixed with ``x`` (1234067 is
``x001/x234/067``), so a file system holds any index without a huge directory and without a
name that is both a file and a directory. ``.p/<W>`` marks a partial tile of width
``W`` (1-255); a tree of size ``s`` has, at level ``l``, ``floor(s / 256**l) // 256`` full tiles
and one partial tile of width ``floor(s / 256**l) mod 256`` if that is not 0 (empty tiles do
not exist). A tree of 70,000 leaves has 273 full level-0 tiles, a partial one of width 112, a
full level-1 tile, a partial level-1 tile of width 17 and a partial level-2 tile of width 1.

Every path has exactly one spelling here: :func:`parse_tile_path` refuses leading zero groups
(``x000/067``), a level or width with leading zeroes, ``.p/256`` or ``.p/0``, and indices of more
than :data:`MAX_INDEX_GROUPS` groups, with :class:`~ledger.inputs.InputError` (HTTP 400).

These tiles are not the store's own (``ledger.storage._tiles`` groups 4 levels for LMDB pages);
the served format is the spec's, computed from any :class:`~ledger.storage.base.Store` through
its ``node`` and ``digests_between`` reads (:func:`read_tile`), so all validators serve the same
bytes for the same tree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from ledger.errors import MalformedError, NotFoundError
from ledger.inputs import InputError, parse_decimal
from ledger.merkle.hashing import HASH_SIZE, NODE_HASH_PREFIX, leaf_hashes

__all__ = [
    "ENTRY_PREFIX",
    "ENTRY_SIZE",
    "FULL_TILE_BYTES",
    "MAX_INDEX_GROUPS",
    "MAX_TILE_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TileNodeReader",
    "TileReader",
    "TileRef",
    "encode_index",
    "entry_bundle",
    "parse_entry_bundle",
    "parse_hash_tile",
    "parse_tile_path",
    "read_bundle",
    "read_tile",
    "tile_refs",
    "tile_width",
]

#: Tree levels per tile: a tile is a subtree of height 8 with its 256 hashes as leaves.
TILE_HEIGHT: Final = 8
#: Hashes in a full tile (and entries in a full bundle).
TILE_WIDTH: Final = 1 << TILE_HEIGHT
#: A full tile is exactly 8,192 bytes.
FULL_TILE_BYTES: Final = TILE_WIDTH * HASH_SIZE
#: Tile levels are 0 to 63 (the spec's bound).
MAX_TILE_LEVEL: Final = 63
#: An entry of this ledger is a 32-byte document digest.
ENTRY_SIZE: Final = HASH_SIZE
#: The uint16 big-endian length in front of every entry of a bundle: 32.
ENTRY_PREFIX: Final = ENTRY_SIZE.to_bytes(2, "big")
#: Index groups of a path at most: indices below 10**21 (more than any tree of 2**64 leaves
#: needs at any level), so a path can never make us parse an unbounded number.
MAX_INDEX_GROUPS: Final = 7

_GROUP: Final = re.compile(r"x[0-9]{3}", re.ASCII)
_LAST: Final = re.compile(r"[0-9]{3}", re.ASCII)
_PARTIAL_SUFFIX: Final = ".p"


@dataclass(frozen=True, slots=True, kw_only=True)
class TileRef:
    """One resource of a tiled log: tile ``index`` at tile level ``level`` with ``width``
    hashes (``TILE_WIDTH``: a full tile), or with ``entries`` the entry bundle of level-0 tile
    ``index``.

    Raises (on construction):
        MalformedError: a level outside 0-63 (or not 0 for a bundle), a negative index, or a
            width outside 1-256.
    """

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL or (self.entries and self.level):
            raise MalformedError(f"no tile level {self.level}")
        if self.index < 0:
            raise MalformedError(f"no tile index {self.index}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise MalformedError(f"a tile is 1 to {TILE_WIDTH} hashes wide, not {self.width}")

    @property
    def full(self) -> bool:
        """A full tile (immutable); otherwise the rightmost, partial one of some tree."""
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """The resource's path below the log's prefix, e.g. ``tile/0/x001/234.p/5``."""
        where = "entries" if self.entries else str(self.level)
        suffix = "" if self.full else f"{_PARTIAL_SUFFIX}/{self.width}"
        return f"tile/{where}/{encode_index(self.index)}{suffix}"

    @property
    def first_node(self) -> int:
        """The index, at tree level ``8 * level``, of the tile's first hash."""
        return self.index * TILE_WIDTH

    def with_width(self, width: int) -> TileRef:
        """The same tile (or bundle) at another width."""
        return TileRef(level=self.level, index=self.index, width=width, entries=self.entries)


def encode_index(index: int) -> str:
    """A tile index as the spec's path elements: 3-digit groups, all but the last prefixed
    with ``x`` (``0`` -> ``000``, ``1234067`` -> ``x001/x234/067``).

    Raises:
        MalformedError: ``index`` is negative.
    """
    if index < 0:
        raise MalformedError(f"no tile index {index}")
    groups: list[int] = []
    while True:
        index, group = divmod(index, 1000)
        groups.append(group)
        if not index:
            break
    groups.reverse()
    return "/".join([*(f"x{g:03d}" for g in groups[:-1]), f"{groups[-1]:03d}"])


def parse_tile_path(text: str) -> TileRef:
    """The resource named by ``text``, the part of a path after ``tile/``: ``<L>/<N>[.p/<W>]``
    or ``entries/<N>[.p/<W>]``, in the one spelling :func:`TileRef.path` writes.

    Raises:
        InputError: ``invalid_parameter`` for any other text (module docstring).
    """
    head, sep, rest = text.partition("/")
    if not sep:
        raise InputError("invalid_parameter", "a tile path is tile/<L>/<N>[.p/<W>] or "
                         "tile/entries/<N>[.p/<W>]")
    entries = head == "entries"
    level = 0 if entries else parse_decimal(head, what="tile level", high=MAX_TILE_LEVEL)
    elements = rest.split("/")
    width = TILE_WIDTH
    if len(elements) >= 2 and elements[-2].endswith(_PARTIAL_SUFFIX):
        width = parse_decimal(elements[-1], what="partial tile width", low=1,
                              high=TILE_WIDTH - 1)
        elements = [*elements[:-2], elements[-2][: -len(_PARTIAL_SUFFIX)]]
    if len(elements) > MAX_INDEX_GROUPS:
        raise InputError("invalid_parameter",
                         f"a tile index has at most {MAX_INDEX_GROUPS} groups of 3 digits")
    *upper, last = elements
    if not _LAST.fullmatch(last) or not all(_GROUP.fullmatch(g) for g in upper):
        raise InputError("invalid_parameter",
                         "a tile index is 3-digit groups, all but the last prefixed with x "
                         "(1234067 is x001/x234/067)")
    if upper and upper[0] == "x000":
        raise InputError("invalid_parameter", "a tile index has no leading zero group")
    index = 0
    for group in (*(g[1:] for g in upper), last):
        index = index * 1000 + int(group)
    return TileRef(level=level, index=index, width=width, entries=entries)


def tile_width(level: int, index: int, size: int) -> int:
    """How many hashes tile ``index`` of tile level ``level`` has in a tree of ``size``
    leaves: ``TILE_WIDTH`` for a full tile, the partial width for the rightmost, 0 beyond."""
    count = size >> (TILE_HEIGHT * level)  # hashes at this tile level
    full = count >> TILE_HEIGHT
    if index < full:
        return TILE_WIDTH
    if index == full:
        return count & (TILE_WIDTH - 1)
    return 0


def tile_refs(size: int, *, since: int = 0) -> Iterator[TileRef]:
    """Every tile and entry bundle of the tree of ``size`` leaves that the tree of ``since``
    leaves (an earlier size of the same log) did not have, bundle before tile, level by level:
    the full tiles it completed and its partial tiles (all of them for ``since = 0``).

    A full tile never changes, so these are exactly the files an export of ``size`` adds to an
    export of ``since``.

    Raises:
        MalformedError: ``since`` is negative or larger than ``size``.
    """
    if not 0 <= since <= size:
        raise MalformedError(f"no tiles from tree size {since} to {size}")
    for level in range(MAX_TILE_LEVEL + 1):
        count = size >> (TILE_HEIGHT * level)
        if not count:
            return
        old = since >> (TILE_HEIGHT * level)
        if old == count:
            continue  # nothing new at this level (nor above)
        for index in range(old >> TILE_HEIGHT, count >> TILE_HEIGHT):
            if level == 0:
                yield TileRef(level=0, index=index, entries=True)
            yield TileRef(level=level, index=index)
        partial = count & (TILE_WIDTH - 1)
        if partial:
            index = count >> TILE_HEIGHT
            if level == 0:
                yield TileRef(level=0, index=index, width=partial, entries=True)
            yield TileRef(level=level, index=index, width=partial)


class TileReader(Protocol):
    """The reads of a :class:`~ledger.storage.base.Store` that tiles are computed from."""

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``."""
        ...

    def digests_between(self, start: int, end: int) -> list[bytes]:
        """The leaf data (digests) of leaves ``[start, end)``."""
        ...


def _check_within(ref: TileRef, size: int) -> None:
    # A tile of width W is the first W hashes of its tile in every tree that holds them.
    if ref.first_node + ref.width > size >> (TILE_HEIGHT * ref.level):
        raise NotFoundError(f"{ref.path} is beyond the tree of size {size}")


def read_tile(reader: TileReader, ref: TileRef, size: int) -> bytes:
    """The bytes of tile ``ref`` (a hash tile or an entry bundle) in the tree of ``size``
    leaves, read from ``reader``: the first ``ref.width`` hashes of the tile, concatenated,
    or their entries as a bundle (:func:`entry_bundle`).

    A partial width is served for any tile that holds at least that many hashes in the tree
    (also once the tile is full): its bytes are the same in every later tree.

    Raises:
        NotFoundError: the tree of ``size`` leaves does not hold that many hashes of the tile.
        LedgerError: whatever ``reader`` raises (a store beyond ``size`` is the caller's bug).
    """
    _check_within(ref, size)
    if ref.entries:
        return read_bundle(reader, ref, size)
    start = ref.first_node
    if ref.level == 0:
        return b"".join(leaf_hashes(reader.digests_between(start, start + ref.width)))
    level = TILE_HEIGHT * ref.level
    return b"".join(reader.node(level, start + i) for i in range(ref.width))


def read_bundle(reader: TileReader, ref: TileRef, size: int) -> bytes:
    """The entry bundle ``ref`` (``ref.entries``) of the tree of ``size`` leaves.

    Raises:
        MalformedError: ``ref`` is not an entry bundle.
        NotFoundError: the tree does not hold those leaves.
    """
    if not ref.entries:
        raise MalformedError(f"{ref.path} is not an entry bundle")
    _check_within(ref, size)
    start = ref.first_node
    return entry_bundle(reader.digests_between(start, start + ref.width))


def entry_bundle(digests: Sequence[bytes]) -> bytes:
    """The entry bundle of ``digests``: each as ``00 20`` (its length, uint16 big-endian)
    followed by its 32 bytes.

    Raises:
        MalformedError: a digest is not 32 bytes, or there are more than 256.
    """
    if len(digests) > TILE_WIDTH or any(len(d) != ENTRY_SIZE for d in digests):
        raise MalformedError(f"an entry bundle holds up to {TILE_WIDTH} digests of "
                             f"{ENTRY_SIZE} bytes")
    return b"".join(ENTRY_PREFIX + d for d in digests)


def parse_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """The ``width`` entries of a bundle, each of which must be a 32-byte digest (the only
    kind of entry this ledger's tree has).

    Raises:
        MalformedError: a length prefix that runs past the end, an entry that is not 32
            bytes, fewer or more than ``width`` entries, or bytes left over.
    """
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if len(out) == width:
            raise MalformedError(f"the entry bundle holds more than {width} entries")
        if pos + 2 > end:
            raise MalformedError("the entry bundle ends inside a length prefix")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length != ENTRY_SIZE:
            raise MalformedError(f"entry {len(out)} of the bundle is {length} bytes, not a "
                                 f"{ENTRY_SIZE}-byte digest")
        if pos + 2 + length > end:
            raise MalformedError("the entry bundle ends inside an entry")
        out.append(bytes(data[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    if len(out) != width:
        raise MalformedError(f"the entry bundle holds {len(out)} entries, expected {width}")
    return out


def parse_hash_tile(data: bytes, width: int) -> list[bytes]:
    """The ``width`` hashes of a tile.

    Raises:
        MalformedError: the tile is not exactly ``width * 32`` bytes.
    """
    if len(data) != width * HASH_SIZE:
        raise MalformedError(f"a tile of {width} hashes is {width * HASH_SIZE} bytes, got "
                             f"{len(data)}")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree over ``hashes`` (a power of two of them)."""
    fresh = hashlib.sha256(NODE_HASH_PREFIX).copy
    row = list(hashes)
    while len(row) > 1:
        nxt: list[bytes] = []
        for left, right in zip(row[0::2], row[1::2], strict=True):
            h = fresh()
            h.update(left)
            h.update(right)
            nxt.append(h.digest())
        row = nxt
    return row[0]


class TileNodeReader:
    """A :class:`~ledger.merkle.proof.NodeReader` of the tree of ``size`` leaves over its
    tiles: every full node, rebuilt from the one tile that holds its descendants at the tile
    level below it, so :func:`~ledger.merkle.proof.inclusion_proof` and
    :func:`~ledger.merkle.proof.consistency_proof` run on tiles alone.

    ``fetch(ref)`` returns the raw bytes of hash tile ``ref`` (with the width the tree of
    ``size`` has); they are checked for length and kept for the reader's life. Nothing fetched
    is trusted: a proof built here is only as good as its verification against a signed root.
    :meth:`put` hands in a level-0 tile the caller already holds (the leaf hashes of a bundle).

    Raises (from :meth:`node`):
        NotFoundError: no such full node in the tree of ``size`` leaves.
        MalformedError: a fetched tile has the wrong length.
        LedgerError: whatever ``fetch`` raises.
    """

    def __init__(self, size: int, fetch: Callable[[TileRef], bytes]) -> None:
        self.size = size
        self._fetch = fetch
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self._nodes: dict[tuple[int, int], bytes] = {}
        #: Tiles fetched (for the caller's report of what a proof cost).
        self.fetched = 0

    def put(self, level: int, index: int, hashes: Sequence[bytes]) -> None:
        """Hold tile ``(level, index)`` as ``hashes`` (its width in this tree).

        Raises:
            MalformedError: the wrong number of hashes for the tree of ``size``.
        """
        width = tile_width(level, index, self.size)
        if len(hashes) != width or any(len(h) != HASH_SIZE for h in hashes):
            raise MalformedError(f"tile ({level}, {index}) has {width} hashes in a tree of "
                                 f"size {self.size}")
        self._tiles[(level, index)] = list(hashes)

    def _tile(self, level: int, index: int) -> list[bytes]:
        held = self._tiles.get((level, index))
        if held is None:
            width = tile_width(level, index, self.size)
            ref = TileRef(level=level, index=index, width=width)
            held = parse_hash_tile(self._fetch(ref), width)
            self.fetched += 1
            self._tiles[(level, index)] = held
        return held

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)`` of the tree (class docstring)."""
        if level < 0 or index < 0 or ((index + 1) << level) > self.size:
            raise NotFoundError(f"no full node ({level}, {index}) in a tree of size {self.size}")
        memo = self._nodes.get((level, index))
        if memo is not None:
            return memo
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height  # its leftmost descendant at the tile level
        hashes = self._tile(tile_level, first >> TILE_HEIGHT)
        offset = first & (TILE_WIDTH - 1)
        result = _perfect_root(hashes[offset : offset + (1 << height)])
        self._nodes[(level, index)] = result
        return result
