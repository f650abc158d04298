"""End to end against a real 4-node devnet (``ledger devnet``): the invoice with its contract
through the whole cost-document path, anchored by the cluster; the trail verifies offline
against the devnet's trust policy; a refused step anchors nothing; a reordered trail fails.

Slow (four node processes): marked ``slow``; bounded waits; the devnet is stopped with SIGTERM
to its process group, then SIGKILL if it lingers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.devnet import free_base_port, load_devnet
from ledger.errors import ConfigError

pytestmark = pytest.mark.slow

_READY_TIMEOUT = 90.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    directory = tmp_path_factory.mktemp("devnet")
    try:
        base = free_base_port(4)
    except ConfigError:
        pytest.skip("no 4 consecutive free ports")
    ledger = [sys.executable, "-m", "ledger.cli"]
    subprocess.run(
        [*ledger, "devnet", "init", "--dir", str(directory), "--base-port", str(base)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    net = load_devnet(directory)
    log = (directory / "devnet.log").open("wb")
    proc = subprocess.Popen(
        [*ledger, "devnet", "up", "--dir", str(directory)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{base}"
    try:
        deadline = time.monotonic() + _READY_TIMEOUT
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "devnet did not become ready:\n" + (directory / "devnet.log").read_text()
                )
            time.sleep(0.5)
        token = net.token_file.read_text().strip()
        yield url, token, net.policy_file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_cost_path_on_the_devnet(devnet: tuple[str, str, Path], tmp_path: Path) -> None:
    url, token, policy = devnet
    data = tmp_path / "office"

    def eod(*args: str, status: int = 0) -> str:
        result = CliRunner().invoke(
            main, ["eod", "--data-dir", str(data), "--node", url, "--token", token, *args]
        )
        assert result.exit_code == status, (args, result.output)
        return result.output

    eod("init", "--office", "cuw", "--name", "CUW", "--policy", str(policy))
    for position, roles in [
        ("kanc", ["registry"]),
        ("dyr", ["assign", "approve-payment"]),
        ("ref", ["officer"]),
        ("meryt", ["substantive"]),
        ("ks1", ["accounts"]),
        ("ks2", ["accounts"]),
        ("gk", ["chief-accountant"]),
    ]:
        eod(
            "keys",
            "issue",
            position,
            "--unit",
            "FK",
            "--title",
            position,
            *[a for r in roles for a in ("--role", r)],
        )
    invoice, contract = tmp_path / "fv.pdf", tmp_path / "umowa.pdf"
    invoice.write_bytes(os.urandom(64))
    contract.write_bytes(os.urandom(64))
    out = eod(
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
    )
    register = out.split()[1].rstrip(";")
    eod("assign", register, "--as", "dyr", "--to", "ref")
    case = (
        eod(
            "open-case",
            register,
            "--as",
            "ref",
            "--unit",
            "FK",
            "--class",
            "3026",
            "--category",
            "B5",
            "--cost",
        )
        .split()[2]
        .rstrip(";")
    )
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
    out = eod("verify-trail", str(bundle), "--policy", str(policy), "--document", str(invoice))
    assert "valid: 10 events" in out
    trail = json.loads(bundle.read_text())
    trail["events"][3], trail["events"][4] = trail["events"][4], trail["events"][3]
    bundle.write_text(json.dumps(trail))
    eod("verify-trail", str(bundle), "--policy", str(policy), status=1)
