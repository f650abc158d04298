"""The chaos suite on real processes: a 4-validator cluster, a steady load, a nemesis, a checker.

What it protects (issue 6, item 1): through crashes (SIGKILL and restart), pauses
(SIGSTOP/SIGCONT), partitions and one-way cuts, message loss, delay and duplication, and a
skewed clock, with never more than f = 1 of n = 4 validators faulty at a time,

- **no acknowledged anchor is lost**: every digest a client got a ``200`` for on
  ``POST /v1/anchors?wait=true`` has, at the end, a receipt (fetched again from a node) that
  :func:`ledger.receipt.verify_receipt` accepts against ``D/trust-policy``, at the leaf index
  it was acknowledged with;
- **agreement**: after healing and a settle period every node serves the same checkpoint (size
  and root) and the same block at every height, each with a certificate of 2f + 1 valid
  precommits; no two checkpoints anyone saw have one size and two roots;
- **append-only**: ``/v1/consistency`` proofs verify between pairs of distinct checkpoint sizes
  the clients saw (all adjacent pairs plus a seeded random sample, at least 200 when there are
  that many);
- **no double signing**: no validator signed two different consensus messages for one
  (height, round, step), among every message the proxies forwarded and every precommit in the
  stored certificates;
- **honest time**: the time bound of each acknowledged receipt (the (f + 1)-th smallest
  cosignature timestamp) is not before the request was sent, even with one clock skewed;
- **liveness once faults stop**: an anchor sent after the last fault is healed is acknowledged.

Layout of one run: :func:`run_chaos` creates a devnet with :func:`ledger.devnet.init_devnet`,
rewrites every node's ``[peers]`` to point at per-link ports of :class:`chaos.proxy.FaultProxy`,
starts the four ``ledger node`` processes itself (one process group each, SIGKILLed by an
``atexit`` hook and by the kernel if this process dies: ``PR_SET_PDEATHSIG``), runs client
threads and one monitor thread per node, and drives the nemesis *in the calling thread* (the
death signal is tied to the thread that forked a node, so every fork happens in the thread
that lives longest). Every wait has a deadline and every HTTP request a timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from chaos.proxy import FaultProxy, LinkFaults
from ledger.checkpoint import open_checkpoint
from ledger.client import LedgerClient
from ledger.config import LOCAL_TIMEOUTS, Peer, format_node_config, load_node_config
from ledger.consensus import Decision, Proposal, ValidatorSet, Vote, verify_certificate
from ledger.consensus.messages import decode_block, decode_certificate, decode_message
from ledger.devnet import free_base_port, init_devnet
from ledger.errors import LedgerError
from ledger.genesis import load_genesis
from ledger.merkle.hashing import leaf_hash
from ledger.merkle.proof import verify_consistency, verify_inclusion
from ledger.policy import Policy
from ledger.receipt import parse_receipt, verify_receipt

__all__ = ["ChaosOptions", "Report", "run_chaos"]

N: Final = 4
F: Final = 1
#: Short consensus timeouts (rounds of a dead proposer cost little) and a bounded anchor wait.
TIMEOUTS: Final = replace(LOCAL_TIMEOUTS, anchor_wait_ms=15_000)
#: Client socket timeout: longer than the node's anchor wait, so a 202 arrives before it.
CLIENT_TIMEOUT: Final = 20.0
#: Every healed link keeps this: a few peer POSTs are replayed all run long.
BASELINE: Final = LinkFaults(duplicate=0.02)
FAULT_KINDS: Final = (
    "kill", "pause", "isolate", "one_way", "lossy", "slow", "duplicate", "clock_skew",
)


# ------------------------------------------------------------------------ process control

_LIVE_GROUPS: set[int] = set()
_ALL_GROUPS: list[int] = []  # every node process group this process ever started
_PR_SET_PDEATHSIG: Final = 1


def _kill_live_groups() -> None:
    """atexit: SIGKILL every node process group still registered (SIGKILL also ends a stopped
    process)."""
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_GROUPS.discard(pgid)


atexit.register(_kill_live_groups)


def stray_processes() -> list[int]:
    """Process groups of nodes this process started that still exist (should be none after a
    run)."""
    alive = []
    for pgid in _ALL_GROUPS:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:  # the id was reused by someone else's process
            continue
        alive.append(pgid)
    return alive


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Processes:
    """The node processes: start, SIGKILL, SIGTERM, SIGSTOP/SIGCONT, each in its own group."""

    def __init__(self, configs: list[Path], logs: Path, *, cwd: Path,
                 code: Path | None = None) -> None:
        self.configs = configs
        self.logs = logs
        self.cwd = cwd
        self.code = code
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(configs)
        self.skew = [0] * len(configs)
        self.paused = [False] * len(configs)

    def _note(self, i: int, text: str) -> None:
        with open(self.logs / f"node{i}.log", "a", encoding="utf-8") as log:
            log.write(f"=== chaos {time.strftime('%H:%M:%S')}: {text}\n")

    def start(self, i: int, *, skew_ms: int = 0) -> None:
        assert self.procs[i] is None, f"node {i} is running"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.code is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.code), env.get("PYTHONPATH", "")) if p)
        self._note(i, f"start (clock skew {skew_ms} ms)")
        with open(self.logs / f"node{i}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "node", "--config", str(self.configs[i]),
                 "--unsafe-clock-skew-ms", str(skew_ms)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.cwd, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        _LIVE_GROUPS.add(proc.pid)
        _ALL_GROUPS.append(proc.pid)
        self.procs[i] = proc
        self.skew[i] = skew_ms
        self.paused[i] = False

    def running(self, i: int) -> bool:
        proc = self.procs[i]
        return proc is not None and proc.poll() is None

    def _signal(self, i: int, sig: signal.Signals) -> None:
        proc = self.procs[i]
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def kill(self, i: int) -> None:
        self._note(i, "SIGKILL")
        self._signal(i, signal.SIGKILL)
        self._reap(i, timeout=10)

    def terminate(self, i: int, *, grace: float = 15.0) -> None:
        """SIGCONT (a stopped process cannot handle SIGTERM), SIGTERM, then SIGKILL after
        ``grace`` seconds."""
        self._note(i, "SIGTERM")
        self._signal(i, signal.SIGCONT)
        self._signal(i, signal.SIGTERM)
        proc = self.procs[i]
        if proc is not None:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._note(i, f"did not stop in {grace:g} s: SIGKILL")
                self._signal(i, signal.SIGKILL)
        self._reap(i, timeout=10)

    def pause(self, i: int) -> None:
        self._note(i, "SIGSTOP")
        self._signal(i, signal.SIGSTOP)
        self.paused[i] = True

    def resume(self, i: int) -> None:
        self._note(i, "SIGCONT")
        self._signal(i, signal.SIGCONT)
        self.paused[i] = False

    def _reap(self, i: int, *, timeout: float) -> None:
        proc = self.procs[i]
        if proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        if proc.poll() is not None:
            _LIVE_GROUPS.discard(proc.pid)
        self.procs[i] = None
        self.paused[i] = False

    def exited_on_their_own(self) -> list[tuple[int, int]]:
        return [(i, p.returncode) for i, p in enumerate(self.procs)
                if p is not None and p.poll() is not None]

    def stop_all(self) -> None:
        """Every node down: SIGTERM with a grace period in parallel, SIGKILL for the rest."""
        for i in range(len(self.procs)):
            self._signal(i, signal.SIGCONT)
            self._signal(i, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for i in range(len(self.procs)):
            self._signal(i, signal.SIGKILL)
            self._reap(i, timeout=10)


# ------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Ack:
    """One acknowledged anchor: what the client was told, and when."""

    digest: bytes
    index: int
    receipt: str
    node: int
    sent: float  # wall clock before the request
    acked: float  # wall clock after the answer


@dataclass
class Fault:
    kind: str
    node: int
    detail: str
    injected: float  # monotonic
    healed: float | None = None
    stall: float | None = None  # injection -> first new commit (None: none before heal)
    recover: float | None = None  # heal -> first new commit
    rejoin: float | None = None  # heal -> the node at the cluster's height (restarts)


@dataclass
class Observations:
    """What the load and the monitor threads saw; shared between threads under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    requests_ok: int = 0
    request_failures: Counter[str] = field(default_factory=Counter)
    notes: set[str] = field(default_factory=set)  # checkpoint notes seen by clients
    commits: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, max height)
    heights: list[list[tuple[float, int]]] = field(default_factory=list)  # per node
    max_height: int = 0
    checkpoint_sizes: list[int] = field(default_factory=list)  # per node, the latest seen
    regressions: list[str] = field(default_factory=list)

    def saw_height(self, node: int, height: int, at: float) -> None:
        with self.lock:
            series = self.heights[node]
            if series and height < series[-1][1]:
                # What /v1/status reports is committed to LMDB with sync on: it must survive
                # a SIGKILL.
                self.regressions.append(
                    f"validator-{node + 1}'s height went back from {series[-1][1]} to {height}")
            if not series or series[-1][1] != height:
                series.append((at, height))
            if height > self.max_height:
                self.max_height = height
                self.commits.append((at, height))


