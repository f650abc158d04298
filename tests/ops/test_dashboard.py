"""``docs/grafana-dashboard.json`` queries only metrics the node really exports, and all of them.

The exported names are read from a real :class:`ledger.node.Node`'s Prometheus registry (built
from a devnet config, not started), so renaming a metric in ``node.py`` without updating the
dashboard fails here instead of leaving an empty panel in an operator's Grafana.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.config import WitnessEndpoint, load_node_config
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key
from ledger.devnet import init_devnet
from ledger.node import Node
from ledger.note import Verifier

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRIC = re.compile(r"\bledger_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Metric family name -> the sample names it exposes (``_total``, ``_bucket``, ...)."""
    net = init_devnet(
        tmp_path_factory.mktemp("net"), nodes=4, base_port=7400, genesis_time_ms=1
    )
    # One outside witness configured, so that its per-witness families have samples.
    witness = WitnessEndpoint(name="audit", url="http://127.0.0.1:9", vkey=Verifier.for_key(
        name="audit.example/w1", sig_type=SIG_TYPE_COSIGNATURE_V1,
        public_key=Ed25519Key(b"\x01" * 32).public_key).vkey)
    config = dataclasses.replace(load_node_config(net.configs[0][1]), witnesses=(witness,))
    node = Node(config)
    families = node.metrics.registry.collect()
    return {family.name: {s.name for s in family.samples} for family in families}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        yield variable["definition"]


def test_every_queried_metric_is_exported(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    samples = set().union(*exported.values())
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used, "the dashboard queries no ledger metric"
    assert used <= samples, f"not exported by ledger/node.py: {sorted(used - samples)}"


def test_every_exported_metric_has_a_panel(
    dashboard: dict[str, Any], exported: dict[str, set[str]]
) -> None:
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    missing = [family for family, names in exported.items() if not names & used]
    assert not missing, f"exported but on no panel: {missing}"


def test_dashboard_is_importable(dashboard: dict[str, Any]) -> None:
    # What Grafana's import needs: a declared datasource input used by every query, unique
    # panel ids, panels inside the 24-column grid, and unique refIds within a panel.
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    titles = " ".join(p["title"].lower() for p in panels(dashboard))
    for topic in ("height", "round", "latency", "mempool", "anchors", "peers", "invalid",
                  "evidence", "size on disk"):
        assert topic in titles, topic


def test_histogram_quantiles_use_buckets(dashboard: dict[str, Any]) -> None:
    quantiles = [e for e in queries(dashboard) if "histogram_quantile" in e]
    assert len(quantiles) >= 3
    assert all("_bucket" in e and "by (le" in e for e in quantiles)
