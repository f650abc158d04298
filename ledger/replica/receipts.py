"""Anchors' statuses, receipts, and the clients waiting for them (pure; part of the replica).

A client that anchors with ``wait`` gets its receipts when a quorum checkpoint covers every one
of its leaves. :class:`Waiters` keeps those requests: a pending digest is matched to its leaf
index when a committed block carries it (from the block's append result, no store read), and a
request whose leaves are all known waits in a heap by its highest index until a stored
checkpoint's size passes it. Receipts are then built together for every request the checkpoint
completes (one store snapshot for all their inclusion paths, one note parse per checkpoint),
not once per request.

:class:`ReceiptMaker` builds tlog-proof@v1 text (c2sp.org/tlog-proof) and never hands out a
receipt that the stored tree cannot back: the paths of a batch are built in one walk of the
tree (shared hashes computed once) and folded with the leaves' own hashes into a root that must
be the cosigned one, so a flipped byte in a stored tree node becomes a refusal and a halt
(``CorruptionError``), never a wrong receipt.
"""

from __future__ import annotations

import heapq
from binascii import b2a_base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger.checkpoint import parse_checkpoint_body
from ledger.errors import CorruptionError, NotFoundError
from ledger.merkle.hashing import leaf_hashes
from ledger.merkle.proof import Chain, chain_list
from ledger.receipt import RECEIPT_HEADER, build_receipt
from ledger.replica.checkpoints import note_body
from ledger.storage.base import Store

__all__ = ["AnchorStatus", "ReceiptMaker", "Waiters"]

PENDING = "pending"
COMMITTED = "committed"
ANCHORED = "anchored"


@dataclass(frozen=True, slots=True, kw_only=True)
class AnchorStatus:
    """One digest as a client sees it: ``pending`` (in a mempool), ``committed`` (in the log,
    not yet covered by a quorum checkpoint) or ``anchored`` (covered; ``receipt`` set when the
    client asked for it)."""

    digest: bytes
    status: str
    index: int | None
    receipt: str | None = None

    def to_json(self, *, with_receipt: bool) -> dict[str, object]:
        """The object of the HTTP API (``docs/api.md``)."""
        out: dict[str, object] = {"digest": self.digest.hex(), "status": self.status,
                                  "index": self.index}
        if with_receipt:
            out["receipt"] = self.receipt
        return out


#: The first line of a receipt and the start of the second: ``index <i>`` follows.
_HEAD = RECEIPT_HEADER + "\nindex"


