"""A real 4-validator devnet: one process per node (``ledger node --config ...``), kill -9.

Protects the acceptance criteria of issue 4: anchors sent to different nodes get receipts that
``ledger verify`` accepts against ``D/trust-policy``; with one node killed anchoring continues;
a restarted node catches up and becomes ready; with two of four killed nothing commits (and
nothing forks), and anchoring resumes when one returns. No acknowledged anchor is lost.

Every wait is bounded by a deadline; every HTTP request by a timeout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ledger.config import LOCAL_TIMEOUTS, format_node_config, load_node_config
from ledger.devnet import free_base_port
from ledger.note import parse_note

pytestmark = pytest.mark.slow

N = 4
#: Short consensus timeouts so that rounds of a dead proposer cost little.
TIMEOUTS = replace(LOCAL_TIMEOUTS, anchor_wait_ms=30_000)


def ledger_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 40, data: bytes | None = None) -> tuple[int, Any]:
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get_content_type()
    except (urllib.error.URLError, OSError):
        return 0, None
    return status, json.loads(raw) if kind == "application/json" else raw.decode()


def eventually(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Devnet:
    def __init__(self, root: Path, *, base_port: int | None = None) -> None:
        self.root = root
        base = free_base_port(N) if base_port is None else base_port
        result = ledger_cli("devnet", "init", "--dir", str(root), "--nodes", str(N),
                            "--base-port", str(base))
        assert result.returncode == 0, result.stderr
        self.configs = sorted((root / "nodes").glob("*.toml"))
        assert len(self.configs) == N
        self.urls = []
        for path in self.configs:
            config = dataclasses.replace(load_node_config(path), timeouts=TIMEOUTS)
            path.write_text(format_node_config(config, relative_to=path.parent))
            self.urls.append(config.public_url)
        self.token = (root / "client-token").read_text().strip()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * N

    def start(self, i: int) -> None:
        log = open(self.root / f"node{i}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "node", "--config", str(self.configs[i])],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def data_dir(self, i: int) -> Path:
        return load_node_config(self.configs[i]).data_dir

    def terminate(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.terminate()
        proc.wait(timeout=20)
        self.procs[i] = None

    def kill9(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self.procs[i] = None

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            self.procs[i] = None

    def ready(self, i: int) -> bool:
        return http("GET", self.urls[i] + "/readyz", timeout=5)[0] == 200

    def status(self, i: int) -> dict[str, Any]:
        code, body = http("GET", self.urls[i] + "/v1/status", timeout=5)
        assert code == 200, body
        return dict(body)

    def checkpoint_body(self, i: int) -> str | None:
        code, text = http("GET", self.urls[i] + "/v1/checkpoint", timeout=5)
        return parse_note(text).text if code == 200 else None

    def agreed(self, nodes: list[int]) -> bool:
        bodies = {self.checkpoint_body(i) for i in nodes}
        return len(bodies) == 1 and None not in bodies

    def log(self, i: int) -> str:
        return (self.root / f"node{i}.log").read_text(errors="replace")[-3000:]


def anchor_files(net: Devnet, node: int, files: list[Path]) -> None:
    result = ledger_cli("anchor", "--node", net.urls[node],
                        "--token-file", str(net.root / "client-token"),
                        "--timeout", "60", *map(str, files))
    assert result.returncode == 0, (result.stdout, result.stderr, net.log(node))


def verify_files(net: Devnet, files: list[Path]) -> None:
    for f in files:
        result = ledger_cli("verify", "--policy", str(net.root / "trust-policy"),
                            "--proof", f"{f}.tlog-proof", str(f))
        assert result.returncode == 0, (f, result.stdout, result.stderr)


def make_files(root: Path, tag: str, count: int) -> list[Path]:
    root.mkdir(exist_ok=True)
    files = []
    for k in range(count):
        path = root / f"{tag}-{k}.txt"
        path.write_text(f"document {tag} {k}\n")
        files.append(path)
    return files


def test_devnet_processes_survive_kill_9(tmp_path: Path) -> None:
    net = Devnet(tmp_path / "D")
    docs = tmp_path / "docs"
    try:
        for i in range(N):
            net.start(i)
        eventually(lambda: all(net.ready(i) for i in range(N)), "all four nodes ready")

        # 1. anchors sent to different nodes; every receipt verifies with `ledger verify`
        first = []
        for i in range(N):
            files = make_files(docs, f"n{i}", 3)
            anchor_files(net, i, files)
            first += files
        verify_files(net, first)
        eventually(lambda: net.agreed(list(range(N))), "the same checkpoint everywhere")

        # 2. kill -9 one node: anchoring continues
        net.kill9(3)
        while_down = make_files(docs, "one-down", 4)
        anchor_files(net, 0, while_down[:2])
        anchor_files(net, 2, while_down[2:])
        verify_files(net, while_down)

        # 3. restart it: it catches up and becomes ready, on the same checkpoint
        net.start(3)
        eventually(lambda: net.ready(3), "the restarted node ready")
        eventually(lambda: net.agreed(list(range(N))), "the restarted node's checkpoint")
        assert len({net.status(i)["height"] for i in range(N)}) == 1

        # 4. kill -9 two nodes: no commits, no forks
        net.kill9(2)
        net.kill9(3)
        before = [net.status(i) for i in (0, 1)]
        stuck = make_files(docs, "two-down", 2)
        digests = [hashlib.sha256(f.read_bytes()).hexdigest() for f in stuck]
        code, body = http("POST", net.urls[0] + "/v1/anchors", {"digests": digests},
                          token=net.token)
        assert code == 202, body
        assert [a["status"] for a in body["anchors"]] == ["pending", "pending"]
        time.sleep(3)  # a bounded observation window, not a timing assertion
        after = [net.status(i) for i in (0, 1)]
        assert [s["height"] for s in after] == [s["height"] for s in before]
        assert [s["tree_size"] for s in after] == [s["tree_size"] for s in before]
        # two of three peers unreachable: no longer in consensus, once they count as gone
        eventually(lambda: not net.ready(0), "node 1 to report not ready", timeout=20)

        # 5. one returns: the pending anchors commit, nothing acknowledged was lost
        net.start(3)

        def anchored() -> bool:
            return all(http("GET", net.urls[1] + f"/v1/proofs/{d}", timeout=5)[0] == 200
                       for d in digests)
        eventually(anchored, "the anchors made while two nodes were down", timeout=90)
        for f, d in zip(stuck, digests, strict=True):
            code, text = http("GET", net.urls[0] + f"/v1/proofs/{d}", timeout=5)
            assert code == 200
            Path(f"{f}.tlog-proof").write_text(text)
        verify_files(net, stuck)
        # every earlier receipt's leaf is still there, under the newest checkpoint too
        for f in first + while_down:
            d = hashlib.sha256(f.read_bytes()).hexdigest()
            assert http("GET", net.urls[3] + f"/v1/proofs/{d}", timeout=5)[0] == 200
        eventually(lambda: net.agreed([0, 1, 3]), "agreement of the three live nodes")
    finally:
        net.stop_all()
