"""``ledger tiles export``: a store's tree written as C2SP tlog-tiles static files.

The directory that :func:`export_tiles` fills is a complete tiled log: ``checkpoint`` (the
store's latest quorum checkpoint note), every tile ``tile/<L>/<N>[.p/<W>]`` and every entry
bundle ``tile/entries/<N>[.p/<W>]`` of that checkpoint's tree (:mod:`ledger.tiles.core`). Any
web server, object store or CDN can serve it as it is; ``ledger proof --tiles URL`` builds
receipts from it.

Rules, in the order they are applied:

1. **Nothing is written before the directory is known to hold this log.** Its ``checkpoint``,
   if any, must be of the same origin and of a tree no larger than the store's; the store's
   tree must have that checkpoint's root at that size. Otherwise nothing is written: another
   log (:class:`ExportRefusedError`), a directory ahead of the store (the same), or a tree the
   store contradicts: a fork (:class:`TileConflictError`).
2. **Incremental.** Only what the tree of the store's checkpoint adds is computed and written:
   the full tiles completed since the directory's checkpoint, the new partial tiles, the new
   checkpoint. Full tiles of the directory's own checkpoint are only checked to exist with the
   right length (``verify=True`` compares their bytes too); a missing one is written again.
3. **Never a different full tile.** A file that is already there with other bytes than the
   tree has at that path is never replaced: the export stops there and names it
   (:class:`TileConflictError`); a tile's bytes never change in an append-only log, so a
   difference is a fork or a damaged file, for a person to look at.
4. **Atomic, and the checkpoint last.** Every file is written with
   :func:`ledger.fileio.write_atomic` (temporary file, fsync, rename, fsync of the directory);
   the checkpoint is replaced only after every tile of its tree is in place, so a reader of the
   directory (or a crash in the middle) never sees a checkpoint whose tiles are missing. Old
   partial tiles stay: a client holding an older checkpoint still finds them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from ledger.checkpoint import Checkpoint, parse_checkpoint_body
from ledger.errors import (
    CorruptionError,
    LedgerError,
    MalformedError,
    NotFoundError,
    VerificationError,
)
from ledger.fileio import FileWriteError, write_atomic
from ledger.merkle.hashing import HASH_SIZE
from ledger.note import MAX_NOTE_SIZE, parse_note
from ledger.tiles.core import ENTRY_SIZE, TileRef, read_tile, tile_refs

__all__ = [
    "CHECKPOINT_FILE",
    "ExportRefusedError",
    "ExportReport",
    "ExportSource",
    "TileConflictError",
    "export_tiles",
]

#: The checkpoint's file name in an export (the spec's ``<prefix>/checkpoint``).
CHECKPOINT_FILE: Final = "checkpoint"
#: Files are public (a web server serves them as they are).
_FILE_MODE: Final = 0o644


class ExportRefusedError(LedgerError):
    """The directory holds something else than an earlier export of this log (another log's
    checkpoint, a checkpoint newer than the store's, a file that is not a checkpoint), or the
    store has no checkpoint to export. Nothing was written."""

    code = "export_refused"


class TileConflictError(VerificationError):
    """The directory holds a tile or checkpoint that contradicts the store's tree: a fork, or
    a damaged file. It was not replaced; the message names it."""

    code = "tile_conflict"


class ExportSource(Protocol):
    """The reads of a :class:`~ledger.storage.base.Store` an export needs."""

    def latest_checkpoint(self) -> bytes | None:
        """The checkpoint note with the largest size."""
        ...

    def root_at(self, size: int) -> bytes:
        """The root of the tree of the first ``size`` leaves."""
        ...

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``."""
        ...

    def digests_between(self, start: int, end: int) -> list[bytes]:
        """The digests of leaves ``[start, end)``."""
        ...


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What an export did: the tree ``size`` it exported (``origin``), the size of the
    checkpoint the directory held before (``previous``, 0 for none), the tiles and bundles it
    ``written``, those it found already in place (``kept``), and whether it wrote the
    checkpoint (``checkpoint_written``: false when the directory held the same bytes)."""

    origin: str
    size: int
    previous: int
    written: int
    kept: int
    checkpoint_written: bool


def _read_existing(directory: Path) -> tuple[bytes, Checkpoint] | None:
    """The checkpoint file of ``directory`` and its body, or ``None`` if there is none.

    Raises:
        ExportRefusedError: it is unreadable, too large or not a checkpoint note.
    """
    path = directory / CHECKPOINT_FILE
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_NOTE_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ExportRefusedError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if len(data) > MAX_NOTE_SIZE:
            raise MalformedError("too large for a checkpoint note")
        return data, parse_checkpoint_body(parse_note(data).text)
    except MalformedError as exc:
        raise ExportRefusedError(
            f"{path} is not a checkpoint ({exc.diagnostics()}); nothing was written (move it "
            "away, or export into another directory)") from None


def _file_state(path: Path) -> int | None:
    """The size of the regular file at ``path``, or ``None`` if nothing is there.

    Raises:
        TileConflictError: something that is not a regular file is there.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileWriteError(f"cannot examine {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TileConflictError(f"{path} is not a regular file; it was left as it is")
    return st.st_size


def _expected_bytes(ref: TileRef) -> int:
    return ref.width * ((2 + ENTRY_SIZE) if ref.entries else HASH_SIZE)


def _conflict(path: Path, size: int) -> TileConflictError:
    return TileConflictError(
        f"{path} holds other bytes than the tree of size {size} has there: a fork, or a "
        "damaged file; it was not replaced and the export stopped (find out which tree is "
        "right; then move the directory away and export again)")


def _write(path: Path, data: bytes) -> None:
    try:
        os.makedirs(path.parent, exist_ok=True)
    except OSError as exc:
        raise FileWriteError(f"cannot create directory {path.parent}: {exc.strerror}") from None
    write_atomic(path, data, mode=_FILE_MODE)


def _same(path: Path, data: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError as exc:
        raise FileWriteError(f"cannot read {path}: {exc.strerror}") from None


def export_tiles(
    store: ExportSource,
    directory: str | os.PathLike[str],
    *,
    verify: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Export the tree of the store's latest checkpoint into ``directory`` (module docstring).

    ``progress(done, total)`` is called as tiles are examined; ``verify`` compares every
    existing tile with the tree, not only the new ones.

    Raises:
        ExportRefusedError: the store has no checkpoint, or the directory holds another log's
            or a newer checkpoint, or a checkpoint file that does not parse.
        TileConflictError: the directory's checkpoint or a tile in it contradicts the store's
            tree (a fork or a damaged file); files written before it was found stay (they are
            the store's tree), nothing was replaced.
        CorruptionError: the store's checkpoint does not match its own tree.
        FileWriteError: a file or directory cannot be written.
        LedgerError: whatever the store raises.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ExportRefusedError(f"{root} exists and is not a directory")
    note = store.latest_checkpoint()
    if note is None:
        raise ExportRefusedError("the store holds no cosigned checkpoint yet: nothing to export")
    checkpoint = parse_checkpoint_body(parse_note(note).text)
    size = checkpoint.size
    try:
        if store.root_at(size) != checkpoint.root:
            raise CorruptionError(f"the store's latest checkpoint (size {size}) does not match "
                                  "its own tree: run ledger db check")
    except NotFoundError:
        raise CorruptionError(f"the store's latest checkpoint (size {size}) is beyond its "
                              "tree: run ledger db check") from None
    previous = 0
    existing = _read_existing(root)
    if existing is not None:
        _, old = existing
        if old.origin != checkpoint.origin:
            raise ExportRefusedError(
                f"{root} holds the export of another log (origin {old.origin}, not "
                f"{checkpoint.origin}); nothing was written")
        if old.size > size:
            raise ExportRefusedError(
                f"{root} holds a checkpoint of tree size {old.size}, newer than the store's "
                f"({size}): export from an up-to-date store; nothing was written")
        if store.root_at(old.size) != old.root:
            raise TileConflictError(
                f"{root / CHECKPOINT_FILE} (tree size {old.size}) is not a checkpoint of this "
                "store's tree: the directory holds a fork of the log, or the store does; "
                "nothing was written")
        previous = old.size
    new = set(tile_refs(size, since=previous))
    refs = list(tile_refs(size))
    written = kept = 0
    for done, ref in enumerate(refs, start=1):
        path = root / ref.path
        on_disk = _file_state(path)
        if on_disk is not None and ref not in new and not verify:
            if on_disk != _expected_bytes(ref):  # a tile of the directory's own checkpoint
                raise _conflict(path, size)
            kept += 1
        else:
            data = read_tile(store, ref, size)
            if on_disk is None:
                _write(path, data)
                written += 1
            elif on_disk == len(data) and _same(path, data):
                kept += 1
            else:
                raise _conflict(path, size)
        if progress is not None:
            progress(done, len(refs))
    replaced = existing is None or existing[0] != note
    if replaced:
        _write(root / CHECKPOINT_FILE, note)
    return ExportReport(origin=checkpoint.origin, size=size, previous=previous, written=written,
                        kept=kept, checkpoint_written=replaced)
