"""A node looks after its store: background scrub, repair from peers, and a full disk.

The store verifies a checksum on every value it reads and raises
:class:`~ledger.storage.base.DamageError` rather than serve a damaged one
(:mod:`ledger.storage.lmdb_store`, "Damage"). This module is what the node does about it, so
that a damaged or full disk costs a moment of this node's service, never a wrong answer:

**Scrub.** A background task re-verifies the whole store, pass after pass, at
``[storage] scrub_units_per_second`` (:meth:`Store.scrub`, one bounded step at a time in a
worker thread, so that a long step does not hold up requests; never at the same time as a
repair); progress, complete passes and the time of the last one are metrics.

The digest index's lookup filters are read in place from LMDB's memory map and trusted by a
lookup once this process verified them; so they are verified again in full every
:data:`FILTER_RECHECK_SECONDS`, when the replica halts on data that contradicts itself, and
(``GET /v1/proofs``, :func:`ledger.node.api.get_proof`) before the node answers that a digest
was never anchored.

**Repair.** Damage found by the scrub, by a read or write that met it, or while opening, is
repaired by what its :class:`~ledger.storage.base.Damage` asks for:

``peer``   a value every validator holds byte for byte in meaning: it is fetched from the other
           validators in turn, over the same public routes any client reads, and verified here
           before it is written; a peer's answer is never trusted:

           - a *tile* (16 nodes of the store's tree) from the peer's c2sp.org/tlog-tiles tile or
             entry bundle that holds its bottom row; :meth:`Store.repair_tile` writes it only if
             its nodes hash to the stored tree above it (the tree head's frontier at the top,
             which is the root in the last block, whose commit certificate was verified at
             start): so a tile is checked against the quorum-cosigned tree head;
           - a *block* from ``GET /v1/blocks/{height}``: its commit certificate must be a
             quorum of the validator set of its height for its hash, and
             :meth:`Store.repair_block` checks its tree root and digests against the tree;
           - a *checkpoint* from ``GET /v1/checkpoints/{size}``: it must satisfy the trust
             policy of its period, be of our origin and size, and its root must be the stored
             tree's root at that size.
``local``  derived data (an index run, a filter, a dictionary copy): rebuilt from the tiles.
``owner``, ``none``
           cannot be repaired while running (the node's own safety record, the tree head):
           the node halts with one line that names the value and the fix. (A digest the
           log holds twice is not this store's damage: every validator's tree holds it; it is
           reported once.)

While damage is not repaired, a read that needs it answers ``503 store_damaged`` with a
message naming the value (never ``404`` for an anchored digest, never a wrong proof); other
reads are served. A read or commit that met damage may have halted the replica (it stops
rather than act on a value it cannot read): once every pending damage is repaired, the node
builds the replica again from the store, exactly as a restart would.

**A full disk.** A write refused for want of space (:class:`~ledger.storage.base.DiskFullError`,
also when LMDB's own commit hits ``ENOSPC``) halts the replica with the reason ``disk_full: no
space left on device: <dir> has <n> bytes free ...`` (one log line, ``/v1/status``, the
``ledger_storage_disk_full`` metric); reads go on, anchors answer ``503 disk_full``. The node
looks at the free space every :data:`DISK_CHECK_SECONDS` and, once :data:`RESUME_FREE_BYTES`
are free beyond the store's reserve, builds the replica again: it catches up from its peers
what the others committed meanwhile and writes again. Nothing acknowledged is lost: an anchor
is only acknowledged after its block and checkpoint are on disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from ledger.checkpoint import open_checkpoint, parse_checkpoint_body
from ledger.consensus.messages import decode_block, decode_certificate, verify_certificate
from ledger.errors import (
    CorruptionError,
    LedgerError,
    MalformedError,
    NotFoundError,
    StorageError,
    VerificationError,
)
from ledger.inputs import parse_json_object
from ledger.merkle.hashing import node_hash
from ledger.replica.checkpoints import note_body
from ledger.replica.validators import NodeValidators
from ledger.storage.base import (
    REPAIR_LOCAL,
    REPAIR_NONE,
    REPAIR_PEER,
    BlockRecord,
    Damage,
    DamageError,
    Store,
)
from ledger.tiles.core import TileRef, parse_entry_bundle, parse_hash_tile, tile_width

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = [
    "DISK_CHECK_SECONDS",
    "RESUME_FREE_BYTES",
    "StoreCare",
    "UnrepairableError",
    "peer_tile_nodes",
]

log = logging.getLogger("ledger.node.repair")

#: How often a node halted by a full disk looks whether space came back.
DISK_CHECK_SECONDS: Final = 1.0
#: Free bytes beyond the store's own reserve before writing resumes (hysteresis: a disk at
#: the edge does not flap between halted and running).
RESUME_FREE_BYTES: Final = 8 << 20
#: Units of the scrub per step (the rate is kept by pausing after each step).
SCRUB_STEP_UNITS: Final = 256
#: The shortest time between the starts of two scrub passes (a small store is not
#: re-read many times a second).
PASS_PAUSE_SECONDS: Final = 1.0
#: How often the completed stripes' lookup filters are verified again in full (about 3 ms per
#: 4 million anchors), besides the scrub's passes.
FILTER_RECHECK_SECONDS: Final = 60.0
#: A failed peer repair is tried again after this long (peers may be starting too), doubling
#: up to :data:`MAX_RETRY_SECONDS` while it keeps failing.
RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 30.0
#: How long a start waits for its peers to repair damage that keeps the replica from starting.
START_REPAIR_SECONDS: Final = 60.0
#: The replica is built again at most this often a minute (after a repair or a full disk).
MAX_RESTARTS: Final = 5
#: The largest answer read from a peer (a block with 10,000 digests is under 1 MiB).
MAX_PEER_ANSWER: Final = 4 << 20
#: Store-level tiles hold 4 tree levels (16 nodes wide); tlog-tiles hold 8 (256 wide).
_STORE_TILE_HEIGHT: Final = 4
_TLOG_TILE_HEIGHT: Final = 8


class UnrepairableError(CorruptionError):
    """Damage that no peer and no local data can repair; the message is one line naming the
    value and the fix."""

    code = "store_damaged"


def fix_line(damage: Damage, data_dir: object) -> str:
    """One line for an operator: the damaged value and what to do."""
    return (f"store damage that cannot be repaired here: {damage.line()}; stop the node, run "
            f"`ledger db check {data_dir}`, then restore a backup or re-sync from the peers "
            "into an empty data directory (docs/operators-db.md)")


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    row = list(hashes)
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row), 2)]
    return row[0]


def peer_tile_nodes(damage: Damage, peer_size: int) -> tuple[TileRef, int, int, int]:
    """Which tlog-tiles resource of a peer holds the bottom row of the damaged store tile.

    Returns ``(ref, start, end, fold)``: nodes ``[start, end)`` of the parsed resource are the
    level-``8 l`` hashes (or, for stratum 0, the digests) that make the row, each ``fold``
    (1 or 16) consecutive ones hashing to one bottom-row node.

    Raises:
        NotFoundError: the peer's tree (of ``peer_size`` leaves) does not hold them yet.
        MalformedError: ``damage`` is not a tile's.
    """
    if damage.kind != "tile" or damage.stratum is None or damage.nodes is None:
        raise MalformedError("not a tile's damage")
    level = _STORE_TILE_HEIGHT * damage.stratum
    tlog_level, rest = divmod(level, _TLOG_TILE_HEIGHT)
    first, end = damage.nodes[0] << rest, damage.nodes[1] << rest
    index = first >> _TLOG_TILE_HEIGHT
    width = tile_width(tlog_level, index, peer_size)
    base = index << _TLOG_TILE_HEIGHT
    if width < end - base:
        raise NotFoundError(f"the peer's tree of {peer_size} leaves does not hold them yet")
    ref = TileRef(level=tlog_level, index=index, width=width, entries=level == 0)
    return ref, first - base, end - base, 1 << rest


class StoreCare:
    """Scrub, repair and the disk-space watch of one node (module docstring).

    Built with the node (its metrics read it before the store is open); :meth:`attach` gives it
    the store, :meth:`start` its background tasks.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.store: Store | None = None
        #: Damage found and not repaired yet, by key.
        self.damaged: dict[str, Damage] = {}
        #: Findings about the log itself (a digest stored twice), logged once each.
        self.anomalies: set[str] = set()
        self.found: Counter[str] = Counter()
        self.repairs: Counter[str] = Counter()
        self.scrub_checked = 0
        self.scrub_done = 0
        self.scrub_total = 0
        self.scrub_passes = 0
        self.scrub_last_complete = 0.0
        #: Why writing stopped for want of space (``None``: it did not).
        self.disk_full: str | None = None
        #: An unrepairable damage the node halted for.
        self.fatal: str | None = None
        self._cursor: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.copies = PeerCopies(self)
        self._wake = asyncio.Event()
        self._repairing = False
        #: Damage was seen since the replica was built (it may have halted on it).
        self._damage_seen = False
        self._restarts: list[float] = []
        self._postponed = False
        #: Held by a scrub step and by repairs (one at a time, module docstring).
        self._store_work = asyncio.Lock()

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, store: Store) -> None:
        """Look after ``store`` from now on (in the loop that will run the node)."""
        self.store = store
        self._wake = asyncio.Event()
        self._store_work = asyncio.Lock()

    def start(self) -> None:
        """Start the scrub and the repair worker (in the running loop)."""
        self._tasks = [asyncio.ensure_future(self._repair_worker())]
        if self.node.config.storage.scrub_units_per_second > 0:
            self._tasks.append(asyncio.ensure_future(self._scrub_loop()))

    async def stop(self) -> None:
        """Stop the background tasks and close the peer session."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.copies.close()

    # -- what the node tells it ---------------------------------------------------------------

    def note(self, damage: Damage) -> None:
        """Damage found (by the scrub, a read, or a write): repair it soon."""
        if damage.kind == "index" and damage.repair == REPAIR_NONE:
            # The log itself holds a digest twice: every validator's copy does (the tree is
            # the same everywhere), so it is not this store's damage and halting would not
            # help; said once.
            if damage.key not in self.anomalies:
                self.anomalies.add(damage.key)
                self.found[damage.kind] += 1
                log.error("the log holds a digest twice (as every validator's copy does, "
                          "not this store's damage): %s", damage.detail)
            return
        # The replica may have halted on it (a halt's action can reach the node later than
        # the damage, e.g. after a read that raised): built again once all is repaired.
        self._damage_seen = True
        if damage.key not in self.damaged:
            self.damaged[damage.key] = damage
            self.found[damage.kind] += 1
            log.error("store damage found: %s", damage.line())
        self._wake.set()

    def met(self, exc: DamageError) -> tuple[str, str]:
        """A request met damage: queue its repair; the ``(code, message)`` of its 503."""
        self.collect()
        self.note(exc.damage)
        if self.fatal is not None:
            return "store_damaged", self.fatal
        what = exc.damage.key
        return ("store_damaged",
                f"this node's copy of {what} is damaged and is being repaired from its "
                "peers; retry shortly or ask another validator")

    def halted(self, reason: str) -> None:
        """The replica halted: a full disk is watched, damage it met is repaired (and the
        replica built again once it is)."""
        if reason.startswith("disk_full") and self.disk_full is None:
            self.disk_full = reason
        if not self.collect() and not reason.startswith("disk_full"):
            # Halted on stored data that contradicts itself with no checksum failing (a
            # commit whose tree head differs from the block's): a lookup filter that went bad
            # after this process verified it makes lookups miss digests. Cheap to look at.
            recheck = getattr(self.store, "recheck_filters", None)
            if recheck is not None:
                try:
                    for damage in recheck():
                        self.note(damage)
                except LedgerError as exc:
                    log.warning("filters not rechecked: %s", exc.diagnostics())
        self._wake.set()

    def collect(self) -> list[Damage]:
        """Take the damage the store met on its own reads and writes; the pending damage."""
        store = self.store
        if store is not None:
            pending = getattr(store, "pending_damage", None)
            if pending is not None:
                for damage in pending():
                    if damage.key not in self.damaged:
                        self.note(damage)
        return list(self.damaged.values())

    def state(self) -> dict[str, Any]:
        """The ``storage`` object of ``GET /v1/status``."""
        out: dict[str, Any] = {"state": "ok"}
        if self.fatal is not None:
            out = {"state": "damaged", "reason": self.fatal}
        elif self.disk_full is not None:
            out = {"state": "disk_full", "reason": self.disk_full}
        elif self.damaged:
            first = next(iter(self.damaged.values()))
            out = {"state": "repairing", "reason": first.line(), "damaged": len(self.damaged)}
        out["free_bytes"] = self.free_bytes()
        out["scrub"] = {"passes": self.scrub_passes, "done": self.scrub_done,
                        "total": self.scrub_total,
                        "last_complete": int(self.scrub_last_complete) or None}
        return out

    def free_bytes(self) -> int | None:
        """Bytes free for the store (``None``: not on a file system)."""
        free = getattr(self.store, "free_bytes", None)
        if free is None:
            return None
        try:
            value: int = free()
        except StorageError:
            return None
        return value

    # -- start ---------------------------------------------------------------------------------

    async def repair_for_start(self) -> None:
        """Repair what keeps the store from starting, waiting up to
        :data:`START_REPAIR_SECONDS` for peers to answer.

        Raises:
            UnrepairableError: damage no peer can repair (or no peer answered in time).
        """
        deadline = time.monotonic() + START_REPAIR_SECONDS
        while True:
            left = await self.repair_pending()
            if self.fatal is not None:
                raise UnrepairableError(self.fatal)
            if not left:
                return
            if time.monotonic() > deadline:
                raise UnrepairableError(
                    f"{left[0].line()}: no peer answered with a copy that verifies within "
                    f"{START_REPAIR_SECONDS:.0f} s; start the peers, or restore a backup or "
                    "re-sync into an empty data directory (docs/operators-db.md)")
            await asyncio.sleep(RETRY_SECONDS)

    # -- background ----------------------------------------------------------------------------

    async def _scrub_loop(self) -> None:
        rate = self.node.config.storage.scrub_units_per_second
        budget = max(1, min(SCRUB_STEP_UNITS, rate))
        filters_checked = time.monotonic()
        while True:
            store = self.store
            if store is None:
                await asyncio.sleep(1)
                continue
            recheck = getattr(store, "recheck_filters", None)
            if recheck is not None and time.monotonic() - filters_checked > FILTER_RECHECK_SECONDS:
                # The lookup filters, read in place from the memory map, are what a fast
                # lookup trusts once verified: verified again far more often than a pass.
                filters_checked = time.monotonic()
                try:
                    async with self._store_work:
                        for damage in await asyncio.to_thread(recheck):
                            self.note(damage)
                except LedgerError as exc:
                    log.warning("filters not rechecked: %s", exc.diagnostics())
            try:
                # In a thread: a step reads for up to a few hundred milliseconds (an index key
                # slice), which must not hold up requests and consensus. Never while a repair
                # rewrites values the step may be reading in place.
                async with self._store_work:
                    report = await asyncio.to_thread(store.scrub, self._cursor, budget=budget)
            except DamageError as exc:  # what the step needed to read: repair it first
                self.note(exc.damage)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except LedgerError as exc:
                log.warning("scrub step failed: %s", exc.diagnostics())
                self._cursor = None
                await asyncio.sleep(MAX_RETRY_SECONDS)
                continue
            except Exception:  # our own fault: say so, and keep scrubbing
                log.exception("scrub step failed")
                self._cursor = None
                await asyncio.sleep(MAX_RETRY_SECONDS)
                continue
            self.scrub_checked += report.checked
            self.scrub_done, self.scrub_total = report.done, report.total
            for damage in report.findings:
                self.note(damage)
            self._cursor = report.cursor
            pause = max(report.checked, 1) / rate
            if report.cursor is None:
                self.scrub_passes += 1
                self.scrub_last_complete = time.time()
                pause = max(pause, PASS_PAUSE_SECONDS)
            await asyncio.sleep(pause)

    async def _repair_worker(self) -> None:
        retry = RETRY_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISK_CHECK_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self.collect()
                if self.disk_full is not None:
                    self._check_space()
                if self.damaged and self.fatal is None:
                    left = await self.repair_pending()
                    if left:
                        await asyncio.sleep(retry)
                        retry = min(retry * 2, MAX_RETRY_SECONDS)
                        self._wake.set()
                        continue
                retry = RETRY_SECONDS
                self._resume_if_repaired()
            except asyncio.CancelledError:
                raise
            except Exception:  # our own fault: say so, and keep looking after the store
                log.exception("store repair failed")
                await asyncio.sleep(MAX_RETRY_SECONDS)

    def _check_space(self) -> None:
        store = self.store
        free = self.free_bytes()
        reserve = getattr(store, "disk_reserve", 0)
        if free is None or free < reserve + RESUME_FREE_BYTES or not self._may_restart():
            return
        log.warning("space is free again on %s (%d bytes free): writing resumes",
                    getattr(store, "path", "the store"), free)
        self.disk_full = None
        self.node.restart_replica("disk space is back")

    def _resume_if_repaired(self) -> None:
        node = self.node
        reason = node.replica.halted if node.replica is not None else None
        if reason is None and not self.damaged:
            self._damage_seen = False  # it did not halt on what was repaired
        if reason is None or not self._damage_seen or self.damaged \
                or self.fatal is not None or self.disk_full is not None \
                or not self._may_restart():
            return
        self._damage_seen = False
        node.restart_replica("the damaged store values are repaired")

    def replica_built(self) -> None:
        """The node built a new replica: damage seen before cannot have halted it."""
        self._damage_seen = False

    def _may_restart(self) -> bool:
        """Whether the replica may be built again now: at most :data:`MAX_RESTARTS` times a
        minute (a disk at the edge of full, or one that keeps damaging values, makes the node
        wait between attempts, saying so once)."""
        now = time.monotonic()
        recent = [t for t in self._restarts if now - t < 60]
        if len(recent) >= MAX_RESTARTS:
            if not self._postponed:
                log.warning("the replica was built again %d times within a minute: the next "
                            "attempt waits", len(recent))
                self._postponed = True
            self._restarts = recent
            return False
        self._restarts = [*recent, now]
        self._postponed = False
        return True

    # -- repairing -----------------------------------------------------------------------------

    async def repair_pending(self) -> list[Damage]:
        """Try to repair every pending damage once; returns what is left.

        Tiles are repaired top stratum first (a tile is checked against the one above).
        """
        if self._repairing:
            return list(self.damaged.values())
        self._repairing = True
        try:
            await self._store_work.acquire()
        except BaseException:
            self._repairing = False
            raise
        try:
            self.collect()
            order = sorted(self.damaged.values(),
                           key=lambda d: (d.kind != "tile", -(d.stratum or 0), d.key))
            for damage in order:
                await self._repair_one(damage)
                if self.fatal is not None:
                    break
        finally:
            self._store_work.release()
            self._repairing = False
        return list(self.damaged.values())

    async def _repair_one(self, damage: Damage) -> None:
        store = self.store
        assert store is not None
        if damage.repair == REPAIR_LOCAL:
            try:
                store.rebuild(damage)
            except DamageError as exc:
                self.note(exc.damage)  # what it is rebuilt from: repair that first
                return
            except (CorruptionError, MalformedError) as exc:
                self._unrepairable(damage, exc.diagnostics())
                return
            except LedgerError as exc:  # the write failed (a full disk): tried again later
                log.warning("%s not rebuilt yet: %s", damage.key, exc.diagnostics())
                return
            self._repaired(damage, "local")
            return
        if damage.repair != REPAIR_PEER:
            self._unrepairable(damage, "")
            return
        peers = self.node.config.peer_urls()
        if not peers:
            self._unrepairable(damage, "no peer to repair it from")
            return
        reasons = []
        for name, url in peers.items():
            try:
                await self.copies.fetch(damage, name, url)
            except DamageError as exc:  # ours, above it: repaired first on the next round
                self.note(exc.damage)
                reasons.append(f"{exc.damage.key} is damaged too")
                break
            except (MalformedError, VerificationError) as exc:
                # The peer answered with a copy that does not verify: never written.
                log.warning("%s's copy of %s is refused: %s", name, damage.key,
                            exc.diagnostics())
                if self.node.replica is not None:
                    self.node.replica.stats.peer_invalid += 1
                reasons.append(f"{name}: {exc.diagnostics()}")
                continue
            except (LedgerError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                text = exc.diagnostics() if isinstance(exc, LedgerError) else \
                    (str(exc) or type(exc).__name__)
                reasons.append(f"{name}: {text}")
                continue
            log.warning("repaired %s from %s", damage.key, name)
            self._repaired(damage, "peer")
            return
        log.warning("%s not repaired yet: %s", damage.key, "; ".join(reasons))

    def _repaired(self, damage: Damage, source: str) -> None:
        self.damaged.pop(damage.key, None)
        forget = getattr(self.store, "forget", None)
        if forget is not None:
            forget(damage.key)
        self.repairs[source] += 1

    def _unrepairable(self, damage: Damage, why: str) -> None:
        line = fix_line(damage, self.node.config.data_dir)
        if why:
            line = f"{line} ({why})"
        self.fatal = line
        log.critical("%s", line)
        self.node.halt(line)


class PeerCopies:
    """Copies of damaged values fetched from the other validators, each verified before it is
    written (tiles against the stored tree, blocks against their certificates, checkpoints
    against the trust policy and the stored root): the peer side of :class:`StoreCare`."""

    def __init__(self, care: StoreCare) -> None:
        self.care = care
        self.node = care.node
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        """Close the sessions to the peers."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def _http(self, peer: str) -> aiohttp.ClientSession:
        """One session per peer: each has its own TLS context (its pins)."""
        session = self._sessions.get(peer)
        if session is None:
            from ledger.node.server import peer_ssl_contexts

            context = peer_ssl_contexts(self.node.config).get(peer)
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=self.node.config.timeouts.peer_request_ms / 1000 * 4),
                connector=aiohttp.TCPConnector(limit=2,
                                               ssl=context if context is not None else True))
            self._sessions[peer] = session
        return session

    async def _get(self, peer: str, url: str) -> bytes:
        async with self._http(peer).get(url) as response:
            if response.status != 200:
                raise NotFoundError(f"GET {url} answered {response.status}")
            body = await response.content.read(MAX_PEER_ANSWER + 1)
        if len(body) > MAX_PEER_ANSWER:
            raise MalformedError(f"GET {url}: the answer is too large")
        return body

    def _validators(self) -> NodeValidators:
        replica = self.node.replica
        if replica is not None:
            return replica.driver.validators
        config = self.node.config
        validators = NodeValidators(chain_id=config.genesis.chain_id,
                                    genesis=config.genesis.roster(), keys=self.node.held)
        assert self.care.store is not None
        validators.sync(self.care.store)
        return validators

    async def fetch(self, damage: Damage, peer: str, url: str) -> None:
        """Fetch, verify and write the replacement of ``damage`` from ``peer`` at ``url``.

        Raises:
            LedgerError: the peer has no copy, or its copy does not verify.
            aiohttp.ClientError, TimeoutError, OSError: the peer did not answer.
        """
        store = self.care.store
        assert store is not None
        if damage.kind == "tile":
            text = (await self._get(peer, url + "/checkpoint")).decode("utf-8", "replace")
            peer_size = parse_checkpoint_body(note_body(text)).size
            ref, start, end, fold = peer_tile_nodes(damage, peer_size)
            body = await self._get(peer, f"{url}/{ref.path}")
            values = (parse_entry_bundle(body, ref.width) if ref.entries
                      else parse_hash_tile(body, ref.width))[start:end]
            if fold > 1:
                values = [_perfect_root(values[i:i + fold]) for i in range(0, len(values), fold)]
            assert damage.stratum is not None and damage.tile is not None
            store.repair_tile(damage.stratum, damage.tile, values)
        elif damage.kind == "block" and damage.height is not None:
            height = damage.height
            obj = parse_json_object(await self._get(peer, f"{url}/v1/blocks/{height}"),
                                    what="the peer's block")
            try:
                raw_block = base64.b64decode(obj["block"], validate=True)
                raw_cert = base64.b64decode(obj["certificate"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise MalformedError("the peer's block answer lacks its block") from None
            block, cert = decode_block(raw_block), decode_certificate(raw_cert)
            if block.height != height:
                raise VerificationError(f"the peer sent block {block.height}")
            verify_certificate(cert, block_hash=block.hash, height=height,
                               validators=self._validators().history.set_at(height),
                               chain_id=self.node.config.genesis.chain_id)
            store.repair_block(BlockRecord(height=height, block=raw_block,
                                           certificate=raw_cert))
        elif damage.kind == "checkpoint" and damage.size is not None:
            size = damage.size
            text = (await self._get(peer, f"{url}/v1/checkpoints/{size}")).decode("utf-8")
            policy = self._validators().policy_for_size(size)
            opened = open_checkpoint(text, policy.verifiers())
            policy.evaluate((v.verifier for v in opened.note.verified),
                            origin=opened.checkpoint.origin)
            cp = opened.checkpoint
            if cp.origin != self.node.config.genesis.origin or cp.size != size:
                raise VerificationError("the peer's checkpoint is of another log or size")
            if store.root_at(size) != cp.root:
                raise VerificationError(f"the peer's checkpoint of size {size} contradicts "
                                        "our tree")
            store.repair_checkpoint(size, text.encode("utf-8"))
        else:
            raise MalformedError(f"no peer repair for damage of kind {damage.kind!r}")
