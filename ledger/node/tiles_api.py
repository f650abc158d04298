"""The node's C2SP tlog-tiles routes (c2sp.org/tlog-tiles): the tree as cacheable resources.

``GET /checkpoint``, ``GET /tile/<L>/<N>[.p/<W>]`` and ``GET /tile/entries/<N>[.p/<W>]``, with
the node's URL as the log's prefix, so ``ledger proof --tiles URL`` and any tlog-tiles client
read a node like a static export (``ledger tiles export``). The tree served is that of the
node's latest quorum checkpoint (the one ``/checkpoint`` returns): a tile or bundle beyond it is
404, even when the store already holds the leaves of a block whose checkpoint is still being
cosigned. Tile bytes depend only on the tree (:mod:`ledger.tiles.core`), so every validator
serves the same bytes for the same path; the checkpoint carries each node's own log signature.

Caching: a full tile or bundle never changes (``public, max-age=31536000, immutable``); a
partial one is superseded as the tree grows and is kept briefly (``public, max-age=60``); the
checkpoint changes with every block (``public, max-age=5``: the spec asks that it not be cached
beyond a few seconds).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ledger.errors import NotFoundError
from ledger.node.api import replica_of
from ledger.tiles.core import TileRef, parse_tile_path, read_tile

__all__ = [
    "CHECKPOINT_CACHE",
    "FULL_TILE_CACHE",
    "PARTIAL_TILE_CACHE",
    "get_checkpoint",
    "get_entries",
    "get_tile",
]

FULL_TILE_CACHE: Final = "public, max-age=31536000, immutable"
PARTIAL_TILE_CACHE: Final = "public, max-age=60"
CHECKPOINT_CACHE: Final = "public, max-age=5"


def _latest(request: web.Request) -> tuple[int, str]:
    """The latest quorum checkpoint: (tree size, note).

    Raises:
        NotFoundError: none yet.
        ApiError: 503 while the node starts.
    """
    checkpoint = replica_of(request).checkpoint
    if checkpoint is None:
        raise NotFoundError("no checkpoint has been cosigned yet")
    return checkpoint


async def get_checkpoint(request: web.Request) -> web.Response:
    """``GET /checkpoint``: the latest quorum checkpoint note (c2sp.org/tlog-checkpoint)."""
    _, note = _latest(request)
    return web.Response(text=note, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": CHECKPOINT_CACHE})


def _serve(request: web.Request, ref: TileRef) -> web.Response:
    size, _ = _latest(request)
    body = read_tile(replica_of(request).store, ref, size)
    return web.Response(body=body, content_type="application/octet-stream",
                        headers={"Cache-Control": FULL_TILE_CACHE if ref.full
                                 else PARTIAL_TILE_CACHE})


async def get_tile(request: web.Request) -> web.Response:
    """``GET /tile/<L>/<N>[.p/<W>]``: a hash tile (400 for a path of another spelling, 404
    beyond the tree)."""
    level, index = request.match_info["level"], request.match_info["index"]
    return _serve(request, parse_tile_path(f"{level}/{index}"))


async def get_entries(request: web.Request) -> web.Response:
    """``GET /tile/entries/<N>[.p/<W>]``: an entry bundle (the digests of a level-0 tile)."""
    return _serve(request, parse_tile_path(f"entries/{request.match_info['index']}"))
