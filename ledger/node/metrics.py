"""The node's Prometheus metrics (``GET /metrics``), read from the replica at scrape time.

Names are stable (the Grafana dashboard in docs/ uses them); docs/operators.md lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ledger.node.guard import API, PEER
from ledger.node.logs import FAULT_KINDS
from ledger.replica import Committed
from ledger.storage.lmdb_store import LmdbStore

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = ["CONTENT_TYPE_LATEST", "NodeMetrics"]


class NodeMetrics:
    """The registry of one node: a commit-latency histogram and a collector of the rest."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.commit_latency = Histogram(
            "ledger_commit_latency_seconds",
            "Time from the start of a height to its commit.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.registry.register(_Collector(node))

    def committed(self, action: Committed, *, now: int) -> None:
        """A block was committed (``action.started``: when its height started, ms)."""
        if action.started:
            self.commit_latency.observe(max(0, now - action.started) / 1000)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return bytes(generate_latest(self.registry))


class _Collector:
    """Reads the node's state at scrape time."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterable[Any]:
        node = self._node
        replica = node.replica
        store = None if replica is None else replica.store
        driver = None if replica is None else replica.driver
        core = None if driver is None else driver.core
        stats = None if replica is None else replica.stats
        core_stats = None if core is None else core.stats

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        yield gauge("ledger_height", "Last committed block height.",
                    store.last_height() if store is not None else 0)
        yield gauge("ledger_round", "Current consensus round.", core.round if core else 0)
        yield gauge("ledger_tree_size", "Leaves in the Merkle log.",
                    store.size if store is not None else 0)
        yield gauge("ledger_mempool_depth", "Anchors waiting for a block.",
                    len(driver.mempool) if driver is not None else 0)
        yield CounterMetricFamily("ledger_anchors", "Anchors committed by this process.",
                                  value=stats.anchors if stats else 0)
        yield gauge("ledger_peers_connected", "Peers heard from recently.",
                    replica.peers_connected(node.now()) if replica is not None else 0)
        yield CounterMetricFamily("ledger_messages_late", "Consensus messages for past heights.",
                                  value=core_stats.late if core_stats else 0)
        invalid = (core_stats.invalid if core_stats else 0) + (
            stats.peer_invalid if stats else 0) + (
            driver.checkpoints.rejected() if driver is not None else 0)
        yield CounterMetricFamily(
            "ledger_messages_invalid",
            "Rejected peer messages (consensus, envelopes, cosignatures, blocks).",
            value=invalid)
        yield CounterMetricFamily(
            "ledger_cosignatures_rejected",
            "Peer cosignatures refused (a bad signature, another root, or a timestamp outside "
            "the 30 s tolerance: a validator's clock is off).",
            value=driver.checkpoints.rejected() if driver is not None else 0)
        yield CounterMetricFamily("ledger_catchup_blocks", "Blocks fetched from peers.",
                                  value=stats.blocks_fetched if stats else 0)
        yield gauge("ledger_evidence", "Equivocation evidence items this node holds (stored).",
                    len(driver.evidence.items) + driver.evidence.dropped
                    if driver is not None else 0)
        yield gauge("ledger_storage_bytes", "Size of the store on disk.",
                    store.disk_usage() if isinstance(store, LmdbStore) else 0)
        yield from _store_care_metrics(node, store is not None)
        faults = CounterMetricFamily(
            "ledger_client_faults", "Client-caused events (aborted requests, refused or "
            "timed-out connections, bad heads, refused peer envelopes, TLS failures) by kind.",
            labels=["kind"])
        counts = {kind: 0 for kind in FAULT_KINDS} | dict(node.faults.counts)
        for kind, count in sorted(counts.items()):
            faults.add_metric([kind], count)
        yield faults
        yield CounterMetricFamily(
            "ledger_log_lines_suppressed", "Log lines held back by the rate limit.",
            value=node.faults.suppressed + node.log_filter.suppressed)
        connections = GaugeMetricFamily("ledger_connections_open", "Open connections.",
                                        labels=["listener"])
        open_now = {API: 0} | ({PEER: 0} if node.config.peer_listen_port is not None else {})
        for listener in node.listeners:
            open_now[listener.name] = len(listener.connections)
        for name, count in open_now.items():
            connections.add_metric([name], count)
        yield connections


def _store_care_metrics(node: Node, has_store: bool) -> Iterable[Any]:
    """The store's health: free space, a full disk, the scrub, damage and repairs."""

    def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, value=value)

    care = node.care
    free = care.free_bytes() if has_store else None
    yield gauge("ledger_storage_free_bytes", "Bytes free on the store's file system.",
                free if free is not None else 0)
    yield gauge("ledger_storage_disk_full", "1 while writes are refused for want of "
                "space (no space left on device), else 0.", int(care.disk_full is not None))
    yield CounterMetricFamily("ledger_scrub_units", "Stored values re-verified by the "
                              "background scrub.", value=care.scrub_checked)
    yield CounterMetricFamily("ledger_scrub_passes", "Complete scrub passes over the "
                              "whole store.", value=care.scrub_passes)
    yield gauge("ledger_scrub_progress_ratio", "Progress through the current scrub "
                "pass (0 to 1).", care.scrub_done / care.scrub_total
                if care.scrub_total else 0)
    yield gauge("ledger_scrub_last_complete_timestamp_seconds", "When the last complete "
                "scrub pass ended (UNIX time; 0: none yet).", care.scrub_last_complete)
    yield gauge("ledger_store_damaged", "Stored values known damaged and not repaired "
                "yet.", len(care.damaged))
    found = CounterMetricFamily("ledger_store_damage_found", "Damaged stored values "
                                "found (by a read or the scrub), by kind.", labels=["kind"])
    for kind in ("tile", "block", "checkpoint", "index", "filter", "dictionary", "meta",
                 "state"):
        found.add_metric([kind], care.found.get(kind, 0))
    yield found
    repairs = CounterMetricFamily("ledger_store_repairs", "Damaged stored values "
                                  "repaired, by source (peer: fetched from another "
                                  "validator and verified; local: rebuilt).",
                                  labels=["source"])
    for source in ("peer", "local"):
        repairs.add_metric([source], care.repairs.get(source, 0))
    yield repairs
