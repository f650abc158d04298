"""Pending anchors and when to cut the next block (pure; part of the replica).

**The mempool.** Anchors accepted by this replica or gossiped by a peer, not yet committed, in
arrival order. A digest stays until a committed block carries it, so a round that fails, a
proposer that crashes or a lost gossip message never loses an anchor: the next proposer that
holds it proposes it again. The mempool is memory only: a ``202`` (pending) answer promises
nothing durable; a ``200`` with receipts does (the block and a quorum checkpoint are on disk).

**The batch policy.** The core starts height ``h + 1`` on its ``COMMIT`` timer, set to the batch
window. When that timer fires with nothing to propose, the replica *parks* it instead of
starting an empty height, and starts the height as soon as work arrives (an anchor, a gossiped
anchor, a validator-set change), when a peer is seen working on the new height, or when
catch-up needs the core running. A mempool that reaches the batch size starts the height
early. So an idle cluster makes no empty blocks and a busy one cuts a block per window or per
``max_batch`` digests. :class:`BatchTimer` holds that state; the replica asks it what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ledger.consensus import ScheduleTimeout
from ledger.errors import LedgerError

__all__ = ["MEMPOOL_CAPACITY", "BatchTimer", "Mempool", "OverloadedError"]

#: Pending anchors a replica holds at most (about 100 MB of dict entries).
MEMPOOL_CAPACITY: Final = 1_000_000


class OverloadedError(LedgerError):
    """The replica cannot take more anchors now (its mempool is full); retry later."""

    code = "overloaded"


class Mempool:
    """Pending anchors in arrival order, each at most once.

    ``capacity`` bounds memory: :meth:`add` refuses a batch that would not fit, as a whole.
    """

    def __init__(self, *, capacity: int = MEMPOOL_CAPACITY) -> None:
        self._capacity = capacity
        self._pending: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, digest: object) -> bool:
        return digest in self._pending

    def add(self, digests: Iterable[bytes], *, limit: int | None = None) -> list[bytes]:
        """Add the digests not pending yet; return those that were added, in order.

        The caller has already dropped digests that are in the store. ``limit`` (at most the
        capacity) is how many may be pending after the add: clients get a lower one than
        peers, so that a node refuses new anchors while its backlog is longer than the
        cluster commits in a few blocks, and spends its time on committing them.

        Raises:
            OverloadedError: the mempool cannot take them all (nothing is added).
        """
        fresh = [d for d in dict.fromkeys(digests) if d not in self._pending]
        bound = self._capacity if limit is None else min(limit, self._capacity)
        if len(self._pending) + len(fresh) > bound:
            raise OverloadedError(
                f"the node has {len(self._pending)} anchors pending; retry later"
            )
        for d in fresh:
            self._pending[d] = None
        return fresh

    def batch(self, limit: int) -> list[bytes]:
        """The oldest ``limit`` pending digests (they stay pending until committed)."""
        out: list[bytes] = []
        for d in self._pending:
            if len(out) >= limit:
                break
            out.append(d)
        return out

    def remove(self, digests: Iterable[bytes]) -> None:
        """Forget digests that a committed block carried.

        A dict that shrank a lot keeps its peak allocation, so after a burst the table is
        rebuilt once it is mostly empty: the process's memory comes back after the burst.
        """
        pending = self._pending
        peak = len(pending)
        for d in digests:
            pending.pop(d, None)
        if peak >= 65_536 and len(pending) < peak // 8:
            self._pending = dict(pending)


class BatchTimer:
    """The ``COMMIT`` timer of the current height: running, parked, or neither.

    ``pending`` is the timer the core scheduled and that has not fired; ``parked`` the one that
    fired while there was nothing to propose. At most one of the two is set.
    """

    def __init__(self) -> None:
        self.pending: ScheduleTimeout | None = None
        self.parked: ScheduleTimeout | None = None

    def scheduled(self, timeout: ScheduleTimeout) -> None:
        """The core scheduled ``timeout`` (kind ``COMMIT``)."""
        self.pending = timeout
        self.parked = None

    def fired(self, timeout: ScheduleTimeout, *, idle: bool) -> bool:
        """``timeout`` fired; return whether to hand it to the core now.

        A timer fired early already (:meth:`release`) or replaced is ignored; an ``idle`` one
        is parked.
        """
        if self.pending is not timeout:
            return False
        self.pending = None
        if idle:
            self.parked = timeout
            return False
        return True

    def release(self, *, early: bool) -> ScheduleTimeout | None:
        """The timer to fire now: the parked one, or (``early``: the batch is full) the one
        still running. ``None`` if there is none."""
        if self.parked is not None:
            timeout, self.parked = self.parked, None
            return timeout
        if early and self.pending is not None:
            timeout, self.pending = self.pending, None
            return timeout
        return None

    def reset(self) -> None:
        """Forget both (a commit, or the core was rebuilt)."""
        self.pending = self.parked = None
