"""Store scale benchmark: an LmdbStore (real files, sync on) filled to 10^5, 10^6 and 10^7
anchors in 1,000-digest blocks, with real consensus blocks, quorum certificates and a
checkpoint note per block, as a validator stores them (issue 15 items 6-10).

Run::

    python bench/store_scale.py                    # 10^5, 10^6, 10^7 (about 5 minutes)
    python bench/store_scale.py --sizes 100000     # one size
    python bench/store_scale.py --quick            # 10^4 and 3x10^4: checks the script works

At each size it prints:

- **append rate** of 1,000-digest blocks (``append(digests, block=...)``, one synced
  transaction each) while the log grows to that size, measured in 25 rounds of 4 blocks,
  each followed by 4 blocks appended to a fresh store (the *empty-log rate*: its first 10^5
  anchors), so both see the same machine; the ratio of the two is the figure (target >= 0.8);
- the **CPU** per anchor those appends took (thread CPU time: no I/O wait, and little of
  other processes' load on a shared machine), and the empty-log store's over this one's;
- the **fill rate**: appends per second over the whole stretch up to that size (time in
  ``append`` only, so every merge step and filter write is in it), against the same
  empty-log rate;
- **RssAnon** (``/proc/self/status``; not the mapped LMDB pages) of a process that only runs
  the store: a fresh one that opens it and appends 150 blocks (its digests count towards the
  next size; Python alone, after open,
  after the appends); and of this benchmark's process as the fill leaves it and after the
  measurements (it also held a second store and reopened this one);
- **disk bytes per anchor** (``data.mdb``, free pages included; target <= 110);
- **per-block overhead** of 1-digest blocks: bytes the blocks, certificates and checkpoint
  notes of 200 more one-digest blocks take (target <= 1 KB), and the whole file's growth;
- **inclusion-proof latency** p50/p99 (random leaves, against the full tree);
- **index lookup latency** p50/p99 of ``index_of`` for anchored and for absent digests, and
  per digest of ``index_of_many`` on 1,000 absent ones;
- **open (start-up) time** of the store and the RssAnon after it.

The machine's ceilings are measured in the same run: raw SHA-256 leaf hashing, and SHA-256 plus
one LMDB put per digest, 1,000 per synced transaction (``bench/_ceiling.py``,
``bench/cluster.py``). Nothing is asserted; ``--strict`` exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _ceiling import leaf_hash_ceiling, random_digests

from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    CommitCertificate,
    Ed25519Signer,
    ValidatorSet,
    Vote,
    VoteType,
)
from ledger.consensus.block import expected_time
from ledger.crypto import ValidatorKeys
from ledger.merkle import Frontier, leaf_hashes
from ledger.storage import BlockRecord, LmdbStore

BATCH = 1_000
CHAIN_ID = "bench-scale"
ORIGIN = "bench.example.org/scale"
GENESIS_TIME = 1_780_000_000_000


def rss_anon_mb() -> float:
    """The process's anonymous resident memory in MB (0 where /proc is not there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def digest(tag: bytes, i: int) -> bytes:
    return hashlib.sha256(tag + i.to_bytes(8, "big")).digest()


