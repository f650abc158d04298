"""The short chaos run (``make test``): 60 s of faults on 4 real node processes, no anchor lost.

Every fault kind of the nemesis occurs at least once: the kinds are dealt from a shuffled deck,
and the nemesis goes on past 60 s, if it must, until the first deck is dealt. The long run is
``python tests/chaos/run.py --duration 600`` (``make chaos``); docs/chaos.md explains both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.harness import FAULT_KINDS, ChaosOptions, run_chaos, stray_processes

pytestmark = pytest.mark.slow


@pytest.mark.timeout(400)
def test_chaos_short_loses_no_acknowledged_anchor(tmp_path: Path) -> None:
    lines: list[str] = []
    report = run_chaos(ChaosOptions(
        duration=60.0, seed=7, clients=3, hold=(1.5, 4.0), gap=(0.5, 1.5),
        settle_timeout=60.0, workdir=tmp_path / "chaos", log=lines.append,
    ))
    text = report.format()
    print("\n".join(lines) + "\n" + text)  # shown by pytest -s or on failure
    assert report.fault_seconds >= 60.0, text
    assert set(report.fault_counts()) == set(FAULT_KINDS), text
    assert report.acknowledged > 0, text
    assert report.lost == 0, text
    assert report.violations == [], text
    # the envelopes went over the peer streams, through the proxy's per-frame faults
    assert report.proxy.get("stream_opened", 0) > 0 and report.proxy.get("forwarded", 0) > 0, text
    assert stray_processes() == []  # every node process was ended, even the restarted ones
