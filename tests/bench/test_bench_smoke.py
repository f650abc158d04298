"""The Merkle benchmark runs end to end in --quick mode (it checks itself: equal roots and
proofs across implementations). No timing is asserted: a shared CI machine decides those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "merkle.py"


def test_merkle_benchmark_quick_mode_runs_and_prints_a_summary(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== summary ==" in out
    for figure in ("ceiling: raw SHA-256 leaf hashing", "ours append (Frontier.extend)",
                   "ours inclusion proofs (in memory)", "ours verify_inclusion"):
        assert figure in out
    # Every LMDB file the benchmark made is cleaned up.
    assert list(tmp_path.iterdir()) == []
