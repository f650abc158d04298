"""Equivocation evidence, kept durably and served (pure; part of the replica).

The consensus core builds a :class:`~ledger.consensus.DuplicateVoteEvidence` whenever a validator
signs two different votes for one (height, round, type): the two signed votes themselves,
verifiable by anyone who holds the validator set of that height. The core's pool lives in
memory and is rebuilt empty by every restart; the replica keeps every item durably in the
store's meta space, in the order it learned them, so that a node can show (``GET
/v1/evidence``, ``/v1/status``, ``/metrics``) what it saw, also after a restart:

==========================  ===================================================================
``node/evidence/count``     8-byte big-endian count of stored items
``node/evidence/<n>``       item ``n`` (8-byte big-endian, from 0): ``DuplicateVoteEvidence``
                            in its canonical encoding
==========================  ===================================================================

At most :data:`MAX_STORED_EVIDENCE` items are kept (a Byzantine validator can equivocate at
every height; beyond the bound, new items are counted but not stored).
"""

from __future__ import annotations

from typing import Final

from ledger.consensus import DuplicateVoteEvidence
from ledger.errors import CorruptionError, LedgerError
from ledger.storage.base import Store

__all__ = ["MAX_STORED_EVIDENCE", "EvidenceLog"]

#: Items kept at most.
MAX_STORED_EVIDENCE: Final = 4096
_COUNT: Final = b"node/evidence/count"
_PREFIX: Final = b"node/evidence/"


class EvidenceLog:
    """The stored evidence of one replica (module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: set[bytes] = set()
        self.items: list[DuplicateVoteEvidence] = []
        self.dropped = 0

    def load(self) -> None:
        """Read the stored items back (at start).

        Raises:
            CorruptionError: an item or the count does not decode.
        """
        raw = self._store.get_meta(_COUNT)
        count = 0 if raw is None else int.from_bytes(raw, "big")
        if raw is not None and len(raw) != 8:
            raise CorruptionError("stored evidence count is damaged")
        items = []
        for n in range(min(count, MAX_STORED_EVIDENCE)):
            data = self._store.get_meta(_PREFIX + n.to_bytes(8, "big"))
            if data is None:
                raise CorruptionError(f"stored evidence item {n} is missing")
            try:
                items.append(DuplicateVoteEvidence.decode(data))
            except LedgerError as exc:
                raise CorruptionError(f"stored evidence item {n}: {exc.diagnostics()}") from None
        self.items = items
        self._known = {e.encode() for e in items}

    def record(self, found: tuple[DuplicateVoteEvidence, ...]) -> None:
        """Store the items of ``found`` not stored yet (one transaction for all).

        Raises:
            StorageError: the write failed.
        """
        fresh = [e for e in found if e.encode() not in self._known]
        if not fresh:
            return
        room = MAX_STORED_EVIDENCE - len(self.items)
        kept, self.dropped = fresh[:max(room, 0)], self.dropped + max(len(fresh) - room, 0)
        if not kept:
            for e in fresh:
                self._known.add(e.encode())
            return
        writes: dict[bytes, bytes | None] = {}
        for i, e in enumerate(kept, start=len(self.items)):
            writes[_PREFIX + i.to_bytes(8, "big")] = e.encode()
        writes[_COUNT] = (len(self.items) + len(kept)).to_bytes(8, "big")
        self._store.put_meta(writes)
        self.items += kept
        for e in fresh:
            self._known.add(e.encode())
