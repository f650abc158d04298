"""``ledger.tiles.client.TileSource``: what a web server in front of tiles may do (gzip, drop a
partial tile, answer 404 or too much) is read correctly or refused with our own errors."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ledger.client import BadResponseError, HttpError
from ledger.errors import MalformedError, NotFoundError
from ledger.tiles import TileRef
from ledger.tiles.client import TileSource

FULL = bytes(range(256)) * 32  # a full tile's 8,192 bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a CDN would

    def do_GET(self) -> None:
        routes = {
            "/log/tile/0/000": (200, gzip.compress(FULL), {"Content-Encoding": "gzip"}),
            "/log/tile/0/001": (200, FULL + bytes(1000), {}),  # more than any tile
            "/log/tile/0/002": (500, b"oops", {}),
        }
        status, body, headers = routes.get(self.path, (404, b"not found", {}))
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/log/"
    finally:
        server.shutdown()
        server.server_close()


def test_gzip_bodies_are_inflated_and_a_gone_partial_tile_is_cut_from_the_full_one(
        url: str) -> None:
    with TileSource(url) as source:
        assert source.tile(TileRef(level=0, index=0)) == FULL
        # tile/0/000.p/10 is 404 here: the spec lets a log drop it once the full tile exists.
        assert source.tile(TileRef(level=0, index=0, width=10)) == FULL[: 10 * 32]
        assert source.fetched == 3


def test_missing_oversized_and_failing_resources_raise_our_errors(url: str) -> None:
    with TileSource(url) as source:
        with pytest.raises(NotFoundError):
            source.tile(TileRef(level=0, index=5))
        with pytest.raises(NotFoundError):
            source.checkpoint()
        with pytest.raises(BadResponseError):
            source.tile(TileRef(level=0, index=1))
        with pytest.raises(HttpError, match="HTTP 500"):
            source.tile(TileRef(level=0, index=2))
        assert source.tile(TileRef(level=0, index=0)) == FULL  # the connection recovered


def test_a_directory_is_a_source_too(tmp_path: Path) -> None:
    (tmp_path / "tile/1").mkdir(parents=True)
    (tmp_path / "tile/1/000").write_bytes(FULL)
    source = TileSource(str(tmp_path))
    assert source.tile(TileRef(level=1, index=0, width=3)) == FULL[:96]
    with pytest.raises(NotFoundError):
        source.tile(TileRef(level=1, index=1))
    for bad in ("ftp://example.org/log", "http:///nohost", "https://x.org/log?q=1",
                str(tmp_path / "missing")):
        with pytest.raises(MalformedError):
            TileSource(bad)
