"""The digest index of the LMDB store: digest -> leaf index at a cost that does not grow.

Why not a B-tree keyed by hash
------------------------------
Format 1 kept one LMDB B-tree keyed by an 8-byte hash prefix. Its keys are random, so once the
tree outgrew a block's digests every new anchor landed on a page of its own: by 2 million
anchors each anchor wrote about 34 KB and appends ran at 40% of the empty-log rate (measured,
docs/performance.md). Random keys must not decide where the writes go.

The layout (defaults of :class:`IndexParams`)
----------------------------------------------
- **Recent digests (L0)** live in memory: a ``dict`` from digest to leaf index for the leaves
  ``[ibase, size)``, at most :attr:`~IndexParams.flush` (65,536) plus one batch. They need no
  write of their own: the digests are in the tree's tiles, written in the same transaction, and
  opening a store rebuilds L0 from those tiles (a bounded read, however long the log).
- **Runs.** Every ``flush`` leaves, L0's oldest ``flush`` entries are sorted and written once,
  in key order, as an immutable *run* (level 1). Every :attr:`~IndexParams.fanout` (16) level-1
  runs of a stripe are merged into one level-2 run, and once a stripe is complete its runs are
  merged into one (level 3): a merge is done a slice of the key space at a time, about three
  entries per appended digest, so its cost is spread evenly over the appends. A run entry is
  one 64-bit word: the hash's top ``64 - stripe_bits`` bits and the leaf's offset in its
  stripe; entries are packed 251 to a chunk. Each level has its own database, written in key
  order (full pages). Each entry is written three times in its life, whatever the log's size.
- **Stripes and filters.** The log is cut into stripes of ``2**stripe_bits`` (4,194,304)
  leaves. Each stripe has a blocked Bloom filter (``2**filter_bits`` 64-bit words, 8 MiB: six
  bits per entry, 16 bits per entry at a full stripe, 0.38% false positives) over its digests.
  A lookup tests one word per stripe and reads a stripe's runs only on a hit; appends of new
  digests (every lookup a miss) therefore cost a word test per stripe. A stripe's filter is
  kept in memory while it fills and written as one value when the stripe is complete; lookups
  read completed filters in place, through LMDB's memory map (no copy, no process memory).

The hash is keyed: ``h = (K * first 8 bytes of the leaf hash, little-endian) mod 2**64`` with a
random odd ``K`` drawn when the store is created (multiply-shift, a universal family), so a
client cannot grind digests that pile up under one run key or one filter word.

Correctness never depends on the hash: a run entry names a candidate leaf, and a lookup
compares the digest stored in the tree before it answers. A filter can only say "perhaps";
everything it lets through is checked. A filter whose block fails its checksum is never
trusted: the lookup then reads the stripe's runs (and the store notes the damage).

Durability of the in-memory parts
---------------------------------
Nothing here needs a write of its own to survive a crash. L0 is rebuilt from tiles at open.
The filter of the stripe being filled is written (as 2-KB chunks) every
:attr:`~IndexParams.persist_every` (4) flushes and whenever a merge in it completes; at open it
is read back and the level-1 runs written since are added to it again (at most
``persist_every - 1`` runs). Opening therefore reads at most ``flush + batch`` leaves,
``persist_every - 1`` runs and one filter: bounded, independent of the log's size.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ledger.errors import CorruptionError, StorageError
from ledger.storage._codec import CRC_BYTES, checksum_ok, seal, unseal

__all__ = [
    "DEFAULT_PARAMS",
    "IndexParams",
    "IndexState",
    "RunInfo",
]

_M64 = (1 << 64) - 1
#: Records per run chunk: 251 x 8 bytes + the 4-byte checksum + a 12-byte key + the 8-byte
#: node header fit LMDB's node limit (2,038 bytes on 4 KiB pages), two chunks to a page.
CHUNK_RECORDS = 251
#: Filter words per chunk of a stripe's filter while it fills (2,016 + 4 bytes).
FILTER_CHUNK_WORDS = 252
#: Words per checksummed block of a completed stripe's filter (4 KiB).
FILTER_BLOCK_WORDS = 512
_MASK_BITS = 36  # six 6-bit bit positions per entry, from the hash's low 36 bits
_RUN_ID = 4


#: An entry's six filter bits within its 64-bit block come from the hash's low 36 bits, two
#: per 12 bits (``PAIRS``: one table lookup each). Blocked Bloom filter, 64-bit blocks, 16 bits
#: per entry at a full stripe: 0.38% false positives (three bits: 0.79%).
PAIRS = array("Q", [(1 << (i & 63)) | (1 << (i >> 6)) for i in range(1 << 12)])


@dataclass(frozen=True, slots=True)
class IndexParams:
    """The index's geometry, fixed when a store is created (tests use small ones).

    ``stripe_bits``: leaves per stripe ``2**stripe_bits``; a run entry keeps the leaf's offset
    in its stripe in its low ``stripe_bits`` bits and the hash's top ``64 - stripe_bits`` bits
    above them. ``flush``: leaves per level-1
    run (divides the stripe). ``fanout``: level-1 runs per level-2 run. ``filter_bits``: a
    stripe filter holds ``2**filter_bits`` 64-bit words. ``persist_every``: flushes between
    writes of the filling stripe's filter.
    """

    stripe_bits: int = 22
    flush: int = 1 << 16
    fanout: int = 16
    filter_bits: int = 20
    persist_every: int = 4

    def __post_init__(self) -> None:
        if not 4 <= self.stripe_bits <= 30:
            raise StorageError("stripe_bits must be 4..30")
        stripe = 1 << self.stripe_bits
        if self.flush < 2 or stripe % self.flush:
            raise StorageError("flush must divide the stripe size")
        if self.fanout < 2 or not 3 <= self.filter_bits <= 30 or self.persist_every < 1:
            raise StorageError("bad index parameters")

    @property
    def stripe(self) -> int:
        return 1 << self.stripe_bits

    def to_wire(self) -> list[int]:
        return [self.stripe_bits, self.flush, self.fanout, self.filter_bits, self.persist_every]

    @classmethod
    def from_wire(cls, wire: Any) -> IndexParams:
        return cls(*[int(x) for x in wire])


DEFAULT_PARAMS = IndexParams()


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run: its id, level (1 or 2), and the leaves ``[first, end)`` it indexes."""

    ident: int
    level: int
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class MergeJob:
    """A merge in progress: ``inputs`` (contiguous runs of one stripe) into run ``output`` of
    level ``level``, ``slices`` key slices in all, ``next_slice`` the next one to write."""

    output: int
    inputs: tuple[int, ...]
    next_slice: int
    level: int = 2
    slices: int = 1


