"""The replica's clients: taking their digests, telling their status, handing out receipts.

A digest a client sends is checked against the store and the mempool (one store read per
request) and queued if it is new. Its status is ``pending`` while in a mempool, ``committed``
once in the log, ``anchored`` once a stored quorum checkpoint covers its leaf. A client that
waits gets a ticket; :meth:`Clients.answer_covered` answers every waiting client whose leaves the
latest checkpoint covers, building all their receipts from one store snapshot
(:mod:`ledger.replica.receipts`).

Receipts are cut against the latest stored checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import NotFoundError
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

    def __init__(self, *, store: Store, mempool: Mempool, checkpoints: CheckpointBook) -> None:
        self._store = store
        self._mempool = mempool
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

    def proof(self, digest: bytes) -> AnchorStatus:
        """``digest``'s status, with its receipt when it is anchored.

        Raises:
            NotFoundError: the digest is neither in the log nor pending.
            CorruptionError: the stored tree does not back the receipt.
        """
        status = self.statuses([digest], strict=True)[0]
        latest = self._checkpoints.latest
        if status.status != ANCHORED or latest is None or status.index is None:
            return status
        size, note = latest
        receipt = self._receipts.receipts([status.index], [digest], size=size, note=note)[0]
        return AnchorStatus(digest=digest, status=ANCHORED, index=status.index,
                            receipt=receipt)

    def wait(self, statuses: Sequence[AnchorStatus]) -> int:
        """A client waits for the receipts of ``statuses``' digests; its ticket."""
        return self.waiters.add(statuses)

    def cancel(self, ticket: int) -> None:
        """The client of ``ticket`` stopped waiting."""
        self.waiters.cancel(ticket)

    def committed(self, digests: Sequence[bytes], indices: Sequence[int]) -> None:
        """A committed block gave ``digests`` these leaf indices."""
        self.waiters.committed(digests, indices)

    def answer_covered(self) -> list[Reply]:
        """The replies to every waiting client the latest checkpoint covers.

        Raises:
            CorruptionError: the stored tree does not back a receipt.
        """
        latest = self._checkpoints.latest
        if latest is None or not len(self.waiters):
            return []
        size, note = latest
        done = self.waiters.covered(size)
        if not done:
            return []
        indices = [i for _, _, idx in done for i in idx]
        digests = [d for _, ds, _ in done for d in ds]
        texts = iter(self._receipts.receipts(indices, digests, size=size, note=note))
        replies = []
        for ticket, ds, idx in done:
            anchors = tuple(AnchorStatus(digest=d, status=ANCHORED, index=i, receipt=next(texts))
                            for d, i in zip(ds, idx, strict=True))
            replies.append(Reply(ticket=ticket, anchors=anchors))
        return replies
