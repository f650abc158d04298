"""The verification page (issue 5 item 6) in headless Chromium, against real receipts.

What it protects:

* the page says VALID with the leaf index, tree size, origin, cosignature count and the time
  bound for a good receipt, and INVALID with the reason for a tampered receipt or the wrong
  document, in Polish and in English;
* the document never leaves the browser: every request the page makes is recorded on both
  sides (the browser's network log and our server's access log) and none is anything but a GET
  of the page's assets or of /v1/policy, and none carries the document, its digest or a body;
* the page works opened from disk, with the policy from a file, and makes no request then;
* the JavaScript verifier agrees with ``ledger.receipt.verify_receipt`` on the same receipts:
  the verdict, the kind of failure (malformed or verification) and the reason, word for word,
  for the valid receipt and for each tampering; likewise the policy parser and strict base64.

The browser is Debian's ``chromium`` driven over the DevTools protocol by ``tests/web/cdp.py``
(aiohttp websockets, no new dependency). Without Chromium the whole module is skipped with a
reason that ``make test`` prints (pytest ``-ra``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from notes.ground import BASE_TIME, validator

from ledger.checkpoint import cosign, parse_checkpoint_body
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, b64decode_strict
from ledger.errors import MalformedError, VerificationError
from ledger.node.verify_page import CONTENT_SECURITY_POLICY, VERIFY_ASSETS, add_verify_routes
from ledger.note import Note, Signature, Verifier, parse_note
from ledger.policy import parse_policy
from ledger.prover import LocalLog, trust_policy
from ledger.receipt import Receipt, parse_receipt, verify_receipt
from ledger.storage.memory import MemoryStore

from .cdp import Browser, Page

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium"),
    pytest.mark.slow,
]

STATIC = Path(__file__).resolve().parents[2] / "ledger" / "static"
T = TypeVar("T")

# A document with a marker that would be visible in any request that carried it.
DOCUMENT = (
    b"%PDF-1.7\n% Faktura VAT FV/2024/05/0017 - Centrum Usug Wsplnych\n"
    + bytes(range(256))
    + b"\nDOCUMENT-MARKER-5b1e9f0c-never-on-the-wire\n"
)
OTHER_DOCUMENT = b"%PDF-1.7\n% Faktura VAT FV/2024/05/0018\n"
# Cosignature times out of order: with f = 1 the bound is the second smallest, BASE_TIME + 10.
STAMPS = [BASE_TIME + 30, BASE_TIME + 10, BASE_TIME + 20, BASE_TIME]
LEAF_INDEX = 6
TREE_SIZE = 11


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- the ledger


@dataclass
class Scenario:
    log: LocalLog
    policy_text: str
    digest: bytes
    receipt: str
    files: dict[str, Path] = field(default_factory=dict)


def make_scenario(directory: Path) -> Scenario:
    """Four validators, eleven leaves, the document at index 6, one cosigned checkpoint."""
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    digest = hashlib.sha256(DOCUMENT).digest()
    others = [hashlib.sha256(f"other document {i}".encode()).digest() for i in range(10)]
    log.append([*others[:LEAF_INDEX], digest, *others[LEAF_INDEX:]])
    log.checkpoint(timestamp=STAMPS)
    scenario = Scenario(
        log=log, policy_text=log.trust_policy(), digest=digest, receipt=log.prove(digest)
    )
    contents = {
        "document": DOCUMENT,
        "other": OTHER_DOCUMENT,
        "receipt": scenario.receipt.encode(),
        "tampered": flip_proof_bit(scenario.receipt).encode(),
        "policy": scenario.policy_text.encode(),
    }
    names = {
        "document": "faktura.pdf",
        "other": "faktura-2.pdf",
        "receipt": "faktura.tlog-proof",
        "tampered": "tampered.tlog-proof",
        "policy": "ledger.policy",
    }
    for key, data in contents.items():
        path = directory / names[key]
        path.write_bytes(data)
        scenario.files[key] = path
    return scenario


# ------------------------------------------------------------------------- tamperings


def _with_receipt(text: str, **changes: Any) -> str:
    r = parse_receipt(text)
    fields = {"index": r.index, "proof": r.proof, "checkpoint": r.checkpoint, "extra": r.extra}
    fields.update(changes)
    return Receipt(**fields).format()


def _with_signatures(text: str, edit: Any) -> str:
    r = parse_receipt(text)
    note = parse_note(r.checkpoint)
    signatures = edit(list(note.signatures))
    return _with_receipt(
        text, checkpoint=Note(text=note.text, signatures=tuple(signatures)).format()
    )


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def flip_proof_bit(text: str) -> str:
    r = parse_receipt(text)
    return _with_receipt(text, proof=(_flip(r.proof[0], 5), *r.proof[1:]))


def _replace_body_line(text: str, number: int, value: str) -> str:
    r = parse_receipt(text)
    note = parse_note(r.checkpoint)
    lines = note.text.split("\n")
    lines[number] = value
    raw = Note(text="\n".join(lines), signatures=note.signatures).format()
    header = text[: len(text) - len(r.checkpoint)]
    return header + raw


def _corrupt_signature(i: int, at: int) -> Any:
    def edit(sigs: list[Signature]) -> list[Signature]:
        s = sigs[i]
        sigs[i] = Signature(name=s.name, key_id=s.key_id, signature=_flip(s.signature, at))
        return sigs

    return edit


def _resize_signature(i: int, size: int) -> Any:
    def edit(sigs: list[Signature]) -> list[Signature]:
        s = sigs[i]
        blob = (s.signature + bytes(8))[:size]
        sigs[i] = Signature(name=s.name, key_id=s.key_id, signature=blob)
        return sigs

    return edit


def _huge_timestamp(sigs: list[Signature]) -> list[Signature]:
    s = sigs[1]
    sigs[1] = Signature(name=s.name, key_id=s.key_id, signature=b"\x80" + s.signature[1:])
    return sigs


def _foreign_cosignature(scenario: Scenario) -> Any:
    """A valid cosignature by a key the policy does not list: must be ignored."""
    stranger = validator(9, tag="stranger")
    body = parse_receipt(scenario.receipt).checkpoint
    cp = parse_checkpoint_body(parse_note(body).text)

    def edit(sigs: list[Signature]) -> list[Signature]:
        return [*sigs, cosign(cp, name=stranger.name, key=stranger.cosigner_key, timestamp=1)]

    return edit


def _lookalike_cosignature(sigs: list[Signature]) -> list[Signature]:
    """Same name as v1 but another key (so another key ID): an unknown key, ignored."""
    s = sigs[1]
    other = validator(1, tag="lookalike")
    kid = Verifier.for_key(
        name=s.name, sig_type=SIG_TYPE_COSIGNATURE_V1, public_key=other.cosigner_key.public_key
    ).key_id
    return [*sigs, Signature(name=s.name, key_id=kid, signature=s.signature)]


def _policy_variant(scenario: Scenario, group: str) -> str:
    lines = [
        line if not line.startswith("group ") else group
        for line in scenario.policy_text.split("\n")
    ]
    return "\n".join(lines)


def cross_check_cases(scenario: Scenario) -> list[tuple[str, bytes, str, bytes]]:
    """(name, receipt bytes, policy text, digest): the valid receipt and every tampering."""
    good = scenario.receipt
    policy = scenario.policy_text
    digest = scenario.digest
    r = parse_receipt(good)
    names = " ".join(v.name for v in scenario.log.validators)
    foreign = trust_policy([validator(i, tag="foreign") for i in range(1, 5)])
    nested = _policy_variant(
        scenario,
        "group a 1 v1.example.org v2.example.org\ngroup b 2 v3.example.org v4.example.org\n"
        "group top all a b",
    ).replace("quorum validators", "quorum top")
    cases: list[tuple[str, str | bytes, str, bytes]] = []

    def case(name: str, receipt: str | bytes, policy: str = policy, digest: bytes = digest) -> None:
        cases.append((name, receipt, policy, digest))

    def signatures(edit: Any) -> str:
        return _with_signatures(good, edit)

    any_group = _policy_variant(scenario, f"group validators any {names}")
    index_line = f"index {LEAF_INDEX}"
    case("valid", good)
    case("valid with extra data", _with_receipt(good, extra=b"office ref 17"))
    case("wrong document", good, digest=hashlib.sha256(OTHER_DOCUMENT).digest())
    case("proof bit flipped", flip_proof_bit(good))
    case("index moved", _with_receipt(good, index=LEAF_INDEX + 1))
    case("index beyond size", _with_receipt(good, index=TREE_SIZE))
    case("proof hash dropped", _with_receipt(good, proof=r.proof[:-1]))
    case("proof hash added", _with_receipt(good, proof=(*r.proof, r.proof[0])))
    case("size changed", _replace_body_line(good, 1, str(TREE_SIZE + 1)))
    case("root changed", _replace_body_line(good, 2, base64.b64encode(bytes(32)).decode()))
    case("log signature corrupted", signatures(_corrupt_signature(0, 3)))
    case("cosignature corrupted", signatures(_corrupt_signature(2, 20)))
    case("cosignature time changed", signatures(_corrupt_signature(3, 7)))
    case("cosignature time above 2^63-1", signatures(_huge_timestamp))
    case("cosignature truncated", signatures(_resize_signature(1, 71)))
    case("log signature too long", signatures(_resize_signature(0, 65)))
    case("log signature removed", signatures(lambda s: s[1:]))
    case("quorum short", signatures(lambda s: s[:3]))
    case("cosignature twice", signatures(lambda s: [*s, s[1]]))
    case("foreign cosignature ignored", signatures(_foreign_cosignature(scenario)))
    case("lookalike key ignored", signatures(_lookalike_cosignature))
    case("foreign policy", good, policy=foreign)
    case(
        "quorum none",
        good,
        policy=_policy_variant(scenario, "").replace("quorum validators", "quorum none"),
    )
    case(
        "quorum one witness",
        good,
        policy=policy.replace("quorum validators", "quorum v3.example.org"),
    )
    case("group any: f = 3", good, policy=any_group)
    case("group any, two cosignatures: time unbounded", signatures(lambda s: s[:3]), any_group)
    case("nested groups", good, policy=nested)
    case("nested groups short", signatures(lambda s: s[:4]), policy=nested)
    case("bad header", good.replace("tlog-proof@v1", "tlog-proof@v2", 1))
    case("not UTF-8", good.encode() + b"\xff")
    case("BOM", b"\xef\xbb\xbf" + good.encode())
    case("truncated", "c2sp.org/tlog-proof@v1\nindex 6")
    case("no index", good.replace("index ", "idx ", 1))
    case("index leading zero", good.replace(index_line, f"index 0{LEAF_INDEX}", 1))
    case("index 2^64", good.replace(index_line, f"index {1 << 64}", 1))
    case("proof hash not canonical", good.replace("=\n", "\n", 1))
    case("proof hash short", _with_receipt_raw_hash(good, base64.b64encode(bytes(31)).decode()))
    case("extra not base64", good.replace("\nindex", "\nextra !!\nindex", 1))
    case("checkpoint without signatures", _strip_signatures(good))
    case("signature line without dash", good.replace("\u2014 ", "- ", 1))
    case("size with leading zero", _replace_body_line(good, 1, "011"))
    case("control character", good.replace("\n\n\u2014", "\n\x07\n\n\u2014", 1))
    return [(n, t.encode() if isinstance(t, str) else t, p, d) for n, t, p, d in cases]


def _with_receipt_raw_hash(text: str, value: str) -> str:
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("index ")) + 1
    lines[at] = value
    return "\n".join(lines)


def _strip_signatures(text: str) -> str:
    r = parse_receipt(text)
    return text[: len(text) - len(r.checkpoint)] + parse_note(r.checkpoint).text


def python_verdict(receipt: bytes, policy_text: str, digest: bytes) -> dict[str, Any]:
    try:
        result = verify_receipt(receipt, parse_policy(policy_text.encode()), digest)
    except MalformedError as exc:
        return {"valid": False, "kind": "malformed", "reason": exc.diagnostics()}
    except VerificationError as exc:
        return {"valid": False, "kind": "verification", "reason": exc.diagnostics()}
    return {
        "valid": True,
        "index": str(result.index),
        "size": str(result.size),
        "origin": result.origin,
        "root": result.root.hex(),
        "cosigners": list(result.cosigners),
        "time_bound": str(result.time_bound),
    }


# ------------------------------------------------------------------------ the harness


class Harness:
    """An event loop in a thread holding our HTTP server and the browser; tests stay sync."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server_log: list[dict[str, Any]] = []
        self.base = ""
        self.browser: Browser | None = None
        self.page: Page | None = None
        self._runner: web.AppRunner | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self, profile: Path) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.server_log.append(
                {
                    "method": request.method,
                    "path": request.path_qs,
                    "headers": dict(request.headers),
                    "body": await request.read(),
                }
            )
            return await handler(request)

        async def policy(request: web.Request) -> web.Response:
            return web.Response(text=self.scenario.policy_text, content_type="text/plain")

        app = web.Application(middlewares=[record])
        add_verify_routes(app)
        app.router.add_get("/v1/policy", policy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        assert CHROMIUM is not None
        self.browser = await Browser.launch(CHROMIUM, profile)
        self.page = await self.browser.new_page()
        # The page opens in the browser's language: this test browser speaks Polish, as an
        # office's would (tests/web/test_verify_trail.py tries other languages).
        await self.page.send(
            "Network.setUserAgentOverride",
            {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) headless", "acceptLanguage": "pl-PL,pl"},
        )

    async def stop(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def close(self) -> None:
        try:
            self.run(self.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    directory = tmp_path_factory.mktemp("verify-page")
    h = Harness(make_scenario(directory))
    try:
        h.run(h.start(directory / "profile"))
        yield h
    finally:
        h.close()


# ------------------------------------------------------------------------ page actions


async def open_page(h: Harness, url: str) -> int:
    """Navigate; return the event mark from which this visit's requests are counted."""
    assert h.page is not None
    mark = len(h.page.events)
    await h.page.navigate(url)
    await h.page.wait_for("document.body.dataset.ready === 'true'")
    await h.page.wait_for("document.body.dataset.policyLoaded === 'true'")
    return mark


async def verify(h: Harness, document: Path, receipt: Path) -> dict[str, Any]:
    """Choose the files, press the button, wait for the verdict, read what the page shows."""
    page = h.page
    assert page is not None
    await page.set_files("#document", [document])
    await page.set_files("#receipt", [receipt])
    before = int(await page.evaluate("document.getElementById('result').dataset.run"))
    await page.evaluate("document.getElementById('verify').click()")
    await page.wait_for(
        f"(() => {{ const r = document.getElementById('result');"
        f" return Number(r.dataset.run) > {before} && r.dataset.state !== 'busy'; }})()"
    )
    return await read_result(h)


async def read_result(h: Harness) -> dict[str, Any]:
    assert h.page is not None
    shown: dict[str, Any] = await h.page.evaluate(
        """(() => {
            const r = document.getElementById('result');
            const text = (id) => {
              const row = document.getElementById(id + '-row');
              return row && !row.hidden ? document.getElementById(id).textContent : null;
            };
            return {
              state: r.dataset.state, kind: r.dataset.kind, hidden: r.hidden,
              title: document.getElementById('result-title').textContent,
              reason: document.getElementById('reason').textContent,
              digest: text('digest'), index: text('index'), size: text('size'),
              origin: text('origin'), cosigners: text('cosigners'),
              time: text('time-bound'), lang: document.documentElement.lang,
            };
        })()"""
    )
    return shown


async def set_language(h: Harness, lang: str) -> None:
    assert h.page is not None
    await h.page.evaluate(f"document.getElementById('lang-{lang}').click()")


def assert_no_page_errors(h: Harness, mark: int) -> None:
    """No script error, console error or Content-Security-Policy violation since ``mark``."""
    assert h.page is not None
    problems = [
        (method, params)
        for method, params in h.page.events[mark:]
        if method == "Runtime.exceptionThrown"
        or (method == "Runtime.consoleAPICalled" and params.get("type") == "error")
        or (method == "Log.entryAdded" and params["entry"].get("level") == "error")
    ]
    assert not problems, problems


def assert_no_leak(h: Harness, mark: int, server_mark: int) -> None:
    """Every request since ``mark`` is a bodiless GET of the page or the policy, same origin,
    and none mentions the document, its digest or its content."""
    assert h.page is not None
    digest = h.scenario.digest
    needles = [
        DOCUMENT[-40:],
        digest.hex().encode(),
        digest.hex().upper().encode(),
        base64.b64encode(digest),
        base64.urlsafe_b64encode(digest).rstrip(b"="),
        b"DOCUMENT-MARKER",
    ]
    allowed = {"/verify", "/verify/", "/v1/policy"} | {f"/verify/{name}" for name in VERIFY_ASSETS}
    # The page itself may be opened with ?lang=en; nothing else has a query.
    allowed |= {f"{page}?lang={lang}" for page in ("/verify", "/verify/") for lang in ("pl", "en")}
    browser_requests = [
        params for method, params in h.page.events[mark:] if method == "Network.requestWillBeSent"
    ]
    assert browser_requests, "the browser's network log is empty: the recorder is broken"
    for params in browser_requests:
        request = params["request"]
        url = request["url"]
        assert request["method"] == "GET", request
        assert not request.get("hasPostData") and "postData" not in request, request
        if url.startswith("file://"):
            continue
        assert url.startswith(h.base + "/"), f"request to another origin: {url}"
        path = url[len(h.base) :]
        assert path in allowed, f"unexpected request {url}"
        blob = json.dumps(request).encode()
        for needle in needles:
            assert needle not in blob, f"request {url} carries the document"
    for entry in h.server_log[server_mark:]:
        assert entry["method"] == "GET", entry
        assert entry["body"] == b"", entry
        assert entry["path"] in allowed, entry
        blob = json.dumps(entry["headers"]).encode() + entry["path"].encode()
        for needle in needles:
            assert needle not in blob, f"request {entry['path']} carries the document"


# ------------------------------------------------------------------------------ the tests


def test_valid_receipt_shows_index_size_origin_cosigners_and_time_bound(harness: Harness) -> None:
    h = harness
    s = h.scenario
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]:
        mark = await open_page(h, h.base + "/verify")
        assert h.page is not None
        policy = await h.page.evaluate("document.getElementById('policy-text').value")
        assert policy == s.policy_text, "the policy was not pre-filled from /v1/policy"
        polish = await verify(h, s.files["document"], s.files["receipt"])
        await set_language(h, "en")
        english = await read_result(h)
        csp = [
            params["response"]["headers"]
            for method, params in h.page.events[mark:]
            if method == "Network.responseReceived"
            and params["response"]["url"].endswith("/verify/")
        ]
        return mark, polish, english, csp[0]

    mark, polish, english, headers = h.run(scenario())
    expected = python_verdict(s.receipt.encode(), s.policy_text, s.digest)
    assert expected["valid"] and expected["time_bound"] == str(BASE_TIME + 10)

    assert polish["state"] == "valid" and polish["lang"] == "pl"
    assert polish["title"].startswith("WAŻNE")
    assert polish["index"] == str(LEAF_INDEX) == expected["index"]
    assert polish["size"] == str(TREE_SIZE) == expected["size"]
    assert polish["origin"] == s.log.origin
    assert polish["cosigners"] == "4 (" + ", ".join(expected["cosigners"]) + ")"
    assert polish["time"] == _utc(BASE_TIME + 10) == "2023-11-14T22:13:30Z"
    assert polish["digest"] == s.digest.hex()
    assert polish["reason"] == ""

    assert english["state"] == "valid" and english["lang"] == "en"
    assert english["title"].startswith("VALID")
    assert english["index"] == polish["index"] and english["time"] == polish["time"]

    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert_no_leak(h, mark, server_mark)
    assert_no_page_errors(h, mark)


@pytest.mark.parametrize(
    ("document", "receipt"),
    [("document", "tampered"), ("other", "receipt")],
    ids=["tampered-receipt", "wrong-document"],
)
def test_invalid_receipt_shows_the_reason(harness: Harness, document: str, receipt: str) -> None:
    h = harness
    s = h.scenario
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        mark = await open_page(h, h.base + "/verify/?lang=en")
        english = await verify(h, s.files[document], s.files[receipt])
        await set_language(h, "pl")
        polish = await read_result(h)
        return mark, english, polish

    mark, english, polish = h.run(scenario())
    expected = python_verdict(
        s.files[receipt].read_bytes(),
        s.policy_text,
        hashlib.sha256(s.files[document].read_bytes()).digest(),
    )
    assert not expected["valid"]
    assert expected["reason"] == (
        "digest is not in the checkpointed tree: inclusion proof does not lead to the expected root"
    )
    assert english["state"] == "invalid" and english["kind"] == "verification"
    assert english["title"] == "INVALID"
    assert english["reason"] == expected["reason"]
    assert english["index"] is None and english["time"] is None
    assert polish["title"] == "NIEWAŻNE"
    assert polish["reason"] == (
        "skrótu dokumentu nie ma w podpisanym drzewie: "
        "dowód włączenia nie prowadzi do oczekiwanego korzenia"
    )
    assert_no_leak(h, mark, server_mark)
    assert_no_page_errors(h, mark)


def test_page_works_from_disk_with_policy_file_and_no_network(harness: Harness) -> None:
    h = harness
    s = h.scenario
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any], str]:
        assert h.page is not None
        mark = await open_page(h, (STATIC / "verify.html").as_uri())
        await h.page.set_files("#policy-file", [s.files["policy"]])
        await h.page.wait_for(
            "document.getElementById('policy-text').value.startsWith('# Trust policy')"
        )
        source = await h.page.evaluate("document.getElementById('policy-source').textContent")
        return mark, await verify(h, s.files["document"], s.files["receipt"]), source

    mark, shown, source = h.run(scenario())
    assert source == "Polityka wczytana z pliku: ledger.policy"
    assert shown["state"] == "valid", shown
    assert shown["index"] == str(LEAF_INDEX) and shown["time"] == _utc(BASE_TIME + 10)
    assert h.server_log[server_mark:] == []
    assert h.page is not None
    for method, params in h.page.events[mark:]:
        if method == "Network.requestWillBeSent":
            assert params["request"]["url"].startswith("file://"), params["request"]["url"]
    assert_no_leak(h, mark, server_mark)
    assert_no_page_errors(h, mark)


