"""C2SP tlog-tiles paths and contents (ledger.tiles.core) against the spec and the tree."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from merkle.oracle import leaf, mth

from ledger.errors import MalformedError, NotFoundError
from ledger.inputs import InputError
from ledger.merkle.proof import consistency_proof, inclusion_proof
from ledger.storage.memory import MemoryStore
from ledger.tiles import (
    TILE_WIDTH,
    TileNodeReader,
    TileRef,
    encode_index,
    entry_bundle,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
    read_tile,
    tile_refs,
)

#: The spec's example size: tiles at three levels, full and partial at each of the lower two.
SIZE = 70_000


def digest(i: int) -> bytes:
    return hashlib.sha256(f"tile test {i}".encode()).digest()


@pytest.fixture(scope="module")
def store() -> Iterator[MemoryStore]:
    s = MemoryStore()
    s.append([digest(i) for i in range(SIZE)])
    yield s
    s.close()


# ----------------------------------------------------------------------------- paths


def test_index_encoding_follows_the_spec_examples() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(67) == "067"
    assert encode_index(1000) == "x001/000"
    assert TileRef(level=0, index=1234067).path == "tile/0/x001/x234/067"
    assert TileRef(level=2, index=5, width=17).path == "tile/2/005.p/17"
    assert TileRef(level=0, index=273, width=112, entries=True).path == "tile/entries/273.p/112"


def test_a_tree_of_70000_has_the_tiles_the_spec_lists() -> None:
    # "273 full level 0 tiles, one partial level 0 tile of width 112, one full level 1 tile,
    # one partial level 1 tile of width 17, and one partial level 2 tile of width 1."
    tiles = [r for r in tile_refs(SIZE) if not r.entries]
    level0 = [r for r in tiles if r.level == 0]
    assert [r.index for r in level0 if r.full] == list(range(273))
    assert [(r.index, r.width) for r in level0 if not r.full] == [(273, 112)]
    assert [(r.level, r.index, r.width) for r in tiles if r.level] == [
        (1, 0, 256), (1, 1, 17), (2, 0, 1)]
    bundles = [r for r in tile_refs(SIZE) if r.entries]
    assert [(r.index, r.width) for r in bundles] == [(r.index, r.width) for r in level0]
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1"; an empty tree has none.
    assert [r.path for r in tile_refs(256)] == ["tile/entries/000", "tile/0/000", "tile/1/000.p/1"]
    assert list(tile_refs(0)) == []


def test_tile_refs_since_lists_exactly_what_a_larger_tree_adds() -> None:
    for old, new in [(0, 5), (5, 5), (5, 300), (256, 512), (300, 70_000), (65_535, 65_536)]:
        added = set(tile_refs(new, since=old))
        assert added == set(tile_refs(new)) - set(tile_refs(old)), (old, new)
    with pytest.raises(MalformedError):
        list(tile_refs(5, since=6))


@given(level=st.integers(0, 63), index=st.integers(0, 10**21 - 1), width=st.integers(1, 256),
       entries=st.booleans())
def test_every_path_parses_back_to_its_tile(level: int, index: int, width: int,
                                            entries: bool) -> None:
    ref = TileRef(level=0 if entries else level, index=index, width=width, entries=entries)
    assert ref.path.startswith("tile/")
    assert parse_tile_path(ref.path.removeprefix("tile/")) == ref


@pytest.mark.parametrize("text", [
    "", "0", "0/", "0/67", "0/0067", "0/x067", "0/x000/067", "0/x1/000", "0/X001/000",
    "0/067/", "0/067.p", "0/067.p/", "0/067.p/0", "0/067.p/256", "0/067.p/012", "0/067.p/+5",
    "00/000", "64/000", "-1/000", "+1/000", "a/000", "entries", "entries/", "entries/x000/001",
    "entry/000", "0/067.q/5", "0/06٧", "0/06²", "0/" + "x001/" * 7 + "000", "0/000.p/5.p/4",
])
def test_any_other_spelling_of_a_path_is_refused(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_tile_path(text)
    assert caught.value.code == "invalid_parameter"


# -------------------------------------------------------------------------- contents


def test_hash_tiles_are_the_merkle_tree_hashes_of_the_spec_formula(store: MemoryStore) -> None:
    # MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l]), from the RFC's recursive
    # definition (tests/merkle/oracle.py), not from the store's nodes.
    leaves = [leaf(digest(i)) for i in range(SIZE)]
    for ref in [TileRef(level=0, index=0), TileRef(level=0, index=272),
                TileRef(level=0, index=273, width=112), TileRef(level=1, index=0),
                TileRef(level=1, index=1, width=17), TileRef(level=2, index=0, width=1),
                TileRef(level=1, index=0, width=3)]:
        span = TILE_WIDTH ** ref.level
        expected = [mth(leaves[(ref.index * 256 + i) * span:(ref.index * 256 + i + 1) * span])
                    for i in range(ref.width)]
        assert parse_hash_tile(read_tile(store, ref, SIZE), ref.width) == expected, ref.path


def test_every_entry_is_a_length_prefixed_digest_hashing_to_its_level0_hash(
        store: MemoryStore) -> None:
    for index, width in [(0, 256), (273, 112)]:
        bundle = read_tile(store, TileRef(level=0, index=index, width=width, entries=True), SIZE)
        assert len(bundle) == width * 34
        entries = parse_entry_bundle(bundle, width)
        assert entries == [digest(index * 256 + i) for i in range(width)]
        assert bundle[:2] == b"\x00\x20" and bundle[2:34] == entries[0]
        tile = parse_hash_tile(read_tile(store, TileRef(level=0, index=index, width=width),
                                         SIZE), width)
        # RFC 6962 leaf hash of each entry == the tree's leaf == the level-0 tile's hash.
        assert [leaf(e) for e in entries] == tile == [store.node(0, index * 256 + i)
                                                     for i in range(width)]


def test_tiles_beyond_the_tree_are_not_found(store: MemoryStore) -> None:
    for ref in [TileRef(level=0, index=273), TileRef(level=0, index=273, width=113),
                TileRef(level=0, index=274, width=1), TileRef(level=1, index=1),
                TileRef(level=2, index=0, width=2), TileRef(level=3, index=0, width=1),
                TileRef(level=0, index=273, width=113, entries=True)]:
        with pytest.raises(NotFoundError):
            read_tile(store, ref, SIZE)
    # A partial width of a tile that is full by now is its first hashes.
    full = read_tile(store, TileRef(level=0, index=3), SIZE)
    assert read_tile(store, TileRef(level=0, index=3, width=10), SIZE) == full[: 10 * 32]


def test_bundle_and_tile_parsers_refuse_what_is_not_exactly_the_width() -> None:
    bundle = entry_bundle([digest(1), digest(2)])
    assert parse_entry_bundle(bundle, 2) == [digest(1), digest(2)]
    for bad, width in [(bundle, 1), (bundle, 3), (bundle[:-1], 2), (bundle + b"\x00", 2),
                       (b"\x00\x21" + bundle[2:] + b"\x00", 2), (b"\x00", 1)]:
        with pytest.raises(MalformedError):
            parse_entry_bundle(bad, width)
    with pytest.raises(MalformedError):
        parse_hash_tile(b"\x00" * 63, 2)
    with pytest.raises(MalformedError):
        entry_bundle([b"short"])


# -------------------------------------------------------------------- proofs from tiles


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_proofs_from_tiles_alone_equal_the_stores(store: MemoryStore, data: st.DataObject) -> None:
    size = data.draw(st.one_of(st.integers(1, 2_000), st.integers(65_000, SIZE),
                               st.sampled_from([256, 257, 65_536, 65_537])))
    fetched: list[TileRef] = []

    def fetch(ref: TileRef) -> bytes:
        fetched.append(ref)
        return read_tile(store, ref, size)

    reader = TileNodeReader(size, fetch)
    index = data.draw(st.integers(0, size - 1))
    assert inclusion_proof(reader, index, size) == store.inclusion_proof(index, size)
    old = data.draw(st.integers(1, size))
    assert consistency_proof(reader, old, size) == store.consistency_proof(old, size)
    # One fetch per tile at most, each with the width the tree of `size` gives it.
    assert len(fetched) == len(set(fetched))
    assert all(ref in set(tile_refs(size)) for ref in fetched)