@dataclass(frozen=True, kw_only=True)
class ChaosOptions:
    duration: float = 600.0  # seconds of faults
    min_faults: int = len(FAULT_KINDS)  # go on past ``duration`` until this many (every kind)
    snapshot: bool = True  # nodes run a copy of the package taken at the start (see _snapshot)
    seed: int = 1
    clients: int = 4
    hold: tuple[float, float] = (2.0, 8.0)  # how long one fault lasts
    gap: tuple[float, float] = (1.0, 4.0)  # quiet time between faults
    skew_ms: tuple[int, int] = (2_000, 120_000)  # |clock skew|, either sign
    settle_timeout: float = 90.0
    ready_timeout: float = 120.0
    min_pairs: int = 200
    max_pairs: int = 4000
    workdir: Path | None = None
    keep: bool = False
    log: Callable[[str], None] = print


@dataclass
class Report:
    seed: int
    fault_seconds: float = 0.0
    acknowledged: int = 0
    ack_requests: int = 0
    lost: int = 0
    request_failures: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    checkpoint_sizes: int = 0
    checkpoint_notes: int = 0
    consistency_pairs: int = 0
    heights: int = 0
    final_size: int = 0
    consensus_messages: int = 0
    votes_checked: int = 0
    proxy: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    workdir: str = ""
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and not self.violations

    def fault_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.faults).items()))

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fault_counts"] = self.fault_counts()
        out["ok"] = self.ok
        return out

    def format(self) -> str:
        lines = [
            f"chaos run: seed {self.seed}, {self.fault_seconds:.0f} s of faults, "
            f"n = {N}, f = {F}, wall time {self.wall_seconds:.0f} s",
            f"anchors acknowledged: {self.acknowledged} (in {self.ack_requests} requests)",
            f"anchors lost: {self.lost}",
            "requests not acknowledged (allowed under faults): "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.request_failures.items())) or "none"),
            "faults injected: " + ", ".join(f"{k} {v}" for k, v in self.fault_counts().items())
            + f" (total {len(self.faults)})",
        ]
        lines.append("recovery per fault (stall = injection to first new commit, '-' = none "
                     "while faulty; recover = heal to first new commit; rejoin = restarted "
                     "node reaches the cluster's height):")
        for f in self.faults:
            lines.append(
                f"  {f.kind:<10} {f'validator-{f.node + 1}':<12} {f.detail:<34} "
                f"stall {_secs(f.stall):>6}  recover {_secs(f.recover):>6}"
                + (f"  rejoin {_secs(f.rejoin):>6}" if f.kind in ("kill", "clock_skew") else "")
            )
        by_kind: dict[str, list[float]] = defaultdict(list)
        for f in self.faults:
            if f.recover is not None:
                by_kind[f.kind].append(f.recover)
        for kind, values in sorted(by_kind.items()):
            lines.append(f"  {kind:<10} recover median {statistics.median(values):.2f} s, "
                         f"max {max(values):.2f} s over {len(values)}")
        lines += [
            f"checkpoints seen: {self.checkpoint_notes} notes, {self.checkpoint_sizes} distinct "
            f"sizes; consistency proofs verified: {self.consistency_pairs} pairs",
            f"final checkpoint: size {self.final_size}, the same on all {N} nodes; "
            f"{self.heights} heights, the same block and a valid certificate on every node",
            f"consensus messages captured: {self.consensus_messages}; signed votes and "
            f"proposals checked for double signing: {self.votes_checked}",
            "proxy: " + ", ".join(f"{k} {v}" for k, v in sorted(self.proxy.items())),
        ]
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}):")
            lines += [f"  {v}" for v in self.violations[:50]]
        else:
            lines.append("violations: none")
        lines.append(f"work directory: {self.workdir}")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# ------------------------------------------------------------------------ the run