def test_javascript_verifier_agrees_with_python_on_every_tampering(harness: Harness) -> None:
    h = harness
    cases = cross_check_cases(h.scenario)
    payload = json.dumps([[base64.b64encode(r).decode(), p, d.hex()] for _, r, p, d in cases])
    script = f"""(async () => {{
        const out = [];
        for (const [r, p, d] of {payload}) {{
            const bytes = Uint8Array.from(atob(r), (c) => c.charCodeAt(0));
            out.push(await LedgerVerify.check(bytes, p, d));
        }}
        return out;
    }})()"""

    async def scenario() -> list[dict[str, Any]]:
        assert h.page is not None
        await open_page(h, h.base + "/verify/")
        result: list[dict[str, Any]] = await h.page.evaluate(script)
        return result

    verdicts = h.run(scenario())
    mismatches = []
    for (name, receipt, policy, digest), js in zip(cases, verdicts, strict=True):
        py = python_verdict(receipt, policy, digest)
        if js != py:
            mismatches.append(f"{name}:\n  python {py}\n  js     {js}")
    assert not mismatches, "\n".join(mismatches)
    # The cases cover what they claim: valid ones, and each kind of failure.
    expected = [python_verdict(*c[1:]) for c in cases]
    assert {py["kind"] for py in expected if not py["valid"]} == {"malformed", "verification"}
    assert sum(py["valid"] for py in expected) == 7


