"""A new institution joins a running chain, exactly as docs/operators.md says (issue 10 item 5).

The blocks of "A new institution joins" run, as written, on a 4-validator devnet of this test's
own (its ports in place of 7100-7104). Then the test checks what the procedure promises and
what the node must do with the set *active at the height in question*, not the genesis one:

- the fifth validator's node is ready and votes: with an old validator stopped, the chain
  still commits (4 of the 5 are needed);
- readiness of the old nodes counts the new set (a quorum of 5);
- a fresh, empty node catches up from the current set's nodes only (another old one down);
- the new validator witnesses the log's checkpoints (``POST /add-checkpoint``) although its
  log key is not in the genesis trust policy.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from docs.harness import parse_blocks

from ledger.devnet import free_base_port
from ledger.replica.witness import format_add_checkpoint

from .test_cluster_processes import Devnet, anchor_files, eventually, http, make_files

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "operators.md"
MARK = "tests/node/test_join_procedure.py runs this"
PORTS = re.compile(r"(?<![0-9])710([0-4])(?![0-9])")


def _section_blocks() -> list[str]:
    blocks = [b for b in parse_blocks(DOC.read_text(encoding="utf-8"))
              if b.not_run is not None and MARK in b.not_run]
    assert len(blocks) == 4, "the section has its four steps"
    return [b.text for b in blocks]


def test_a_fifth_institution_joins_and_the_new_set_decides(tmp_path: Path) -> None:
    base = free_base_port(5)
    net = Devnet(tmp_path / "devnet", base_port=base)
    script = "\n".join(PORTS.sub(lambda m: str(base + int(m.group(1))), text)
                       for text in _section_blocks())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for key in [k for k in env if k.startswith("LEDGER_")]:
        del env[key]
    fifth = f"http://127.0.0.1:{base + 4}"
    try:
        for i in range(4):
            net.start(i)
        eventually(lambda: all(net.ready(i) for i in range(4)), "the four nodes ready")
        docs = tmp_path / "docs"
        anchor_files(net, 0, make_files(docs, "before", 2))
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "ready:      yes" in done.stdout

        # An old validator stops: 4 of 5 remain, and the chain commits only with the new votes.
        net.terminate(3)
        anchor_files(net, 0, make_files(docs, "after", 2))
        code, ready = http("GET", net.urls[1] + "/readyz", timeout=5)
        assert code == 200, ready  # three peers heard: enough for a quorum of five

        # A fresh, empty node catches up from the current set (another old one down meanwhile).
        shutil.rmtree(net.data_dir(3))
        net.terminate(0)
        net.start(3)
        eventually(lambda: net.ready(3), "the fresh node ready", timeout=120)
        anchor_files(net, 1, make_files(docs, "fresh", 1))

        # The new validator witnesses the log's latest checkpoint.
        code, note = http("GET", net.urls[1] + "/v1/checkpoint", timeout=5)
        assert code == 200
        body = format_add_checkpoint(old_size=0, proof=[], note=note)
        code, line = http("POST", fifth + "/add-checkpoint", data=body, timeout=10)
        assert code == 200, line
        assert line.startswith("— validator-5 ")
    finally:
        pid_file = tmp_path / "validator-5.pid"
        if pid_file.exists():
            _stop(int(pid_file.read_text()))
        net.stop_all()


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(150):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        subprocess.run(["sleep", "0.1"], check=False)
    os.kill(pid, signal.SIGKILL)
