"""Operator tools on a node's data directory: full check, hot backup, restore, format upgrade.

These are library functions; ``ledger db check|backup|restore|migrate`` (:mod:`ledger.cli`) is
a thin layer over them. They run in their own process, next to or instead of the node.

What :func:`check_database` proves
----------------------------------
:meth:`LmdbStore.check <ledger.storage.lmdb_store.LmdbStore.check>` (one pass of the store's
scrub, the same checks a node runs in the background) proves that every stored value carries
its checksum and that the stored tree is *a* Merkle tree: every node hashes its children, every
leaf is indexed exactly once and no digest twice, the stored head is the recomputed root, every
block and checkpoint rebuilds. It cannot tell whether that tree is the one the validators
agreed on. This module adds the chain of blocks on top, with the genesis as the only trusted
input:

* every block decodes, sits at its height, and extends the hash of the block before it (block 1
  extends :data:`~ledger.consensus.block.GENESIS_PREV_HASH`);
* the validator set of each height is the genesis roster changed only by the validator-set
  changes committed blocks carry, each valid against the roster it modifies
  (:class:`~ledger.consensus.reconfig.ValidatorHistory`); everything about height ``h`` below is
  checked against the set of ``h``;
* its proposer is a validator, its ``last_commit`` certifies the previous block, and its time is
  the BFT time that the consensus core demands (:func:`~ledger.consensus.block.expected_time`);
* its stored commit certificate holds a quorum (``2f + 1``) of distinct validators' valid
  precommits for exactly this block (:func:`~ledger.consensus.messages.verify_certificate`);
* its digests are the leaves the log gained at this height: every digest new to the log is the
  next leaf, in block order, and the tree head the block commits to (``tree_size``,
  ``tree_root``) is the stored tree's root at that size; the last block covers the whole log;
* every stored checkpoint note for a block's tree size (and the latest one) opens under the
  trust policy of the roster in force at that block (a log signature and a quorum of
  cosignatures) and names the stored root.

So a flipped byte anywhere (tree node, leaf, index, block, certificate signature, checkpoint
note) is reported, naming the first place that disagrees, and a store that passes is one the
genesis validators signed, block by block.

Limits, stated: checkpoint notes are checked against the chain at block boundaries (every size
at which a node stores one) plus the latest; a note filed under another size is checked by the
store's own pass (checksum, it rebuilds) but not against a trust policy. Run against a
live node, the tree scan and the chain scan read two successive snapshots; both are prefixes of
one append-only history, so a check of a running node is sound, merely a few blocks behind.

Backup and restore
------------------
:func:`backup` is LMDB's own hot copy (``mdb_env_copy2`` with ``MDB_CP_COMPACT``) taken inside
one read transaction: a consistent snapshot at one committed transaction, free pages dropped,
while the node keeps writing (LMDB readers never block the writer). The copy is written into a
temporary directory beside the destination, checked by opening it, fsynced, then renamed into
place, so a crash never leaves a half-written backup under the destination name.

:func:`restore` never touches the backup: it copies it into a staging directory beside the data
directory, checks the copy, and renames it into place. An existing non-empty data directory is
kept aside under a new name (``<data_dir>.replaced-N``), never deleted; it is only replaced with
``force``, and never while a process holds the store open.

Upgrade
-------
:func:`migrate` upgrades a store written by an older version (format 1) to the current format
in place (:mod:`ledger.storage._migrate`): built beside, verified value for value, swapped in
atomically, the old data file kept as ``data-format1.mdb``. A node that opens a format-1 store
upgrades it the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ledger.checkpoint import open_checkpoint, parse_checkpoint_body
from ledger.consensus.block import GENESIS_PREV_HASH, Block, expected_time
from ledger.consensus.messages import (
    CommitCertificate,
    decode_block,
    decode_certificate,
    verify_certificate,
)
from ledger.consensus.reconfig import ValidatorHistory, ValidatorInfo, ValidatorRoster
from ledger.errors import (
    CorruptionError,
    LedgerError,
    StorageError,
    VerificationError,
)
from ledger.genesis import Genesis
from ledger.note import parse_note
from ledger.policy import Policy
from ledger.storage._migrate import MigrationReport
from ledger.storage._migrate import migrate as _migrate_store
from ledger.storage.base import REPAIR_LOCAL, Damage, DamageError, TreeHead
from ledger.storage.lmdb_store import FORMAT_VERSION, LmdbStore, stored_format_of

__all__ = [
    "PHASES",
    "BackupResult",
    "CheckReport",
    "MigrationReport",
    "Progress",
    "RestoreResult",
    "backup",
    "backup_store",
    "check_database",
    "check_store",
    "migrate",
    "restore",
]

#: ``progress(phase, done, total)``: phase is ``"tree"``, ``"blocks"`` or ``"checkpoints"``.
Progress = Callable[[str, int, int], None]

#: Names of the check phases, in the order they run.
PHASES: Final = ("tree", "blocks", "checkpoints")

_DATA_FILE: Final = "data.mdb"
_LOCK_FILE: Final = "lock.mdb"
#: Report block and checkpoint progress every this many (each report redraws a progress bar).
_BLOCK_TICK: Final = 64
#: Rebuilds ``check_database(rebuild=...)`` attempts before it reports what is left.
_REBUILDS: Final = 64


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """What a passing :func:`check_database` verified; ``head`` is the tree head the last
    block commits to (the whole log, unless the node appended during the check)."""

    blocks: int
    leaves: int
    checkpoints: int
    head: TreeHead


@dataclass(frozen=True, kw_only=True)
class BackupResult:
    """A finished backup: where, and the state it holds."""

    path: Path
    height: int
    head: TreeHead
    bytes: int


@dataclass(frozen=True, kw_only=True)
class RestoreResult:
    """A finished restore: the state now in ``data_dir`` and where the old one was put."""

    data_dir: Path
    set_aside: Path | None
    height: int
    head: TreeHead


# ------------------------------------------------------------------------------------ check


def check_database(
    data_dir: str | os.PathLike[str],
    genesis: Genesis,
    progress: Progress | None = None,
    *,
    rebuild: Callable[[Damage], None] | None = None,
) -> CheckReport:
    """Open the store in ``data_dir`` read-only and re-verify all of it against ``genesis``.

    See the module docstring for the list of checks. Safe to run while the node writes.

    With ``rebuild``, the store is opened for writing (stop the node first) and damage to data
    the store derives from its own tree (the digest index, its filters, a dictionary entry's
    second copy) is rebuilt, ``rebuild(damage)`` told of each, and the check run again.

    :raises CorruptionError: naming the first inconsistency (a node ``(level, index)``, a block
        height, a checkpoint size), or the data file is truncated or damaged at open.
    :raises StorageError: ``data_dir`` holds no ledger store or cannot be read.
    """
    if rebuild is None:
        with LmdbStore.open(data_dir, readonly=True) as store:
            return check_store(store, genesis, progress)
    with LmdbStore.open(data_dir, upgrade=False) as store:
        for _ in range(_REBUILDS):
            try:
                store.check()
            except DamageError as exc:
                if exc.damage.repair != REPAIR_LOCAL:
                    raise
                store.rebuild(exc.damage)
                rebuild(exc.damage)
                continue
            break
        return check_store(store, genesis, progress)


def check_store(
    store: LmdbStore, genesis: Genesis, progress: Progress | None = None
) -> CheckReport:
    """:func:`check_database` on an already open store (for example the one a test writes).

    :raises CorruptionError: naming the first inconsistency.
    :raises StorageError: the store is closed or LMDB fails.
    """
    # The head as of opening: every block up to the last height read below was committed in
    # the same transaction as its leaves, so the last block must reach at least this size.
    opened = store.tree_head()
    store.check(None if progress is None else lambda done, total: progress("tree", done, total))
    chain = _ChainChecker(store, genesis)
    last = store.last_height()
    for height in range(1, last + 1):
        chain.block(height)
        if progress is not None and (height % _BLOCK_TICK == 0 or height == last):
            progress("blocks", height, last)
    if chain.tree_size < opened.size:
        raise CorruptionError(
            f"the log holds {opened.size} leaves but its last block (height {last}) covers "
            f"only {chain.tree_size}"
        )
    sizes = sorted(chain.sizes)
    latest = store.latest_checkpoint()
    if latest is not None:
        size = _checkpoint_size(latest)
        if size not in chain.sizes:
            sizes.append(size)
    found = 0
    for done, size in enumerate(sizes, start=1):
        note = store.checkpoint(size)
        if note is not None:
            _check_checkpoint(store, chain.policy_for(size), genesis.origin, size, note)
            found += 1
        if progress is not None and (done % _BLOCK_TICK == 0 or done == len(sizes)):
            progress("checkpoints", done, len(sizes))
    head = opened if chain.head is None else chain.head
    return CheckReport(blocks=last, leaves=chain.tree_size, checkpoints=found, head=head)


class _ChainChecker:
    """Walks the blocks in height order, carrying what the next block must extend."""

    def __init__(self, store: LmdbStore, genesis: Genesis) -> None:
        self._store = store
        self._chain_id = genesis.chain_id
        self._genesis_time = genesis.genesis_time
        self._genesis_policy = genesis.policy()
        roster = ValidatorRoster(
            members=[
                ValidatorInfo(
                    name=v.name,
                    consensus_key=v.consensus_key,
                    log_vkey=v.log_vkey,
                    cosigner_vkey=v.cosigner_vkey,
                )
                for v in genesis.validators
            ]
        )
        self._history = ValidatorHistory.genesis(roster)
        self._prev: Block | None = None
        self.tree_size = 0
        #: The tree head the last verified block commits to.
        self.head: TreeHead | None = None
        #: Tree sizes at block boundaries (where a node stores its checkpoints), each with the
        #: first height that reached it: the checkpoint after that block uses its roster.
        self.sizes: dict[int, int] = {}

    def policy_for(self, size: int) -> Policy:
        """The trust policy of the checkpoint at ``size``: that of the roster in force at the
        block that reached ``size`` (the latest roster for a size no block ends at)."""
        height = self.sizes.get(size, self._history.height)
        roster = self._history.roster_at(height) if height else None
        return self._genesis_policy if roster is None else roster.policy()

    def block(self, height: int) -> None:
        """Verify the block at ``height``; the one at ``height - 1`` was verified before.

        :raises CorruptionError: ``block {height}: <what is wrong>``.
        """
        # A store checked against another chain's genesis fails at block 1, whatever the
        # first check to notice is: say so rather than report a damaged store.
        hint = " (is this the right genesis?)" if height == 1 else ""
        try:
            self._verify(height)
        except CorruptionError as exc:
            raise CorruptionError(f"block {height}: {_strip(exc, height)}{hint}") from None
        except StorageError:
            raise
        except LedgerError as exc:  # Malformed, Verification, NotFound (a size not in the tree)
            raise CorruptionError(f"block {height}: {exc.diagnostics()}{hint}") from None

    def _verify(self, height: int) -> None:
        record = self._store.block(height)
        if record is None:
            raise CorruptionError("missing from the store")
        block = decode_block(record.block)  # ProtocolError is a MalformedError
        if block.height != height:
            raise CorruptionError(f"the stored block says height {block.height}")
        prev = self._prev
        prev_hash = GENESIS_PREV_HASH if prev is None else prev.hash
        if block.prev_hash != prev_hash:
            raise CorruptionError("its prev_hash is not the hash of the block before it")
        # Final: the history holds every block below ``height``, and a change takes effect two
        # or more heights after the block carrying it.
        validators = self._history.set_at(height)
        if block.proposer not in validators:
            raise CorruptionError("its proposer is not a validator")
        self._check_last_commit(block, prev_hash)
        want = expected_time(
            height=height,
            last_commit=block.last_commit,
            prev_block=prev,
            genesis_time=self._genesis_time,
        )
        if block.time != want:
            raise CorruptionError(f"its time {block.time} is not the BFT time {want}")
        certificate = decode_certificate(record.certificate)
        verify_certificate(
            certificate,
            block_hash=block.hash,
            height=height,
            validators=validators,
            chain_id=self._chain_id,
        )
        self._check_leaves(block)
        # Schedules the changes the block carries (VerificationError if one is not valid).
        self._history = self._history.apply(block, chain_id=self._chain_id)
        self._prev = block

    def _check_last_commit(self, block: Block, prev_hash: bytes) -> None:
        last: CommitCertificate | None = block.last_commit
        if block.height == 1:
            if last is not None:
                raise CorruptionError("block 1 carries a last commit")
            return
        if last is None or last.height != block.height - 1:
            raise CorruptionError("it lacks the certificate of the block before it")
        try:
            # The certificate of block h - 1 is checked against the set of h - 1.
            last.verify(self._history.set_at(block.height - 1), self._chain_id, prev_hash)
        except VerificationError as exc:
            raise CorruptionError(f"its last commit: {exc.diagnostics()}") from None

    def _check_leaves(self, block: Block) -> None:
        """The block's new digests are the next leaves, and its tree head is the stored one."""
        store, start = self._store, self.tree_size
        if block.tree_size < start:
            raise CorruptionError(
                f"its tree size {block.tree_size} is below the previous block's {start}"
            )
        expected = start
        for digest in block.digests:
            index = store.index_of(digest)
            if index is None:
                raise CorruptionError(f"its digest {digest.hex()} is not in the log")
            if index == expected:
                expected += 1
            elif index >= expected:
                raise CorruptionError(
                    f"its digest {digest.hex()} is leaf {index}, expected leaf {expected}"
                )
            # index < expected: anchored earlier (before this block or twice in it): no new leaf
        if expected != block.tree_size:
            raise CorruptionError(
                f"its digests add {expected - start} leaves but its tree size grows by "
                f"{block.tree_size - start}"
            )
        if store.root_at(block.tree_size) != block.tree_root:
            raise CorruptionError(
                f"its tree root differs from the stored tree's root at size {block.tree_size}"
            )
        self.tree_size = block.tree_size
        self.head = TreeHead(size=block.tree_size, root=block.tree_root)
        self.sizes.setdefault(block.tree_size, block.height)


