"""End to end against a real 4-node devnet (``ledger devnet``), whose nodes keep the real clock:

* the invoice with its contract through the whole cost-document path, anchored by the cluster;
  the trail verifies offline against the devnet's trust policy; a refused step anchors
  nothing; a reordered trail fails;
* an office PC 15 minutes fast (the EOD client's injected clock) is refused before anything is
  stored, the case stays usable, and the next step with a right clock goes on;
* backdating: a PC clock days behind is refused; a time declared with ``--at`` is recorded next
  to the proven one and flagged by ``verify-trail`` and by the verification page the node
  serves; a step whose recorded time is backdated fails both; destruction before the retention
  period counted from the proven closing is refused, whatever time is declared.

Slow (four node processes): marked ``slow``; bounded waits; the devnet is stopped with SIGTERM
to its process group, then SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eod.broken import rogue
from eod.casework import Setup
from eod.devnet import running_devnet
from ledger.cli import main
from ledger.client import LedgerClient
from ledger.devnet import load_devnet
from ledger.eod.anchor import ClientAnchorer
from ledger.eod.model import EventType
from ledger.eod.office import ClockRefused, Office
from ledger.eod.store import OfficeStore
from ledger.eod.trail import verify_trail
from ledger.errors import VerificationError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    directory = tmp_path_factory.mktemp("devnet")
    with running_devnet(directory) as base:
        net = load_devnet(directory)
        yield f"http://127.0.0.1:{base}", net.token_file, net.policy_file


CHROMIUM = shutil.which("chromium")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # official receipts without --receipt-out land here
POSITIONS = [
    ("kanc", "SEK", ["registry"]),
    ("dyr", "D", ["assign", "approve-payment"]),
    ("ref", "FK", ["officer"]),
    ("meryt", "SP7", ["substantive"]),
    ("ks1", "FK", ["accounts"]),
    ("ks2", "FK", ["accounts"]),
    ("gk", "FK", ["chief-accountant"]),
    ("arch", "AZ", ["archivist"]),
]


class Cli:
    """``ledger eod`` against the devnet, as an office runs it (token from a file)."""

    def __init__(self, devnet: tuple[str, Path, Path], data: Path) -> None:
        self.url, self.token_file, self.policy = devnet
        self.data = data

    def __call__(self, *args: str, status: int = 0, at: str | None = None) -> str:
        extra = ["--at", at] if at is not None else []
        result = CliRunner().invoke(
            main,
            [
                "eod",
                "--data-dir",
                str(self.data),
                "--node",
                self.url,
                "--token-file",
                str(self.token_file),
                *extra,
                *args,
            ],
        )
        assert result.exit_code == status, (args, result.output)
        return result.output

    def setup(self) -> None:
        self("init", "--office", "cuw", "--name", "CUW", "--policy", str(self.policy))
        for position, unit, roles in POSITIONS:
            self(
                "keys",
                "issue",
                position,
                "--unit",
                unit,
                "--title",
                position,
                *[a for r in roles for a in ("--role", r)],
            )


def _office(cli: Cli, clock: Callable[[], int]) -> tuple[Office, LedgerClient]:
    client = LedgerClient(cli.url, token=cli.token_file.read_text().strip())
    store = OfficeStore.open(cli.data)
    return Office(store, ClientAnchorer(client), clock=clock), client


def _store_bytes(data: Path) -> bytes:
    return (data / "office.db").read_bytes()


def test_cost_path_on_the_devnet(devnet: tuple[str, Path, Path], tmp_path: Path) -> None:
    eod = Cli(devnet, tmp_path / "office")
    eod.setup()
    invoice, contract = tmp_path / "fv.pdf", tmp_path / "umowa.pdf"
    invoice.write_bytes(os.urandom(64))
    contract.write_bytes(os.urandom(64))
    register = eod(
        "register",
        str(invoice),
        "--as",
        "kanc",
        "--channel",
        "ksef",
        "--kind",
        "invoice",
        "--receipt-out",
        str(tmp_path / "r.json"),
        "-q",
    ).strip()
    eod("assign", register, "--as", "dyr", "--to", "ref")
    case = eod(
        "open-case", register, "--as", "ref", "--unit", "FK", "--class", "3026", "--cost", "-q"
    ).strip()
    eod("attach", case, str(contract), "--as", "ref", "--kind", "contract")
    eod("accept", case, "--as", "meryt", "--step", "substantive")
    eod("accept", case, "--as", "ks1", "--step", "formal")
    eod("accept", case, "--as", "ks2", "--step", "coding", "--accounts", "Wn 401 / Ma 201")
    eod("accept", case, "--as", "dyr", "--step", "approve", status=2)  # before kontrasygnata
    eod("accept", case, "--as", "gk", "--step", "countersign")
    eod("accept", case, "--as", "dyr", "--step", "approve")
    eod("close", case, "--as", "ref")
    bundle = tmp_path / "trail.json"
    eod("trail", case, "--out", str(bundle))
    out = eod("verify-trail", str(bundle), "--policy", str(eod.policy), "--document", str(invoice))
    assert "valid: 10 events" in out
    trail = json.loads(bundle.read_text())
    trail["events"][3], trail["events"][4] = trail["events"][4], trail["events"][3]
    bundle.write_text(json.dumps(trail))
    eod("verify-trail", str(bundle), "--policy", str(eod.policy), status=1)


def test_a_fast_office_clock_is_refused_before_storing(
    devnet: tuple[str, Path, Path], tmp_path: Path
) -> None:
    """The node's clock is right; the office PC is 15 minutes fast."""
    eod = Cli(devnet, tmp_path / "office")
    eod.setup()
    letter = tmp_path / "pismo.pdf"
    letter.write_bytes(os.urandom(64))
    register = eod("register", str(letter), "--as", "kanc", "--channel", "epuap", "-q").strip()
    fast, client = _office(eod, lambda: int(time.time()) + 15 * 60)
    before = _store_bytes(eod.data)
    with pytest.raises(
        ClockRefused, match=r"minutes ahead of the ledger's time .* nothing was stored"
    ):
        fast.assign(register, actor="dyr", to="ref")
    fast.store.close()
    client.close()
    assert _store_bytes(eod.data) == before
    # The case stays usable: the next step, with a right clock, simply goes on.
    eod("assign", register, "--as", "dyr", "--to", "ref")
    eod("open-case", register, "--as", "ref", "--unit", "OR", "--class", "0012")
    out = eod("status", register)
    assert "valid: 3 events" in out


