"""`ledger devnet`: the files `init` writes, the process supervisor, and (slow) a real devnet."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.devnets import LEDGER, clean_env, detached_devnet, ledger, node_pids, wait_gone
from ledger.cli import EXIT_ERROR, EXIT_OK, main
from ledger.config import hash_token, load_node_config
from ledger.crypto import read_key_file
from ledger.devnet import Supervisor, free_base_port, init_devnet
from ledger.errors import ConfigError
from ledger.genesis import load_genesis, trust_policy


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
        client, operator = config.clients
        assert client.token_sha256 == hash_token(token) and not client.revoked
        assert not client.admin and operator.admin  # the admin token: validator-set changes
        admin = (d / "admin-token").read_text().strip()
        assert operator.token_sha256 == hash_token(admin) and mode(d / "admin-token") == 0o600
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


def test_init_makes_every_directory_0700_even_under_umask_000(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        init_devnet(tmp_path / "net", nodes=1, genesis_time_ms=0)
    finally:
        os.umask(old)
    d = tmp_path / "net"
    for sub in (d, d / "keys", d / "nodes", d / "data"):
        assert mode(sub) == 0o700, sub
    assert mode(d / "client-token") == 0o600
    assert mode(d / "keys" / "validator-1.key") == 0o600
    assert not any(stat.S_IMODE(p.stat().st_mode) & 0o002 for p in d.rglob("*"))  # none o+w


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
    up = subprocess.Popen(
        [*LEDGER, "devnet", "up", "--dir", str(d), "--base-port", str(base), "--grace", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{base + 1}"
        deadline = time.monotonic() + 90
        while True:
            ready = subprocess.run([*LEDGER, "status", "--node", url], capture_output=True)
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
            [*LEDGER, "anchor", "--node", url, "--token-file", str(d / "client-token"),
             "--policy", str(d / "trust-policy"), "--timeout", "60", *map(str, docs)],
            capture_output=True, timeout=90,
        )  # fmt: skip
        assert anchored.returncode == 0, anchored.stderr
        for doc in docs:
            verified = subprocess.run(
                [*LEDGER, "verify", "--policy", str(d / "trust-policy"),
                 "--proof", f"{doc}.tlog-proof", str(doc)],
                capture_output=True,
            )  # fmt: skip
            assert verified.returncode == 0, verified.stdout + verified.stderr
        # Another node serves the same receipt once it holds the cosigned checkpoint.
        deadline = time.monotonic() + 30
        while True:
            fetched = subprocess.run(
                [*LEDGER, "proof", hashlib.sha256(b"document 0\n").hexdigest(),
                 "--node", f"http://127.0.0.1:{base + 3}", "--policy", str(d / "trust-policy")],
                capture_output=True,
            )  # fmt: skip
            if fetched.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.startswith(b"c2sp.org/tlog-proof@v1\n")
        (tmp_path / "fresh.txt").write_text("not anchored yet\n")
        wrong = subprocess.run(
            [*LEDGER, "anchor", "--node", url, str(tmp_path / "fresh.txt")],
            capture_output=True,
            env=clean_env(LEDGER_TOKEN="wrong"),
        )
        assert wrong.returncode == EXIT_ERROR and b"401" in wrong.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    log = out.decode()
    assert up.returncode == 0, log
    for i in range(1, 5):
        assert f"validator-{i} exited (status 0)" in log, log


# -------------------------------------------------- up --detach, down, make devnet (slow)


def _one_error_line(stderr: str) -> str:
    """The one line we print; make adds its own "make: *** ..." line after a failed recipe."""
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line and not line.startswith("make")]
    assert len(ours) == 1, stderr
    return ours[0]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_detached_devnet_refuses_a_second_one_and_stops_with_down(tmp_path: Path) -> None:
    with detached_devnet(tmp_path) as net:
        log = (net.directory / "devnet.log").read_text()
        pids = node_pids(log)
        assert len(pids) == 4, log
        assert "devnet ready: " + " ".join(net.urls) in log
        assert "token file" in log and "trust policy" in log
        again = ledger("devnet", "up", "--detach", "--dir", str(net.directory))
        assert again.returncode == EXIT_ERROR
        assert "a devnet is already running from" in _one_error_line(again.stderr)
        # Another directory on the same ports: refused before it writes anything.
        other = tmp_path / "other"
        clash = ledger("devnet", "up", "--dir", str(other), "--base-port", str(net.base_port))
        assert clash.returncode == EXIT_ERROR
        assert _one_error_line(clash.stderr) == (
            f"error: port {net.base_port} is in use: is a devnet already running? "
            "`ledger devnet down`"
        )
        assert not other.exists()
        status = ledger("status", env=clean_env(LEDGER_NODE=net.urls[2]))
        assert status.returncode == EXIT_OK and "ready:      yes" in status.stdout
    # detached_devnet ran `ledger devnet down`: every node is gone, and down again is harmless.
    assert wait_gone(pids) == []
    assert not (net.directory / "devnet.pid").exists()
    again = ledger("devnet", "down", "--dir", str(net.directory))
    assert again.returncode == EXIT_OK and "no devnet is running" in again.stdout


def _make(*args: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "python").exists():
        pytest.skip("not running inside a virtual environment")
    # -o: never rebuild the environment from inside a test; VENV: the one running the tests.
    return [make, "-C", str(REPO), f"VENV={venv}", "-o", f"{venv}/.installed-test", *args]


REPO = Path(__file__).resolve().parents[2]


def _start_make_devnet(tmp_path: Path, directory: Path, port: int) -> tuple[
    subprocess.Popen[bytes], Path, list[int]
]:
    out = tmp_path / f"make-{directory.name}.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            _make("devnet", f"DEVNET_DIR={directory}", f"DEVNET_PORT={port}"),
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, as a terminal's foreground job
            env=clean_env(),
        )
    deadline = time.monotonic() + 120
    while "devnet ready:" not in out.read_text(errors="replace"):
        assert proc.poll() is None, out.read_text(errors="replace")
        assert time.monotonic() < deadline, out.read_text(errors="replace")
        time.sleep(0.2)
    pids = node_pids(out.read_text(errors="replace"))
    assert len(pids) == 4
    return proc, out, pids


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_devnet_twice_the_second_exits_with_one_line_and_ctrl_c_stops_every_node(
    tmp_path: Path,
) -> None:
    port = free_base_port(4)
    directory = tmp_path / "devnet"
    proc, out, pids = _start_make_devnet(tmp_path, directory, port)
    try:
        second = subprocess.run(
            _make("devnet", f"DEVNET_DIR={directory}", f"DEVNET_PORT={port}"),
            capture_output=True, text=True, timeout=60, env=clean_env(),
        )
        assert second.returncode != 0
        assert _one_error_line(second.stderr + second.stdout).startswith(
            "error: a devnet is already running from"
        )
        elsewhere = subprocess.run(
            _make("devnet", f"DEVNET_DIR={tmp_path / 'b'}", f"DEVNET_PORT={port}"),
            capture_output=True, text=True, timeout=60, env=clean_env(),
        )
        assert elsewhere.returncode != 0
        assert _one_error_line(elsewhere.stderr + elsewhere.stdout) == (
            f"error: port {port} is in use: is a devnet already running? `ledger devnet down`"
        )
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group (make and its
        # child alike).
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_gone(pids) == [], out.read_text(errors="replace")
    assert "Traceback" not in out.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signalling_only_the_make_process_still_stops_every_node(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # SIGTERM: make passes it on to its child. SIGKILL: make dies at once, and the supervisor
    # learns it from the kernel (parent-death signal) and stops the nodes itself.
    port = free_base_port(4)
    proc, out, pids = _start_make_devnet(tmp_path, tmp_path / "devnet", port)
    try:
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_gone(pids) == [], out.read_text(errors="replace")
    deadline = time.monotonic() + 60
    while (tmp_path / "devnet" / "devnet.pid").exists():  # the supervisor finished its stop
        assert time.monotonic() < deadline
        time.sleep(0.1)