def _strip(exc: LedgerError, height: int) -> str:
    """The message of ``exc`` without a leading ``stored block {height}`` (the store's own)."""
    text = exc.diagnostics()
    prefix = f"stored block {height} "
    return "the stored record " + text[len(prefix) :] if text.startswith(prefix) else text


def _checkpoint_size(note: bytes) -> int:
    """The tree size the latest checkpoint note names (its signatures are checked later).

    :raises CorruptionError: the note does not parse.
    """
    try:
        return parse_checkpoint_body(parse_note(note).text).size
    except LedgerError as exc:
        raise CorruptionError(f"the latest checkpoint: {exc.diagnostics()}") from None


def _check_checkpoint(
    store: LmdbStore, policy: Policy, origin: str, size: int, note: bytes
) -> None:
    """The note filed under ``size`` is a quorum checkpoint of ``origin``'s stored tree there.

    :raises CorruptionError: ``checkpoint at size {size}: <what is wrong>``.
    """
    try:
        opened = open_checkpoint(note, policy.verifiers())
        policy.evaluate((v.verifier for v in opened.note.verified), origin=origin)
        body = opened.checkpoint
        if body.origin != origin:
            raise VerificationError(f"its origin is {body.origin!r}, not {origin!r}")
        if body.size != size:
            raise VerificationError(f"it is filed under size {size} but says {body.size}")
        if store.root_at(size) != body.root:
            raise VerificationError("its root differs from the stored tree's root")
    except StorageError:
        raise
    except LedgerError as exc:
        raise CorruptionError(f"checkpoint at size {size}: {exc.diagnostics()}") from None