class Chain:
    """Blocks as a 4-validator cluster commits them: each extends the last, carries the
    previous certificate, is certified by a quorum (3 precommits) and gets a checkpoint note
    signed by the log and cosigned by 3 validators."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.keys = [ValidatorKeys(name=f"validator-{i}", origin=ORIGIN,
                                   seed=hashlib.sha256(b"%s %d" % (tag, i)).digest())
                     for i in range(1, 5)]
        self.signers = [Ed25519Signer(seed=k.consensus_key.seed) for k in self.keys]
        self.validators = ValidatorSet(keys=[s.public_key for s in self.signers])
        self.prev: Block | None = None
        self.cert: CommitCertificate | None = None
        self.frontier = Frontier.empty()
        self.count = 0  # leaves so far (every digest is new)

    def skip(self, n: int) -> None:
        """The next ``n`` digests were appended by someone else (without blocks)."""
        self.frontier, _ = self.frontier.extend(leaf_hashes(
            [digest(self.tag, self.count + i) for i in range(n)]))
        self.count += n

    def next_batch(self, n: int) -> list[bytes]:
        batch = [digest(self.tag, self.count + i) for i in range(n)]
        self.count += n
        return batch

    def block(self, batch: list[bytes]) -> BlockRecord:
        height = 1 if self.prev is None else self.prev.height + 1
        self.frontier, _ = self.frontier.extend(leaf_hashes(batch))
        block = Block(
            height=height,
            prev_hash=GENESIS_PREV_HASH if self.prev is None else self.prev.hash,
            time=expected_time(height=height, last_commit=self.cert, prev_block=self.prev,
                               genesis_time=GENESIS_TIME),
            proposer=self.validators.proposer(height, 0),
            tree_size=self.frontier.size,
            tree_root=self.frontier.root(),
            digests=tuple(batch),
            last_commit=self.cert,
        )
        votes = [Vote.create(s, type=VoteType.PRECOMMIT, chain_id=CHAIN_ID, height=height,
                             round=0, block_hash=block.hash, timestamp=block.time + 1 + i)
                 for i, s in enumerate(self.signers[:3])]
        self.cert = CommitCertificate.from_votes(votes)
        self.prev = block
        return BlockRecord(height=height, block=block.encode(),
                           certificate=self.cert.encode())

    def note(self) -> bytes:
        body = Checkpoint(origin=ORIGIN, size=self.frontier.size, root=self.frontier.root())
        sigs = [sign_checkpoint(body, key=self.keys[0].log_key)]
        sigs += [cosign(body, name=k.name, key=k.cosigner_key,
                        timestamp=GENESIS_TIME // 1000 + self.frontier.size)
                 for k in self.keys[:3]]
        return checkpoint_note(body, sigs).encode()


CPU = [0.0]  # thread CPU seconds spent in append() by the last commit()


def commit(store: LmdbStore, chain: Chain, n: int, note: bool = True) -> float:
    """Append one block of ``n`` new digests (and store its checkpoint note); the seconds the
    append took (and, in ``CPU[0]``, the CPU seconds it took: no I/O wait, little of other
    processes' load)."""
    batch = chain.next_batch(n)
    record = chain.block(batch)
    start, cpu = time.perf_counter(), time.thread_time()
    store.append(batch, block=record)
    elapsed = time.perf_counter() - start
    CPU[0] = time.thread_time() - cpu
    if note:
        store.put_checkpoint(chain.frontier.size, chain.note())
    return elapsed


def ceiling_sha_lmdb(directory: str, count: int) -> float:
    """Digests per second: leaf hash + LMDB put, 1,000 per synced write transaction."""
    import lmdb

    path = tempfile.mkdtemp(prefix="ceiling-", dir=directory)
    try:
        env = lmdb.open(path, map_size=1 << 30, sync=True)
        data = random_digests(count, seed=7)
        sha = hashlib.sha256
        start = time.perf_counter()
        for k in range(0, count, BATCH):
            with env.begin(write=True) as txn:
                for d in data[k : k + BATCH]:
                    txn.put(sha(b"\x00" + d).digest()[:8], d)
        elapsed = time.perf_counter() - start
        env.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return count / elapsed


_RSS_CHILD = """
import hashlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) / 1024
    return 0.0
base = rss()
from ledger.storage import LmdbStore
store = LmdbStore.open(sys.argv[1])
opened = rss()
tag, start = sys.argv[3].encode(), int(sys.argv[4])
for k in range(int(sys.argv[2])):
    store.append([hashlib.sha256(tag + (start + 1000 * k + i).to_bytes(8, "big")).digest()
                  for i in range(1000)])
print(base, opened, rss())
store.close()
"""


def rss_of_a_store_process(path: Path, chain: Chain, blocks: int) -> tuple[float, float, float]:
    """RssAnon (MB) of a fresh process that only opens the store and appends ``blocks``
    1,000-digest blocks (the chain's next digests, so the chain goes on after them): before
    opening (Python alone), after opening, after appending. A node runs one store for its
    whole life; this benchmark's own process also held a second store and reopened this one,
    which leaves freed memory the allocator keeps."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path), str(blocks), chain.tag.decode(),
         str(chain.count)],
        capture_output=True, text=True, timeout=600, check=True)
    chain.skip(blocks * BATCH)
    base, opened, after = (float(x) for x in done.stdout.split())
    return base, opened, after


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    size: int
    rate: float
    empty: float
    fill: float
    rss: float
    disk: float
    block_overhead: float
    block_file: float
    proof: tuple[float, float]
    hit: tuple[float, float]
    miss: tuple[float, float]
    batch_miss: float
    open_s: float
    open_rss: float
    rss_after: float
    child: tuple[float, float, float]
    cpu: tuple[float, float]  # CPU us per anchor in append(): this store, the empty one


def measure(
    store: LmdbStore, chain: Chain, path: Path, scratch: Path, size: int, rounds: int,
    per_round: int, fill_rate: float, child_blocks: int,
) -> tuple[LmdbStore, Row]:
    """Interleaved rate rounds up to ``size``, then every other figure at ``size``."""
    gc.collect()
    rss_filled = rss_anon_mb()  # the store as it runs: before this benchmark's second store
    big_time = empty_time = big_cpu = empty_cpu = 0.0
    empty_path = scratch / "empty"
    shutil.rmtree(empty_path, ignore_errors=True)
    empty = LmdbStore.open(empty_path)
    empty_chain = Chain(b"empty-%d" % size)
    try:
        for _ in range(rounds):
            for _ in range(per_round):
                big_time += commit(store, chain, BATCH)
                big_cpu += CPU[0]
            for _ in range(per_round):
                empty_time += commit(empty, empty_chain, BATCH)
                empty_cpu += CPU[0]
    finally:
        empty.close()
        shutil.rmtree(empty_path, ignore_errors=True)
    anchors = rounds * per_round * BATCH
    rate, empty_rate = anchors / big_time, anchors / empty_time
    cpu = (big_cpu / anchors * 1e6, empty_cpu / anchors * 1e6)
    n = store.size
    disk = store.disk_usage() / n
    # Per-block overhead: 200 one-digest blocks with their certificates and notes.
    before = store.stats()
    file_before = store.disk_usage()
    for _ in range(200):
        commit(store, chain, 1)
    after = store.stats()
    grown = sum(after[k] - before[k] for k in ("blocks", "checkpoints", "dict"))
    block_overhead = grown * after["page_size"] / 200
    block_file = (store.disk_usage() - file_before) / 200
    # Proofs and lookups.
    import random

    rng = random.Random(size)
    n = store.size
    proof_times = []
    for i in rng.sample(range(n), 2000):
        t0 = time.perf_counter()
        store.inclusion_proof(i, n)
        proof_times.append(time.perf_counter() - t0)
    hit_times = []
    for i in rng.sample(range(n), 2000):
        d = digest(chain.tag, i)
        t0 = time.perf_counter()
        found = store.index_of(d)
        hit_times.append(time.perf_counter() - t0)
        if found != i:
            raise SystemExit(f"index_of gave {found} for leaf {i}")
    miss_times = []
    for i in range(2000):
        d = digest(b"absent", size * 10 + i)
        t0 = time.perf_counter()
        found = store.index_of(d)
        miss_times.append(time.perf_counter() - t0)
        if found is not None:
            raise SystemExit("an absent digest was found")
    absent = [digest(b"absent-batch", size * 10 + i) for i in range(BATCH)]
    t0 = time.perf_counter()
    store.index_of_many(absent)
    batch_miss = (time.perf_counter() - t0) / BATCH
    gc.collect()
    rss = max(rss_filled, 0.0)
    rss_after = rss_anon_mb()
    # Start-up: close and open again (in this process, and in a process of its own).
    store.close()
    child = rss_of_a_store_process(path, chain, child_blocks)
    t0 = time.perf_counter()
    store = LmdbStore.open(path)
    open_s = time.perf_counter() - t0
    open_rss = rss_anon_mb()
    us = 1e6
    return store, Row(
        size=n, rate=rate, empty=empty_rate, fill=fill_rate, rss=rss, disk=disk,
        block_overhead=block_overhead, block_file=block_file,
        proof=(percentile(proof_times, 0.5) * us, percentile(proof_times, 0.99) * us),
        hit=(percentile(hit_times, 0.5) * us, percentile(hit_times, 0.99) * us),
        miss=(percentile(miss_times, 0.5) * us, percentile(miss_times, 0.99) * us),
        batch_miss=batch_miss * us, open_s=open_s, open_rss=open_rss, rss_after=rss_after,
        child=child, cpu=cpu,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000",
                        help="comma-separated log sizes (default 10^5, 10^6, 10^7)")
    parser.add_argument("--quick", action="store_true", help="10^4 and 3x10^4: a smoke run")
    parser.add_argument("--tmp", default=None, help="directory for the LMDB files")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    sizes = [10_000, 30_000] if args.quick else [int(s.replace("_", "")) for s in
                                                 args.sizes.split(",") if s.strip()]
    rounds, per_round = (2, 2) if args.quick else (25, 4)
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        sha = leaf_hash_ceiling(random_digests(200_000 if not args.quick else 20_000), 2)
        sha_lmdb = ceiling_sha_lmdb(str(scratch), 200_000 if not args.quick else 20_000)
        print(f"ceiling: raw SHA-256 leaf hashing {sha:,.0f}/s; SHA-256 + LMDB put (1,000 per "
              f"synced transaction) {sha_lmdb:,.0f}/s", flush=True)
        path = scratch / "store"
        store = LmdbStore.open(path)
        chain = Chain(b"scale")
        try:
            for size in sizes:
                window = rounds * per_round * BATCH
                target = max(store.size, size - window - 200)
                filled = store.size
                fill_s = 0.0  # time in append() only: as the rounds measure it
                while store.size < target:
                    fill_s += commit(store, chain, min(BATCH, target - store.size))
                fill_rate = (store.size - filled) / fill_s if fill_s > 0 else 0.0
                store, row = measure(store, chain, path, scratch, size, rounds, per_round,
                                     fill_rate, 10 if args.quick else 150)
                rows.append(row)
                print(f"n={row.size:>11,}: append {row.rate:>9,.0f}/s = {row.rate / row.empty:.2f}"
                      f" x empty-log {row.empty:,.0f}/s (CPU {row.cpu[0]:.2f} vs "
                      f"{row.cpu[1]:.2f} us/anchor = {row.cpu[1] / row.cpu[0]:.2f}); fill "
                      f"{row.fill:,.0f}/s; RssAnon "
                      f"{row.rss:.1f} MB ({row.rss_after:.1f} after measuring; a process of its "
                      f"own: Python {row.child[0]:.1f}, open {row.child[1]:.1f}, after its blocks "
                      f"{row.child[2]:.1f}); disk "
                      f"{row.disk:.1f} B/anchor; 1-digest block "
                      f"{row.block_overhead:.0f} B (file {row.block_file:.0f} B); proof p50/p99 "
                      f"{row.proof[0]:.0f}/{row.proof[1]:.0f} us; index_of hit "
                      f"{row.hit[0]:.1f}/{row.hit[1]:.1f} us, miss {row.miss[0]:.1f}/"
                      f"{row.miss[1]:.1f} us, batch miss {row.batch_miss:.2f} us/digest; open "
                      f"{row.open_s * 1000:.0f} ms (RssAnon {row.open_rss:.1f} MB)", flush=True)
        finally:
            store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    misses = report(rows, sha, sha_lmdb)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if args.strict and misses else 0


def report(rows: list[Row], sha: float, sha_lmdb: float) -> int:
    """The summary table (Markdown, as docs/performance.md shows it); the number of targets
    missed."""
    misses = 0

    def mark(ok: bool) -> str:
        nonlocal misses
        misses += not ok
        return "" if ok else " MISS"

    print("\n== summary ==")
    print(f"ceilings: SHA-256 {sha:,.0f}/s; SHA-256 + LMDB put {sha_lmdb:,.0f}/s\n")
    header = ("| anchors | append/s (x empty-log) | CPU us/anchor (empty-log / this) "
              "| fill/s | RssAnon MB (store process) "
              "| disk B/anchor "
              "| 1-digest block B | proof p50/p99 us | index_of hit / miss p50 us "
              "| open ms |")
    print(header)
    print("|" + "---|" * 10)
    for r in rows:
        ratio = r.rate / r.empty
        fill = f"{r.fill:,.0f} ({r.fill / r.empty:.2f})" if r.fill else "-"
        print(f"| {r.size:,} | {r.rate:,.0f} ({ratio:.2f}{mark(ratio >= 0.8)}) "
              f"| {r.cpu[0]:.2f} ({r.cpu[1] / r.cpu[0]:.2f}) | {fill} "
              f"| {r.child[2]:.0f}{mark(r.child[2] <= 100)} (bench {r.rss:.0f}) "
              f"| {r.disk:.0f}{mark(r.disk <= 110)} "
              f"| {r.block_overhead:.0f}{mark(r.block_overhead <= 1024)} "
              f"| {r.proof[0]:.0f} / {r.proof[1]:.0f} | {r.hit[0]:.1f} / {r.miss[0]:.1f} "
              f"| {r.open_s * 1000:.0f} |")
    print(f"\ntargets: append >= 0.8 x the empty-log rate, RssAnon <= 100 MB, disk <= 110 "
          f"B/anchor, 1-digest block <= 1 KB; {misses} missed")
    return misses


if __name__ == "__main__":
    sys.exit(main())