class Chaos:
    def __init__(self, options: ChaosOptions) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.log = options.log
        self.stop_load = threading.Event()
        self.stop_monitor = threading.Event()
        self.obs = Observations()
        self.obs.heights = [[] for _ in range(N)]
        self.obs.checkpoint_sizes = [0] * N
        self.threads: list[threading.Thread] = []
        self.report = Report(seed=options.seed)
        self.root = Path(options.workdir) if options.workdir else Path(
            tempfile.mkdtemp(prefix="ledger-chaos-"))
        self.report.workdir = str(self.root)
        self.d = self.root / "D"
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        base = free_base_port(N)
        devnet = init_devnet(self.d, nodes=N, base_port=base,
                             genesis_time_ms=int(time.time() * 1000))
        self.urls = [url for _, url in devnet.urls]
        self.token = devnet.token_file.read_text().strip()
        genesis = load_genesis(self.d / "genesis.json")
        self.policy: Policy = genesis.policy()
        self.chain_id = genesis.chain_id
        self.validators = ValidatorSet(keys=list(genesis.consensus_keys()))
        self.names = {v.consensus_key: v.name for v in genesis.validators}
        self.proxy = FaultProxy(self.urls, seed=options.seed, baseline=BASELINE)
        configs = [path for _, path in devnet.configs]
        for i, path in enumerate(configs):
            config = load_node_config(path)
            peers = tuple(Peer(name=p.name, url=self.proxy.url(i, self._index(p.name)))
                          for p in config.peers)
            config = dataclasses.replace(config, peers=peers, timeouts=TIMEOUTS)
            path.write_text(format_node_config(config, relative_to=path.parent))
        code = self._snapshot() if options.snapshot else None
        self.procs = Processes(configs, logs, cwd=self.root, code=code)
        # checkpoint note text -> (size, root, time bound if a receipt computed it)
        self._verified_notes: dict[str, tuple[int, bytes, int | None]] = {}
        self._notes_lock = threading.Lock()

    def _snapshot(self) -> Path:
        """Copy the ``ledger`` package the nodes run into the work directory.

        Every start of a node (restarts included) then runs the code as it was when the run
        began, even if the work tree is edited meanwhile: one cluster never mixes versions. The
        copy must import; a tree caught in the middle of an edit is copied again.
        """
        import ledger

        source = Path(ledger.__file__).parent
        code = self.root / "code"
        for attempt in range(5):
            shutil.rmtree(code, ignore_errors=True)
            shutil.copytree(source, code / "ledger",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            check = subprocess.run(
                [sys.executable, "-c", "import ledger.cli, ledger.node"],
                cwd=self.root, env=dict(os.environ, PYTHONPATH=str(code)),
                capture_output=True, text=True, timeout=60, check=False,
            )
            if check.returncode == 0:
                return code
            self.log(f"snapshot of {source} does not import (attempt {attempt + 1}): "
                     f"{check.stderr.strip().splitlines()[-1:]}")
            time.sleep(5)
        raise RuntimeError(f"the ledger package in {source} does not import")

    def _index(self, name: str) -> int:
        return int(name.rsplit("-", 1)[1]) - 1

    # -- threads ----------------------------------------------------------------------------

    def _client_loop(self, k: int) -> None:
        rng = random.Random(self.o.seed * 1000 + k)
        clients = [LedgerClient(u, self.token, timeout=CLIENT_TIMEOUT) for u in self.urls]
        counter = 0
        try:
            while not self.stop_load.is_set():
                node = rng.randrange(N)
                size = 1 if rng.random() < 0.5 else rng.randint(2, 24)
                digests = []
                for _ in range(size):
                    counter += 1
                    digests.append(hashlib.sha256(
                        f"chaos/{self.o.seed}/{k}/{counter}".encode()).digest())
                if not self._anchor(clients[node], node, digests):
                    self.stop_load.wait(0.3)
                else:
                    self.stop_load.wait(rng.uniform(0.0, 0.15))
        finally:
            for c in clients:
                c.close()

    def _anchor(self, client: LedgerClient, node: int, digests: list[bytes]) -> bool:
        sent = time.time()
        try:
            results = client.anchor(digests, wait=True)
        except LedgerError as exc:
            with self.obs.lock:
                self.obs.request_failures[type(exc).__name__] += 1
            return False
        acked = time.time()
        acks = []
        for r in results:
            assert r.index is not None and r.receipt is not None  # the client checked
            acks.append(Ack(digest=r.digest, index=r.index, receipt=r.receipt, node=node,
                            sent=sent, acked=acked))
        with self.obs.lock:
            self.obs.acks.extend(acks)
            self.obs.requests_ok += 1
        return True

    def _monitor_loop(self, i: int) -> None:
        client = LedgerClient(self.urls[i], timeout=2.0)
        next_checkpoint = 0.0
        try:
            while not self.stop_monitor.is_set():
                with contextlib.suppress(LedgerError):
                    status = client.status()
                    height = status.get("height")
                    if isinstance(height, int):
                        self.obs.saw_height(i, height, time.monotonic())
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + 1.0
                    with contextlib.suppress(LedgerError, ValueError, IndexError):
                        note = client.checkpoint()
                        size = int(note.split("\n", 2)[1])
                        with self.obs.lock:
                            self.obs.notes.add(note)
                            if size < self.obs.checkpoint_sizes[i]:
                                self.obs.regressions.append(
                                    f"validator-{i + 1}'s checkpoint went back from "
                                    f"{self.obs.checkpoint_sizes[i]} to {size}")
                            self.obs.checkpoint_sizes[i] = max(size,
                                                               self.obs.checkpoint_sizes[i])
                self.stop_monitor.wait(0.2)
        finally:
            client.close()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # -- the nemesis ------------------------------------------------------------------------

    def _links(self, node: int, faults: LinkFaults, links: Iterable[tuple[int, int]]) -> None:
        for src, dst in links:
            self.proxy.set_faults(src, dst, faults)

    def _inject(self, kind: str, k: int) -> tuple[str, Callable[[], None]]:
        """Start fault ``kind`` on node ``k``; return its description and its heal."""
        rng, procs, touching = self.rng, self.procs, self.proxy.touching(k)
        if kind == "kill":
            procs.kill(k)
            return "SIGKILL, then restart", lambda: procs.start(k)
        if kind == "pause":
            procs.pause(k)
            return "SIGSTOP, then SIGCONT", lambda: procs.resume(k)
        if kind == "isolate":
            mode = rng.choice(("refuse", "blackhole"))
            self._links(k, LinkFaults(cut=True, cut_mode=mode), touching)
            return f"partition 1|3, links {mode}", self.proxy.heal
        if kind == "one_way":
            mode = rng.choice(("refuse", "blackhole"))
            outbound = rng.random() < 0.5
            links = [(s, d) for s, d in touching if (s == k) == outbound]
            self._links(k, LinkFaults(cut=True, cut_mode=mode), links)
            return f"{'outbound' if outbound else 'inbound'} cut, {mode}", self.proxy.heal
        if kind == "lossy":
            p = round(rng.uniform(0.3, 0.8), 2)
            self._links(k, dataclasses.replace(BASELINE, drop=p), touching)
            return f"drop {p:.0%} of its traffic", self.proxy.heal
        if kind == "slow":
            high = rng.randint(200, 1500)
            self._links(k, dataclasses.replace(BASELINE, delay_ms=(high // 4, high)), touching)
            return f"delay {high // 4}-{high} ms", self.proxy.heal
        if kind == "duplicate":
            p = round(rng.uniform(0.5, 1.0), 2)
            self._links(k, dataclasses.replace(BASELINE, duplicate=p), touching)
            return f"replay {p:.0%} of its peer POSTs", self.proxy.heal
        if kind == "clock_skew":
            low, high = self.o.skew_ms
            skew = rng.randint(low, high) * rng.choice((1, -1))
            procs.terminate(k)
            procs.start(k, skew_ms=skew)

            def unskew() -> None:
                procs.terminate(k)
                procs.start(k)
            return f"clock {skew:+d} ms (restart)", unskew
        raise AssertionError(kind)

    def _nemesis(self) -> None:
        deck: list[str] = []
        start = time.monotonic()
        end = start + self.o.duration
        while time.monotonic() < end or len(self.report.faults) < self.o.min_faults:
            if not deck:
                deck = list(FAULT_KINDS)
                self.rng.shuffle(deck)
            kind, k = deck.pop(), self.rng.randrange(N)
            hold = self.rng.uniform(*self.o.hold)
            gap = self.rng.uniform(*self.o.gap)
            injected = time.monotonic()
            detail, heal = self._inject(kind, k)
            fault = Fault(kind=kind, node=k, detail=detail, injected=injected)
            self.report.faults.append(fault)
            self.log(f"[{injected - start:7.1f}s] {kind} validator-{k + 1}: {detail}, "
                     f"for {hold:.1f} s")
            time.sleep(self._within(hold, end, slack=1.0))
            heal()
            fault.healed = time.monotonic()
            self._check_processes()
            time.sleep(self._within(gap, end, slack=0.0))
        self.report.fault_seconds = time.monotonic() - start

    @staticmethod
    def _within(seconds: float, end: float, *, slack: float) -> float:
        """``seconds``, cut short to end near ``end``; in full once past it (the extra faults
        that complete the deck)."""
        remaining = end - time.monotonic()
        return seconds if remaining <= 0 else max(0.0, min(seconds, remaining + slack))

    def _check_processes(self) -> None:
        for i, code in self.procs.exited_on_their_own():
            self.report.violations.append(
                f"validator-{i + 1} exited on its own with status {code} (see logs/node{i}.log)")
            self.procs._reap(i, timeout=1)
            self.procs.start(i)

    def _heal_everything(self) -> None:
        self.proxy.heal()
        for i in range(N):
            if self.procs.paused[i]:
                self.procs.resume(i)
            if self.procs.skew[i]:
                self.procs.terminate(i)
            if not self.procs.running(i):
                self.procs._reap(i, timeout=1)
                self.procs.start(i)

    # -- waits ------------------------------------------------------------------------------

    def _wait(self, check: Callable[[], bool], what: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(LedgerError):
                if check():
                    return True
            time.sleep(0.5)
        self.log(f"timed out after {timeout:.0f} s waiting for {what}")
        return False

    def _all_ready(self) -> bool:
        for u in self.urls:
            with LedgerClient(u, timeout=3.0) as c:
                if not c.ready():
                    return False
        return True

    def _checkpoints(self) -> list[tuple[int, bytes] | None]:
        out: list[tuple[int, bytes] | None] = []
        for u in self.urls:
            try:
                with LedgerClient(u, timeout=5.0) as c:
                    out.append(self._open_note(c.checkpoint()))
            except LedgerError:
                out.append(None)
        return out

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Report:
        began = time.monotonic()
        try:
            self.proxy.start()
            for i in range(N):
                self.procs.start(i)
            if not self._wait(self._all_ready, "all four nodes ready", self.o.ready_timeout):
                self.report.violations.append("the cluster did not become ready")
                return self.report
            self.log(f"cluster ready in {time.monotonic() - began:.1f} s; work dir {self.root}")
            for i in range(N):
                self._spawn(f"monitor-{i}", self._monitor_loop, i)
            for k in range(self.o.clients):
                self._spawn(f"client-{k}", self._client_loop, k)
            time.sleep(2.0)  # some load before the first fault
            try:
                self._nemesis()
            finally:
                self._heal_everything()
            self.log("every fault healed; load goes on for 3 s")
            time.sleep(3.0)
            self.stop_load.set()
            for t in self.threads:
                if t.name.startswith("client-"):
                    t.join(timeout=CLIENT_TIMEOUT + 10)
            self._final_anchor()
            self._settle()
            self.stop_monitor.set()
            for t in self.threads:
                t.join(timeout=5)
            self._check_all()
        finally:
            self.stop_load.set()
            self.stop_monitor.set()
            self.procs.stop_all()
            self.proxy.stop()
            self.report.wall_seconds = time.monotonic() - began
        return self.report

    def _final_anchor(self) -> None:
        """Liveness once faults stop: one more anchor, sent after every fault is healed."""
        digest = hashlib.sha256(f"chaos/{self.o.seed}/final".encode()).digest()
        deadline = time.monotonic() + self.o.settle_timeout
        while time.monotonic() < deadline:
            for node in range(N):
                with LedgerClient(self.urls[node], self.token, timeout=CLIENT_TIMEOUT) as c:
                    if self._anchor(c, node, [digest]):
                        return
            time.sleep(1.0)
        self.report.violations.append(
            f"liveness: an anchor sent after healing was not acknowledged in "
            f"{self.o.settle_timeout:.0f} s")

    def _settle(self) -> None:
        with self.obs.lock:
            acked_max = max((a.index for a in self.obs.acks), default=-1) + 1

        def agreed() -> bool:
            heads = self._checkpoints()
            return (len(set(heads)) == 1 and heads[0] is not None
                    and heads[0][0] >= acked_max)
        t0 = time.monotonic()
        if self._wait(agreed, "the same checkpoint on every node", self.o.settle_timeout):
            self.log(f"settled in {time.monotonic() - t0:.1f} s")
        else:
            heads = self._checkpoints()
            self.report.violations.append(
                "agreement: the nodes serve different checkpoints after settling: "
                + ", ".join(f"validator-{i + 1} " + (f"size {h[0]}" if h else "none")
                            for i, h in enumerate(heads)))

    # -- the checker ------------------------------------------------------------------------

    def _open_note(self, note: str) -> tuple[int, bytes]:
        """Verify a checkpoint note against the trust policy once; its (size, root)."""
        with self._notes_lock:
            known = self._verified_notes.get(note)
        if known is not None:
            return known[0], known[1]
        opened = open_checkpoint(note, self.policy.verifiers())
        self.policy.evaluate((v.verifier for v in opened.note.verified),
                             origin=opened.checkpoint.origin)
        size, root = opened.checkpoint.size, opened.checkpoint.root
        with self._notes_lock:
            self._verified_notes.setdefault(note, (size, root, None))
        return size, root

    def _verify_receipt(self, text: str, digest: bytes) -> tuple[int, int]:
        """Verify a receipt for ``digest``; return its leaf index and time bound.

        The first receipt against each checkpoint note goes through
        :func:`ledger.receipt.verify_receipt` whole; later ones against the same note text
        reuse that note's verification and check only the inclusion path: the expensive part,
        the Ed25519 signatures of the note and the quorum, cannot differ for byte-identical
        notes, and neither can the time bound.
        """
        receipt = parse_receipt(text)
        with self._notes_lock:
            known = self._verified_notes.get(receipt.checkpoint)
        if known is None or known[2] is None:
            verified = verify_receipt(text, self.policy, digest)
            with self._notes_lock:
                self._verified_notes[receipt.checkpoint] = (
                    verified.size, verified.root, verified.time_bound)
            return verified.index, verified.time_bound
        size, root, bound = known
        assert bound is not None
        verify_inclusion(leaf_hash(digest), receipt.index, size, receipt.proof, root)
        return receipt.index, bound

    def _check_all(self) -> None:
        obs, report = self.obs, self.report
        report.acknowledged = len(obs.acks)
        report.ack_requests = obs.requests_ok
        report.request_failures = dict(obs.request_failures)
        report.proxy = dict(self.proxy.counts())
        report.violations.extend(f"DURABILITY: {r}" for r in obs.regressions)
        self._recovery()
        self.log(f"checking {len(obs.acks)} acknowledged anchors ...")
        self._check_acks()
        self._check_checkpoints()
        self._check_blocks_and_votes()

    def _recovery(self) -> None:
        commits = self.obs.commits
        for f in self.report.faults:
            after = [t for t, _ in commits if t > f.injected]
            if after and f.healed is not None and after[0] <= f.healed:
                f.stall = after[0] - f.injected
            if f.healed is None:
                continue
            later = [t for t, _ in commits if t > f.healed]
            f.recover = later[0] - f.healed if later else None
            if f.kind in ("kill", "clock_skew"):
                target = max((h for t, h in commits if t <= f.healed), default=0)
                reached = [t for t, h in self.obs.heights[f.node] if t > f.healed and h >= target]
                f.rejoin = reached[0] - f.healed if reached else None

    def _check_acks(self) -> None:
        acks = self.obs.acks
        violations = self.report.violations
        seen: dict[bytes, int] = {}
        for a in acks:
            if seen.setdefault(a.digest, a.index) != a.index:
                violations.append(f"digest {a.digest.hex()} acknowledged at two indices")
            try:
                index, bound = self._verify_receipt(a.receipt, a.digest)
            except LedgerError as exc:
                violations.append(f"acknowledged receipt of {a.digest.hex()[:16]} does not "
                                  f"verify: {exc.diagnostics()}")
                continue
            if index != a.index:
                violations.append(f"receipt index {index} != acknowledged {a.index}")
            if not a.sent - 2 <= bound <= a.acked + 2:
                violations.append(
                    f"time bound {bound} of {a.digest.hex()[:16]} outside its request "
                    f"[{a.sent:.0f}, {a.acked:.0f}]")
            self.obs.notes.add(parse_receipt(a.receipt).checkpoint)

        # Every acknowledged anchor again, from the nodes as they are now (any node will do).
        lost: list[str] = []
        lock = threading.Lock()

        def fetch(part: list[Ack], first: int) -> None:
            clients = [LedgerClient(u, timeout=10.0) for u in self.urls]
            try:
                for a in part:
                    ok = False
                    for j in range(N):
                        try:
                            text = clients[(first + j) % N].proof(a.digest)
                            index, _ = self._verify_receipt(text, a.digest)
                        except LedgerError:
                            continue
                        if index != a.index:
                            with lock:
                                violations.append(f"{a.digest.hex()[:16]} moved from index "
                                                  f"{a.index} to {index}")
                        ok = True
                        break
                    if not ok:
                        with lock:
                            lost.append(a.digest.hex())
            finally:
                for c in clients:
                    c.close()

        unique = list({a.digest: a for a in acks}.values())
        parts = [unique[i::N] for i in range(N)]
        with ThreadPoolExecutor(N) as pool:
            list(pool.map(fetch, parts, range(N)))
        self.report.lost = len(lost)
        for d in lost[:20]:
            violations.append(f"LOST: acknowledged digest {d} has no verifying receipt")

    def _check_checkpoints(self) -> None:
        violations = self.report.violations
        heads: dict[int, set[bytes]] = defaultdict(set)
        for note in self.obs.notes:
            try:
                size, root = self._open_note(note)
            except LedgerError as exc:
                violations.append(f"a checkpoint a client saw does not verify: "
                                  f"{exc.diagnostics()}")
                continue
            heads[size].add(root)
        self.report.checkpoint_notes = len(self.obs.notes)
        for size, roots in heads.items():
            if len(roots) > 1:
                violations.append(f"FORK: checkpoints of size {size} with {len(roots)} roots")
        final = self._checkpoints()[0]
        if final is not None:
            self.report.final_size = final[0]
            heads[final[0]].add(final[1])
        sizes = sorted(s for s in heads if s > 0)
        self.report.checkpoint_sizes = len(sizes)
        pairs = {(a, b) for a, b in itertools.pairwise(sizes)}
        if final is not None:
            pairs |= {(s, final[0]) for s in sizes if s < final[0]}
        everything = len(sizes) * (len(sizes) - 1) // 2
        want = min(everything, max(self.o.min_pairs, len(pairs)), self.o.max_pairs)
        rng = random.Random(self.o.seed)
        budget = 50 * want
        while len(pairs) < want and budget:
            budget -= 1
            a, b = sorted(rng.sample(sizes, 2))
            pairs.add((a, b))
        pair_list = sorted(pairs)
        if len(pair_list) > self.o.max_pairs:
            pair_list = sorted(rng.sample(pair_list, self.o.max_pairs))
        root_of = {s: next(iter(r)) for s, r in heads.items()}
        checked = 0
        clients = [LedgerClient(u, timeout=10.0) for u in self.urls]
        try:
            for n, (a, b) in enumerate(pair_list):
                try:
                    body = clients[n % N]._get_json(f"/v1/consistency?from={a}&to={b}")
                    proof = [_b64(x) for x in body["proof"]]
                    verify_consistency(a, b, root_of[a], root_of[b], proof)
                    checked += 1
                except (LedgerError, KeyError, TypeError, ValueError) as exc:
                    text = exc.diagnostics() if isinstance(exc, LedgerError) else repr(exc)
                    violations.append(f"consistency {a} -> {b} fails: {text}")
        finally:
            for c in clients:
                c.close()
        self.report.consistency_pairs = checked

    def _check_blocks_and_votes(self) -> None:
        violations = self.report.violations
        statuses = []
        for u in self.urls:
            with LedgerClient(u, timeout=10.0) as c:
                statuses.append(c.status())
        heights = {s["height"] for s in statuses}
        if len(heights) != 1:
            violations.append(f"agreement: nodes stopped at different heights {sorted(heights)}")
        top = min(heights)
        self.report.heights = top

        def blocks(i: int) -> list[tuple[str, str, str]]:
            out = []
            with LedgerClient(self.urls[i], timeout=10.0) as c:
                for h in range(1, top + 1):
                    body = c._get_json(f"/v1/blocks/{h}")
                    out.append((body["hash"], body["block"], body["certificate"]))
            return out

        with ThreadPoolExecutor(N) as pool:
            per_node = list(pool.map(blocks, range(N)))
        votes: list[Vote | Proposal] = []
        for h in range(top):
            hashes = {per_node[i][h][0] for i in range(N)}
            if len(hashes) != 1:
                violations.append(f"FORK: height {h + 1} has blocks {sorted(hashes)}")
            for i in range(N):
                block = decode_block(_b64(per_node[i][h][1]))
                cert = decode_certificate(_b64(per_node[i][h][2]))
                if i == 0:
                    try:
                        verify_certificate(cert, block_hash=block.hash, height=h + 1,
                                           validators=self.validators, chain_id=self.chain_id)
                    except LedgerError as exc:
                        violations.append(f"height {h + 1}: certificate: {exc.diagnostics()}")
                votes.extend(cert.precommits)
                if block.last_commit is not None:
                    votes.extend(block.last_commit.precommits)

        captured = self.proxy.consensus_messages()
        self.report.consensus_messages = len(captured)
        for data in captured:
            try:
                msg = decode_message(data)
            except LedgerError:
                violations.append("the proxy forwarded a consensus message that does not decode")
                continue
            if isinstance(msg, Decision):
                votes.extend(msg.certificate.precommits)
                if msg.block.last_commit is not None:
                    votes.extend(msg.block.last_commit.precommits)
            else:
                votes.append(msg)
                if isinstance(msg, Proposal) and msg.block.last_commit is not None:
                    votes.extend(msg.block.last_commit.precommits)
        self._double_signs(votes)

    def _double_signs(self, messages: list[Vote | Proposal]) -> None:
        """No validator signed two different messages for one (height, round, step)."""
        slots: dict[tuple[bytes, int, int, str], dict[bytes, Vote | Proposal]] = defaultdict(dict)
        for m in messages:
            step = "proposal" if isinstance(m, Proposal) else m.type.name.lower()
            slots[(m.validator, m.height, m.round, step)].setdefault(m.encode(), m)
        self.report.votes_checked = len({e for s in slots.values() for e in s})
        for (validator, height, rnd, step), distinct in slots.items():
            if len(distinct) < 2:
                continue
            valid = []
            for m in distinct.values():
                with contextlib.suppress(LedgerError):
                    m.verify(self.validators, self.chain_id)
                    valid.append(m)
            if len(valid) >= 2:
                self.report.violations.append(
                    f"DOUBLE SIGN: {self.names.get(validator, validator.hex()[:16])} signed "
                    f"{len(valid)} different {step} messages at height {height} round {rnd}")


def _b64(text: str) -> bytes:
    import base64
    return base64.b64decode(text, validate=True)


def run_chaos(options: ChaosOptions) -> Report:
    """One chaos run (see the module docstring); the work directory is removed on success
    unless ``options.keep``."""
    chaos = Chaos(options)
    try:
        report = chaos.run()
    finally:
        _kill_live_groups()
    if report.ok and not options.keep and options.workdir is None:
        shutil.rmtree(chaos.root, ignore_errors=True)
    return report


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")