# ---------------------------------------------------------------------------------- migrate


def migrate(data_dir: str | os.PathLike[str]) -> MigrationReport | None:
    """Upgrade the store in ``data_dir`` to the current format; ``None`` if it already is.

    :raises StorageError: ``data_dir`` holds no ledger store, a process holds it open (stop
        the node first), or the upgraded copy differs from the old store (nothing changed).
    :raises DiskFullError: not enough free space for the upgraded copy (nothing changed).
    :raises CorruptionError: the old store is damaged.
    """
    directory = Path(data_dir)
    version = stored_format_of(directory)
    if version is None:
        raise StorageError(f"no store at {directory}")
    if version == FORMAT_VERSION:
        return None
    return _migrate_store(directory)


# ----------------------------------------------------------------------------------- backup


def backup(data_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupResult:
    """Hot, consistent, compacted copy of the store in ``data_dir`` into directory ``dest``.

    Safe while the node runs in another process (see the module docstring). In the process that
    holds the store open, use :func:`backup_store` instead (a store is opened once per process).

    :raises StorageError: ``dest`` exists and is not an empty directory, ``data_dir`` holds no
        store, or a file cannot be written.
    :raises CorruptionError: the store (or the fresh copy) fails the open-time integrity check.
    """
    target = _check_empty_dest(Path(dest))
    with LmdbStore.open(data_dir, readonly=True) as store:
        return backup_store(store, target)


def backup_store(store: LmdbStore, dest: str | os.PathLike[str]) -> BackupResult:
    """:func:`backup` from an open store; other threads may keep appending to it meanwhile.

    :raises StorageError: as :func:`backup`.
    :raises CorruptionError: the fresh copy fails the open-time integrity check.
    """
    target = _check_empty_dest(Path(dest))
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.backup-", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create a directory beside {target}: {exc.strerror}") from None
    try:
        # One read snapshot: the copy is exactly the state of one commit; compact=True writes
        # the live pages only, in order (the free pages copy-on-write leaves are dropped).
        store.copy_to(staging, compact=True)
        _fsync_file(staging / _DATA_FILE)
        with LmdbStore.open(staging, readonly=True) as copy:  # the copy opens and is consistent
            head, height = copy.tree_head(), copy.last_height()
        with contextlib.suppress(FileNotFoundError):
            (staging / _LOCK_FILE).unlink()  # the reader table of our check, not backup data
        _fsync_dir(staging)
        _replace_empty(staging, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own half-made staging copy only
        raise
    size = (target / _DATA_FILE).stat().st_size
    return BackupResult(path=target, height=height, head=head, bytes=size)


# ---------------------------------------------------------------------------------- restore


def restore(
    backup_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    genesis: Genesis | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Put the backup in ``backup_dir`` in place as the store in ``data_dir``.

    The backup is copied (never moved) into a staging directory beside ``data_dir``, opened and
    fully checked there (:meth:`LmdbStore.check`, and :func:`check_store` when ``genesis`` is
    given), then renamed into place. A non-empty ``data_dir`` is refused unless ``force``; then
    it is renamed to ``<data_dir>.replaced-N`` (first free N), never deleted.

    :raises StorageError: ``backup_dir`` holds no store; ``data_dir`` is not empty and ``force``
        is not set; a process holds ``data_dir`` open (stop the node first); or a file cannot
        be copied or renamed.
    :raises CorruptionError: the backup fails its check (nothing in ``data_dir`` changed).
    """
    source = Path(backup_dir)
    target = Path(data_dir)
    if not (source / _DATA_FILE).is_file():
        raise StorageError(f"{source} holds no backup ({_DATA_FILE} is missing)")
    occupied = target.exists() and (not target.is_dir() or any(target.iterdir()))
    if occupied and not force:
        raise StorageError(
            f"{target} is not empty: replacing it needs force (which keeps it aside as "
            f"{target}.replaced-N)"
        )
    if occupied:
        _refuse_if_open(target)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=parent))
    except OSError as exc:
        raise StorageError(f"cannot create a directory beside {target}: {exc.strerror}") from None
    set_aside: Path | None = None
    try:
        try:
            shutil.copyfile(source / _DATA_FILE, staging / _DATA_FILE)
        except OSError as exc:
            raise StorageError(f"cannot copy {source / _DATA_FILE}: {exc.strerror}") from None
        _fsync_file(staging / _DATA_FILE)
        with LmdbStore.open(staging, readonly=True) as store:
            if genesis is None:
                store.check(None if progress is None else lambda d, t: progress("tree", d, t))
            else:
                check_store(store, genesis, progress)
            head, height = store.tree_head(), store.last_height()
        with contextlib.suppress(FileNotFoundError):
            (staging / _LOCK_FILE).unlink()
        _fsync_dir(staging)
        if occupied:
            _refuse_if_open(target)  # again: a node may have started while we checked
            set_aside = _free_name(target)
            try:
                os.rename(target, set_aside)
            except OSError as exc:
                raise StorageError(f"cannot move {target} aside: {exc.strerror}") from None
        _replace_empty(staging, target)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our staging copy, never the data
        raise
    return RestoreResult(data_dir=target, set_aside=set_aside, height=height, head=head)


def _free_name(path: Path) -> Path:
    """``<path>.replaced-N`` for the first N >= 1 that names nothing yet."""
    for n in itertools.count(1):
        candidate = path.with_name(f"{path.name}.replaced-{n}")
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _refuse_if_open(data_dir: Path) -> None:
    """Refuse if another process has the LMDB environment in ``data_dir`` open.

    Every process with the environment open holds a shared ``fcntl`` lock on byte 0 of
    ``lock.mdb`` for as long as it is open (LMDB's ``mdb_env_excl_lock``), so a non-blocking
    exclusive lock on that byte succeeds exactly when no other process has it open. Must not
    be called for a store open in *this* process: closing our descriptor would drop that
    process-wide lock (LMDB docs, Caveats).

    :raises StorageError: the store is in use, or ``lock.mdb`` cannot be opened to tell.
    """
    lock = data_dir / _LOCK_FILE
    if not lock.exists():
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError as exc:
        raise StorageError(f"cannot tell whether {data_dir} is in use: {exc.strerror}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError:
        raise StorageError(
            f"{data_dir} is open in another process (a running node?): stop it first"
        ) from None
    finally:
        os.close(fd)  # releases our probe lock too


# ------------------------------------------------------------------------------ file system


def _check_empty_dest(dest: Path) -> Path:
    """:raises StorageError: ``dest`` exists and is not an empty directory."""
    if os.path.lexists(dest) and (not dest.is_dir() or any(dest.iterdir())):
        raise StorageError(f"{dest} exists and is not empty: refusing to overwrite it")
    return dest


def _replace_empty(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target`` (absent, or an empty directory that rename replaces).

    :raises StorageError: ``target`` became non-empty meanwhile, or the rename fails.
    """
    try:
        os.replace(staging, target)
    except OSError as exc:
        raise StorageError(f"cannot rename {staging} to {target}: {exc.strerror}") from None


def _fsync_file(path: Path) -> None:
    """:raises StorageError: the file cannot be opened or synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot fsync {path}: {exc.strerror}") from None


def _fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (a rename is not, until this).

    :raises StorageError: the directory cannot be opened or synced.
    """
    _fsync_file(path)
