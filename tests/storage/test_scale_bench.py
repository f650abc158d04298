"""The store scale benchmark runs end to end in --quick mode and prints every figure with its
target (no speed is asserted: a shared machine decides those)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "store_scale.py"


def test_store_scale_quick_mode_prints_every_figure(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for figure in ("ceiling: raw SHA-256", "SHA-256 + LMDB put", "x empty-log", "RssAnon",
                   "B/anchor", "1-digest block", "proof p50/p99", "index_of hit", "open",
                   "== summary =="):
        assert figure in out, figure
    assert list(tmp_path.iterdir()) == []  # every file the benchmark made is removed