POLICY_CASES = [
    "",
    "# only a comment\n",
    "quorum none\n",
    "logg x\n",
    "quorum a\n",
    "quorum none\nquorum none\n",
    "witness none {w1}\nquorum none\n",
    "witness a {w1}\nwitness a {w2}\nquorum a\n",
    "witness a {w1}\nwitness b {w1}\nquorum a\n",
    "log {w1}\nquorum none\n",
    "witness a {l1}\nquorum none\n",
    "log {l1}\nlog {l1}\nquorum none\n",
    "log {l1} https://example.org extra\nquorum none\n",
    "witness a {w1}\ngroup g 2 a\nquorum g\n",
    "witness a {w1}\ngroup g 0 a\nquorum g\n",
    "witness a {w1}\ngroup g 01 a\nquorum g\n",
    "witness a {w1}\ngroup g many a\nquorum g\n",
    "witness a {w1}\ngroup g all\nquorum g\n",
    "witness a {w1}\ngroup g any b\nquorum g\n",
    "witness a {w1}\ngroup g any a a\nquorum g\n",
    "witness a {w1}\ngroup g any a\ngroup h any a\nquorum h\n",
    "witness a {w1}\ngroup g any none\nquorum g\n",
    "witness a {w1}\r\nquorum a\n",
    "witness\ta\t{w1}\n\tquorum a  \n",
    "witness a {w1}\nquorum a b\n",
    "log x+1234abcd+AQ==\nquorum none\n",
    "log x+1234ABCD+{l1m}\nquorum none\n",
    "log {l1n}+00000000+{l1m}\nquorum none\n",
    "log {l1n}+{l1i}+{l1m}=\nquorum none\n",
    "log {l1n}+{l1i}+Ag{l1m_tail}\nquorum none\n",
    "log a\u3000b+{l1i}+{l1m}\nquorum none\n",
    "log {l1n}+{l1i}\nquorum none\n",
    "log {l1n}+{l1i}+{l1m}+extra\nquorum none\n",
]


