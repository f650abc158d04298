"""The simulator's own machinery: scheduler order, network faults, the simulated store."""

from __future__ import annotations

import random

import pytest

from ledger.consensus import SafetyState, Step
from ledger.replica.safety_log import SAFETY_KEY
from ledger.sim.network import LinkFaults, Network
from ledger.sim.scheduler import NodeClock, Scheduler
from ledger.sim.store import Crash, CrashMode, CrashPlan, SimStore
from ledger.storage.base import BlockRecord


def test_scheduler_runs_events_in_time_then_insertion_order() -> None:
    s = Scheduler(seed=1)
    seen: list[str] = []
    s.schedule(5, ("a",), lambda: seen.append("a5"))
    s.schedule(1, ("b",), lambda: seen.append("b1"))
    s.schedule(5, ("c",), lambda: seen.append("c5"))
    s.schedule(0, ("d",), lambda: s.schedule(0, ("e",), lambda: seen.append("e0")))
    s.run(until=100, max_events=100)
    assert seen == ["e0", "b1", "a5", "c5"]
    assert s.now == 100


def test_scheduler_refuses_events_in_the_past() -> None:
    s = Scheduler(seed=1)
    s.schedule(10, ("x",), lambda: None)
    s.run(until=10, max_events=10)
    with pytest.raises(ValueError):
        s.schedule_at(5, ("late",), lambda: None)


def test_trace_hash_depends_on_labels_and_times() -> None:
    def trace(delay: int, label: str) -> str:
        s = Scheduler(seed=3)
        s.schedule(delay, (label, 1, b"\x00"), lambda: None)
        s.run(until=100, max_events=10)
        return s.trace_hash()

    assert trace(1, "a") == trace(1, "a")
    assert trace(1, "a") != trace(2, "a")
    assert trace(1, "a") != trace(1, "b")


def test_node_clock_applies_skew_and_never_goes_negative() -> None:
    s = Scheduler(seed=1)
    c = NodeClock(s, skew_ms=-5000)
    assert c.now_ms() == 0
    c.skew_ms = 1500
    assert c.now_ms() == 1500


def _net(seed: int, faults: LinkFaults) -> tuple[Scheduler, Network, list[tuple[int, int, bytes]]]:
    s = Scheduler(seed=seed)
    got: list[tuple[int, int, bytes]] = []
    net = Network(scheduler=s, endpoints=[0, 1, 2, 3],
                  deliver=lambda d, src, p: got.append((d, src, p)), faults=faults)
    return s, net, got


def test_calm_network_delivers_everything_exactly_once() -> None:
    s, net, got = _net(1, LinkFaults())
    for i in range(50):
        net.broadcast(0, bytes([i]))
    s.run(until=1000, max_events=10_000)
    assert sorted(got) == sorted((d, 0, bytes([i])) for i in range(50) for d in range(4))


def test_random_delays_reorder_messages() -> None:
    s, net, got = _net(2, LinkFaults(min_delay_ms=1, max_delay_ms=100))
    for i in range(50):
        net.send(0, 1, bytes([i]))
    s.run(until=1000, max_events=10_000)
    order = [p[0] for _, _, p in got]
    assert sorted(order) == list(range(50))
    assert order != list(range(50))


def test_lossy_network_drops_and_duplicates() -> None:
    s, net, got = _net(3, LinkFaults(drop=0.3, duplicate=0.3))
    for i in range(200):
        net.send(0, 1, i.to_bytes(2, "big"))
    s.run(until=1000, max_events=10_000)
    payloads = [p for _, _, p in got]
    assert len(set(payloads)) < 200  # something was lost
    assert len(payloads) > len(set(payloads))  # something arrived twice
    assert net.dropped > 0 and net.duplicated > 0


