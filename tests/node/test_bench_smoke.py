"""Smoke test of ``bench/cluster.py --quick`` (issue 4): the cluster benchmark runs end to end
on a real 4-process devnet and reports every figure. No figure is asserted: this machine is
shared, the benchmark's numbers go to docs/performance.md, not to a pass/fail threshold."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cluster.py"


def test_cluster_benchmark_quick_mode_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--clients", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    figures = {line["figure"]: line for line in json.loads(out.read_text())}
    assert len(figures) == 6, figures
    for figure in figures.values():
        assert math.isfinite(figure["measured"]) and figure["measured"] > 0, figure
    assert "ceiling aiohttp no-op" in result.stdout
    # every line that sends anchors reports how many failed
    anchor_lines = [line for line in result.stdout.splitlines()
                    if line.startswith(("anchors/s", "anchor-to-receipt latency p50"))]
    assert len(anchor_lines) == 3, result.stdout
    assert all(re.search(r"\b\d+ failed\b", line) for line in anchor_lines), anchor_lines
