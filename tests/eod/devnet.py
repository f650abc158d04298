"""A real 4-node devnet (``ledger devnet init`` + ``up``) in a directory, for the slow EOD tests.

Bounded waits; the devnet is stopped with SIGTERM to its process group, then SIGKILL if it
lingers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.devnet import free_base_port
from ledger.errors import ConfigError

_READY_TIMEOUT = 90.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running_devnet(directory: Path) -> Iterator[int]:
    """Start a devnet in ``directory``; yield its base port (node i listens on base + i)."""
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
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