def test_partition_cuts_messages_in_flight_and_heal_restores() -> None:
    s, net, got = _net(4, LinkFaults(min_delay_ms=10, max_delay_ms=10))
    net.send(0, 2, b"in-flight")
    net.partition([{0, 1}, {2, 3}])
    net.send(0, 1, b"same-side")
    net.send(1, 3, b"across")
    s.run(until=20, max_events=100)
    assert [p for _, _, p in got] == [b"same-side"]
    net.heal()
    net.send(1, 3, b"after-heal")
    s.run(until=40, max_events=100)
    assert got[-1] == (3, 1, b"after-heal")


def test_one_three_partition_isolates_the_single_node() -> None:
    _, net, _ = _net(5, LinkFaults())
    net.partition([{0}, {1, 2, 3}])
    assert not net.connected(0, 1)
    assert net.connected(1, 3)
    net.partition([{1, 2, 3}])  # 0 named nowhere: isolated
    assert not net.connected(0, 2) and net.connected(0, 0)


def test_same_seed_gives_same_network_behaviour() -> None:
    def run(seed: int) -> str:
        s, net, _ = _net(seed, LinkFaults(drop=0.2, duplicate=0.2, max_delay_ms=50))
        for i in range(100):
            net.broadcast(i % 4, bytes([i]))
        s.run(until=10_000, max_events=100_000)
        return s.trace_hash()

    assert run(7) == run(7)
    assert run(7) != run(8)


def _store(plan: CrashPlan | None) -> tuple[SimStore, list[str], list[bytes]]:
    crashes: list[str] = []
    persisted: list[bytes] = []
    store = SimStore(rng=random.Random(0), on_crash=lambda p: crashes.append(p.point),
                     on_persist=persisted.append)
    store.plan = plan
    return store, crashes, persisted


def _record(height: int) -> bytes:
    return SafetyState(height=height, round=0, step=Step.PREVOTE, signed=b"x").encode()


@pytest.mark.parametrize(("stage", "mode", "kept"), [
    ("before_write", None, False),
    ("before_sync", CrashMode.VANISH, False),
    ("before_sync", CrashMode.SURVIVE, True),
    ("after_sync", None, True),
])
def test_a_crash_at_a_safety_write_keeps_exactly_what_was_durable(
    stage: str, mode: CrashMode | None, kept: bool
) -> None:
    store, crashes, persisted = _store(CrashPlan(point=f"persist:{stage}", skip=0, down_ms=1,
                                                 mode=mode))
    with pytest.raises(Crash):
        store.put_meta({SAFETY_KEY: _record(1)})
    assert crashes == [f"persist:{stage}"]
    assert (store.get_meta(SAFETY_KEY) is not None) is kept
    assert persisted == ([_record(1)] if kept else [])
    store.put_meta({SAFETY_KEY: _record(2)})  # the plan fired once: the next write goes through
    assert store.get_meta(SAFETY_KEY) == _record(2)


def test_a_commit_crash_is_all_or_nothing_and_skip_counts_writes() -> None:
    store, crashes, _ = _store(CrashPlan(point="commit:before_sync", skip=1, down_ms=1,
                                         mode=CrashMode.VANISH))
    block = BlockRecord(height=1, block=b"b1", certificate=b"c1")
    store.append([b"\x01" * 32], block=block)  # skipped: the first matching write passes
    with pytest.raises(Crash):
        store.append([b"\x02" * 32], block=BlockRecord(height=2, block=b"b2",
                                                         certificate=b"c2"))
    assert crashes == ["commit:before_sync"]
    assert store.last_height() == 1 and store.size == 1  # neither the block nor its digests
    assert store.lost_writes == 1


def test_writes_of_other_kinds_do_not_trigger_a_plan() -> None:
    store, crashes, _ = _store(CrashPlan(point="checkpoint:before_write", skip=0, down_ms=1))
    store.put_meta({b"other": b"v"})
    store.append([b"\x03" * 32], block=BlockRecord(height=1, block=b"b", certificate=b"c"))
    assert not crashes
    with pytest.raises(Crash):
        store.put_checkpoint(1, b"note")
    assert store.checkpoint(1) is None
