"""Writing files safely: one atomic write used by every command that writes a file.

A receipt, a trust policy, a genesis, a node config or a client token must never be left half
written, and must never be written through a file or link somebody else planted. So
:func:`write_atomic`:

1. creates the temporary file with :func:`tempfile.mkstemp` in the target's own directory: a
   random name opened with ``O_CREAT | O_EXCL`` (which refuses an existing path, a symlink
   included, so a planted link is never followed) and mode 0600 from the first byte;
2. sets the final mode with ``fchmod`` on the open descriptor (not subject to the umask: a
   secret written 0600 is 0600 even under ``umask 000``), writes, and ``fsync``s the file;
3. renames it over the target (``rename`` replaces a symlink at the target itself, it never
   writes through it) or, with ``replace=False``, hard-links it to the target, which fails if
   the target exists even when another process created it a moment ago;
4. ``fsync``s the directory, so the new name survives a power cut.

A crash at any point leaves either the old file or the new one, never a mixture, and at worst a
stray ``.NAME.*.tmp`` file beside it. :func:`make_private_dir` creates directories for secrets
with mode 0700, again independent of the umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Final

from ledger.errors import LedgerError

__all__ = ["FileExistsRefused", "FileWriteError", "make_private_dir", "write_atomic"]

PRIVATE_DIR_MODE: Final = 0o700


class FileWriteError(LedgerError):
    """A file or directory could not be created or written (the message names it and why)."""

    code = "file_write"


class FileExistsRefused(FileWriteError):
    """The target exists and the caller asked never to replace it."""

    code = "file_exists"


def _directory_of(target: Path) -> Path:
    return target.parent if str(target.parent) else Path(".")


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries to disk (best effort where the platform cannot).

    Raises:
        FileWriteError: the directory cannot be opened or flushed.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise FileWriteError(f"cannot open directory {directory}: {exc.strerror}") from None
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems (and platforms) do not support fsync on a directory; the rename has
        # still happened, only its durability is the file system's own.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise FileWriteError(f"cannot flush directory {directory}: {exc.strerror}") from None
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    mode: int = 0o644,
    replace: bool = True,
) -> None:
    """Write ``data`` (text is encoded as UTF-8) to ``path`` atomically, with ``mode``.

    See the module docstring for the steps. With ``replace=False`` an existing ``path`` (a file,
    a directory or a symlink, even a dangling one) is left untouched.

    Raises:
        FileExistsRefused: ``replace`` is false and ``path`` exists.
        FileWriteError: the file cannot be created, written, flushed or renamed into place.
    """
    target = Path(path)
    directory = _directory_of(target)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise FileWriteError(f"cannot write {target}: {exc.strerror}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                os.replace(tmp_name, target)
            else:
                _link_no_replace(tmp_name, target)
        except FileExistsError:
            raise FileExistsRefused(f"{target} already exists; it was left as it is") from None
        except OSError as exc:
            raise FileWriteError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    fsync_directory(directory)


def _link_no_replace(tmp_name: str, target: Path) -> None:
    """Put ``tmp_name`` at ``target`` unless ``target`` exists (atomic where links work)."""
    try:
        os.link(tmp_name, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        # A file system without hard links (some FUSE and network mounts): check, then rename.
        # The window between the two is the only non-atomic step, and only on such mounts.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.replace(tmp_name, target)


def make_private_dir(path: str | os.PathLike[str], *, parents: bool = True) -> Path:
    """Create ``path`` (and missing parents) as a directory only its owner can enter.

    A directory created here gets mode 0700 whatever the umask; an existing directory keeps
    its mode (it may be the operator's on purpose), but a symlink in its place is refused.
    Parents created along the way are 0700 too.

    Raises:
        FileWriteError: ``path`` exists and is not a directory (or is a symlink), or it cannot
            be created.
    """
    target = Path(path)
    if target.is_symlink():
        raise FileWriteError(f"{target} is a symbolic link, not a directory")
    if target.is_dir():
        return target
    missing: list[Path] = []
    walk = target
    while not walk.exists() and not walk.is_symlink():
        missing.append(walk)
        if walk.parent == walk or not parents:
            break
        walk = walk.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            if directory.is_symlink() or not directory.is_dir():
                raise FileWriteError(f"{directory} exists and is not a directory") from None
            continue
        except OSError as exc:
            raise FileWriteError(f"cannot create directory {directory}: {exc.strerror}") from None
        try:
            os.chmod(directory, PRIVATE_DIR_MODE)  # the umask may have removed nothing, or more
        except OSError as exc:
            raise FileWriteError(f"cannot set the mode of {directory}: {exc.strerror}") from None
    if not target.is_dir():
        raise FileWriteError(f"{target} exists and is not a directory")
    return target
