"""The simulator's own machinery: scheduler order, network faults, simulated disk."""

from __future__ import annotations

import random

import pytest

from ledger.consensus.sim.disk import CrashMode, SimDisk, frame, unframe
from ledger.consensus.sim.network import LinkFaults, Network
from ledger.consensus.sim.scheduler import NodeClock, Scheduler


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


def test_disk_keeps_synced_records_across_any_crash() -> None:
    rng = random.Random(0)
    for mode in CrashMode:
        d = SimDisk()
        d.write(b"one")
        d.write(b"two")
        d.sync()
        d.write(b"three-unsynced")
        d.crash(rng, mode)
        records = d.recover()
        assert records[:2] == [b"one", b"two"]
        assert records[2:] in ([], [b"three-unsynced"])


def test_disk_lose_tail_drops_unsynced_records() -> None:
    d = SimDisk()
    d.write(b"a")
    d.sync()
    d.write(b"b")
    d.crash(random.Random(0), CrashMode.LOSE_TAIL)
    assert d.recover() == [b"a"]


def test_torn_tail_is_cut_and_later_writes_survive() -> None:
    rng = random.Random(1)
    for _ in range(50):
        d = SimDisk()
        d.write(b"x" * 40)
        d.sync()
        d.write(b"y" * 40)
        d.write(b"z" * 40)
        d.crash(rng, CrashMode.TORN)
        assert d.recover() in ([b"x" * 40], [b"x" * 40, b"y" * 40])
        d.write(b"after")
        d.sync()
        assert d.recover()[-1] == b"after"


def test_unframe_rejects_a_flipped_checksum() -> None:
    raw = bytearray(frame(b"hello") + frame(b"world"))
    raw[-1] ^= 1
    records, end = unframe(bytes(raw))
    assert records == [b"hello"]
    assert end == len(frame(b"hello"))
