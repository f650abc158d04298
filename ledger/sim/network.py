"""A simulated network: loss, delay, reordering, duplication and partitions.

The network carries opaque bytes between endpoints (node ids). Faults follow the partially
synchronous model the Tendermint proof assumes (Dwork, Lynch and Stockmeyer): before the global
stabilisation time (GST) the network may drop, duplicate and arbitrarily delay messages and may
be partitioned; after GST every message between two correct nodes arrives within a known bound.
:meth:`Network.stabilise` switches a network from the first regime to the second; the liveness
checker only makes claims about the time after it.

Reordering needs no switch of its own: each copy of a message draws an independent delay, so two
messages sent in one order routinely arrive in the other.

A partition is checked twice, when a message is sent and when it would be delivered, so that a
partition cuts messages already in flight (a cable is pulled, not a queue drained).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ledger.sim.scheduler import Scheduler


@dataclass(frozen=True, kw_only=True)
class LinkFaults:
    """How badly the network behaves; all probabilities are per copy of a message."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay_ms: int = 1
    max_delay_ms: int = 20

    def __post_init__(self) -> None:
        if not (0.0 <= self.drop <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("probabilities must lie in [0, 1]")
        if not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms")


#: The network after GST: nothing lost, delays bounded by ``max_delay_ms``.
CALM = LinkFaults()

Deliver = Callable[[int, int, bytes], None]


class Network:
    """Endpoints exchange bytes through the scheduler, subject to :class:`LinkFaults`.

    ``deliver(dst, src, payload)`` is called when a copy arrives. ``src`` is the true sender as
    the transport sees it (the analogue of an authenticated TLS peer); messages still carry their
    own signatures, and a Byzantine endpoint may put anything in ``payload``.
    """

    def __init__(
        self,
        *,
        scheduler: Scheduler,
        endpoints: Sequence[int],
        deliver: Deliver,
        faults: LinkFaults = CALM,
    ) -> None:
        self._sched = scheduler
        self._endpoints = tuple(endpoints)
        self._deliver = deliver
        self.faults = faults
        self._group: dict[int, int] = {}
        #: A targeted nemesis: ``drop_if(src, dst, payload)`` true drops that copy.
        self.drop_if: Callable[[int, int, bytes], bool] | None = None
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    @property
    def endpoints(self) -> tuple[int, ...]:
        """Every endpoint id, in a fixed order."""
        return self._endpoints

    def partition(self, groups: Sequence[Collection[int]]) -> None:
        """Cut the network into ``groups``; an endpoint named in no group is isolated.

        ``partition([{0, 1}, {2, 3}])`` is the 2|2 split, ``partition([{0}, {1, 2, 3}])`` 1|3.
        """
        self._group = {}
        isolated = -1
        for gi, group in enumerate(groups):
            for e in group:
                self._group[e] = gi
        for e in self._endpoints:
            if e not in self._group:
                self._group[e] = isolated
                isolated -= 1
        self._sched.record(
            self._sched.now, ("partition", *(x for kv in sorted(self._group.items()) for x in kv))
        )

    def heal(self) -> None:
        """Remove every partition."""
        self._group = {}
        self._sched.record(self._sched.now, ("heal",))

    def stabilise(self) -> None:
        """GST: heal, and from now on deliver every message within the calm delay bound."""
        self.heal()
        self.faults = CALM

    def connected(self, a: int, b: int) -> bool:
        """Whether ``a`` and ``b`` can talk right now."""
        if not self._group:
            return True
        return self._group.get(a, -1 - a) == self._group.get(b, -2 - b) or a == b

    def send(self, src: int, dst: int, payload: bytes) -> None:
        """Send one message; loss, duplication and delay are drawn from the scheduler's rng."""
        self.sent += 1
        if src == dst:
            # Loopback never crosses a wire: a node always hears itself, at once.
            self._enqueue(src, dst, payload, 0)
            return
        if not self.connected(src, dst) or (self.drop_if and self.drop_if(src, dst, payload)):
            self.dropped += 1
            return
        rng, f = self._sched.rng, self.faults
        copies = 1
        if f.duplicate and rng.random() < f.duplicate:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            if f.drop and rng.random() < f.drop:
                self.dropped += 1
                continue
            self._enqueue(src, dst, payload, rng.randint(f.min_delay_ms, f.max_delay_ms))

    def broadcast(self, src: int, payload: bytes, *, include_self: bool = True) -> None:
        """Send ``payload`` to every endpoint (itself included unless told otherwise)."""
        for dst in self._endpoints:
            if dst != src or include_self:
                self.send(src, dst, payload)

    def _enqueue(self, src: int, dst: int, payload: bytes, delay: int) -> None:
        digest = hashlib.sha256(payload).digest()[:8]

        def arrive() -> None:
            if self.connected(src, dst):
                self._deliver(dst, src, payload)
            else:
                self.dropped += 1

        self._sched.schedule(delay, ("msg", src, dst, digest), arrive)
