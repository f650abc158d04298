"""The seeded scheduler and virtual clock every simulated run is driven by.

Determinism is the whole point of the simulator (TigerBeetle's VOPR and FoundationDB's simulation
work the same way): one :class:`random.Random` seeded from the run's seed is the *only* source of
randomness, and every event sits in one heap ordered by ``(virtual time, sequence number)``. The
sequence number breaks ties in insertion order, so two events at the same instant always run in
the same order, and a run is a pure function of ``(seed, config)``.

Every event that runs is folded into a SHA-256 *trace hash* together with its time and a label
made only of deterministic values (node ids, message digests, never ``id()`` or wall time). Two
runs of one seed must produce the same trace hash; ``tests/consensus/test_sim_replay.py`` checks
it.

Virtual time is an integer number of milliseconds since the start of the run; nothing here reads
the machine's clock.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

#: Virtual time unit: milliseconds (an ``int``: no floating-point drift in the event order).
MS = 1
SECOND = 1000 * MS

Label = tuple[str | int | bytes, ...]


@dataclass(order=True)
class _Entry:
    time: int
    seq: int
    label: Label = field(compare=False)
    action: Callable[[], None] = field(compare=False)


class Scheduler:
    """An event heap over virtual time with one seeded random source.

    ``schedule`` never runs anything itself; ``run`` pops events in ``(time, seq)`` order, moves
    the clock to each event's time and calls it. Events may schedule further events. An event
    can only be scheduled at or after the current time (a :class:`ValueError` otherwise: that is
    a bug in the simulator, not a simulated fault).
    """

    def __init__(self, *, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self._now = 0
        self._seq = 0
        self._heap: list[_Entry] = []
        self._trace = hashlib.sha256()
        self.events_run = 0

    @property
    def now(self) -> int:
        """The current virtual time in milliseconds."""
        return self._now

    def schedule(self, delay: int, label: Label, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay`` ms from now; raises ``ValueError`` if ``delay < 0``."""
        self.schedule_at(self._now + delay, label, action)

    def schedule_at(self, time: int, label: Label, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual ``time``; raises ``ValueError`` for a time in the past."""
        if time < self._now:
            raise ValueError(f"cannot schedule at {time} < now {self._now}")
        self._seq += 1
        heapq.heappush(self._heap, _Entry(time, self._seq, label, action))

    def pending(self) -> int:
        """How many events wait in the heap."""
        return len(self._heap)

    def run(self, *, until: int, max_events: int, stop: Callable[[], bool] | None = None) -> None:
        """Run events until the heap empties, the clock passes ``until``, ``max_events`` have run
        in this call, or ``stop()`` returns true (checked after each event)."""
        ran = 0
        while self._heap and ran < max_events:
            if self._heap[0].time > until:
                break
            entry = heapq.heappop(self._heap)
            self._now = entry.time
            self.record(entry.time, entry.label)
            entry.action()
            ran += 1
            self.events_run += 1
            if stop is not None and stop():
                break
        if not self._heap or self._heap[0].time > until:
            self._now = max(self._now, until)

    def record(self, time: int, label: Label) -> None:
        """Fold one deterministic observation into the trace hash."""
        h = self._trace
        h.update(time.to_bytes(8, "big", signed=True))
        for part in label:
            if isinstance(part, bytes):
                h.update(b"b" + len(part).to_bytes(4, "big") + part)
            elif isinstance(part, int):
                h.update(b"i" + part.to_bytes(16, "big", signed=True))
            else:
                raw = part.encode()
                h.update(b"s" + len(raw).to_bytes(4, "big") + raw)
        h.update(b";")

    def trace_hash(self) -> str:
        """Hex SHA-256 of every event run so far (and every extra observation recorded)."""
        return self._trace.hexdigest()


@dataclass
class NodeClock:
    """One node's view of wall-clock time: virtual time plus a skew that can jump.

    Scenario 10 of the design brief (clock skew and jumps) sets ``skew_ms`` per node and moves it
    during a run. The core only ever sees ``now()`` from here; timers are scheduled on the global
    virtual timeline so that a jumping wall clock cannot starve the event loop.
    """

    scheduler: Scheduler
    skew_ms: int = 0

    def now_ms(self) -> int:
        """This node's wall clock in ms (never negative)."""
        return max(0, self.scheduler.now + self.skew_ms)

