"""The replica's clients: taking their digests, telling their status, handing out receipts.

A digest a client sends is checked against the store and the mempool (one store read per
request) and queued if it is new. Its status is ``pending`` while in a mempool, ``committed``
once in the log, ``anchored`` once a stored quorum checkpoint covers its leaf. A client that
waits gets a ticket; :meth:`Clients.answer_covered` answers every waiting client whose leaves the
latest checkpoint covers, building all their receipts from one store snapshot
(:mod:`ledger.replica.receipts`).

**The earliest receipt.** A leaf's receipt is cut against the *first* stored checkpoint whose
tree holds it: the checkpoint of the block that appended it, the same tree size on every node,
and the earliest time bound the ledger can prove for it, whenever it is asked for. A client
that waits for a leaf this replica saw committed is answered only once the checkpoint of that
very block is stored here (never a later one that happened to be stored first). On request
(:meth:`Clients.proof` with ``latest``) the receipt is cut against the latest checkpoint
instead and carries the first one as an earliest bridge (:mod:`ledger.receipt`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import NotFoundError
from ledger.receipt import EarliestBridge
from ledger.replica.actions import Reply
from ledger.replica.batching import Mempool
from ledger.replica.checkpoints import CheckpointBook
from ledger.replica.receipts import (
    ANCHORED,
    COMMITTED,
    PENDING,
    AnchorStatus,
    ReceiptMaker,
    Waiters,
)
from ledger.storage.base import Store

__all__ = ["Clients"]


class Clients:
    """Statuses, receipts and waiting clients over one store (module docstring)."""

    def __init__(self, *, store: Store, mempool: Mempool, checkpoints: CheckpointBook,
                 client_limit: int | None = None) -> None:
        self._store = store
        self._mempool = mempool
        self._client_limit = client_limit
        self._checkpoints = checkpoints
        self._receipts = ReceiptMaker(store)
        self.waiters = Waiters()

    def take(self, digests: Sequence[bytes]) -> list[bytes]:
        """Queue the digests that are in neither the log nor the mempool; return those.

        Raises:
            OverloadedError: the mempool is full (nothing was queued).
            StorageError: the store failed.
        """
        candidates = [d for d in dict.fromkeys(digests) if d not in self._mempool]
        known = self._store.index_of_many(candidates)
        return self._mempool.add(d for d, i in zip(candidates, known, strict=True) if i is None)

    def accept(self, digests: Sequence[bytes]) -> tuple[list[bytes], list[AnchorStatus]]:
        """:meth:`take` and then :meth:`statuses` of ``digests``, from one index lookup.

        Raises:
            OverloadedError: the mempool is full (nothing was queued).
            StorageError: the store failed.
        """
        unique = list(dict.fromkeys(digests))
        known = dict(zip(unique, self._store.index_of_many(unique), strict=True))
        fresh = self._mempool.add((d for d in unique if known[d] is None),
                                  limit=self._client_limit)
        covered = self._checkpoints.latest_size
        out: list[AnchorStatus] = []
        for digest in digests:
            index = known[digest]
            if index is None:
                out.append(AnchorStatus(digest=digest, status=PENDING, index=None))
            else:
                out.append(AnchorStatus(digest=digest, index=index,
                                        status=ANCHORED if index < covered else COMMITTED))
        return fresh, out

    def statuses(self, digests: Sequence[bytes], *, strict: bool = False) -> list[AnchorStatus]:
        """The status of each digest, with one store read for all.

        Raises:
            NotFoundError: ``strict`` and a digest is neither in the log nor pending (without
                ``strict`` such a digest is reported ``pending``: it was just taken).
        """
        covered = self._checkpoints.latest_size
        out: list[AnchorStatus] = []
        for digest, index in zip(digests, self._store.index_of_many(digests), strict=True):
            if index is None:
                if strict and digest not in self._mempool:
                    raise NotFoundError(f"digest {digest.hex()} is not known to this node")
                out.append(AnchorStatus(digest=digest, status=PENDING, index=None))
            else:
                out.append(AnchorStatus(digest=digest, index=index,
                                        status=ANCHORED if index < covered else COMMITTED))
        return out

    def proof(self, digest: bytes, *, latest: bool = False) -> tuple[AnchorStatus, int]:
        """``digest``'s status, with its receipt when it is anchored (against the first
        checkpoint that holds it; with ``latest``, against the latest, carrying the first as
        an earliest bridge), and the tree size of the receipt's checkpoint (0 without one).

        Raises:
            NotFoundError: the digest is neither in the log nor pending.
            CorruptionError: the stored tree does not back the receipt.
        """
        status = self.statuses([digest], strict=True)[0]
        first = None if status.index is None else self._checkpoints.first_of(status.index)
        if first is None or status.index is None:
            return status, 0
        size, note = first
        newest = self._checkpoints.latest
        if latest and newest is not None and newest[0] > size:
            bridge = EarliestBridge(proof=tuple(self._store.consistency_proof(size, newest[0])),
                                    checkpoint=note)
            text = self._receipts.receipts([status.index], [digest], size=newest[0],
                                           note=newest[1], extra=bridge.encode())[0]
            return AnchorStatus(digest=digest, status=ANCHORED, index=status.index,
                                receipt=text), newest[0]
        text = self._receipts.receipts([status.index], [digest], size=size, note=note)[0]
        return AnchorStatus(digest=digest, status=ANCHORED, index=status.index,
                            receipt=text), size

    def wait(self, statuses: Sequence[AnchorStatus]) -> int:
        """A client waits for the receipts of ``statuses``' digests; its ticket."""
        return self.waiters.add(statuses)

    def cancel(self, ticket: int) -> None:
        """The client of ``ticket`` stopped waiting."""
        self.waiters.cancel(ticket)

    def committed(self, digests: Sequence[bytes], indices: Sequence[int], size: int) -> None:
        """A committed block, which grew the tree to ``size``, gave ``digests`` these leaf
        indices."""
        self.waiters.committed(digests, indices, size)

    def answer_covered(self) -> list[Reply]:
        """The replies to every waiting client whose leaves' first checkpoints are stored.

        The receipts of all of them are built together: one store snapshot per checkpoint.

        Raises:
            CorruptionError: the stored tree does not back a receipt.
        """
        latest = self._checkpoints.latest
        if latest is None or not len(self.waiters):
            return []
        answerable: list[tuple[int, tuple[bytes, ...], list[int], list[tuple[int, str]]]] = []
        covered = self.waiters.covered(latest[0])
        first_cps = self._checkpoints.firsts_of([i for c in covered for i in c[2]])
        at = 0
        for ticket, digests, indices, sizes in covered:
            found, at = first_cps[at:at + len(indices)], at + len(indices)
            late = [need for f, need in zip(found, sizes, strict=True)
                    if f is None or (need is not None and f[0] != need)]
            if late:  # that block's checkpoint is not stored here yet: look again when a
                # checkpoint is stored (every store calls this)
                self.waiters.retry(ticket, max(n or 0 for n in late))
                continue
            answerable.append((ticket, digests, indices, [f for f in found if f is not None]))
        # One store snapshot per checkpoint for every leaf it is the first of.
        by_note: dict[tuple[int, str], list[tuple[tuple[int, int], int, bytes]]] = {}
        for n, (_, digests, indices, firsts) in enumerate(answerable):
            for pos, (digest, index, first) in enumerate(zip(digests, indices, firsts,
                                                             strict=True)):
                by_note.setdefault(first, []).append(((n, pos), index, digest))
        texts: dict[tuple[int, int], str] = {}
        for (size, note), leaves in by_note.items():
            made = self._receipts.receipts([i for _, i, _ in leaves], [d for _, _, d in leaves],
                                           size=size, note=note)
            texts.update((key, text) for (key, _, _), text in zip(leaves, made, strict=True))
        replies = []
        for n, (ticket, digests, indices, _) in enumerate(answerable):
            self.waiters.done(ticket)
            anchors = tuple(AnchorStatus(digest=d, status=ANCHORED, index=i,
                                         receipt=texts[(n, pos)])
                            for pos, (d, i) in enumerate(zip(digests, indices, strict=True)))
            replies.append(Reply(ticket=ticket, anchors=anchors))
        return replies
