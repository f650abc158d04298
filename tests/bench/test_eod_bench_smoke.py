"""bench/eod.py runs end to end in --quick mode: a devnet, the service, an import through it,
every trail verified offline, live steps and status lookups under concurrent clients. No
timing is asserted (a shared CI machine decides those), only that every phase ran and
reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "eod.py"


@pytest.mark.slow
def test_eod_benchmark_quick_mode_runs_every_phase() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                            text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^import: +6,000 events .* events/s$", out, re.M), out
    assert re.search(r"^verify: +600 trails verified offline", out, re.M), out
    assert re.search(r"^step: +p50 [0-9,]+ ms, p99 [0-9,]+ ms \(100 steps", out, re.M), out
    assert re.search(r"^lookup: +p50 [0-9.,]+ ms, p99 [0-9.,]+ ms \(100 status", out, re.M), out
    assert "== done ==" in out