def test_javascript_policy_parser_agrees_with_python(harness: Harness) -> None:
    h = harness
    v1, v2 = validator(1), validator(2)
    l1n, l1i, l1m = v1.log_vkey.split("+", 2)
    values = {
        "w1": v1.cosigner_vkey,
        "w2": v2.cosigner_vkey,
        "l1": v1.log_vkey,
        "l1n": l1n,
        "l1i": l1i,
        "l1m": l1m,
        "l1m_tail": l1m[2:],
    }
    texts = [case.format(**values) for case in POLICY_CASES] + [h.scenario.policy_text]

    def python(text: str) -> str:
        try:
            parse_policy(text.encode())
        except MalformedError as exc:
            return "malformed: " + exc.diagnostics()
        return "ok"

    script = f"""(async () => {{
        const out = [];
        for (const t of {json.dumps(texts)}) {{
            out.push(await LedgerVerify.parsePolicy(t).then(
                () => "ok", (e) => e.kind + ": " + e.message));
        }}
        return out;
    }})()"""

    async def scenario() -> list[str]:
        assert h.page is not None
        await open_page(h, h.base + "/verify/")
        result: list[str] = await h.page.evaluate(script)
        return result

    js = h.run(scenario())
    mismatches = [
        f"{text!r}:\n  python {python(text)}\n  js     {got}"
        for text, got in zip(texts, js, strict=True)
        if python(text) != got
    ]
    assert not mismatches, "\n".join(mismatches)


