"""The simulated disk: the production in-memory store, surviving its replica's crashes, with
armed crash points at every durable write.

A :class:`SimStore` is a :class:`~ledger.storage.memory.MemoryStore` that belongs to a simulated
node, not to a replica: when the node crashes, the replica object (its memory, its timers) is
thrown away and a new one is started on the same store, which holds exactly what was written.
Every mutating call of the ``Store`` protocol is one transaction, durable when it returns, as
LMDB with sync on (the production store) guarantees. A crash can be armed to hit the node at
one of :data:`CRASH_POINTS`, each ``<write>:<stage>``:

==============================  ====================================================================
write                           what it is
==============================  ====================================================================
``persist``                     the safety log (``put_meta`` of the safety record): before sending
``commit``                      a block with its certificate, tree nodes and index (``append``)
``checkpoint``                  a quorum checkpoint note (``put_checkpoint``), before receipts
==============================  ====================================================================

and the stage: ``before_write`` (nothing written), ``before_sync`` (the transaction was written
but its sync did not return: it may survive or vanish, drawn per crash unless the plan fixes
it; a half-written transaction is never visible, as in LMDB, whose two meta pages make a
commit atomic), ``after_sync`` (durable, but nothing after it in the event happened: no message
of that event left the node). The crash unwinds the replica with :class:`Crash`, which no
``except Exception`` catches.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ledger.replica.safety_log import SAFETY_KEY
from ledger.storage.base import AppendResult, BlockRecord
from ledger.storage.memory import MemoryStore

__all__ = ["CRASH_POINTS", "Crash", "CrashMode", "CrashPlan", "SimStore"]

CRASH_POINTS = (
    "persist:before_write",
    "persist:before_sync",
    "persist:after_sync",
    "commit:before_write",
    "commit:before_sync",
    "commit:after_sync",
    "checkpoint:before_write",
    "checkpoint:after_sync",
)


class Crash(BaseException):
    """Unwinds a replica when an armed crash fires (never leaves the simulator)."""


class CrashMode(enum.Enum):
    """What happens to a transaction whose sync did not return."""

    SURVIVE = "survive"
    VANISH = "vanish"


@dataclass
class CrashPlan:
    """Crash at ``point`` of the ``skip``-th next matching write, then restart after
    ``down_ms``. ``mode``: for a ``before_sync`` point (``None``: drawn at random)."""

    point: str
    skip: int
    down_ms: int
    mode: CrashMode | None = None


class SimStore(MemoryStore):
    """A node's durable store in the simulator (module docstring).

    ``on_crash(plan)`` is called when an armed crash fires, before :class:`Crash` is raised;
    ``on_persist(record_bytes)`` after each safety record becomes durable (the checker counts a
    signature once it can be re-sent after a restart). ``rng`` draws the fate of a transaction
    at ``before_sync``.
    """

    def __init__(self, *, rng: random.Random, on_crash: Callable[[CrashPlan], None],
                 on_persist: Callable[[bytes], None]) -> None:
        super().__init__()
        self.plan: CrashPlan | None = None
        self._rng = rng
        self._on_crash = on_crash
        self._on_persist = on_persist
        self.lost_writes = 0

    def _write(self, kind: str, apply: Callable[[], object]) -> object:
        plan = self.plan
        if plan is None or not plan.point.startswith(kind + ":"):
            return apply()
        if plan.skip > 0:
            plan.skip -= 1
            return apply()
        stage = plan.point.split(":", 1)[1]
        self.plan = None
        if stage == "before_write":
            self._fire(plan)
        survive = stage == "after_sync"
        if stage == "before_sync":
            mode = plan.mode or self._rng.choice((CrashMode.SURVIVE, CrashMode.VANISH))
            survive = mode is CrashMode.SURVIVE
        if survive:
            apply()
        else:
            self.lost_writes += 1
        self._fire(plan)
        raise AssertionError("unreachable")

    def _fire(self, plan: CrashPlan) -> None:
        self._on_crash(plan)
        raise Crash(plan.point)

    def put_meta(self, items: Mapping[bytes, bytes | None]) -> None:
        if SAFETY_KEY not in items:
            super().put_meta(items)
            return
        record = items[SAFETY_KEY]

        def apply() -> None:
            super(SimStore, self).put_meta(items)
            if record is not None:
                self._on_persist(record)

        self._write("persist", apply)

    def append(self, digests: Iterable[bytes], *, block: BlockRecord | None = None,
               meta: Mapping[bytes, bytes | None] | None = None) -> AppendResult:
        batch = list(digests)
        if block is None and meta is None:
            return super().append(batch)
        result = self._write("commit", lambda: super(SimStore, self).append(
            batch, block=block, meta=meta))
        assert isinstance(result, AppendResult)
        return result

    def put_checkpoint(self, size: int, note: bytes) -> None:
        self._write("checkpoint", lambda: super(SimStore, self).put_checkpoint(size, note))
