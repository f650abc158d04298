"""Receipts from tiles alone: ``ledger proof --tiles URL``.

A tiled log (a node's own routes, or a ``ledger tiles export`` directory behind any static
file server, object store or CDN) is read through :class:`TileSource`, which fetches
``checkpoint``, ``tile/...`` and ``tile/entries/...`` over HTTP(S) (or reads them from a local
directory). :func:`prove_from_tiles` then does what a node does for ``GET /v1/proofs``, with
nothing trusted but the checkpoint's signatures:

1. fetch the checkpoint (and, given a trust policy, verify its signatures and quorum first);
2. find the digest's leaf index by reading the entry bundles from the start, unless the caller
   gives the index. This is the expensive step, and the only one that grows with the log: it
   downloads 34 bytes per leaf up to the digest's leaf (34 MB per million anchors; the whole log
   when the digest is not in it) and hashes each one. Each bundle's leaf hashes go into a
   :class:`~ledger.merkle.frontier.Frontier`, so a digest that is not found is *proven* absent:
   the bundles rebuild the checkpoint's root, or the source is reported as inconsistent;
3. build the RFC 9162 inclusion proof from the tiles (:class:`~ledger.tiles.core.TileNodeReader`:
   one tile per tile level, 8 KiB each, about 3 tiles at a million leaves) and verify it
   against the checkpoint's root;
4. emit the c2sp.org/tlog-proof receipt against that checkpoint.

The receipt is cut against the source's checkpoint, normally the latest at export time, not the
first checkpoint that held the digest: its time bound is the checkpoint's, later than that of the
receipt handed out when the digest was anchored. ``ledger proof --out`` therefore keeps an
existing receipt that proves an earlier moment.

A partial tile that is gone (the spec lets a log delete one once the full tile exists) is read
from the full tile's first hashes instead.
"""

from __future__ import annotations

import http.client
import os
import ssl
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from ledger.checkpoint import parse_checkpoint_body
from ledger.client import BadResponseError, HttpError, HttpNotFoundError, TransportError
from ledger.errors import MalformedError, NotFoundError, VerificationError
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import HASH_SIZE, leaf_hash, leaf_hashes
from ledger.merkle.proof import inclusion_proof, verify_inclusion
from ledger.note import MAX_NOTE_SIZE, parse_note
from ledger.policy import Policy
from ledger.receipt import build_receipt, verify_checkpoint_note, verify_receipt
from ledger.tiles.core import (
    ENTRY_SIZE,
    TILE_WIDTH,
    TileNodeReader,
    TileRef,
    parse_entry_bundle,
    tile_width,
)

__all__ = ["TileProof", "TileSource", "prove_from_tiles"]

_USER_AGENT: Final = "ledger-tiles/1"
#: The largest resource read: a full entry bundle of 32-byte entries (a tile is 8,192 bytes).
_MAX_TILE_BYTES: Final = TILE_WIDTH * (2 + ENTRY_SIZE)


