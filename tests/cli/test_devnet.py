"""`ledger devnet`: the files `init` writes, the process supervisor, and (slow) a real devnet."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import EXIT_ERROR, EXIT_OK, main
from ledger.config import hash_token, load_genesis, load_node_config, trust_policy
from ledger.crypto import read_key_file
from ledger.devnet import Supervisor, free_base_port, init_devnet
from ledger.errors import ConfigError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_keys_genesis_policy_configs_and_token(tmp_path: Path) -> None:
    d = tmp_path / "net"
    result = CliRunner().invoke(main, ["devnet", "init", "--dir", str(d), "--base-port", "7400"])
    assert result.exit_code == EXIT_OK, result.output
    genesis = load_genesis(d / "genesis.json")
    assert genesis.n == 4
    assert f"genesis hash: {genesis.genesis_hash()}" in result.stdout
    assert (d / "trust-policy").read_text() == trust_policy(genesis)

    token = (d / "client-token").read_text().strip()
    assert len(token) >= 40 and mode(d / "client-token") == 0o600
    assert mode(d / "keys") == 0o700
    for i, v in enumerate(genesis.validators):
        key_file = d / "keys" / f"{v.name}.key"
        assert mode(key_file) == 0o600
        config = load_node_config(d / "nodes" / f"{v.name}.toml")
        assert config.name == v.name
        assert config.listen_host == "127.0.0.1" and config.listen_port == 7400 + i
        assert config.key_file == key_file
        assert read_key_file(key_file).consensus_key.public_key == v.consensus_key
        assert all(p.url.startswith("http://127.0.0.1:74") for p in config.peers)
        assert len(config.peers) == 3
        [client] = config.clients
        assert client.token_sha256 == hash_token(token) and not client.revoked
        text = (d / "nodes" / f"{v.name}.toml").read_text()
        assert token not in text and str(tmp_path) not in text  # hash only, relative paths


def test_init_refuses_an_existing_devnet_and_bad_sizes(tmp_path: Path) -> None:
    init_devnet(tmp_path, nodes=1, genesis_time_ms=0)
    before = (tmp_path / "genesis.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a devnet"):
        init_devnet(tmp_path, nodes=4, genesis_time_ms=0)
    assert (tmp_path / "genesis.json").read_bytes() == before
    with pytest.raises(ConfigError, match="1 to 64 nodes"):
        init_devnet(tmp_path / "x", nodes=0, genesis_time_ms=0)
    with pytest.raises(ConfigError, match="ports"):
        init_devnet(tmp_path / "y", nodes=4, base_port=65534, genesis_time_ms=0)
    result = CliRunner().invoke(main, ["devnet", "init", "--dir", str(tmp_path)])
    assert result.exit_code == EXIT_ERROR and "already holds a devnet" in result.stderr


# ------------------------------------------------------------------------------ supervisor

CHATTY = "import time\nfor i in range(3): print('line', i, flush=True)\ntime.sleep(60)\n"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\ntime.sleep(60)\n"
)
GRACEFUL = (
    "import signal, sys, time\n"
    "def bye(*_):\n    print('bye', flush=True)\n    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
)


class Lines:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def emit(self, name: str, line: str) -> None:
        with self.cond:
            self.items.append((name, line))
            self.cond.notify_all()

    def wait_for(self, name: str, line: str, timeout: float = 20.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: (name, line) in self.items, timeout=timeout)
        assert ok, f"{name}: {line!r} not seen in {self.items}"


def run_in_thread(sup: Supervisor, stop: threading.Event) -> tuple[threading.Thread, list[int]]:
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(sup.run(stop, poll_interval=0.05)))
    thread.start()
    return thread, status


def test_supervisor_merges_output_and_stops_children_with_sigterm() -> None:
    lines = Lines()
    sup = Supervisor(
        {"a": [sys.executable, "-c", CHATTY], "b": [sys.executable, "-c", GRACEFUL]},
        emit=lines.emit,
        grace=20,
    )
    stop = threading.Event()
    thread, status = run_in_thread(sup, stop)
    lines.wait_for("a", "line 2")
    lines.wait_for("b", "ready")
    stop.set()
    thread.join(30)
    assert status == [0]
    assert ("b", "bye") in lines.items  # b ran its SIGTERM handler: a clean stop
    assert ("devnet", "a exited (signal SIGTERM)") in lines.items
    assert ("devnet", "b exited (status 0)") in lines.items
    assert [line for name, line in lines.items if name == "a"] == ["line 0", "line 1", "line 2"]


def test_supervisor_kills_a_child_that_ignores_sigterm_after_the_grace_period() -> None:
    lines = Lines()
    sup = Supervisor({"s": [sys.executable, "-c", STUBBORN]}, emit=lines.emit, grace=0.5)
    stop = threading.Event()
    thread, status = run_in_thread(sup, stop)
    lines.wait_for("s", "ready")
    stop.set()
    thread.join(30)
    assert status == [0]
    assert ("devnet", "s did not stop in 0.5 s: SIGKILL") in lines.items
    assert ("devnet", "s exited (signal SIGKILL)") in lines.items


def test_supervisor_reports_a_child_that_dies_and_fails() -> None:
    lines = Lines()
    sup = Supervisor(
        {"dies": [sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"]},
        emit=lines.emit,
    )
    status = sup.run(threading.Event(), poll_interval=0.05)
    assert status == 1
    assert ("dies", "oops") in lines.items
    assert ("devnet", "dies exited on its own (status 3)") in lines.items


def test_supervisor_reports_a_command_that_cannot_start() -> None:
    sup = Supervisor({"x": ["/nonexistent/ledger-node"]}, emit=lambda *_: None)
    with pytest.raises(ConfigError, match="cannot start x"):
        sup.run(threading.Event())


# ------------------------------------------------------------------ a real devnet (slow)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_devnet_up_anchors_verifies_and_stops_cleanly(tmp_path: Path) -> None:
    base = free_base_port(4)
    d = tmp_path / "net"
    ledger = [sys.executable, "-m", "ledger.cli"]
    up = subprocess.Popen(
        [*ledger, "devnet", "up", "--dir", str(d), "--base-port", str(base), "--grace", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{base + 1}"
        deadline = time.monotonic() + 90
        while True:
            ready = subprocess.run([*ledger, "status", "--node", url], capture_output=True)
            if b"ready:      yes" in ready.stdout:
                break
            assert time.monotonic() < deadline, ready.stdout + ready.stderr
            time.sleep(1)
        docs = []
        for i in range(3):
            doc = tmp_path / f"doc{i}.txt"
            doc.write_text(f"document {i}\n")
            docs.append(doc)
        anchored = subprocess.run(
            [*ledger, "anchor", "--node", url, "--token-file", str(d / "client-token"),
             "--policy", str(d / "trust-policy"), "--timeout", "60", *map(str, docs)],
            capture_output=True, timeout=90,
        )  # fmt: skip
        assert anchored.returncode == 0, anchored.stderr
        for doc in docs:
            verified = subprocess.run(
                [*ledger, "verify", "--policy", str(d / "trust-policy"),
                 "--proof", f"{doc}.tlog-proof", str(doc)],
                capture_output=True,
            )  # fmt: skip
            assert verified.returncode == 0, verified.stdout + verified.stderr
        # Another node serves the same receipt once it holds the cosigned checkpoint.
        deadline = time.monotonic() + 30
        while True:
            fetched = subprocess.run(
                [*ledger, "proof", hashlib.sha256(b"document 0\n").hexdigest(),
                 "--node", f"http://127.0.0.1:{base + 3}", "--policy", str(d / "trust-policy")],
                capture_output=True,
            )  # fmt: skip
            if fetched.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.startswith(b"c2sp.org/tlog-proof@v1\n")
        no_token = subprocess.run(
            [*ledger, "anchor", "--node", url, "--token", "wrong", str(docs[0])],
            capture_output=True,
            env={k: v for k, v in os.environ.items() if k != "LEDGER_TOKEN"},
        )
        assert no_token.returncode == EXIT_ERROR and b"401" in no_token.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    log = out.decode()
    assert up.returncode == 0, log
    for i in range(1, 5):
        assert f"validator-{i} exited (status 0)" in log, log
