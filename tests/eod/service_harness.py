"""The EOD service in-process: two offices over one proving ground, served from a thread with
its own event loop on a free 127.0.0.1 port; and a small HTTP client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from notes.ground import validator

from eod.casework import POSITIONS, Clock
from ledger.crypto import Ed25519Key
from ledger.eod.anchor import Anchorer, LocalLogAnchorer
from ledger.eod.jrwa import default_jrwa_text
from ledger.eod.office import Office
from ledger.eod.paths import default_paths_text
from ledger.eod.pki import SigningIdentity
from ledger.eod.records import OfficeRecord
from ledger.eod.service import Client, OfficeConfig, ServiceConfig, build_app, token_digest
from ledger.eod.store import OfficeStore
from ledger.prover import LocalLog
from ledger.storage.memory import MemoryStore

TOKENS = {"cuw": "token-of-cuw-backend", "sp7": "token-of-sp7-backend",
          "cuw-admin": "token-of-cuw-admin", "cuw-kanc": "token-of-cuw-kancelaria"}


class SharedGround:
    """One LocalLog for every thread (the real ledger serialises appends too)."""

    def __init__(self, clock: Clock) -> None:
        self.log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
        self.inner = LocalLogAnchorer(self.log, clock=lambda: clock.now + 3)
        self.lock = threading.Lock()

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        with self.lock:
            return self.inner.anchor(digests)

    def checkpoint(self) -> str | None:
        with self.lock:
            return self.inner.checkpoint()

    def policy(self) -> str:
        return self.inner.policy()


def make_store(root: Path, office_id: str, ground: SharedGround, clock: Clock) -> None:
    ca = SigningIdentity(name="ca", key=Ed25519Key(hashlib.sha256(office_id.encode()).digest()))
    record = OfficeRecord.sign(office=office_id, name=f"Office {office_id}",
                               zone="Europe/Warsaw", ca=ca.key)
    store = OfficeStore.create(root, record=record, ca=ca, policy_text=ground.policy(),
                               paths_text=default_paths_text(), jrwa_text=default_jrwa_text())
    office = Office(store, ground, clock=clock)
    for position, (unit, title, roles) in POSITIONS.items():
        office.issue_position(position=position, unit=unit, title=title, roles=roles)
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    clock: Clock
    ground: SharedGround
    roots: dict[str, Path]

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "cuw",
             raw: bytes | None = None, content_type: str = "application/json",
             ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {TOKENS.get(token, token)}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
                status, headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            payload, status, headers = exc.read(), exc.code, dict(exc.headers)
        kind = headers.get("Content-Type", "")
        parsed = json.loads(payload) if kind.startswith("application/json") else payload
        return status, parsed, headers

    def step(self, step: str, body: dict[str, Any], *, office: str = "cuw",
             token: str = "cuw") -> Any:
        self.clock.tick()
        status, result, _ = self.call("POST", f"/v1/offices/{office}/steps/{step}", body,
                                      token=token)
        assert status == 201, (step, status, result)
        return result


@contextmanager
def running_service(
    tmp: Path,
    *,
    tweak: Callable[[ServiceConfig], None] | None = None,
    workers: int = 8,
) -> Iterator[Running]:
    clock = Clock()
    ground = SharedGround(clock)
    roots = {"cuw": tmp / "cuw", "sp7": tmp / "sp7"}
    for office_id, root in roots.items():
        make_store(root, office_id, ground, clock)

    def factory() -> tuple[Anchorer, Callable[[], None]]:
        return ground, lambda: None

    config = ServiceConfig(
        port=free_port(),
        workers=workers,
        offices=[
            OfficeConfig(id="cuw", data_dir=roots["cuw"], anchorer=factory, clock=clock,
                         clients=[
                             Client(name="cuw", office="cuw", positions=frozenset({"*"}),
                                    token_sha256=token_digest(TOKENS["cuw"])),
                             Client(name="cuw-admin", office="cuw", positions=frozenset(),
                                    admin=True, token_sha256=token_digest(TOKENS["cuw-admin"])),
                             Client(name="cuw-kanc", office="cuw",
                                    positions=frozenset({"kanc-1"}),
                                    token_sha256=token_digest(TOKENS["cuw-kanc"])),
                         ]),
            OfficeConfig(id="sp7", data_dir=roots["sp7"], anchorer=factory, clock=clock,
                         clients=[Client(name="sp7", office="sp7", positions=frozenset({"*"}),
                                         token_sha256=token_digest(TOKENS["sp7"]))]),
        ],
    )
    if tweak is not None:
        tweak(config)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            runner = web.AppRunner(build_app(config))
            await runner.setup()
            site = web.TCPSite(runner, config.host, config.port,
                               ssl_context=config.ssl_context())
            await site.start()
        except BaseException as exc:
            failure.append(exc)
            started.set()
            raise
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30)
    if failure:
        raise failure[0]
    scheme = "https" if config.tls_cert else "http"
    try:
        yield Running(url=f"{scheme}://127.0.0.1:{config.port}", clock=clock, ground=ground,
                      roots=roots)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def invoice_flow(svc: Running, n: int, *, office: str = "cuw", token: str = "cuw") -> str:
    """An invoice through registration, assignment, opening, attachment and the five steps."""
    invoice = hashlib.sha256(b"%s invoice %d" % (office.encode(), n)).hexdigest()
    order = hashlib.sha256(b"%s order %d" % (office.encode(), n)).hexdigest()
    kw = {"office": office, "token": token}
    reg = svc.step("register", {"as": "kanc-1", "document": invoice, "channel": "ksef",
                                "kind": "invoice", "attachments": 1, "sender_ref": f"FV/{n}"},
                   **kw)
    svc.step("assign", {"as": "dyr", "ref": reg["register"], "to": "ref-fk",
                        "deadline": "2024-03-20"}, **kw)
    case = svc.step("open-case", {"as": "ref-fk", "ref": reg["register"], "unit": "FK",
                                  "class": "3026", "kind": "cost"}, **kw)["case"]
    svc.step("attach", {"as": "ref-fk", "ref": case, "document": order, "kind": "contract"},
             **kw)
    for actor, step, extra in [("kier-sp", "substantive", {}), ("ksieg-1", "formal", {}),
                               ("ksieg-2", "coding", {"accounts": "Wn 401-01"}),
                               ("gk", "countersign", {}), ("dyr", "approve", {})]:
        svc.step("accept", {"as": actor, "ref": case, "step": step, **extra}, **kw)
    return str(case)
