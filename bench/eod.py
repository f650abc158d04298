"""EOD benchmark: a year of a shared-services centre through ``ledger eod serve`` on a devnet.

What it does, end to end, with real processes on 127.0.0.1:

1. starts a 4-validator devnet (``ledger.devnet`` files, one ``ledger node`` process per node)
   and sets up an office beside it (``ledger eod init`` with the devnet's trust policy, 272
   positions: the registry, the head, 50 clerks and 20 accountants of the accounts unit FK,
   the chief accountant, and the substantive reviewer of each of 200 units);
2. starts ``ledger eod serve`` (its own process; ``--workers`` threads);
3. **import**: ``--documents`` cost documents (100,000: a year) go in through
   ``POST /v1/offices/cuw/import`` in batches of ``--batch`` matters, ``--import-clients``
   requests at a time. Each matter is an invoice through the five-step acceptance path:
   registration (KSeF, with its attachment count), assignment, opening of the case in FK, the
   order or contract attached (a cost document needs it before the substantive check, so each
   gets one: 100,000 attachments, against the year's 60,000), substantive check, formal and
   arithmetic check, account coding, countersignature, approval for payment, closing: 10
   events per matter, all checked by the office's rules, signed, anchored in the ledger and
   stored. Prints events/s (events stored / wall time of the phase);
4. **verify**: every case's trail is exported from the office store and verified offline
   (:func:`ledger.eod.trail.verify_trail`: signatures, receipts, checkpoints, proven times,
   every rule, the signed head), on ``--verify-jobs`` processes; prints trails/s;
5. **latency**: ``--clients`` (50) concurrent clients each take new matters through the live
   path, one HTTP request per step (each step reads the ledger's checkpoint and anchors with
   ``?wait=true``), for ``--steps`` steps each, and look up the status of their matters as a
   citizen would (``POST /v1/offices/cuw/status`` with the access code of the registration
   receipt; the service's per-address rate limit is raised for this, all clients being on
   127.0.0.1); prints the p50/p99 latency of a step and of a status lookup.

Usage::

    .venv/bin/python bench/eod.py              # the year: 100,000 cost documents
    .venv/bin/python bench/eod.py --quick      # 600 documents, 20 clients (the smoke test)

Everything lives in a temporary directory removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from ledger.crypto import Ed25519Key
from ledger.devnet import free_base_port, init_devnet, node_command
from ledger.eod.jrwa import default_jrwa_text
from ledger.eod.model import Role
from ledger.eod.office import Office
from ledger.eod.paths import default_paths_text
from ledger.eod.pki import SigningIdentity
from ledger.eod.records import OfficeRecord
from ledger.eod.store import OfficeStore

N = 4
UNITS = 200
CLERKS = 50
ACCOUNTANTS = 20
OFFICE = "cuw"
TOKEN = "bench-backend-token"
ADMIN = "bench-admin-token"


def positions() -> list[tuple[str, str, str, tuple[Role, ...]]]:
    out = [
        ("kanc", "SEK", "Kancelaria", (Role.REGISTRY,)),
        ("dyr", "D", "Dyrektor", (Role.ASSIGN, Role.APPROVE_PAYMENT)),
        ("gk", "FK", "Główna księgowa", (Role.CHIEF_ACCOUNTANT,)),
    ]
    out += [(f"ref-{i}", "FK", f"Referent {i}", (Role.OFFICER,)) for i in range(CLERKS)]
    out += [(f"ksieg-{i}", "FK", f"Księgowa {i}", (Role.ACCOUNTS,)) for i in range(ACCOUNTANTS)]
    out += [(f"kier-{u}", f"SP{u}", f"Kierownik gospodarczy {u}", (Role.SUBSTANTIVE,))
            for u in range(UNITS)]
    return out


def _hex(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def matter_steps(n: int, tag: str) -> list[dict[str, Any]]:
    """One cost document through the five-step path (the import's and the live path's)."""
    clerk, unit = f"ref-{n % CLERKS}", n % UNITS
    first, second = n % ACCOUNTANTS, (n + 1) % ACCOUNTANTS
    return [
        {"op": "register", "as": "kanc", "document": _hex(tag, "invoice", n), "channel": "ksef",
         "kind": "invoice", "attachments": 1, "sender_ref": f"FV/{tag}/{n}"},
        {"op": "assign", "as": "dyr", "to": clerk},
        {"op": "open-case", "as": clerk, "unit": "FK", "class": "3026", "kind": "cost"},
        {"op": "attach", "as": clerk, "document": _hex(tag, "order", n), "kind": "order"},
        {"op": "accept", "as": f"kier-{unit}", "step": "substantive"},
        {"op": "accept", "as": f"ksieg-{first}", "step": "formal"},
        {"op": "accept", "as": f"ksieg-{second}", "step": "coding", "accounts": "Wn 401 / Ma 201"},
        {"op": "accept", "as": "gk", "step": "countersign"},
        {"op": "accept", "as": "dyr", "step": "approve"},
        {"op": "close", "as": clerk},
    ]


# ------------------------------------------------------------------------ processes


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except (urllib.error.URLError, OSError):
        return 0


def _wait(url: str, procs: list[subprocess.Popen[bytes]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _get(url) != 200:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: a process exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready")
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running(root: Path, workers: int) -> Iterator[tuple[str, Path]]:
    """A devnet, an office store, and the service over them: yields (service URL, data dir)."""
    base = free_base_port(N)
    devnet = init_devnet(root / "devnet", nodes=N, base_port=base,
                         genesis_time_ms=int(time.time() * 1000))
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        for i, (_, config) in enumerate(devnet.configs):
            log = open(root / f"node{i + 1}.log", "ab")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen(node_command(config), stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, env=env))
            log.close()
        node = devnet.urls[0][1]
        _wait(node + "/readyz", procs, "the devnet", 120)
        data = root / "office"
        ca = SigningIdentity(name="ca", key=Ed25519Key(hashlib.sha256(b"bench ca").digest()))
        record = OfficeRecord.sign(office=OFFICE, name="Centrum Usług Wspólnych (bench)",
                                   zone="Europe/Warsaw", ca=ca.key)
        store = OfficeStore.create(data, record=record, ca=ca,
                                   policy_text=devnet.policy_file.read_text(),
                                   paths_text=default_paths_text(),
                                   jrwa_text=default_jrwa_text())
        office = Office(store, None, clock=lambda: int(time.time()))
        for position, unit, title, roles in positions():
            office.issue_position(position=position, unit=unit, title=title, roles=roles)
        store.close()
        (root / "backend.token").write_text(TOKEN)
        (root / "admin.token").write_text(ADMIN)
        port = free_base_port(1)
        (root / "service.toml").write_text(
            f'listen = "127.0.0.1:{port}"\nworkers = {workers}\n'
            "[status]\nrate = 1000000.0\nburst = 1000000.0\n"
            f'[[office]]\nid = "{OFFICE}"\ndata_dir = "office"\nnode = "{node}"\n'
            f'token_file = "{devnet.directory / "client-token"}"\n'
            '[[office.client]]\nname = "backend"\npositions = ["*"]\n'
            'token_file = "backend.token"\n'
            '[[office.client]]\nname = "admin"\nadmin = true\ntoken_file = "admin.token"\n'
        )
        log = open(root / "service.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "eod", "serve", "--config",
             str(root / "service.toml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env))
        log.close()
        url = f"http://127.0.0.1:{port}"
        _wait(url + "/healthz", procs, "the service", 60)
        yield url, data
    finally:
        _stop(procs)


# ---------------------------------------------------------------------------- phases


async def import_phase(url: str, documents: int, batch: int, clients: int) -> tuple[int, float]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    batches = [list(range(start, min(start + batch, documents)))
               for start in range(0, documents, batch)]
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    done = 0
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=1800)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while not queue.empty():
            numbers = queue.get_nowait()
            items = [{"id": f"FV/{n}", "steps": matter_steps(n, "year")} for n in numbers]
            async with session.post(url + f"/v1/offices/{OFFICE}/import", json={"items": items},
                                    headers=headers) as response:
                body = await response.json()
                if response.status != 201:
                    raise RuntimeError(f"import refused: {response.status} {body}")
            done += len(numbers)
            elapsed = time.perf_counter() - started
            print(f"  imported {done:>7,} documents, {done * 10 / elapsed:,.0f} events/s",
                  file=sys.stderr, flush=True)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    return done * 10, time.perf_counter() - started


def _verify_chunk(args: tuple[str, list[str]]) -> int:
    from ledger.eod.trail import verify_trail

    data, signs = args
    store = OfficeStore.open(Path(data))
    office = Office(store, None, clock=lambda: int(time.time()))
    policy = office.policy
    try:
        for sign in signs:
            bundle = office.trail(sign)
            trail = verify_trail(json.dumps(bundle, ensure_ascii=False).encode(), policy=policy)
            assert trail.case == sign and len(trail.entries) == 10, sign
    finally:
        store.close()
    return len(signs)


def verify_phase(data: Path, jobs: int) -> tuple[int, float]:
    store = OfficeStore.open(data)
    signs = [s for s, _ in store.cases()]
    store.close()
    chunk = 500
    parts = [(str(data), signs[i:i + chunk]) for i in range(0, len(signs), chunk)]
    started = time.perf_counter()
    done = 0
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for n in pool.imap_unordered(_verify_chunk, parts):
            done += n
    return done, time.perf_counter() - started


async def latency_phase(url: str, clients: int, steps: int) -> tuple[list[float], list[float]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    step_times: list[float] = []
    lookup_times: list[float] = []

    async def client(session: aiohttp.ClientSession, c: int) -> None:
        done = 0
        n = 0
        codes: list[tuple[str, str]] = []
        while done < steps:
            ref: str | None = None
            for body in matter_steps(c * 1000 + n, "live"):
                if done >= steps:
                    break
                op = body.pop("op")
                if ref is not None:
                    body["ref"] = ref
                t0 = time.perf_counter()
                async with session.post(url + f"/v1/offices/{OFFICE}/steps/{op}", json=body,
                                        headers=headers) as response:
                    result = await response.json()
                    if response.status != 201:
                        raise RuntimeError(f"{op} refused: {response.status} {result}")
                step_times.append(time.perf_counter() - t0)
                done += 1
                if op == "register":
                    ref = result["register"]
                    codes.append((result["register"],
                                  result["receipt"]["status_lookup"]["access_code"]))
                if result.get("case"):
                    ref = result["case"]
                register, code = codes[-1]
                t0 = time.perf_counter()
                async with session.post(url + f"/v1/offices/{OFFICE}/status",
                                        json={"register": register, "code": code}) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"status lookup: {response.status}")
                lookup_times.append(time.perf_counter() - t0)
            n += 1

    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(session, c) for c in range(clients)))
    return step_times, lookup_times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--import-clients", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20, help="live steps per client")
    parser.add_argument("--workers", type=int, default=64, help="the service's threads")
    parser.add_argument("--verify-jobs", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.batch, args.clients, args.steps = 600, 200, 20, 5
    root = Path(tempfile.mkdtemp(prefix="bench-eod-"))
    print(f"bench/eod.py: {args.documents:,} cost documents (10 events each), "
          f"{args.clients} live clients x {args.steps} steps; files in {root}")
    try:
        with running(root, args.workers) as (url, data):
            events, seconds = asyncio.run(
                import_phase(url, args.documents, args.batch, args.import_clients))
            print(f"import:   {events:,} events ({args.documents:,} documents, "
                  f"{args.documents:,} attachments) in {seconds:.1f} s = "
                  f"{events / seconds:,.0f} events/s")
            trails, seconds = verify_phase(data, args.verify_jobs)
            print(f"verify:   {trails:,} trails verified offline in {seconds:.1f} s = "
                  f"{trails / seconds:,.0f} trails/s")
            if trails != args.documents:
                raise SystemExit(f"only {trails} of {args.documents} trails verified")
            steps, lookups = asyncio.run(latency_phase(url, args.clients, args.steps))
            print(f"step:     p50 {_pct(steps, 0.5):,.0f} ms, p99 {_pct(steps, 0.99):,.0f} ms "
                  f"({len(steps):,} steps, {args.clients} concurrent clients, mean "
                  f"{statistics.mean(steps) * 1000:,.0f} ms)")
            print(f"lookup:   p50 {_pct(lookups, 0.5):,.1f} ms, p99 "
                  f"{_pct(lookups, 0.99):,.1f} ms ({len(lookups):,} status lookups)")
            print("== done ==")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
