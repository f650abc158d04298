"""docs/grafana-eod-dashboard.json queries only metrics the EOD service really exports, and
all of them (read from a real service's Prometheus registry)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eod.service_harness import running_service

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-eod-dashboard.json"
METRIC = re.compile(r"\bledger_eod_[a-z0-9_]+\b")


def test_every_exported_eod_metric_has_a_panel_and_every_panel_a_metric(tmp_path: Path) -> None:
    with running_service(tmp_path) as svc:
        svc.step("register", {"as": "kanc-1", "document": "ab" * 32, "channel": "post"})
        _, text, _ = svc.call("GET", "/metrics", token=None)
    families: dict[str, set[str]] = {}
    for line in text.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, _ = line.split(" ", 3)
            families[name] = set()
        elif line and not line.startswith("#"):
            sample = line.split("{")[0].split(" ")[0]
            for name in families:
                if sample.startswith(name):
                    families[name].add(sample)
    families = {k: v | {k} for k, v in families.items()
                if k.startswith("ledger_eod_") and not k.endswith("_created")}
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    samples = set().union(*families.values())
    assert used and used <= samples, sorted(used - samples)
    missing = [f for f, names in families.items() if not names & used]
    assert not missing, missing
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