class TileSource:
    """The resources of a tiled log at ``location``: an ``http://`` or ``https://`` URL prefix
    (one kept-alive connection; ``Accept-Encoding: gzip, identity`` as the spec asks), or a
    local directory such as a ``ledger tiles export``.

    Raises (on construction):
        MalformedError: ``location`` is neither an http(s) URL with a host nor a directory.
    Raises (from the reads):
        NotFoundError: the resource does not exist (404, or no such file).
        TransportError: the server cannot be reached or does not answer in ``timeout`` s.
        HttpError: another HTTP error status.
        BadResponseError: a response larger than the resource can be, or not decodable.
    """

    def __init__(self, location: str, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.location = location
        self._dir: Path | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._timeout = timeout
        self._ssl_context = ssl_context
        parts = urlsplit(location)
        if parts.scheme in ("http", "https"):
            if not parts.hostname or parts.query or parts.fragment:
                raise MalformedError(f"tiles URL {location!r} needs a host and no query")
            try:
                self._port = parts.port
            except ValueError:
                raise MalformedError(f"tiles URL {location!r} has an invalid port") from None
            self._https = parts.scheme == "https"
            self._host = parts.hostname
            self._prefix = parts.path.rstrip("/")
        elif os.path.isdir(location):
            self._dir = Path(location)
        else:
            raise MalformedError(f"--tiles {location!r} is neither an http(s) URL nor a "
                                 "directory")
        #: Resources read so far.
        self.fetched = 0

    def close(self) -> None:
        """Close the kept-alive connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> TileSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _where(self, path: str) -> str:
        return f"{self.location.rstrip('/')}/{path}"

    def get(self, path: str, *, limit: int) -> bytes:
        """The bytes of resource ``path`` (below the prefix), at most ``limit``."""
        self.fetched += 1
        if self._dir is not None:
            return self._read_file(path, limit)
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                return self._http_get(path, limit)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not (reused and attempt == 1):  # an idle kept-alive connection: once more
                    raise TransportError(f"{self._where(path)}: the server closed the "
                                         "connection") from None
            except TimeoutError:
                self.close()
                raise TransportError(f"{self._where(path)}: no answer within "
                                     f"{self._timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise TransportError(f"cannot fetch {self._where(path)}: {reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_file(self, path: str, limit: int) -> bytes:
        assert self._dir is not None
        target = self._dir / path
        try:
            with open(target, "rb") as handle:
                data = handle.read(limit + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{target} does not exist") from None
        except OSError as exc:
            raise TransportError(f"cannot read {target}: {exc.strerror}") from None
        if len(data) > limit:
            raise BadResponseError(f"{target} is larger than {limit} bytes")
        return data

    def _http_get(self, path: str, limit: int) -> bytes:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl_context)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
        url = self._where(path)
        self._conn.request("GET", f"{self._prefix}/{path}", headers={
            "User-Agent": _USER_AGENT, "Accept-Encoding": "gzip, identity"})
        response = self._conn.getresponse()
        data = response.read(limit + 1)
        if response.will_close or len(data) > limit:
            self.close()
        if response.status == 404:
            raise HttpNotFoundError(url=url, status=404, code="not_found",
                                    message="no such resource")
        if response.status != 200:
            raise HttpError(url=url, status=response.status, code=f"http_{response.status}",
                            message=response.reason or "error")
        if response.getheader("Content-Encoding", "identity").strip().lower() == "gzip":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                data = inflate.decompress(data, limit + 1)
            except zlib.error:
                raise BadResponseError(f"{url}: the gzip body does not decompress") from None
        if len(data) > limit:
            raise BadResponseError(f"{url}: larger than {limit} bytes")
        return data

    def checkpoint(self) -> str:
        """The log's checkpoint note text (not verified here)."""
        data = self.get("checkpoint", limit=MAX_NOTE_SIZE)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadResponseError(f"{self._where('checkpoint')} is not UTF-8") from None

    def tile(self, ref: TileRef) -> bytes:
        """Hash tile or entry bundle ``ref``; a missing partial one is cut from its full
        tile (module docstring)."""
        try:
            return self.get(ref.path, limit=_MAX_TILE_BYTES)
        except NotFoundError:
            if ref.full:
                raise
        full = self.get(ref.with_width(TILE_WIDTH).path, limit=_MAX_TILE_BYTES)
        return full[: ref.width * ((2 + ENTRY_SIZE) if ref.entries else HASH_SIZE)]


@dataclass(frozen=True, kw_only=True)
class TileProof:
    """A receipt built from tiles: the receipt text, the leaf ``index``, the checkpoint's
    tree ``size``, the leaves read to find the index (``searched``, 0 when it was given) and the
    resources fetched."""

    receipt: str
    index: int
    size: int
    searched: int
    fetched: int


def _find_index(source: TileSource, reader: TileNodeReader, digest: bytes, root: bytes,
                progress: Callable[[int, int], None] | None) -> tuple[int, int]:
    """The leaf index of ``digest`` from the entry bundles, and the leaves read.

    Raises:
        NotFoundError: every bundle was read, they rebuild the root, and the digest is not in
            any of them.
        VerificationError: the bundles do not rebuild the checkpoint's root.
        MalformedError: a bundle does not parse.
    """
    size = reader.size
    frontier = Frontier.empty()
    read = 0
    for n in range(-(-size // TILE_WIDTH)):
        width = tile_width(0, n, size)
        ref = TileRef(level=0, index=n, width=width, entries=True)
        try:
            entries = parse_entry_bundle(source.tile(ref), width)
        except MalformedError as exc:
            raise MalformedError(f"{source.location}: {ref.path}: {exc.diagnostics()}") from None
        hashes = leaf_hashes(entries)
        read += width
        if progress is not None:
            progress(read, size)
        if digest in entries:
            reader.put(0, n, hashes)  # the level-0 tile is these hashes: no second fetch
            return n * TILE_WIDTH + entries.index(digest), read
        frontier, _ = frontier.extend(hashes)
    if frontier.root() != root:
        raise VerificationError(f"the entry bundles at {source.location} do not rebuild its "
                                "checkpoint's root: the tiles do not match the checkpoint")
    raise NotFoundError(f"digest {digest.hex()} is not in the log at {source.location} (tree "
                        f"size {size}; every entry bundle read and checked against the "
                        "checkpoint's root)")


def prove_from_tiles(
    source: TileSource,
    digest: bytes,
    *,
    index: int | None = None,
    policy: Policy | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TileProof:
    """A receipt for ``digest`` built from the tiles of ``source`` (module docstring):
    against its checkpoint, for leaf ``index`` if given, else the index found in the entry
    bundles. ``progress(leaves_read, tree_size)`` follows the search.

    Raises:
        MalformedError: ``digest`` is not 32 bytes, or the checkpoint, a tile or a bundle does
            not parse.
        VerificationError: the checkpoint does not verify under ``policy``, or the tiles do
            not prove ``digest`` at the index against the checkpoint's root.
        NotFoundError: ``index`` is beyond the tree, the digest is not in the log, or a
            resource the tree needs is missing.
        LedgerError: whatever ``source`` raises (transport, HTTP errors).
    """
    if len(digest) != HASH_SIZE:
        raise MalformedError(f"a digest is {HASH_SIZE} bytes")
    note = source.checkpoint()
    try:
        body = parse_checkpoint_body(parse_note(note).text)
    except MalformedError as exc:
        raise MalformedError(f"the checkpoint at {source.location}: {exc.diagnostics()}") \
            from None
    if policy is not None:
        try:
            verify_checkpoint_note(note, policy)
        except VerificationError as exc:
            raise VerificationError(f"the checkpoint at {source.location}: "
                                    f"{exc.diagnostics()}") from None
    size = body.size
    reader = TileNodeReader(size, source.tile)
    searched = 0
    if index is None:
        index, searched = _find_index(source, reader, digest, body.root, progress)
    elif index >= size:
        raise NotFoundError(f"leaf {index} is not in the tree of size {size} at "
                            f"{source.location}")
    proof = inclusion_proof(reader, index, size)
    try:
        verify_inclusion(leaf_hash(digest), index, size, proof, body.root)
    except VerificationError:
        raise VerificationError(
            f"digest {digest.hex()} is not leaf {index} of the tree at {source.location} (size "
            f"{size}): the proof its tiles give does not lead to the checkpoint's root (a "
            "wrong --index, or tiles that do not match the checkpoint)") from None
    receipt = build_receipt(index=index, proof=proof, checkpoint_note=note)
    if policy is not None:
        verify_receipt(receipt, policy, digest)
    return TileProof(receipt=receipt, index=index, size=size, searched=searched,
                     fetched=source.fetched)