def test_javascript_strict_base64_agrees_with_python(harness: Harness) -> None:
    h = harness
    samples = [
        "",
        "AA==",
        "AAA=",
        "AAAA",
        "QQ==",
        "QR==",
        "QQ=",
        "QQ",
        "Q",
        "Q=",
        "A===",
        "AAAA=",
        "AAAA==",
        "AAA==",
        "AA===",
        "AAAAA==",
        "AA=A",
        "AA==AA==",
        "A A=",
        "AB-_",
        "ü",
        "AAAAAAAA",
        "AAAAAA=",
        "AAAAAAA==",
        base64.b64encode(bytes(range(32))).decode(),
    ]

    def python(text: str) -> str:
        try:
            return "ok " + b64decode_strict(text, what="proof hash").hex()
        except MalformedError as exc:
            return exc.diagnostics()

    script = f"""(() => {{
        const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
        return {json.dumps(samples)}.map((t) => {{
            try {{ return "ok " + hex(LedgerVerify.b64decodeStrict(t, "proof hash")); }}
            catch (e) {{ return e.message; }}
        }});
    }})()"""

    async def scenario() -> list[str]:
        assert h.page is not None
        await open_page(h, h.base + "/verify/")
        result: list[str] = await h.page.evaluate(script)
        return result

    js = h.run(scenario())
    assert js == [python(t) for t in samples]
