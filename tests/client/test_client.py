"""ledger.client against a tiny aiohttp server on 127.0.0.1: results, errors, receipt checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from ledger.client import (
    AnchorResult,
    BadRequestError,
    BadResponseError,
    ForbiddenError,
    HttpError,
    HttpNotFoundError,
    LedgerClient,
    PendingError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnavailableError,
    parse_metrics,
)
from ledger.crypto import ValidatorKeys
from ledger.errors import MalformedError, NotFoundError, VerificationError
from ledger.policy import parse_policy
from ledger.prover import LocalLog
from ledger.storage.memory import MemoryStore

TOKEN = "s3cret-token"
ORIGIN = "client.example.org/log"
VALIDATORS = [
    ValidatorKeys(name=f"v{i}", origin=ORIGIN, seed=hashlib.sha256(b"client %d" % i).digest())
    for i in range(4)
]
POLICY = parse_policy(LocalLog(MemoryStore(), validators=VALIDATORS).trust_policy())


def digest(i: int) -> bytes:
    return hashlib.sha256(b"document %d" % i).digest()


Handler = Callable[[web.Request], Any]


@dataclass
class FakeNode:
    """A node stand-in: a real LocalLog issues the receipts; tests can override any route."""

    log: LocalLog = field(default_factory=lambda: LocalLog(MemoryStore(), validators=VALIDATORS))
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    override: Handler | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path_qs, dict(request.headers), body))
        if self.override is not None:
            result: web.StreamResponse = await self.override(request)
            return result
        if request.path == "/v1/anchors" and request.method == "POST":
            return self.anchors(request, body)
        if request.path.startswith("/v1/proofs/"):
            raw = bytes.fromhex(request.match_info["tail"].removeprefix("v1/proofs/"))
            try:
                return web.Response(text=self.log.prove(raw))
            except NotFoundError as exc:
                return error(404, "not_found", str(exc))
        if request.path == "/readyz":
            return web.json_response({"ready": True})
        if request.path == "/v1/status":
            return web.json_response({"height": 3, "ready": True})
        if request.path == "/metrics":
            return web.Response(text='# HELP x\nledger_height 3\nledger_lat{le="0.5"} 1 123\n')
        return error(404, "not_found", "no such route")

    def anchors(self, request: web.Request, body: bytes) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return error(401, "unauthorized", "missing or unknown bearer token")
        digests = [bytes.fromhex(d) for d in json.loads(body)["digests"]]
        indices = self.log.append(digests)
        self.log.checkpoint(timestamp=1_700_000_000)
        wait = request.query.get("wait") == "true"
        return web.json_response(
            {
                "anchors": [
                    {
                        "digest": d.hex(),
                        "status": "anchored",
                        "index": i,
                        "receipt": self.log.prove(d) if wait else None,
                    }
                    for d, i in zip(digests, indices, strict=True)
                ]
            },
            status=200 if wait else 202,
        )


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@pytest.fixture
def node() -> Iterator[tuple[FakeNode, str]]:
    """Run a FakeNode on 127.0.0.1 (a free port) in a thread with its own event loop."""
    fake = FakeNode()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def client(url: str, **kwargs: Any) -> LedgerClient:
    return LedgerClient(url, TOKEN, timeout=10, **kwargs)


# ---------------------------------------------------------------------------------- results


def test_anchor_returns_verified_receipts_in_order(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with client(url, policy=POLICY) as c:
        results = c.anchor([digest(0), digest(1).hex(), digest(0)])
    assert [(r.digest, r.index, r.status) for r in results] == [
        (digest(0), 0, "anchored"),
        (digest(1), 1, "anchored"),
        (digest(0), 0, "anchored"),  # re-anchoring keeps the first index
    ]
    assert all(r.receipt is not None for r in results)
    method, path, headers, body = fake.requests[0]
    assert (method, path) == ("POST", "/v1/anchors?wait=true")
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(body) == {"digests": [digest(0).hex(), digest(1).hex(), digest(0).hex()]}


def test_anchor_splits_long_lists_and_keeps_the_connection(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with client(url) as c:
        results = c.anchor([digest(i) for i in range(5)], batch_size=2)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [len(json.loads(body)["digests"]) for *_, body in fake.requests] == [2, 2, 1]


def test_anchor_without_wait(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with client(url) as c:
        [result] = c.anchor([digest(7)], wait=False)
    assert result == AnchorResult(digest=digest(7), status="anchored", index=0, receipt=None)
    assert fake.requests[0][1] == "/v1/anchors"


def test_proof_checkpoint_status_metrics(node: tuple[FakeNode, str]) -> None:
    _, url = node
    with client(url, policy=POLICY) as c:
        c.anchor([digest(1)])
        assert c.proof(digest(1).hex()).startswith("c2sp.org/tlog-proof@v1\n")
        assert c.ready() is True
        assert c.status() == {"height": 3, "ready": True}
        assert dict(parse_metrics(c.metrics())) == {
            "ledger_height": 3.0,
            'ledger_lat{le="0.5"}': 1.0,
        }


def test_malformed_digests_are_refused_before_any_request(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with client(url) as c:
        for bad in (b"short", "zz" * 32, "ab" * 31):
            with pytest.raises(MalformedError):
                c.anchor([digest(0), bad])
            with pytest.raises(MalformedError):
                c.proof(bad)
    assert fake.requests == []


# ----------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "code", "cls", "also"),
    [
        (400, "invalid_hex", BadRequestError, MalformedError),
        (401, "unauthorized", UnauthorizedError, HttpError),
        (403, "forbidden", ForbiddenError, HttpError),
        (404, "not_found", HttpNotFoundError, NotFoundError),
        (413, "body_too_large", BadRequestError, MalformedError),
        (500, "internal", ServerError, HttpError),
        (503, "overloaded", UnavailableError, ServerError),
        (418, "teapot", HttpError, HttpError),
    ],
)
def test_http_errors_map_to_classes_with_the_servers_code(
    node: tuple[FakeNode, str], status: int, code: str, cls: type, also: type
) -> None:
    fake, url = node

    async def failing(request: web.Request) -> web.Response:
        return error(status, code, f"message for {status}")

    fake.override = failing
    with client(url) as c, pytest.raises(cls) as info:
        c.anchor([digest(0)])
    exc = info.value
    assert type(exc) is cls and isinstance(exc, also)
    assert (exc.status, exc.code, exc.message) == (status, code, f"message for {status}")
    assert f"HTTP {status} {code}" in exc.diagnostics()


def test_real_auth_failure_and_non_json_error_body(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with LedgerClient(url, "wrong", timeout=10) as c, pytest.raises(UnauthorizedError):
        c.anchor([digest(0)])

    async def html(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    fake.override = html
    with client(url) as c, pytest.raises(ServerError) as info:
        c.checkpoint()
    assert (info.value.status, info.value.code) == (502, "http_502")


def test_proof_pending_and_unknown(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    with client(url) as c, pytest.raises(HttpNotFoundError):
        c.proof(digest(5))

    async def pending(request: web.Request) -> web.Response:
        return web.json_response({"digest": digest(5).hex(), "status": "committed"}, status=202)

    fake.override = pending
    with client(url) as c, pytest.raises(PendingError):
        c.proof(digest(5))


def test_wait_that_timed_out_is_pending(node: tuple[FakeNode, str]) -> None:
    fake, url = node

    async def timed_out(request: web.Request) -> web.Response:
        entry = {"digest": digest(0).hex(), "status": "committed", "index": 0, "receipt": None}
        return web.json_response({"anchors": [entry], "timed_out": True}, status=202)

    fake.override = timed_out
    with client(url) as c, pytest.raises(PendingError, match="1 of 1"):
        c.anchor([digest(0)])


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"anchors": []}',
        b'{"anchors": [{"digest": "%s", "status": "anchored", "index": 0, "receipt": "x"}]}'
        % digest(9).hex().encode(),
        b'{"anchors": [{"digest": "%s", "status": "anchored", "index": "0", "receipt": "x"}]}'
        % digest(0).hex().encode(),
        b'{"anchors": [{"digest": "%s", "status": "pending", "index": null, "receipt": null}]}'
        % digest(0).hex().encode(),
    ],
    ids=["not-json", "not-object", "wrong-count", "wrong-digest", "index-type", "no-receipt"],
)
def test_answers_that_break_the_api_are_bad_responses(
    node: tuple[FakeNode, str], payload: bytes
) -> None:
    fake, url = node

    async def broken(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/json")

    fake.override = broken
    with client(url) as c, pytest.raises(BadResponseError):
        c.anchor([digest(0)])


def test_a_receipt_that_does_not_verify_is_refused(node: tuple[FakeNode, str]) -> None:
    fake, url = node
    other = LocalLog(
        MemoryStore(),
        validators=[ValidatorKeys(name=v.name, origin=ORIGIN, seed=bytes([i + 1]) * 32)
                    for i, v in enumerate(VALIDATORS)],
    )  # fmt: skip
    other.append([digest(0)])
    other.checkpoint(timestamp=1_700_000_000)
    forged = other.prove(digest(0))

    async def forging(request: web.Request) -> web.Response:
        if request.path.startswith("/v1/proofs/"):
            return web.Response(text=forged)
        entry = {"digest": digest(0).hex(), "status": "anchored", "index": 0, "receipt": forged}
        return web.json_response({"anchors": [entry]})

    fake.override = forging
    with client(url, policy=POLICY) as c:
        with pytest.raises(VerificationError):
            c.anchor([digest(0)])
        with pytest.raises(VerificationError):
            c.proof(digest(0))
    with client(url) as c:  # without a policy the client cannot tell
        assert c.proof(digest(0)) == forged


def test_unreachable_node_is_a_transport_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with LedgerClient(f"http://127.0.0.1:{port}", timeout=5) as c, pytest.raises(TransportError):
        c.ready()


def test_bad_base_urls_and_tokens() -> None:
    for bad in ("127.0.0.1:7000", "ftp://x", "http://", "http://x:99999", "http://x/?q=1"):
        with pytest.raises(MalformedError):
            LedgerClient(bad)
    with pytest.raises(MalformedError):
        LedgerClient("http://x", "a\r\nInjected: 1")
