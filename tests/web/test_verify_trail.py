"""The verification page with an EOD audit-trail bundle, in headless Chromium.

What it protects:

* a real trail bundle (``ledger.eod`` over ``ledger.prover.LocalLog`` receipts, the cost-document
  path of ``tests/eod/casework.py``) shows VALID and the timeline (who, what, when, the proven
  interval per event) in Polish and English, with the office CA key fingerprint, the office
  time zone, the signed head and the events that carry the chosen document; the timeline's
  English lines are ``ledger eod verify-trail``'s, word for word;
* one set of rules: the page runs the port of ``ledger.eod.rules`` and gives the verdict and
  the reason of ``verify-trail``, word for word, on trails that break the rules with valid
  receipts (out of order, wrong role, wrong unit, wrong officer, backdated, dropped tail) and on
  every tampering of ``tests/eod/test_trail.py``; a declared time outside the proven interval is
  flagged on both;
* the page opens in the browser's language (Polish for pl, English otherwise), with a switch;
* no request carries the document (nor its digest), and the page logs no error or CSP violation.

The harness (HTTP server, Chromium over CDP, leak and console checks) is the one of
``test_verify_page.py``; this module only adds the trail scenario.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eod.broken import REASONS, broken_bundles
from eod.casework import CONTRACT, INVOICE, INVOICE_DIGEST, bundle_bytes, cost_case, make_office
from eod.test_trail import TAMPERINGS

from ledger.eod.pki import fingerprint
from ledger.eod.trail import VerifiedTrail, event_lines, verify_trail
from ledger.errors import MalformedError, VerificationError
from ledger.policy import parse_policy

from .test_verify_page import (
    CHROMIUM,
    STATIC,
    Harness,
    Scenario,
    assert_no_leak,
    assert_no_page_errors,
    open_page,
    set_language,
)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium"),
    pytest.mark.slow,
]

Bundle = dict[str, Any]

#: The tamperings the page is asked to show, by file name (from tests/eod/test_trail.py).
SHOWN = {
    "changed-event": "changed data",
    "removed-event": "removed event",
    "reordered-event": "reordered",
    "corrupted-receipt": "corrupted receipt",
}
#: The rule-breaking trails (valid receipts) the page is asked to show (tests/eod/broken.py).
BROKEN_SHOWN = (
    "out of order",
    "wrong role",
    "wrong unit",
    "wrong officer",
    "backdated",
    "dropped tail",
)


@dataclass
class TrailScenario:
    bundle: Bundle
    files: dict[str, Path]
    ca_fingerprint: str
    broken: dict[str, Bundle]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, TrailScenario]]:
    directory = tmp_path_factory.mktemp("verify-trail")
    setup = make_office(directory / "office")
    bundle = setup.office.trail(cost_case(setup))
    files = {
        "bundle": directory / "FK.3026.1.2024.trail.json",
        "invoice": directory / "faktura.pdf",
        "contract": directory / "umowa.pdf",
        "other": directory / "inny.pdf",
    }
    files["bundle"].write_bytes(bundle_bytes(bundle))
    files["invoice"].write_bytes(INVOICE)
    files["contract"].write_bytes(CONTRACT)
    files["other"].write_bytes(b"%PDF-1.7 not part of the case")
    for name, tampering in SHOWN.items():
        changed = copy.deepcopy(bundle)
        TAMPERINGS[tampering][0](changed)
        files[name] = directory / f"{name}.trail.json"
        files[name].write_bytes(bundle_bytes(changed))
    broken = broken_bundles(directory / "broken")
    for name, changed in broken.items():
        files[name] = directory / (name.replace(" ", "-") + ".trail.json")
        files[name].write_bytes(bundle_bytes(changed))
    ca_key = base64.b64decode(bundle["office"]["office"]["ca_public_key"])
    # The node serves the ledger's policy, so the page pins it (as --policy would).
    scenario = Scenario(
        log=setup.log,
        policy_text=setup.log.trust_policy(),
        digest=INVOICE_DIGEST,
        receipt=bundle["events"][0]["receipt"],
    )
    h = Harness(scenario)
    try:
        h.run(h.start(directory / "profile"))
        yield (
            h,
            TrailScenario(
                bundle=bundle, files=files, ca_fingerprint=fingerprint(ca_key), broken=broken
            ),
        )
    finally:
        h.close()


# ------------------------------------------------------------------------------ page actions


async def check_on_page(
    h: Harness, bundle: Path, document: Path | None = None, office_key: str = ""
) -> dict[str, Any]:
    """Choose the bundle (and the document), press the button, read the verdict and timeline."""
    page = h.page
    assert page is not None
    if document is not None:
        await page.set_files("#document", [document])
    await page.set_files("#receipt", [bundle])
    await page.evaluate(f"document.getElementById('office-key').value = {json.dumps(office_key)}")
    before = int(await page.evaluate("document.getElementById('result').dataset.run"))
    await page.evaluate("document.getElementById('verify').click()")
    await page.wait_for(
        f"(() => {{ const r = document.getElementById('result');"
        f" return Number(r.dataset.run) > {before} && r.dataset.state !== 'busy'; }})()",
        timeout=30,
    )
    return await read_trail(h)


async def read_trail(h: Harness) -> dict[str, Any]:
    assert h.page is not None
    shown: dict[str, Any] = await h.page.evaluate(
        """(() => {
            const $ = (id) => document.getElementById(id);
            const row = (id) => $(id + '-row') && !$(id + '-row').hidden ? $(id).textContent : null;
            return {
              state: $('result').dataset.state, kind: $('result').dataset.kind,
              title: $('result-title').textContent, reason: $('reason').textContent,
              trail_hidden: $('trail').hidden, lang: document.documentElement.lang,
              case: row('trail-case'), office: row('trail-office'), ca: row('trail-ca'),
              policy: row('trail-policy'), origin: row('trail-origin'), zone: row('trail-zone'),
              complete: row('trail-complete'), flagged: row('trail-flagged'),
              final: row('trail-state'), document: row('trail-document'), digest: row('digest'),
              index: row('index'), checked: $('trail-checked').textContent,
              rules: $('trail-rules').textContent,
              events: Array.from($('timeline').children, (li) => ({
                seq: li.dataset.seq, type: li.dataset.type,
                marked: li.classList.contains('has-document'),
                flag: li.classList.contains('flagged'),
                head: li.querySelector('.event-head').textContent,
                lines: Array.from(li.querySelectorAll('.event-line'),
                  (l) => Array.from(l.children, (c) => c.textContent)),
              })),
            };
        })()"""
    )
    return shown


def expected_timeline(verified: VerifiedTrail) -> list[dict[str, Any]]:
    """What ``verify-trail`` prints per event, in the page's layout: the head line, then each
    ``label: text`` line as [label, text]."""
    rows = []
    for entry in verified.entries:
        head, *rest = event_lines(entry, verified.calendar)
        lines = []
        for line in rest:
            label, text = line.strip().split(":", 1)
            lines.append([label, text.strip()])
        r = entry.event.record
        rows.append({"seq": str(r.seq), "type": r.type.value, "head": head, "lines": lines})
    return rows


def python_verdict(data: bytes, **pins: Any) -> dict[str, Any]:
    try:
        verify_trail(data, **pins)
    except MalformedError as exc:
        return {"valid": False, "kind": "malformed", "reason": exc.diagnostics()}
    except VerificationError as exc:
        return {"valid": False, "kind": "verification", "reason": exc.diagnostics()}
    return {"valid": True}


# --------------------------------------------------------------------------------- the tests


def test_valid_trail_shows_the_timeline_in_polish_and_english(
    trail: tuple[Harness, TrailScenario],
) -> None:
    h, t = trail
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        mark = await open_page(h, h.base + "/verify")
        polish = await check_on_page(h, t.files["bundle"], t.files["invoice"])
        await set_language(h, "en")
        return mark, polish, await read_trail(h)

    mark, polish, english = h.run(scenario())
    verified = verify_trail(t.files["bundle"].read_bytes(), document=INVOICE_DIGEST)

    assert polish["state"] == "valid", polish
    assert polish["lang"] == "pl" and polish["title"].startswith("WAŻNE")
    assert english["state"] == "valid" and english["title"].startswith("VALID")
    assert english["reason"] == "" and not english["trail_hidden"]
    assert english["case"] == "FK.3026.1.2024" == verified.case
    assert english["ca"] == t.ca_fingerprint + (
        " (from the bundle: compare it with the office's published key)"
    )
    assert english["office"] == (
        "cuw-gdansk (Centrum Usług Wspólnych) (name not verified: pin the office key)"
    )
    assert english["zone"] == "Europe/Warsaw"
    assert english["complete"] == (
        f"{verified.calendar.format_time(verified.head_receipt.time_bound)}: the signed head "
        "counts 11 events"
    )
    assert english["policy"] is not None and english["policy"].startswith(
        "from the field above (pinned)"
    )
    assert english["origin"] == verified.entries[0].receipt.origin
    assert english["final"] == "in the office archive (archiwum zakładowe)"
    assert english["digest"] == INVOICE_DIGEST.hex()
    assert english["index"] is None  # the receipt rows stay hidden
    used = ", ".join(f"#{i}" for i in verified.document_events)
    assert verified.document_receipt is not None
    assert english["document"] == (
        f"{INVOICE_DIGEST.hex()}: in events {used}; existed no later than "
        f"{verified.calendar.format_time(verified.document_receipt.time_bound)}"
    )
    assert "11 events" in english["checked"]
    assert "checked in full, by the same rules as ledger eod verify-trail" in english["rules"]

    # The timeline: every event, who, what, when and the ledger bound, as the CLI says it.
    shown = [{k: e[k] for k in ("seq", "type", "head", "lines")} for e in english["events"]]
    assert shown == expected_timeline(verified)
    assert [e["marked"] for e in english["events"]] == [
        i in verified.document_events for i in range(len(verified.entries))
    ]
    # ... and in Polish: same events, Polish labels and terms.
    assert len(polish["events"]) == 11
    first = polish["events"][0]
    assert first["head"].endswith("rejestracja przesyłki (registration)")
    assert [line[0] for line in first["lines"]] == ["kto", "co", "dowód"]
    assert first["lines"][0][1] == "kanc-1, Kancelaria ogólna (komórka SEK)"
    assert first["lines"][2][1].startswith(
        "po 2024-03-01 10:01:03 +01:00, nie później niż 2024-03-01 10:01:03 +01:00"
    )
    assert polish["final"] == "w archiwum zakładowym"
    assert "ledger eod verify-trail" in polish["rules"] and "w całości" in polish["rules"]

    assert_no_leak(h, mark, server_mark)
    needles = [INVOICE, INVOICE[-16:], INVOICE_DIGEST.hex().encode()]
    for entry in h.server_log[server_mark:]:
        blob = json.dumps(entry["headers"]).encode() + entry["path"].encode() + entry["body"]
        assert not any(n in blob for n in needles), entry
    assert_no_page_errors(h, mark)


@pytest.mark.parametrize("name", sorted(SHOWN))
def test_tampered_trail_shows_invalid_and_the_reason(
    trail: tuple[Harness, TrailScenario], name: str
) -> None:
    h, t = trail
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        mark = await open_page(h, h.base + "/verify/?lang=en")
        english = await check_on_page(h, t.files[name])  # no document: it is optional
        await set_language(h, "pl")
        return mark, english, await read_trail(h)

    mark, english, polish = h.run(scenario())
    expected = python_verdict(t.files[name].read_bytes())
    assert not expected["valid"]
    assert english["state"] == "invalid" and english["title"] == "INVALID"
    assert english["kind"] == expected["kind"] == "verification"
    assert english["reason"] == expected["reason"]
    assert english["trail_hidden"] and english["events"] == []
    assert polish["title"] == "NIEWAŻNE"
    assert polish["reason"] and polish["reason"] != english["reason"]
    assert polish["reason"].startswith("zdarzenie #")
    assert_no_leak(h, mark, server_mark)
    assert_no_page_errors(h, mark)


def test_office_key_pin_and_foreign_document(trail: tuple[Harness, TrailScenario]) -> None:
    h, t = trail
    server_mark = len(h.server_log)
    wrong = "SHA256:" + base64.b64encode(hashlib.sha256(b"another office").digest()).decode()

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        mark = await open_page(h, h.base + "/verify/?lang=en")
        pinned = await check_on_page(h, t.files["bundle"], office_key=t.ca_fingerprint)
        mismatch = await check_on_page(h, t.files["bundle"], office_key=wrong)
        foreign = await check_on_page(h, t.files["bundle"], t.files["other"])
        return mark, [pinned, mismatch, foreign]

    mark, (pinned, mismatch, foreign) = h.run(scenario())
    assert pinned["state"] == "valid"
    assert pinned["ca"] == t.ca_fingerprint + " (matches the pinned key)"
    data = t.files["bundle"].read_bytes()
    assert mismatch["state"] == "invalid"
    assert mismatch["reason"] == python_verdict(data, office_key=wrong)["reason"]
    assert "is not the pinned key" in mismatch["reason"]
    other = hashlib.sha256(t.files["other"].read_bytes()).digest()
    assert foreign["state"] == "invalid"
    assert foreign["reason"] == python_verdict(data, document=other)["reason"]
    assert_no_page_errors(h, mark)
    assert all(entry["method"] == "GET" for entry in h.server_log[server_mark:])


def test_trail_from_disk_uses_the_bundles_policy(trail: tuple[Harness, TrailScenario]) -> None:
    """Opened from a file with an empty policy field: the bundle's policy is used, and the page
    says it is not pinned (verify-trail without --policy); no request at all."""
    h, t = trail
    server_mark = len(h.server_log)

    async def scenario() -> tuple[int, dict[str, Any]]:
        assert h.page is not None
        mark = await open_page(h, (STATIC / "verify.html").as_uri() + "?lang=en")
        assert await h.page.evaluate("document.getElementById('policy-text').value") == ""
        return mark, await check_on_page(h, t.files["bundle"], t.files["contract"])

    mark, shown = h.run(scenario())
    assert shown["state"] == "valid", shown
    assert shown["policy"] is not None
    assert shown["policy"].startswith("from the bundle (not pinned")
    policy_hex = hashlib.sha256(t.bundle["policy"].encode()).hexdigest()
    assert shown["policy"].endswith(policy_hex)
    assert [e["marked"] for e in shown["events"]].count(True) == 1  # the contract's attachment
    assert h.server_log[server_mark:] == []
    assert h.page is not None
    for method, params in h.page.events[mark:]:
        if method == "Network.requestWillBeSent":
            assert params["request"]["url"].startswith("file://"), params["request"]["url"]
    assert_no_page_errors(h, mark)


def _replace(bundle: Bundle, old: str, new: str) -> bytes:
    return bundle_bytes(bundle).replace(old.encode(), new.encode(), 1)


def _edit(edit: Callable[[Bundle], None]) -> Callable[[Bundle], bytes]:
    def run(bundle: Bundle) -> bytes:
        changed = copy.deepcopy(bundle)
        edit(changed)
        return bundle_bytes(changed)

    return run


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Bundle], None]:
    def edit(b: Bundle) -> None:
        target: Any = b
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _late_event(b: Bundle) -> None:
    b["events"][3]["event"]["event"]["time"] += 3600  # also breaks the signature first


EXTRA_CASES: dict[str, Callable[[Bundle], bytes]] = {
    "compact JSON": lambda b: json.dumps(b, separators=(",", ":")).encode(),
    "duplicate key": lambda b: _replace(b, '"format":', '"format": 1, "format":'),
    "float": lambda b: _replace(b, '"seq": 1', '"seq": 1.0'),
    "NaN": lambda b: _replace(b, '"seq": 1', '"seq": NaN'),
    "integer above 2^63": lambda b: _replace(b, '"seq": 1', f'"seq": {1 << 64}'),
    "not JSON object": lambda b: b"[1, 2]",
    "other format": _edit(_set(("format",), "ledger-eod-trail/v2")),
    "no events": _edit(_set(("events",), [])),
    "office not an object": _edit(_set(("office",), "cuw")),
    "CA key short": _edit(_set(("office", "office", "ca_public_key"), "AAAA")),
    "office record reshaped": _edit(_set(("office", "ca_public_key"), "AAAA")),
    "office zone unknown": _edit(_set(("office", "office", "zone"), "Mars/Olympus")),
    "checkpoint missing": _edit(lambda b: b["checkpoints"].pop(0)),
    "head count forged": _edit(_set(("head", "head", "count"), 12)),
    "event seq as string": _edit(_set(("events", 2, "event", "event", "seq"), "2")),
    "event unknown type": _edit(_set(("events", 2, "event", "event", "type"), "teleported")),
    "event prev uppercase": lambda b: _replace(
        b,
        b["events"][1]["event"]["event"]["prev"],
        b["events"][1]["event"]["event"]["prev"].upper(),
    ),
    "event signature short": _edit(_set(("events", 2, "event", "signature"), "AAAA")),
    "certificate unknown role": _edit(_set(("certificates", 0, "certificate", "roles"), ["x"])),
    "certificate missing": _edit(lambda b: b["certificates"].pop(0)),
    "receipt not text": _edit(_set(("events", 1, "receipt"), 7)),
    "late event": _edit(_late_event),
    "document digest malformed": _edit(_set(("documents", 0, "digest"), "00")),
    "case sign differs": _edit(_set(("case",), "FK.3026.2.2024")),
}


def test_javascript_trail_verifier_agrees_with_python(
    trail: tuple[Harness, TrailScenario],
) -> None:
    h, t = trail
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("valid", bundle_bytes(t.bundle), {}),
        ("valid, invoice", bundle_bytes(t.bundle), {"document": INVOICE_DIGEST}),
        (
            "valid, contract",
            bundle_bytes(t.bundle),
            {"document": hashlib.sha256(CONTRACT).digest()},
        ),
        ("valid, pinned key", bundle_bytes(t.bundle), {"office_key": t.ca_fingerprint}),
        (
            "valid, pinned base64 key",
            bundle_bytes(t.bundle),
            {"office_key": " " + t.bundle["office"]["office"]["ca_public_key"] + "\n"},
        ),
        ("valid, pinned policy", bundle_bytes(t.bundle), {"policy": h.scenario.policy_text}),
        ("wrong key", bundle_bytes(t.bundle), {"office_key": "SHA256:xyz"}),
        ("foreign document", bundle_bytes(t.bundle), {"document": hashlib.sha256(b"x").digest()}),
    ]
    for name, (tamper, _) in sorted(TAMPERINGS.items()):
        changed = copy.deepcopy(t.bundle)
        tamper(changed)
        cases.append((name, bundle_bytes(changed), {}))
    for name, make in EXTRA_CASES.items():
        cases.append((name, make(t.bundle), {}))
    for name, broken in sorted(t.broken.items()):
        cases.append((f"broken: {name}", bundle_bytes(broken), {}))

    def js_options(pins: dict[str, Any]) -> dict[str, Any]:
        out = dict(pins)
        if "document" in out:
            out["document"] = out["document"].hex()
        if "office_key" in out:
            out["officeKey"] = out.pop("office_key")
        return out

    payload = json.dumps(
        [[base64.b64encode(data).decode(), js_options(pins)] for _, data, pins in cases]
    )
    script = f"""(async () => {{
        const out = [];
        for (const [b, options] of {payload}) {{
            const bytes = Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
            const v = await LedgerVerify.checkTrail(bytes, options);
            out.push(v.valid ? {{valid: true, events: v.events, doc: v.document_events,
                                 complete: v.complete_as_of}}
                             : {{valid: false, kind: v.kind, reason: v.reason}});
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
    for (name, data, pins), js in zip(cases, verdicts, strict=True):
        py_pins = dict(pins)
        if "policy" in py_pins:
            py_pins["policy"] = parse_policy(py_pins["policy"].encode())
        py = python_verdict(data, **py_pins)
        if py["valid"]:
            verified = verify_trail(data, **py_pins)
            hashes = [e.event.hash.hex() for e in verified.entries]
            same = js.get("valid") and [e["hash"] for e in js["events"]] == hashes
            same = same and js["doc"] == list(verified.document_events)
            lines = [event_lines(e, verified.calendar) for e in verified.entries]
            same = same and [e["lines"] for e in js["events"]] == lines
            same = same and [e["flagged"] for e in js["events"]] == [
                e.flagged for e in verified.entries
            ]
            same = same and js["complete"] == verified.calendar.format_time(
                verified.head_receipt.time_bound
            )
            if not same:
                mismatches.append(f"{name}: python valid, js {js}")
            continue
        if js.get("valid") or js["kind"] != py["kind"]:
            mismatches.append(f"{name}:\n  python {py}\n  js     {js}")
        elif py["reason"] != js["reason"] and "not valid JSON" not in py["reason"]:
            # JSON syntax errors name the position in each parser's own words; the rest match.
            mismatches.append(f"{name}:\n  python {py}\n  js     {js}")
    assert not mismatches, "\n".join(mismatches)
    # The cases cover what they claim: several valid ones, both kinds of failure.
    kinds = [python_verdict(data).get("kind", "valid") for _, data, pins in cases if not pins]
    assert {"valid", "malformed", "verification"} <= set(kinds)


@pytest.mark.parametrize("name", BROKEN_SHOWN)
def test_rule_breaking_trail_shows_the_verify_trail_reason(
    trail: tuple[Harness, TrailScenario], name: str
) -> None:
    """Valid signatures and receipts, a broken rule: the page says INVALID and why, exactly as
    ``ledger eod verify-trail`` does (in English), and in Polish after the switch."""
    h, t = trail

    async def scenario() -> tuple[int, dict[str, Any], dict[str, Any]]:
        mark = await open_page(h, h.base + "/verify/?lang=en")
        english = await check_on_page(h, t.files[name])
        await set_language(h, "pl")
        return mark, english, await read_trail(h)

    mark, english, polish = h.run(scenario())
    expected = python_verdict(t.files[name].read_bytes())
    assert not expected["valid"]
    if REASONS[name] is not None:
        assert expected["reason"] == REASONS[name]
    assert english["state"] == "invalid" and english["kind"] == "verification"
    assert english["reason"] == expected["reason"]
    assert polish["title"] == "NIEWAŻNE" and polish["reason"] != english["reason"]
    assert_no_page_errors(h, mark)


def test_declared_time_outside_the_proven_interval_is_flagged_on_the_page(
    trail: tuple[Harness, TrailScenario],
) -> None:
    h, t = trail

    async def scenario() -> dict[str, Any]:
        await open_page(h, h.base + "/verify/?lang=en")
        return await check_on_page(h, t.files["declared in the past"])

    shown = h.run(scenario())
    verified = verify_trail(t.files["declared in the past"].read_bytes())
    assert shown["state"] == "valid"
    assert shown["flagged"] == "Flagged: a declared time outside the proven interval in events #5"
    assert [e["flag"] for e in shown["events"]] == [e.flagged for e in verified.entries]
    assert shown["events"][5]["lines"][-1] == [
        "declared",
        verified.calendar.format_time(verified.entries[5].event.record.declared or 0)
        + " (outside the proven interval: flagged)",
    ]


@pytest.mark.parametrize(
    ("accept", "lang"), [("pl-PL,pl", "pl"), ("en-GB,en", "en"), ("de-DE", "en")]
)
def test_page_opens_in_the_browsers_language(
    trail: tuple[Harness, TrailScenario], accept: str, lang: str
) -> None:
    h, _ = trail

    async def scenario() -> tuple[str, str, str]:
        assert h.page is not None
        await h.page.send(
            "Network.setUserAgentOverride",
            {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) headless", "acceptLanguage": accept},
        )
        try:
            await open_page(h, h.base + "/verify")
            shown = await h.page.evaluate("document.documentElement.lang")
            title = await h.page.evaluate(
                "document.getElementById('lang-pl').getAttribute('aria-pressed')"
            )
            await set_language(h, "pl" if lang == "en" else "en")
            switched = await h.page.evaluate("document.documentElement.lang")
        finally:
            await h.page.send(
                "Network.setUserAgentOverride",
                {
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) headless",
                    "acceptLanguage": "pl-PL,pl",
                },
            )
        return shown, title, switched

    shown, pressed, switched = h.run(scenario())
    assert shown == lang
    assert pressed == ("true" if lang == "pl" else "false")
    assert switched == ("pl" if lang == "en" else "en")