#: Version of the stored index state: 2 = filters with six bits per entry from the keyed
#: hash's low 36 bits (1, three bits from the bits run entries keep, was never released).
STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class IndexState:
    """What the index keeps in the ``state`` database (one sealed msgpack value).

    ``ibase``: L0 holds the leaves from here on; runs index every leaf below. ``fcover``: the
    stored filter of the filling stripe covers the leaves ``[stripe start, fcover)``.
    ``filters``: completed stripes (their filters are written). ``gen`` changes whenever
    something a lookup reads changes (a run appears or goes, ``ibase`` moves, a filter is
    written), so a reader knows when its in-memory copies are stale.
    """

    params: IndexParams
    secret: int
    gen: int = 0
    ibase: int = 0
    fcover: int = 0
    filters: int = 0
    next_run: int = 0
    flushes: int = 0
    runs: tuple[RunInfo, ...] = ()
    jobs: tuple[MergeJob, ...] = ()
    garbage: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        jobs = [[j.output, list(j.inputs), j.next_slice, j.level, j.slices] for j in self.jobs]
        return bytes(msgpack.packb([
            STATE_VERSION, self.params.to_wire(), self.secret, self.gen, self.ibase, self.fcover,
            self.filters, self.next_run, self.flushes,
            [[r.ident, r.level, r.first, r.end] for r in self.runs], jobs, list(self.garbage),
        ], use_bin_type=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexState:
        """:raises CorruptionError: the value does not decode.
        :raises StorageError: it was written by a development build whose filters this code
            cannot read (version 1: three filter bits per entry)."""
        try:
            (version, params, secret, gen, ibase, fcover, filters, next_run, flushes, runs,
             jobs, garbage) = msgpack.unpackb(data, raw=False)
        except Exception as exc:
            raise CorruptionError(f"the stored index state does not decode: {exc!r}") from None
        if version == 1:
            raise StorageError(
                "this store's digest index was written by a development build of format 2 "
                "(lookup filters of another kind): start the node on an empty data directory, "
                "it catches up from its peers")
        try:
            if version != STATE_VERSION:
                raise ValueError(version)
            return cls(
                params=IndexParams.from_wire(params), secret=int(secret), gen=int(gen),
                ibase=int(ibase), fcover=int(fcover), filters=int(filters),
                next_run=int(next_run), flushes=int(flushes),
                runs=tuple(RunInfo(int(a), int(b), int(c), int(d)) for a, b, c, d in runs),
                jobs=tuple(MergeJob(int(j[0]), tuple(j[1]), int(j[2]), int(j[3]), int(j[4]))
                           for j in jobs),
                garbage=tuple(bytes(g) for g in garbage),
            )
        except Exception as exc:
            raise CorruptionError(f"the stored index state does not decode: {exc!r}") from None

    @classmethod
    def new(cls, params: IndexParams) -> IndexState:
        return cls(params=params, secret=random.SystemRandom().getrandbits(64) | 1)

    def runs_of_stripe(self, stripe: int) -> list[RunInfo]:
        bits = self.params.stripe_bits
        return [r for r in self.runs if r.first >> bits == stripe]


# --------------------------------------------------------------------------- keys and codecs


def run_key(run: int, last: int) -> bytes:
    return run.to_bytes(_RUN_ID, "big") + last.to_bytes(8, "big")


def run_prefix(run: int) -> bytes:
    return run.to_bytes(_RUN_ID, "big")


#: Garbage entry tags: which database a run's chunks are in, by level.
RUN_TAGS = {1: b"R", 2: b"M", 3: b"T"}


def run_garbage(run: RunInfo) -> bytes:
    """The garbage entry that deletes a run's chunks: its database's tag and its prefix."""
    return RUN_TAGS[run.level] + run_prefix(run.ident)


def merge_slices(entries: int, inputs: int) -> int:
    """Key slices a merge of ``entries`` from ``inputs`` runs is done in: about one chunk of
    each input per slice (each input chunk is then read about once), at least 1,000 entries."""
    per_slice = max(1024, CHUNK_RECORDS * inputs)
    return max(1, min(8192, entries // per_slice))


def slice_range(j: int, slices: int) -> tuple[int, int]:
    return (j << 64) // slices, ((j + 1) << 64) // slices


def cur_filter_key(stripe: int, chunk: int) -> bytes:
    return b"C" + stripe.to_bytes(4, "big") + chunk.to_bytes(4, "big")


def cur_filter_prefix(stripe: int) -> bytes:
    return b"C" + stripe.to_bytes(4, "big")


def done_filter_key(stripe: int) -> bytes:
    return b"S" + stripe.to_bytes(4, "big")


def hashes_of(leaves: Sequence[bytes], secret: int) -> list[int]:
    """The keyed 64-bit hash of each leaf hash (see the module docstring)."""
    if not leaves:
        return []
    xs = memoryview(b"".join(leaves)).cast("Q")[::4].tolist()  # first 8 bytes, LE (x86, ARM)
    k = secret
    return [(x * k) & _M64 for x in xs]


def chunk_records(value: bytes) -> array[int]:
    records = array("Q")
    records.frombytes(value)
    return records


def _block_crc(key: bytes, block: int, data: bytes | memoryview) -> int:
    import zlib

    return zlib.crc32(data, zlib.crc32(block.to_bytes(4, "big"), zlib.crc32(key))) & 0xFFFFFFFF


def seal_done_filter(key: bytes, words: array[int]) -> bytearray:
    """A completed stripe's filter: the words, then one CRC-32 per 4-KiB block of them (built
    in one buffer: no second copy of the filter)."""
    raw = memoryview(words).cast("B")
    step = FILTER_BLOCK_WORDS * 8
    blocks = max(1, len(raw) // step)
    out = bytearray(len(raw) + 4 * blocks)
    out[: len(raw)] = raw
    crcs = array("I", [_block_crc(key, i, raw[i * step : (i + 1) * step])
                       for i in range(blocks)])
    out[len(raw) :] = crcs.tobytes()
    return out


class DoneFilter:
    """A completed stripe's filter read in place (a memoryview into the LMDB map).

    Each 4-KiB block's checksum is verified the first time this process reads it (``checked``
    is kept per stripe across transactions); a block that fails is reported, never trusted.
    """

    __slots__ = ("_checked", "_crcs", "_key", "_raw", "words")

    def __init__(self, key: bytes, value: memoryview, nwords: int, checked: bytearray) -> None:
        size = nwords * 8
        blocks = max(1, nwords // FILTER_BLOCK_WORDS)
        if len(value) != size + 4 * blocks:
            raise CorruptionError(f"the filter of stripe {int.from_bytes(key[1:], 'big')} has "
                                  f"{len(value)} bytes, expected {size + 4 * blocks}")
        self._key = key
        self._raw = value[:size]
        self.words = self._raw.cast("Q")
        self._crcs = value[size:].cast("I")
        self._checked = checked

    def all_checked(self) -> bool:
        """Whether every block was verified by this process already."""
        if self._checked[-1] == 2:
            return True
        if all(self._checked):
            self._checked[-1] = 2
            return True
        return False

    def block_ok(self, word: int) -> bool:
        block = word // FILTER_BLOCK_WORDS
        if self._checked[block]:
            return True
        step = FILTER_BLOCK_WORDS * 8
        ok = _block_crc(self._key, block, self._raw[block * step : (block + 1) * step]) \
            == self._crcs[block]
        if ok:
            self._checked[block] = 1
        return ok

    def bad_blocks(self) -> list[int]:
        return [b for b in range(len(self._crcs)) if not self.block_ok(b * FILTER_BLOCK_WORDS)]

    def recheck_block(self, word: int) -> bool:
        """Verify the block of ``word`` again, also if this process did before; a failing
        block is no longer trusted by lookups."""
        block = word // FILTER_BLOCK_WORDS
        step = FILTER_BLOCK_WORDS * 8
        if _block_crc(self._key, block, self._raw[block * step : (block + 1) * step]) \
                == self._crcs[block]:
            return True
        self._checked[block] = 0
        self._checked[-1] = 0
        return False

    def recheck(self) -> list[int]:
        """Verify every block again, also those this process verified before (the scrub: the
        words are read in place from the memory map, so a disk that damaged them since shows
        here); a failing block is no longer trusted by lookups. Returns the failing blocks."""
        step = FILTER_BLOCK_WORDS * 8
        bad = []
        for block in range(len(self._crcs)):
            if _block_crc(self._key, block, self._raw[block * step : (block + 1) * step]) \
                    != self._crcs[block]:
                bad.append(block)
                self._checked[block] = 0
        if bad:
            self._checked[-1] = 0  # not "all verified" any more (the last block: again)
        return bad


# ------------------------------------------------------------------------------ in memory


@dataclass
class Recent:
    """L0: digest -> leaf index for the leaves ``[base, upto)``, with each leaf's digest and
    keyed hash in leaf order (``digests[i - base]``, ``hashes[i - base]``).

    Within one index generation it only grows, after each committed append; a lookup ignores
    entries at or beyond its snapshot's size.
    """

    base: int
    upto: int
    index: dict[bytes, int] = field(default_factory=dict)
    digests: list[bytes] = field(default_factory=list)
    hashes: array[int] = field(default_factory=lambda: array("Q"))

    def extend(self, digests: Sequence[bytes], hashes: Sequence[int]) -> None:
        index = self.index
        if len(index) == self.upto - self.base:  # no repeats so far: the fast path
            index.update(zip(digests, range(self.upto, self.upto + len(digests)), strict=True))
            if len(index) != self.upto - self.base + len(digests):
                # A repeated digest (only an unreadable leaf, b"", repeats): keep the first.
                index.clear()
                for i, d in enumerate([*self.digests, *digests], self.base):
                    index.setdefault(d, i)
        else:
            for i, d in enumerate(digests, self.upto):
                index.setdefault(d, i)
        self.digests.extend(digests)
        self.hashes.extend(hashes)
        self.upto += len(digests)

    def rebased(self, base: int) -> Recent:
        """A new L0 holding the leaves from ``base`` on (a flush moved the older ones)."""
        cut = base - self.base
        recent = Recent(base=base, upto=base)
        recent.extend(self.digests[cut:], self.hashes[cut:])
        return recent


@dataclass
class View:
    """Everything a lookup needs besides the transaction, for one index generation.

    ``current`` is the filter of the stripe being filled (a superset of what is stored is
    harmless: a filter only lets candidates through). Views are replaced whole; only
    ``recent`` grows inside a generation (appends that do not flush).
    """

    state: IndexState
    recent: Recent
    current: array[int]
    stripe: int  # the filling stripe's number
    holes: tuple[Any, ...] = ()  # Damage of L0 tiles that could not be read at open


def empty_filter(params: IndexParams) -> array[int]:
    return array("Q", bytes(8 << params.filter_bits))


def filter_position(h: int, params: IndexParams) -> tuple[int, int]:
    """The filter word (the hash's top ``filter_bits`` bits) and bits (from its low 36 bits)
    of keyed hash ``h``. A run entry keeps only the hash's top bits: filters are built from
    the hashes (L0, or leaf hashes recomputed from the tiles), never from run entries."""
    pairs = PAIRS
    return (h >> (64 - params.filter_bits),
            pairs[h & 4095] | pairs[(h >> 12) & 4095] | pairs[(h >> 24) & 4095])


def filter_insert(filt: array[int], params: IndexParams, hashes: Iterable[int]) -> None:
    """Set the bits of each keyed hash in ``filt``."""
    shift = 64 - params.filter_bits
    pairs = PAIRS
    for h in hashes:
        filt[h >> shift] |= pairs[h & 4095] | pairs[(h >> 12) & 4095] | pairs[(h >> 24) & 4095]


def check_params(params: IndexParams) -> None:
    """The filter's mask bits must lie below its word bits.

    :raises StorageError: they overlap.
    """
    if 64 - params.filter_bits < _MASK_BITS:
        raise StorageError("index parameters: filter mask bits overlap the word bits")


# --------------------------------------------------------------------------- run reading


def read_run_range(
    txn: Any, db: Any, run: int, lo: int, hi: int, where: str
) -> list[int]:
    """The entries of ``run`` in ``[lo, hi)``, sorted.

    :raises CorruptionError: a chunk fails its checksum or is not a whole number of entries.
    """
    cursor = txn.cursor(db=db)
    prefix = run_prefix(run)
    out: list[int] = []
    if not cursor.set_range(run_key(run, lo)):
        return out
    while True:
        key = bytes(cursor.key())
        if key[:_RUN_ID] != prefix:
            break
        payload = unseal(key, cursor.value(), f"index run {run} chunk {key[4:].hex()} ({where})")
        if len(payload) % 8:
            raise CorruptionError(f"index run {run} chunk {key[4:].hex()} is malformed")
        records = chunk_records(payload).tolist()
        if records and records[0] >= hi:
            break
        start = bisect.bisect_left(records, lo)
        stop = bisect.bisect_left(records, hi)
        out.extend(records[start:stop])
        if stop < len(records) or not cursor.next():
            break
    return out


def probe_run(txn: Any, db: Any, run: int, key42: int, bits: int) -> list[int]:
    """Offsets of the entries of ``run`` whose key (the hash's top bits) is ``key42``.

    The lookup path: reads the chunk in place (no copy), checks its checksum, bisects.

    :raises CorruptionError: a chunk on the way fails its checksum.
    """
    lo = key42 << bits
    hi = (key42 + 1) << bits
    cursor = txn.cursor(db=db)
    prefix = run_prefix(run)
    out: list[int] = []
    if not cursor.set_range(run_key(run, lo)):
        return out
    mask = (1 << bits) - 1
    while True:
        key = cursor.key()
        if key[:_RUN_ID] != prefix:
            return out
        value = cursor.value()
        if not check_chunk(bytes(key), value) or (len(value) - CRC_BYTES) % 8:
            raise CorruptionError(f"index run {run} chunk {bytes(key[4:]).hex()} is damaged "
                                  "(checksum mismatch)")
        records = value[: len(value) - CRC_BYTES].cast("Q")
        i = bisect.bisect_left(records, lo)
        n = len(records)
        while i < n and records[i] < hi:
            out.append(records[i] & mask)
            i += 1
        if i < n or not cursor.next():
            return out


def write_chunks(put: Callable[[bytes, bytes], Any], run: int, records: Sequence[int]) -> int:
    """Write sorted ``records`` as chunks of ``run``; return the number of chunks.

    :raises StorageError: a put was refused (an append out of key order: a bug).
    """
    n = 0
    for start in range(0, len(records), CHUNK_RECORDS):
        part = array("Q", records[start : start + CHUNK_RECORDS])
        key = run_key(run, part[-1])
        if put(key, seal(key, part.tobytes())) is False:
            raise StorageError(f"index run {run}: chunk {key.hex()} was not written in order")
        n += 1
    return n


def check_chunk(key: bytes, value: bytes | memoryview) -> bool:
    return len(value) >= CRC_BYTES and checksum_ok(key, value)
