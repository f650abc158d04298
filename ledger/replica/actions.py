"""What a replica asks of the world: the actions its events return (pure values).

The one who runs a replica (the node's I/O layer, or the simulator) executes every action of
an event in list order before it delivers the next event:

==================  ==============================================================================
:class:`Send`       send ``payload`` of envelope item ``kind`` to peer ``to`` (``None``: to every
                    peer). The transport may coalesce items into envelopes; it seals each
                    envelope with :meth:`ledger.replica.Replica.seal` when it sends it. Everything
                    a replica sends is safe to lose: it is re-sent or re-derived.
:class:`SetTimer`   call :meth:`ledger.replica.Replica.on_timer` with ``timer`` at time ``at`` (ms,
                    the replica's clock) or later. Never cancelled: stale timers are ignored.
:class:`Fetch`      ask peer ``peer`` for its status, block ``height`` or latest checkpoint, and
                    hand the answer (or the failure) to ``on_status`` / ``on_block`` /
                    ``on_checkpoint``.
:class:`Reply`      answer the waiting client of ``ticket`` with ``anchors`` (every receipt set).
:class:`Committed`  a block was committed (store, end-of-height marker and apply are done):
                    for logs, metrics and the simulator's checker.
:class:`Halt`       the replica stopped taking events (a storage failure or corruption): say so,
                    keep serving reads, let an operator restart it.
==================  ==============================================================================

Persisting is not an action: a replica writes through the ``Store`` protocol itself, before it
returns the actions that depend on the write (``Send`` of a signed message after its safety
record is written; ``Reply`` after the checkpoint is stored), so "persist before you send" holds
by construction for anyone who executes the actions in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ledger.consensus import Block, ScheduleTimeout
from ledger.replica.receipts import AnchorStatus

__all__ = [
    "Action",
    "Committed",
    "Fetch",
    "FetchKind",
    "Halt",
    "Reply",
    "Send",
    "SetTimer",
    "Timer",
]


@dataclass(frozen=True, slots=True)
class Send:
    """Send one envelope item to ``to`` (``None``: every peer)."""

    to: str | None
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True, eq=False)
class Timer:
    """A replica timer: a consensus timeout (``timeout`` set) or the housekeeping tick.
    ``generation`` tells timers of a core since replaced (they are ignored)."""

    generation: int
    timeout: ScheduleTimeout | None = None


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Deliver ``timer`` back at ``at`` (ms) or later."""

    at: int
    timer: Timer


class FetchKind(enum.Enum):
    """What a :class:`Fetch` asks a peer for."""

    STATUS = "status"
    BLOCK = "block"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask ``peer`` for something: ``height`` is the block's for :attr:`FetchKind.BLOCK`, and
    the tree size of the checkpoint for :attr:`FetchKind.CHECKPOINT` (0: the latest)."""

    peer: str
    what: FetchKind
    height: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """The receipts a waiting client asked for, in its request's order."""

    ticket: int
    anchors: tuple[AnchorStatus, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    """Block ``block`` is committed; ``new`` of its digests were new; ``started`` is when its
    height started (ms), for the commit-latency metric."""

    block: Block
    new: int
    started: int


@dataclass(frozen=True, slots=True)
class Halt:
    """The replica halted for ``reason``."""

    reason: str


Action = Send | SetTimer | Fetch | Reply | Committed | Halt
