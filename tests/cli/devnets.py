"""A real devnet for tests, started and stopped the way a user does: `ledger devnet up --detach`
and `ledger devnet down`. One per test session (or module) that needs it, never one per test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ledger.devnet import free_base_port

LEDGER = [sys.executable, "-m", "ledger.cli"]


@dataclass(frozen=True)
class RunningDevnet:
    directory: Path
    base_port: int
    urls: tuple[str, ...]

    @property
    def token_file(self) -> Path:
        return self.directory / "client-token"

    @property
    def policy_file(self) -> Path:
        return self.directory / "trust-policy"

    @property
    def url(self) -> str:
        return self.urls[0]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any LEDGER_* setting of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(extra)
    return env


def ledger(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ledger.cli ARGS`` as a real process."""
    kwargs.setdefault("env", clean_env())
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*LEDGER, *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def node_pids(log: str) -> list[int]:
    """The node pids a supervisor reported ("started validator-1 (pid 123)")."""
    return [int(p) for p in re.findall(r"started validator-\d+ \(pid (\d+)\)", log)]


def wait_gone(pids: list[int], timeout: float = 60) -> list[int]:
    """Wait until none of ``pids`` is a live process; return those still alive at the end."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not reaped it yet
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return True


@contextmanager
def detached_devnet(parent: Path) -> Iterator[RunningDevnet]:
    """A 4-node devnet on free ports, in ``parent/devnet-N``, stopped on exit."""
    last = ""
    for attempt in range(3):
        directory = parent / f"devnet-{attempt}"
        base = free_base_port(4)
        up = ledger("devnet", "up", "--detach", "--dir", str(directory), "--base-port", str(base))
        if up.returncode == 0:
            break
        last = up.stdout + up.stderr
        if "is in use" not in last:  # only a lost race for the ports is worth another try
            break
    else:
        raise AssertionError(f"no devnet started: {last}")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "devnet ready:" in up.stdout, up.stdout
    urls = tuple(f"http://127.0.0.1:{base + i}" for i in range(4))
    try:
        yield RunningDevnet(directory=directory, base_port=base, urls=urls)
    finally:
        down = ledger("devnet", "down", "--dir", str(directory))
        assert down.returncode == 0, down.stdout + down.stderr