class ReceiptMaker:
    """Receipts against stored checkpoint notes, each path checked (module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._checked: tuple[str, bytes] | None = None  # (note, its root), parsed once

    def receipts(self, indices: Sequence[int], digests: Sequence[bytes], *, size: int,
                 note: str, extra: bytes | None = None) -> list[str]:
        """The receipt of each leaf index (holding the digest beside it) against the note of
        tree ``size``, with every inclusion path read from one store snapshot.

        Raises:
            NotFoundError: an index is not below ``size``.
            CorruptionError: a stored path does not reach the note's root.
        """
        if not indices:
            return []
        if max(indices) >= size:
            raise NotFoundError("a leaf is not covered by that checkpoint")
        checked = self._checked
        if checked is None or checked[0] is not note:
            # The first receipt of a note goes through ledger.receipt, which checks that the
            # note parses; later ones reuse that check (it was 60% of the cost of a receipt).
            build_receipt(index=0, proof=[], checkpoint_note=note)
            checked = self._checked = (note, parse_checkpoint_body(note_body(note)).root)
        chains, root = self._store.inclusion_chains(indices, leaf_hashes(digests), size)
        if root != checked[1]:
            raise CorruptionError(
                f"the stored tree does not back the leaves {min(indices)}..{max(indices)} of "
                f"the cosigned checkpoint of size {size}; run `ledger db check`")
        if extra is not None:
            return [build_receipt(index=index, proof=chain_list(chain), checkpoint_note=note,
                                  extra=extra)
                    for index, chain in zip(indices, chains, strict=True)]
        # The paths of one block share their upper parts (the same chain objects): each part's
        # text ("\n<base64 hash>" lines down to the note) is built once and shared.
        tail = "\n\n" + note
        texts: dict[int, str] = {}

        def text(chain: Chain) -> str:
            if chain is None:
                return tail
            known = texts.get(id(chain))
            if known is None:
                known = texts[id(chain)] = ("\n" + b2a_base64(chain[0], newline=False)
                                            .decode("ascii") + text(chain[1]))
            return known

        return [f"{_HEAD} {index}{text(chain)}" for index, chain in zip(indices, chains,
                                                                         strict=True)]


@dataclass(eq=False)
class _Waiter:
    ticket: int
    digests: tuple[bytes, ...]
    indices: list[int | None]
    #: per leaf: the tree size of the block that appended it (its first checkpoint's size),
    #: when this replica saw that block commit; None for a leaf already in the log before.
    sizes: list[int | None]
    missing: int


@dataclass
class Waiters:
    """Requests waiting for their receipts (module docstring), by ticket.

    A request is *ready* once every leaf has an index; it is then kept in a heap by the tree
    size its receipts need at least (the largest of its leaves' first checkpoint sizes, or of
    ``index + 1`` for a leaf whose block it did not see commit).
    """

    _by_ticket: dict[int, _Waiter] = field(default_factory=dict)
    _pending: dict[bytes, list[tuple[_Waiter, int]]] = field(default_factory=dict)
    _ready: list[tuple[int, int]] = field(default_factory=list)  # heap of (size, ticket)
    _next: int = 1

    def __len__(self) -> int:
        return len(self._by_ticket)

    def add(self, statuses: Sequence[AnchorStatus]) -> int:
        """Register a request with the current status of each of its digests; its ticket."""
        ticket, self._next = self._next, self._next + 1
        waiter = _Waiter(ticket=ticket, digests=tuple(s.digest for s in statuses),
                         indices=[s.index for s in statuses], sizes=[None] * len(statuses),
                         missing=0)
        for pos, s in enumerate(statuses):
            if s.index is None:
                waiter.missing += 1
                self._pending.setdefault(s.digest, []).append((waiter, pos))
        self._by_ticket[ticket] = waiter
        if waiter.missing == 0:
            self._mark_ready(waiter)
        return ticket

    def cancel(self, ticket: int) -> None:
        """Forget a request (its client stopped waiting). Unknown tickets are ignored."""
        waiter = self._by_ticket.pop(ticket, None)
        if waiter is None or waiter.missing == 0:
            return  # a ready entry left in the heap is skipped when popped
        for pos, digest in enumerate(waiter.digests):
            if waiter.indices[pos] is None:
                entries = self._pending.get(digest)
                if entries is not None:
                    entries[:] = [e for e in entries if e[0] is not waiter]
                    if not entries:
                        del self._pending[digest]

    def committed(self, digests: Sequence[bytes], indices: Sequence[int], size: int) -> None:
        """A committed block, which grew the tree to ``size``, gave ``digests`` these leaf
        indices."""
        if not self._pending:
            return
        for digest, index in zip(digests, indices, strict=True):
            entries = self._pending.pop(digest, None)
            if entries is None:
                continue
            for waiter, pos in entries:
                waiter.indices[pos] = index
                waiter.sizes[pos] = size if index < size else None
                waiter.missing -= 1
                if waiter.missing == 0:
                    self._mark_ready(waiter)

    def _mark_ready(self, waiter: _Waiter) -> None:
        need = max((s if s is not None else (i or 0) + 1
                    for i, s in zip(waiter.indices, waiter.sizes, strict=True)), default=0)
        heapq.heappush(self._ready, (need, waiter.ticket))

    def covered(self, size: int) -> list[tuple[int, tuple[bytes, ...], list[int],
                                            list[int | None]]]:
        """Pop every request whose receipts need at most tree ``size``: (ticket, digests,
        indices, first checkpoint sizes) each."""
        out: list[tuple[int, tuple[bytes, ...], list[int], list[int | None]]] = []
        while self._ready and self._ready[0][0] <= size:
            _, ticket = heapq.heappop(self._ready)
            waiter = self._by_ticket.get(ticket)
            if waiter is None:
                continue  # cancelled
            indices = [i for i in waiter.indices if i is not None]
            out.append((ticket, waiter.digests, indices, list(waiter.sizes)))
        return out

    def done(self, ticket: int) -> None:
        """The request of ``ticket`` was answered."""
        self._by_ticket.pop(ticket, None)

    def retry(self, ticket: int, size: int) -> None:
        """Not answerable yet (a first checkpoint is not stored here yet): wait for ``size``
        again."""
        if ticket in self._by_ticket:
            heapq.heappush(self._ready, (size, ticket))
