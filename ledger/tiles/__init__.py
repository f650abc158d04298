"""Static, cacheable reads of the ledger (C2SP tlog-tiles): the tree as files.

:mod:`ledger.tiles.core` computes tile paths and contents (pure); :mod:`ledger.tiles.export`
writes them to a directory for any web server; :mod:`ledger.tiles.client` fetches them and
builds receipts from tiles alone; the node serves the same paths (:mod:`ledger.node.tiles_api`).
"""

from ledger.tiles.core import (
    ENTRY_SIZE,
    FULL_TILE_BYTES,
    MAX_TILE_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileNodeReader,
    TileReader,
    TileRef,
    encode_index,
    entry_bundle,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
    read_bundle,
    read_tile,
    tile_refs,
    tile_width,
)

__all__ = [
    "ENTRY_SIZE",
    "FULL_TILE_BYTES",
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
