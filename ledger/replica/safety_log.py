"""What the replica signed at the current height, durably, before it is sent (pure).

The consensus core emits a ``Persist`` with its whole :class:`~ledger.consensus.SafetyState`
before the ``Broadcast`` of every message it signs; the newest record alone is enough for
safety (the core never signs an earlier or equal ``(height, round, step)`` with other bytes).
It is not enough for liveness after a crash: a replica that prevoted in round 0, moved to
round 1 and crashed keeps only its round-1 prevote, so peers still waiting in round 0 for
exactly that round-0 prevote wait for ever (seen by the simulator, seed 7776 of
``ledger simulate --nodes 4 --byzantine 1``). So, as CometBFT replays its own votes from its
WAL, the replica keeps **every** message it signed at the current height and, after a restart,
re-sends all of them (and feeds them back to its core, so its own earlier votes count again),
and includes them in every re-broadcast.

Both records are written in one store transaction, before any later action:

==========================  ======================================================================
``node/consensus-safety``   the newest :class:`SafetyState` (as written by every earlier version)
``node/consensus-signed``   msgpack ``[height, [wire bytes, ...]]``: every message signed at that
                            height, in signing order (the newest is the safety record's)
==========================  ======================================================================
"""

from __future__ import annotations

from typing import Final

import msgpack

from ledger.consensus import SafetyState
from ledger.errors import CorruptionError
from ledger.storage.base import Store

__all__ = ["SAFETY_KEY", "SIGNED_KEY", "SafetyLog"]

#: Meta key of the newest safety record.
SAFETY_KEY: Final = b"node/consensus-safety"
#: Meta key of every message signed at the record's height.
SIGNED_KEY: Final = b"node/consensus-signed"


class SafetyLog:
    """The safety record and the signed messages of the current height, in ``store``.

    ``keep_all=False`` is a deliberate defect for the simulator's tests (never in production):
    only the newest signed message is kept, as before this log existed.
    """

    def __init__(self, store: Store, *, keep_all: bool = True) -> None:
        self._store = store
        self._keep_all = keep_all
        self.height = 0
        self.signed: list[bytes] = []

    def load(self) -> SafetyState | None:
        """Read both records back (at start); the newest safety record, or ``None``.

        Raises:
            CorruptionError: a record does not parse, or the two disagree.
        """
        raw = self._store.get_meta(SAFETY_KEY)
        safety = None if raw is None else SafetyState.decode(raw)
        self.height, self.signed = 0, []
        log = self._store.get_meta(SIGNED_KEY)
        if log is not None:
            height, signed = _decode_log(log)
            if safety is None or height > safety.height:
                raise CorruptionError("signed-message log is ahead of the safety record")
            if height == safety.height:
                if not signed or signed[-1] != safety.signed:
                    raise CorruptionError("signed-message log does not end with the safety "
                                          "record's message")
                self.height, self.signed = height, signed
        if safety is not None and self.height != safety.height and safety.signed:
            # Written by a version that kept the last message only.
            self.height, self.signed = safety.height, [safety.signed]
        return safety

    def persist(self, record: SafetyState, data: bytes) -> None:
        """Write a new safety record and append its message, in one transaction.

        Raises:
            StorageError: the write failed (nothing signed may then be sent).
        """
        same = record.height == self.height and self._keep_all
        signed = [*self.signed, record.signed] if same else [record.signed]
        log = bytes(msgpack.packb([record.height, signed], use_bin_type=True))
        self._store.put_meta({SAFETY_KEY: data, SIGNED_KEY: log})
        self.height, self.signed = record.height, signed

    def at(self, height: int) -> list[bytes]:
        """The messages signed at ``height`` (empty unless it is the log's height)."""
        return list(self.signed) if height == self.height else []


def _decode_log(data: bytes) -> tuple[int, list[bytes]]:
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as exc:  # msgpack's own exception family on damaged bytes
        raise CorruptionError(f"signed-message log does not parse: {exc!r}") from None
    if (type(obj) is not list or len(obj) != 2 or type(obj[0]) is not int
            or type(obj[1]) is not list or not all(type(m) is bytes for m in obj[1])):
        raise CorruptionError("signed-message log has the wrong shape")
    return obj[0], obj[1]
