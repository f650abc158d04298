"""Scrub, full check and repair of an :class:`~ledger.storage.lmdb_store.LmdbStore`.

A *pass* re-verifies every stored value, in phases, a bounded step at a time
(:func:`scrub_step`; the node runs it in the background at the rate it chooses, and
``ledger db check`` runs one whole pass through :func:`full_check`):

``state``        the format tag, the tree head (its frontier hashes to its root, and every
                 frontier node equals the node stored in the tiles), the index state, both copies
                 of every dictionary entry, every metadata value.
``tiles``        every tile, stratum by stratum: its checksum, every node in it against the hash
                 of its children (a leaf hash from its stored digest), and its top node against
                 the node stored above it.
``index``        every run entry, stripe by stripe and key slice by key slice: the chunks'
                 checksums and order, each entry against the digest stored at the leaf it names,
                 no leaf indexed twice, every run covering exactly its leaves, every entry's bits
                 set in its stripe's filter, and no digest stored twice in the log.
``recent``       the leaves not yet in runs: each is its digest's first occurrence.
``filters``      every block of every stripe filter (checksums).
``blocks``       every block record: checksum, and it rebuilds (digests from the tree).
``checkpoints``  every checkpoint note: checksum, and it rebuilds.

Each step reads one snapshot. Damage does not stop a pass: each damaged value is reported once
as a :class:`~ledger.storage.base.Damage`. The store may grow between steps: a pass covers at
least what the store held when it started.

Repairs write exactly the damaged value, after checking the replacement against what the store
holds intact: a tile against the node above it (or the tree head's frontier), a block's digest
list and tree root against the tree; derived data (index runs, filters, a dictionary copy) is
rebuilt from the tiles (:func:`rebuild`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgpack

from ledger.errors import CorruptionError, MalformedError, StorageError, VerificationError
from ledger.merkle import proof
from ledger.merkle.hashing import HASH_SIZE, leaf_hashes, node_hash
from ledger.storage import _index as ix
from ledger.storage._codec import checksum_ok, seal
from ledger.storage._tiles import (
    FULL_TILE_BYTES,
    MAX_STRATA,
    OFFSETS,
    TILE_HASHES,
    TILE_HEIGHT,
    TILE_WIDTH,
    extend_stratum,
)
from ledger.storage.base import (
    REPAIR_LOCAL,
    REPAIR_NONE,
    BlockRecord,
    Damage,
    DamageError,
    ScrubReport,
    check_non_negative,
)

if TYPE_CHECKING:
    from ledger.storage.lmdb_store import LmdbStore, _Snapshot

__all__ = ["full_check", "rebuild", "repair_block", "repair_tile", "scrub_step"]

_PHASES = ("state", "tiles", "index", "recent", "filters", "blocks", "checkpoints")
_SLICES = 64
_U64 = 8


def _lmdb() -> Any:
    from ledger.storage import lmdb_store

    return lmdb_store


# ------------------------------------------------------------------------------------ tiles


def tile_width(size: int, stratum: int, t: int) -> int:
    """Bottom-row nodes of tile ``t`` of ``stratum`` in a log of ``size`` leaves (0: none)."""
    count = size >> (TILE_HEIGHT * stratum)
    full = count >> TILE_HEIGHT
    if t < full:
        return TILE_WIDTH
    if t == full:
        return count & (TILE_WIDTH - 1)
    return 0


def check_tile(stratum: int, t: int, tile: bytes, width: int) -> tuple[str | None, bytes]:
    """Every node of a tile against its children; returns (first mismatch, top node).

    The top is the level ``4s + 4`` node the tile's rows hash to (``b""`` unless full).
    """
    base = TILE_HEIGHT * stratum
    row = [tile[o : o + HASH_SIZE] for o in OFFSETS[0][:width]]
    if stratum == 0:
        row = leaf_hashes(row)
    for r in range(1, TILE_HEIGHT):
        n = width >> r
        upper = [tile[o : o + HASH_SIZE] for o in OFFSETS[r][:n]]
        for j in range(n):
            if upper[j] != node_hash(row[2 * j], row[2 * j + 1]):
                index = (t << (TILE_HEIGHT - r)) + j
                return (
                    f"node ({base + r}, {index}) does not match the hash of its children "
                    f"({base + r - 1}, {2 * index}) and ({base + r - 1}, {2 * index + 1})",
                    b"",
                )
        row = upper
    top = node_hash(row[0], row[1]) if width == TILE_WIDTH else b""
    return None, top


def _tile_bytes(stratum: int, nodes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The stored tile built from its bottom row, and its rows of hashes."""
    width = len(nodes)
    row = list(nodes)
    hashes = leaf_hashes(row) if stratum == 0 else row
    rows: list[list[bytes]] = [row]
    level = hashes
    for _ in range(1, TILE_HEIGHT):
        level = [node_hash(level[2 * j], level[2 * j + 1]) for j in range(len(level) // 2)]
        rows.append(level)
    tiles, edge = extend_stratum(0, width, b"", rows)
    return (tiles[0] if tiles else edge), [hashes, *rows[1:]]


# ----------------------------------------------------------------------------------- scrub


def _cursor(phase: str, *parts: Any) -> bytes:
    return bytes(msgpack.packb([_PHASES.index(phase), *parts], use_bin_type=True))


def _parse_cursor(cursor: bytes | None) -> list[Any]:
    if cursor is None:
        return [0]
    try:
        parts = msgpack.unpackb(cursor, raw=False)
        if type(parts) is not list or not parts or not 0 <= parts[0] < len(_PHASES):
            raise ValueError
        return parts
    except Exception:
        raise MalformedError("not a scrub cursor of this store") from None


class _Step:
    """One scrub step: a snapshot, a budget, the findings so far."""

    def __init__(self, store: LmdbStore, txn: Any, snap: _Snapshot, budget: int) -> None:
        self.store = store
        self.txn = txn
        self.snap = snap
        self.dbs = store._dbs
        self.budget = budget
        self.checked = 0
        self.findings: list[Damage] = []
        self.lm = _lmdb()

    def spend(self, units: int = 1) -> bool:
        """Count ``units``; whether the budget still allows more work."""
        self.checked += units
        return self.checked < self.budget

    def report(self, damage: Damage) -> None:
        if damage not in self.findings:
            self.findings.append(damage)

    # -- phases: each returns the next cursor parts, or None when the phase is done ----------

    def state(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        txn, dbs, snap = self.txn, self.dbs, self.snap
        tag = txn.get(lm._FORMAT_KEY, db=dbs.state)
        if tag is None or not checksum_ok(lm._FORMAT_KEY, tag):
            self.report(lm._state_damage("format", "the format tag is damaged"))
        try:
            state = lm._read_index_state(txn, dbs)
            lm._check_shape(txn, dbs, snap, state)
        except DamageError as exc:
            self.report(exc.damage)
        except CorruptionError as exc:
            self.report(lm._state_damage("head", exc.diagnostics()))
        # Frontier nodes stored in the head equal the nodes stored in the tiles.
        position = 0
        for level, expected in zip(_levels(snap.size), snap.head.hashes, strict=True):
            index = position >> level
            position += 1 << level
            try:
                if snap.node(level, index) != expected:
                    stratum = level // TILE_HEIGHT
                    row = level % TILE_HEIGHT
                    t = index >> (TILE_HEIGHT - row)
                    self.report(lm._tile_damage(
                        stratum, t, snap.size,
                        f"node ({level}, {index}) differs from the tree head's frontier"))
            except DamageError as exc:
                self.report(exc.damage)
        for key, value in txn.cursor(db=dbs.dict):
            k = bytes(key)
            if not checksum_ok(k, value):
                ident = int.from_bytes(k, "big")
                self.report(Damage(kind="dictionary", key=f"dict/{ident}", repair=REPAIR_LOCAL,
                                   detail="one copy of a dictionary entry is damaged"))
            self.spend()
        for key, value in txn.cursor(db=dbs.meta):
            k = bytes(key)
            if not checksum_ok(k, value):
                self.report(lm._meta_damage(k))
            self.spend()
        self.spend()
        return None

    def tiles(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        stratum, t = [*parts, 0, 0][:2]
        snap = self.snap
        size = snap.size
        while stratum < MAX_STRATA and size >> (TILE_HEIGHT * stratum):
            width = tile_width(size, stratum, t)
            if not width:
                stratum, t = stratum + 1, 0
                continue
            self._one_tile(stratum, t, width)
            t += 1
            if not self.spend():
                return [stratum, t]
        del lm
        return None

    def _one_tile(self, stratum: int, t: int, width: int) -> None:
        lm = self.lm
        snap = self.snap
        full = width == TILE_WIDTH
        key = lm._U64.pack(t) if full else lm._edge_key(stratum)
        db = self.dbs.tiles[stratum] if full else self.dbs.edge
        raw = self.txn.get(key, db=db)
        expected = FULL_TILE_BYTES if full else TILE_HASHES[width] * HASH_SIZE
        if raw is None:
            self.report(lm._tile_damage(stratum, t, snap.size, "missing"))
            return
        tile = bytes(raw[:-4])
        mismatch, top = check_tile(stratum, t, tile, width) if len(tile) == expected else (
            f"{len(tile)} bytes, expected {expected}", b"")
        if not checksum_ok(key, raw):
            detail = "damaged (checksum mismatch)"
            if mismatch:
                detail += f": {mismatch}"
            self.report(lm._tile_damage(stratum, t, snap.size, detail))
            return
        if mismatch:
            self.report(lm._tile_damage(stratum, t, snap.size, mismatch))
            return
        if full:
            level = TILE_HEIGHT * stratum + TILE_HEIGHT
            try:
                above = snap.node(level, t)
            except DamageError:
                return  # the tile above is damaged: it is reported on its own
            if above != top:
                self.report(lm._tile_damage(
                    stratum, t, snap.size,
                    f"its nodes do not hash to the stored node ({level}, {t}) above them"))

    def index(self, parts: list[Any]) -> list[Any] | None:
        """Stripe by stripe, key slice by key slice. Cursor: [stripe, slice, gen, counts]."""
        lm = self.lm
        txn, snap, dbs = self.txn, self.snap, self.dbs
        try:
            state = lm._read_index_state(txn, dbs)
        except DamageError:
            return None  # reported by the state phase
        params = state.params
        bits = params.stripe_bits
        stripe, slice_no, gen, counts = [*parts, 0, 0, state.gen, {}][:4]
        if gen != state.gen:  # runs changed since the stripe began: start it again
            slice_no, counts = 0, {}
        stripes = (state.ibase + params.stripe - 1) >> bits
        filters = self.store._done_filters(txn, state)
        while stripe < stripes:
            runs = state.runs_of_stripe(stripe)
            start = stripe << bits
            lo = slice_no << (64 - 6)
            hi = (slice_no + 1) << (64 - 6)
            per_run: list[tuple[ix.RunInfo, list[int]]] = []
            for run in runs:
                try:
                    records = self._run_slice(run, lo, hi)
                except CorruptionError as exc:
                    self.report(self.store._run_damage(run, exc.diagnostics()))
                    records = []
                per_run.append((run, records))
                counts[str(run.ident)] = counts.get(str(run.ident), 0) + len(records)
            merged = sorted((r, run) for run, records in per_run for r in records)
            prev_key = None
            prev_leaf = -1
            filt = filters[stripe] if stripe < len(filters) else None
            for record, run in merged:
                offset = record & ((1 << bits) - 1)
                leaf = start + offset
                key = record >> bits
                if not run.first <= leaf < run.end:
                    self.report(self.store._run_damage(
                        run, f"an entry names leaf {leaf}, outside the run's leaves"))
                    continue
                try:
                    digest = snap.digest(leaf)
                except DamageError as exc:
                    self.report(exc.damage)
                    continue
                h = ix.hashes_of(leaf_hashes([digest]), state.secret)[0]
                if h >> bits != key:
                    self.report(self.store._run_damage(
                        run, f"the entry for leaf {leaf} does not match the digest stored there"))
                if key == prev_key:
                    if leaf == prev_leaf:
                        self.report(self.store._run_damage(run, f"leaf {leaf} is indexed twice"))
                    elif snap.digest(prev_leaf) == digest:
                        first, second = sorted((prev_leaf, leaf))
                        self.report(Damage(
                            kind="index", key=f"leaves/{first}", repair=REPAIR_NONE,
                            detail=f"leaves {first} and {second} hold the same digest",
                            leaves=(first, second + 1)))
                prev_key, prev_leaf = key, leaf
                self._check_filter_bits(state, stripe, filt, h, run)
                self._check_earlier_stripes(state, filters, stripe, digest, h, leaf)
                self.checked += 1
            slice_no += 1
            if slice_no == _SLICES:
                for run in runs:
                    got = counts.get(str(run.ident), 0)
                    if got != run.end - run.first:
                        self.report(self.store._run_damage(
                            run, f"the run indexes {got} leaves, it should index "
                                 f"{run.end - run.first}"))
                stripe, slice_no, counts = stripe + 1, 0, {}
            if not self.spend():
                return [stripe, slice_no, state.gen, counts]
        return None

    def _run_slice(self, run: ix.RunInfo, lo: int, hi: int) -> list[int]:
        records = ix.read_run_range(self.txn, self.dbs.run_db(run), run.ident, lo, hi,
                                    "scrub")
        if records != sorted(records):
            raise CorruptionError(f"index run {run.ident} is not in order")
        return records

    def _check_filter_bits(
        self, state: ix.IndexState, stripe: int, filt: ix.DoneFilter | None, h: int,
        run: ix.RunInfo,
    ) -> None:
        params = state.params
        if stripe >= state.filters:
            return  # the filling stripe: its stored filter is checked by the filters phase
        w, m = ix.filter_position(h, params)
        if filt is None:
            self.report(_filter_damage(stripe, "missing or of the wrong size", params))
            return
        if not filt.block_ok(w):
            self.report(_filter_damage(stripe, f"block {w // ix.FILTER_BLOCK_WORDS} is damaged "
                                               "(checksum mismatch)", params))
        elif filt.words[w] & m != m:
            self.report(_filter_damage(stripe, "it lacks an entry of its runs", params))

    def _check_earlier_stripes(
        self, state: ix.IndexState, filters: list[ix.DoneFilter | None], stripe: int,
        digest: bytes, h: int, leaf: int,
    ) -> None:
        w, m = ix.filter_position(h, state.params)
        for s in range(min(stripe, len(filters))):
            filt = filters[s]
            if filt is not None and filt.block_ok(w) and filt.words[w] & m != m:
                continue
            try:
                other = self.store._probe_stripe(self.txn, self.snap, state, s, digest, h)
            except DamageError as exc:
                self.report(exc.damage)
                continue
            if other is not None:
                self.report(Damage(
                    kind="index", key=f"leaves/{other}", repair=REPAIR_NONE,
                    detail=f"leaves {other} and {leaf} hold the same digest",
                    leaves=(other, leaf + 1)))

    def recent(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        txn, snap = self.txn, self.snap
        try:
            state = lm._read_index_state(txn, self.dbs)
        except DamageError:
            return None
        leaf = max(parts[0] if parts else 0, state.ibase)
        seen: dict[bytes, int] = {}
        if leaf > state.ibase:  # resume: the digests before the cursor, for repeats
            for i, d in enumerate(snap.digests(state.ibase, leaf), state.ibase):
                seen.setdefault(d, i)
        view = ix.View(state=state, recent=ix.Recent(base=state.ibase, upto=state.ibase),
                       current=self.store._load_current_filter(txn, state, state.filters),
                       stripe=state.filters)
        while leaf < snap.size:
            end = min(snap.size, leaf + 256)
            try:
                digests = snap.digests(leaf, end)
            except DamageError as exc:
                self.report(exc.damage)
                leaf = (exc.damage.leaves or (leaf, end))[1]
                continue
            found = self.store._lookup_many(txn, snap, view, digests, leaf_hashes(digests))[0]
            for i, (d, earlier) in enumerate(zip(digests, found, strict=True), leaf):
                first = seen.setdefault(d, i)
                if earlier is not None:
                    first = min(first, earlier)
                if first != i:
                    self.report(Damage(kind="index", key=f"leaves/{first}", repair=REPAIR_NONE,
                                       detail=f"leaves {first} and {i} hold the same digest",
                                       leaves=(first, i + 1)))
            units = end - leaf
            leaf = end
            if not self.spend(units):
                return [leaf]
        return None

    def filters(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        txn = self.txn
        try:
            state = lm._read_index_state(txn, self.dbs)
        except DamageError:
            return None
        params = state.params
        nwords = 1 << params.filter_bits
        for stripe, filt in enumerate(self.store._done_filters(txn, state)):
            if filt is None:
                self.report(_filter_damage(stripe, "missing or of the wrong size", params))
                continue
            bad = filt.recheck()
            if bad:
                self.report(_filter_damage(stripe, f"block {bad[0]} is damaged (checksum "
                                                   "mismatch)", params))
            self.spend(max(1, nwords // ix.FILTER_BLOCK_WORDS))
        stripe = state.filters
        start = stripe << params.stripe_bits
        if state.fcover > start:
            for c in range(-(-nwords // ix.FILTER_CHUNK_WORDS)):
                key = ix.cur_filter_key(stripe, c)
                value = txn.get(key, db=self.dbs.filters)
                if value is None or not checksum_ok(key, value):
                    self.report(_filter_damage(stripe, f"stored chunk {c} is damaged", params))
                    break
                self.spend()
        return None

    def blocks(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        height = parts[0] if parts else 1
        cursor = self.txn.cursor(db=self.dbs.blocks)
        if not cursor.set_range(lm._U64.pack(height)):
            return None
        for key, value in cursor:
            h = lm._key_number(key, "block height")
            try:
                self.store._block_at(self.txn, self.snap, h, value)
            except DamageError as exc:
                self.report(exc.damage)
            if not self.spend():
                return [h + 1]
        return None

    def checkpoints(self, parts: list[Any]) -> list[Any] | None:
        lm = self.lm
        size = parts[0] if parts else 0
        cursor = self.txn.cursor(db=self.dbs.checkpoints)
        if not cursor.set_range(lm._U64.pack(size)):
            return None
        for key, value in cursor:
            s = lm._key_number(key, "checkpoint size")
            try:
                self.store._note_at(self.txn, self.snap, s, value)
            except DamageError as exc:
                self.report(exc.damage)
            if not self.spend():
                return [s + 1]
        return None


def _levels(size: int) -> list[int]:
    return [k for k in range(size.bit_length() - 1, -1, -1) if (size >> k) & 1]


def _filter_damage(stripe: int, detail: str, params: ix.IndexParams) -> Damage:
    start = stripe << params.stripe_bits
    return Damage(kind="filter", key=f"filters/{stripe}", repair=REPAIR_LOCAL, detail=detail,
                  leaves=(start, start + params.stripe))


def _total(store: LmdbStore, txn: Any, snap: _Snapshot) -> int:
    lm = _lmdb()
    size = snap.size
    tiles = sum(-(-(size >> (TILE_HEIGHT * s)) // TILE_WIDTH) for s in range(MAX_STRATA)
                if size >> (TILE_HEIGHT * s))
    blocks = txn.stat(store._dbs.blocks)["entries"]
    checkpoints = txn.stat(store._dbs.checkpoints)["entries"]
    meta = txn.stat(store._dbs.meta)["entries"] + txn.stat(store._dbs.dict)["entries"]
    try:
        state = lm._read_index_state(txn, store._dbs)
        indexed = state.ibase
        recent = size - state.ibase
        filt = state.filters * max(1, (1 << state.params.filter_bits) // ix.FILTER_BLOCK_WORDS)
    except DamageError:
        indexed = recent = filt = 0
    total: int = 1 + meta + tiles + indexed + recent + filt + blocks + checkpoints
    return total


def scrub_step(store: LmdbStore, cursor: bytes | None, budget: int) -> ScrubReport:
    """One step of a scrub pass (see the module docstring).

    :raises MalformedError: ``cursor`` is not one this store returned, or ``budget < 1``.
    :raises StorageError: the store is closed or LMDB fails.
    """
    lm = _lmdb()
    if not isinstance(budget, int) or budget < 1:
        raise MalformedError("a scrub budget must be a positive int")
    parts = _parse_cursor(cursor)
    env = store._live_env()
    try:
        with env.begin(buffers=True) as txn:
            try:
                snap = lm._Snapshot(txn, store._dbs)
            except DamageError as exc:
                return ScrubReport(cursor=None, findings=(exc.damage,), checked=1, done=1,
                                   total=1)
            phase = parts[0]
            done = parts[1] if len(parts) > 1 and phase else 0
            total = parts[2] if len(parts) > 2 and phase else _total(store, txn, snap)
            position = parts[3] if len(parts) > 3 else []
            step = _Step(store, txn, snap, budget)
            while phase < len(_PHASES):
                try:
                    following = getattr(step, _PHASES[phase])(list(position))
                except DamageError as exc:
                    # A value the phase needs to go on (a tile under the index) is damaged:
                    # reported, and the rest of the phase waits for the next pass.
                    step.report(exc.damage)
                    following = None
                if following is not None:
                    done += step.checked
                    return ScrubReport(
                        cursor=bytes(msgpack.packb([phase, done, total, following],
                                                   use_bin_type=True)),
                        findings=tuple(step.findings), checked=step.checked,
                        done=min(done, total), total=total)
                phase += 1
                position = []
                if step.checked >= budget:
                    done += step.checked
                    nxt = None if phase == len(_PHASES) else bytes(msgpack.packb(
                        [phase, done, total, []], use_bin_type=True))
                    return ScrubReport(cursor=nxt, findings=tuple(step.findings),
                                       checked=step.checked, done=min(done, total)
                                       if nxt else total, total=total)
            done += step.checked
            return ScrubReport(cursor=None, findings=tuple(step.findings),
                               checked=step.checked, done=total, total=total)
    except lm.lmdb.Error as exc:
        raise lm._wrap(exc) from exc


def full_check(store: LmdbStore, progress: Callable[[int, int], None] | None) -> None:
    """A whole scrub pass; raise on the first damage found.

    :raises DamageError: naming it.
    """
    cursor: bytes | None = None
    while True:
        report = scrub_step(store, cursor, 1 << 16)
        if progress is not None:
            progress(report.done, report.total)
        if report.findings:
            raise DamageError(report.findings[0])
        cursor = report.cursor
        if cursor is None:
            return


# ---------------------------------------------------------------------------------- repair


def _trusted_node(snap: _Snapshot, level: int, index: int) -> bytes:
    """Node ``(level, index)`` from the tree head's frontier if it is a frontier node, else
    from the tiles (checked).

    :raises DamageError: its tile is damaged (repair that one first).
    """
    position = 0
    for frontier_level, value in zip(_levels(snap.size), snap.head.hashes, strict=True):
        if frontier_level == level and position >> level == index:
            return value
        position += 1 << frontier_level
    return snap.node(level, index)


def repair_tile(store: LmdbStore, stratum: int, t: int, nodes: Sequence[bytes]) -> None:
    """See :meth:`ledger.storage.base.Store.repair_tile`.

    Checks, before writing: a full tile's recomputed top equals the stored node above it (or
    the tree head's frontier node); an edge tile's nodes that are frontier nodes equal the tree
    head's. Repair top-down when several tiles on one path are damaged.
    """
    lm = _lmdb()
    check_non_negative(stratum, "stratum")
    check_non_negative(t, "tile")
    values = list(nodes)
    if any(not isinstance(v, bytes) or len(v) != HASH_SIZE for v in values):
        raise MalformedError("tile nodes must be 32-byte values")

    def work(txn: Any) -> bool:
        snap = lm._Snapshot(txn, store._dbs)
        width = tile_width(snap.size, stratum, t)
        if not width:
            raise StorageError(f"the log of size {snap.size} has no tile {t} in stratum {stratum}")
        if len(values) != width:
            raise MalformedError(f"tile {t} of stratum {stratum} has {width} bottom-row "
                                 f"nodes, got {len(values)}")
        tile, rows = _tile_bytes(stratum, values)
        base = TILE_HEIGHT * stratum
        if width == TILE_WIDTH:
            top = node_hash(rows[-1][0], rows[-1][1])
            # A damaged tile above raises its own DamageError: repair that one first.
            above = _trusted_node(snap, base + TILE_HEIGHT, t)
            if above != top:
                raise VerificationError(
                    f"the nodes do not hash to the stored node ({base + TILE_HEIGHT}, {t})")
            key = lm._U64.pack(t)
            txn.put(key, seal(key, tile), db=store._dbs.tiles[stratum])
        else:
            position = 0
            checked = 0
            for level, value in zip(_levels(snap.size), snap.head.hashes, strict=True):
                index = position >> level
                position += 1 << level
                if base <= level < base + TILE_HEIGHT:
                    r = level - base
                    j = index - (t << (TILE_HEIGHT - r))
                    if not 0 <= j < len(rows[r]) or rows[r][j] != value:
                        raise VerificationError(
                            f"the nodes do not hash to the tree head's frontier node "
                            f"({level}, {index})")
                    checked += 1
            if not checked:
                raise VerificationError("no frontier node to check the edge tile against")
            key = lm._edge_key(stratum)
            txn.put(key, seal(key, tile), db=store._dbs.edge)
        return True

    store._write(work)
    store._tiles.forget(stratum, t)
    _after_repair(store)


def _after_repair(store: LmdbStore) -> None:
    """Rebuild what a repaired tile may have blocked (the in-memory index, edge damage)."""
    lm = _lmdb()
    if not store._blocking:
        return
    with store._write_lock:
        env = store._live_env()
        with env.begin(buffers=True) as txn:
            snap = lm._Snapshot(txn, store._dbs)
            blocking = []
            for stratum in range(MAX_STRATA):
                count = snap.size >> (TILE_HEIGHT * stratum)
                if not count:
                    break
                if count & (TILE_WIDTH - 1):
                    try:
                        snap.tile(stratum, count >> TILE_HEIGHT)
                    except DamageError as exc:
                        blocking.append(exc.damage)
            state = lm._read_index_state(txn, store._dbs)
            view = store._build_view(txn, snap, state)
        store._view = view
        store._blocking = blocking + list(view.holes)


def repair_block(store: LmdbStore, record: BlockRecord) -> None:
    """See :meth:`ledger.storage.base.Store.repair_block`.

    A record whose block parses as a consensus block is checked against the tree: its tree
    root must be the stored tree's at its size.
    """
    lm = _lmdb()
    from ledger.storage._codec import DictionaryTxn, pack_block_record

    if not isinstance(record, BlockRecord):
        raise MalformedError("record must be a BlockRecord")

    def work(txn: Any) -> dict[int, bytes]:
        dbs = store._dbs
        snap = lm._Snapshot(txn, dbs)
        key = lm._U64.pack(record.height)
        if txn.get(key, db=dbs.blocks) is None:
            raise StorageError(f"no block is stored at height {record.height}")
        leaves = None
        try:
            wire = msgpack.unpackb(record.block, raw=False)
            tree_size, tree_root, digests = wire[4], wire[5], wire[6]
            if type(tree_size) is int and 0 <= tree_size <= snap.size:
                if proof.root_at(snap, tree_size) != tree_root:
                    raise VerificationError(
                        f"block {record.height} commits to a tree root that is not the stored "
                        f"tree's at size {tree_size}")
                first = tree_size - len(digests)
                if first >= 0:
                    leaves = (first, snap.digests(first, tree_size))
        except VerificationError:
            raise
        except Exception:
            leaves = None
        ids = DictionaryTxn(store._dictionary)
        stored = pack_block_record(
            record.height, record.block, record.certificate, leaves=leaves,
            root_of=lambda size: proof.root_at(snap, size) if size <= snap.size else None,
            ids=ids, digests_at=snap.digests, root_at=lambda size: proof.root_at(snap, size))
        txn.put(key, seal(key, stored), db=dbs.blocks)
        store._write_dictionary(txn, ids.added)
        return ids.added

    added = store._write(work)
    if added:
        store._dictionary.merge(added)


# --------------------------------------------------------------------------------- rebuild


def rebuild(store: LmdbStore, damage: Damage) -> None:
    """See :meth:`ledger.storage.base.Store.rebuild`: index runs, filters and dictionary
    copies, from the tiles (which must be intact: a damaged tile is reported)."""
    if not isinstance(damage, Damage) or damage.repair != REPAIR_LOCAL:
        raise MalformedError("only damage marked 'local' is rebuilt by the store")
    if damage.kind == "dictionary":
        _rebuild_dictionary(store)
    elif damage.kind == "index":
        if damage.leaves is None:
            raise MalformedError("index damage without a leaf range")
        _rebuild_runs(store, damage.leaves)
    elif damage.kind == "filter":
        if damage.leaves is None:
            raise MalformedError("filter damage without a leaf range")
        _rebuild_filter(store, damage.leaves[0])
    else:
        raise MalformedError(f"damage of kind {damage.kind!r} is not rebuilt locally")


def _rebuild_dictionary(store: LmdbStore) -> None:
    lm = _lmdb()
    with store._write_lock:
        env = store._writable_env()
        with env.begin(buffers=True) as txn:
            entries, bad = lm._load_dictionary(txn, store._dbs)
        if bad:
            store._write_dictionary_copies(entries, bad)


def _rebuild_runs(store: LmdbStore, leaves: tuple[int, int]) -> None:
    """Replace every run overlapping ``leaves`` by runs rebuilt from the tiles (one write
    transaction per flush-sized run, then one that swaps them in)."""
    lm = _lmdb()
    env = store._writable_env()
    with store._write_lock:
        with env.begin(buffers=True) as txn:
            state = lm._read_index_state(txn, store._dbs)
        damaged = [r for r in state.runs if r.first < leaves[1] and leaves[0] < r.end]
        if not damaged:
            return
        params = state.params
        bits = params.stripe_bits
        built: list[ix.RunInfo] = []
        next_run = state.next_run
        for run in damaged:
            for first in range(run.first, run.end, params.flush):
                end = min(run.end, first + params.flush)
                ident = next_run
                next_run += 1

                def write(txn: Any, first: int = first, end: int = end, ident: int = ident) -> None:
                    snap = lm._Snapshot(txn, store._dbs)
                    digests = snap.digests(first, end)
                    hashes = ix.hashes_of(leaf_hashes(digests), state.secret)
                    start = (first >> bits) << bits
                    records = sorted(((h >> bits) << bits) | (leaf - start)
                                     for leaf, h in enumerate(hashes, first))
                    ix.write_chunks(lambda k, v: txn.put(k, v, db=store._dbs.runs), ident,
                                    records)

                store._write(write)
                built.append(ix.RunInfo(ident, 1, first, end))

        def swap(txn: Any) -> None:
            current = lm._read_index_state(txn, store._dbs)
            gone = {r.ident for r in damaged}
            runs = [r for r in current.runs if r.ident not in gone] + built
            runs.sort(key=lambda r: r.first)
            garbage = list(current.garbage) + [ix.run_garbage(r) for r in damaged]
            jobs = []
            for job in current.jobs:
                if gone & set(job.inputs):  # its inputs are replaced: drop what it wrote
                    garbage.append(ix.RUN_TAGS[job.level] + ix.run_prefix(job.output))
                else:
                    jobs.append(job)
            new = replace(current, runs=tuple(runs), garbage=tuple(garbage), jobs=tuple(jobs),
                          next_run=max(current.next_run, next_run), gen=current.gen + 1)
            _put_state(store, txn, new)
            return None

        store._write(swap)
        _refresh_view(store)


def _rebuild_filter(store: LmdbStore, first_leaf: int) -> None:
    lm = _lmdb()
    env = store._writable_env()
    with store._write_lock:
        with env.begin(buffers=True) as txn:
            state = lm._read_index_state(txn, store._dbs)
        params = state.params
        stripe = first_leaf >> params.stripe_bits

        def work(txn: Any) -> None:
            current = lm._read_index_state(txn, store._dbs)
            filt = store._filter_from_tiles(txn, current, stripe)
            if stripe < current.filters:
                key = ix.done_filter_key(stripe)
                txn.put(key, ix.seal_done_filter(key, filt), db=store._dbs.filters)
                new = replace(current, gen=current.gen + 1)
            else:
                store._persist_current(txn, stripe, filt)
                new = replace(current, fcover=current.ibase, flushes=0, gen=current.gen + 1)
            _put_state(store, txn, new)

        store._done_cache.pop(stripe, None)  # the old value's pages are freed by the write
        store._write(work)
        store._done_cache.pop(stripe, None)
        store._filter_checked.pop(stripe, None)
        store._noticed.pop(f"filters/{stripe}", None)
        _refresh_view(store)


def _put_state(store: LmdbStore, txn: Any, state: ix.IndexState) -> None:
    """Write an index state and the head's generation with it."""
    lm = _lmdb()
    snap = lm._Snapshot(txn, store._dbs)
    head = replace(snap.head, gen=state.gen)
    txn.put(lm._HEAD_KEY, head.encode(), db=store._dbs.state)
    txn.put(lm._INDEX_KEY, seal(lm._INDEX_KEY, state.to_bytes()), db=store._dbs.state)


def _refresh_view(store: LmdbStore) -> None:
    lm = _lmdb()
    env = store._live_env()
    with env.begin(buffers=True) as txn:
        snap = lm._Snapshot(txn, store._dbs)
        state = lm._read_index_state(txn, store._dbs)
        view = store._build_view(txn, snap, state)
    store._view = view