def _page_verdicts(url: str, profile: Path, bundles: list[bytes]) -> list[dict[str, Any]]:
    """LedgerVerify.checkTrail on each bundle, in the /verify page the devnet node serves."""
    from web.cdp import Browser

    async def run() -> list[dict[str, Any]]:
        assert CHROMIUM is not None
        browser = await Browser.launch(CHROMIUM, profile)
        try:
            page = await browser.new_page()
            await page.navigate(url + "/verify/")
            await page.wait_for("document.body.dataset.ready === 'true'")
            payload = json.dumps([base64.b64encode(b).decode() for b in bundles])
            verdicts: list[dict[str, Any]] = await page.evaluate(
                f"""(async () => {{
                    const out = [];
                    for (const b of {payload}) {{
                        const bytes = Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
                        out.push(await LedgerVerify.checkTrail(bytes, {{}}));
                    }}
                    return out;
                }})()"""
            )
            return verdicts
        finally:
            await browser.close()

    return asyncio.run(run())


def test_backdating_against_a_real_node(devnet: tuple[str, Path, Path], tmp_path: Path) -> None:
    eod = Cli(devnet, tmp_path / "office")
    eod.setup()
    letter = tmp_path / "pismo.pdf"
    letter.write_bytes(os.urandom(64))
    # A first item makes sure the ledger has a cosigned checkpoint for the next one to see
    # (without one, nothing bounds a time from below; the test must not depend on the order
    # in which the module's tests run).
    first = tmp_path / "pierwsze.pdf"
    first.write_bytes(os.urandom(64))
    eod("register", str(first), "--as", "kanc", "--channel", "post", "-q")
    # A time declared with --at three days back: recorded next to the proven one, flagged.
    three_days_ago = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - 3 * 86400))
    register = eod(
        "register", str(letter), "--as", "kanc", "--channel", "post", "-q", at=three_days_ago
    ).strip()
    eod("assign", register, "--as", "dyr", "--to", "ref")
    case = eod(
        "open-case",
        register,
        "--as",
        "ref",
        "--unit",
        "FK",
        "--class",
        "3026",
        "--category",
        "Bc",
        "--category-reason",
        "kopia",
        "-q",
    ).strip()
    # A PC clock three days behind is refused before anything is stored.
    slow, client = _office(eod, lambda: int(time.time()) - 3 * 86400)
    before = _store_bytes(eod.data)
    with pytest.raises(ClockRefused, match="the clock is slow or the time is backdated"):
        slow.close(case, actor="ref")
    assert _store_bytes(eod.data) == before
    # Destruction counts from the proven closing: a declared future date does not help.
    honest, _ = _office(eod, lambda: int(time.time()))
    honest.close(case, actor="ref")
    eod("reopen", case, "--as", "ref", "--reason", "uzupełnienie")
    eod("close", case, "--as", "ref")
    flagged = tmp_path / "flagged.json"
    eod("trail", case, "--out", str(flagged))
    out = eod("verify-trail", str(flagged), "--policy", str(eod.policy))
    assert "(outside the proven interval: flagged)" in out
    assert "flagged: a declared time outside the proven interval in events #0" in out
    # A rogue client that records a backdated time anyway: both verifiers fail the trail.
    mp = pytest.MonkeyPatch()
    try:
        setup = Setup(office=slow, clock=None, log=None)  # type: ignore[arg-type]
        with rogue(mp, setup):
            slow.reopen(case, actor="ref", reason="antydatowane")
            backdated = slow.trail(case)
    finally:
        mp.undo()
    reason = None
    try:
        verify_trail(json.dumps(backdated).encode())
    except VerificationError as exc:
        reason = exc.diagnostics()
    assert reason is not None and "before the ledger checkpoint it names" in reason
    if CHROMIUM is not None:
        page = _page_verdicts(
            eod.url, tmp_path / "profile", [flagged.read_bytes(), json.dumps(backdated).encode()]
        )
        assert page[0]["valid"] and page[0]["events"][0]["flagged"] is True
        assert page[1] == {"valid": False, "kind": "verification", "reason": reason}
    for office in (slow, honest):
        office.store.close()
    client.close()


def test_destruction_before_the_proven_retention_date_is_refused(
    devnet: tuple[str, Path, Path], tmp_path: Path
) -> None:
    eod = Cli(devnet, tmp_path / "office")
    eod.setup()
    letter = tmp_path / "pismo.pdf"
    letter.write_bytes(os.urandom(64))
    register = eod("register", str(letter), "--as", "kanc", "--channel", "post", "-q").strip()
    eod("assign", register, "--as", "dyr", "--to", "ref")
    case = eod(
        "open-case", register, "--as", "ref", "--unit", "FK", "--class", "3030", "-q"
    ).strip()  # B5
    eod("close", case, "--as", "ref")
    eod("archive", case, "--as", "arch")
    before = _store_bytes(eod.data)
    out = eod(
        "destroy",
        case,
        "--as",
        "arch",
        "--consent",
        "AP.4131.1.2031",
        status=2,
        at="2031-01-02T10:00:00",
    )
    assert "counted from the proven closing, runs until" in out and "refused" in out
    assert _store_bytes(eod.data) == before
    assert EventType.DESTROYED.value not in eod("status", case)
