"""A node whose disk fills says so, keeps serving reads, refuses anchors with 503, and writes
again by itself once space is freed, losing nothing it acknowledged (issue 16, item 5).

A real ``ledger node`` process keeps its data directory on a small tmpfs the test mounts
(mounting needs root; a process that is not root runs the test again inside
``unshare -rm``, a user namespace of its own, and it is skipped, saying so, where neither
is possible). The test fills the file system, anchors, frees the space, anchors
again, and verifies every receipt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.config import format_node_config
from ledger.crypto import write_key_file
from ledger.genesis import format_genesis
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt
from node.harness import TOKEN, make_cluster
from node.test_cluster_processes import http

pytestmark = pytest.mark.slow


#: Set in the test's own run inside a user and mount namespace (``unshare -rm``).
INNER = "LEDGER_TEST_IN_USER_NAMESPACE"


def run_in_user_namespace(nodeid: str) -> None:
    """Run this test again inside ``unshare -rm`` (root of a user namespace of its own, which
    may mount a tmpfs), for a process that is not root; skip, saying why, where that is not
    allowed."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("mounting a tmpfs needs root, and unprivileged user namespaces are not "
                    f"available here (unshare -rm: {probe.stderr.strip() or probe.returncode})")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
         "-p", "no:cacheprovider", nodeid],
        cwd=root, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, INNER: "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.fixture
def small_fs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path | None]:
    """A 24 MiB tmpfs mounted for this test only (``None``: the test ran in a namespace)."""
    if os.geteuid() != 0:
        if os.environ.get(INNER):
            pytest.skip("not root even inside the user namespace")
        run_in_user_namespace(request.node.nodeid)
        yield None  # it ran, and passed, inside the namespace
        return
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int) -> Path:
    """Fill the file system holding ``path`` until at most ``leave`` bytes are free."""
    filler = path / "filler"
    chunk = b"\xa5" * (64 << 10)
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            out.write(chunk[: max(4096, min(len(chunk), free - leave))])
            out.flush()
    return filler


def digest(tag: str, k: int) -> bytes:
    return hashlib.sha256(f"disk full {tag} {k}".encode()).digest()


def until(check: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: "
                                 f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def test_a_full_disk_is_reported_reads_go_on_and_writing_resumes(
        tmp_path: Path, small_fs: Path | None) -> None:
    if small_fs is None:
        return  # run inside a user namespace of its own (run_in_user_namespace)
    cluster = make_cluster(tmp_path, n=1, lmdb=True)
    sock = cluster.sockets[0]
    assert sock is not None
    sock.close()  # the process binds the port itself
    cluster.sockets[0] = None
    config = cluster.configs[0]
    data = small_fs / "data"
    config = dataclasses.replace(config, data_dir=data)
    config.genesis_file.parent.mkdir(parents=True, exist_ok=True)
    config.genesis_file.write_text(format_genesis(config.genesis))
    config.key_file.parent.mkdir(parents=True, exist_ok=True)
    write_key_file(config.key_file, cluster.keys[0])
    path = tmp_path / "node.toml"
    path.write_text(format_node_config(config, relative_to=tmp_path))
    policy = parse_policy(config.genesis.trust_policy())
    url = config.public_url
    log = tmp_path / "node.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "ledger.cli", "node", "--config",
                                     str(path)], stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    proc = start()

    def status() -> dict[str, Any]:
        code, body = http("GET", url + "/v1/status", timeout=5)
        return body if code == 200 and isinstance(body, dict) else {}

    def anchor(ds: list[bytes]) -> tuple[int, Any]:
        return http("POST", url + "/v1/anchors?wait=true", {"digests": [d.hex() for d in ds]},
                    token=TOKEN, timeout=30)

    try:
        until(lambda: http("GET", url + "/readyz", timeout=2)[0] == 200, "ready", log)
        first = [digest("before", k) for k in range(50)]
        code, body = anchor(first)
        assert code == 200, body
        receipts = {d: a["receipt"] for d, a in zip(first, body["anchors"], strict=True)}

        filler = fill(small_fs, leave=256 << 10)
        second = [digest("after", k) for k in range(50)]
        code, body = anchor(second)  # the commit is refused: pending, never acknowledged
        assert code in (202, 503), (code, body)
        until(lambda: status().get("storage", {}).get("state") == "disk_full", "disk_full",
              log)
        reason = status()["storage"]["reason"]
        assert "no space left on device" in reason and str(data) in reason, reason
        assert "bytes free" in reason, reason
        code, body = anchor(second)
        assert code == 503 and body["error"]["code"] == "disk_full", (code, body)
        assert "no space left on device" in body["error"]["message"]
        code, metrics = http("GET", url + "/metrics", timeout=5)
        assert code == 200 and "ledger_storage_disk_full 1.0" in metrics
        for d in receipts:  # reads go on
            code, text = http("GET", f"{url}/v1/proofs/{d.hex()}", timeout=5)
            assert code == 200, (code, text)
            verify_receipt(text, policy, d)
        lines = [x for x in log.read_text(errors="replace").splitlines()
                 if "no space left on device" in x]
        assert len(lines) == 1, lines  # said once, not once per request

        # Restarted on the full disk, it serves reads and says why it does not write.
        proc.terminate()
        proc.wait(timeout=15)
        proc = start()
        until(lambda: bool(status()), "serving again", log)
        for d in list(receipts)[:5]:
            code, text = http("GET", f"{url}/v1/proofs/{d.hex()}", timeout=5)
            assert code == 200, (code, text)
        code, body = anchor(second)
        assert code in (202, 503), (code, body)
        until(lambda: status().get("storage", {}).get("state") == "disk_full", "disk_full",
              log)

        filler.unlink()  # space returns: the node writes again by itself
        until(lambda: status().get("storage", {}).get("state") == "ok"
              and status().get("halted") is None, "writing resumes", log)
        code, body = anchor(second)
        assert code == 200, body
        receipts |= {d: a["receipt"] for d, a in zip(second, body["anchors"], strict=True)}
        for d, receipt in receipts.items():  # nothing lost
            verify_receipt(receipt, policy, d)
            code, text = http("GET", f"{url}/v1/proofs/{d.hex()}", timeout=5)
            assert code == 200, (code, text)
            verify_receipt(text, policy, d)
        code, metrics = http("GET", url + "/metrics", timeout=5)
        assert "ledger_storage_disk_full 0.0" in metrics
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
