"""A per-node simulated disk with an explicit sync barrier and torn writes.

A real node writes its safety state to LMDB with sync on; what survives a power cut is what was
synced, and the last write in flight may be half there. The simulator models exactly that: a
node's disk is an append-only byte log of framed records. :meth:`SimDisk.write` appends to a
*volatile* tail; :meth:`SimDisk.sync` makes everything written so far durable. On
:meth:`SimDisk.crash` the volatile tail is lost, kept, cut to a prefix, or torn in the middle of a
record, as the scheduler's rng decides (scenario 9 of the design brief: torn tail of the safety
log).

Each record is framed as ``length (4 bytes, big endian) || SHA-256(payload)[:8] || payload``. On
restart :meth:`SimDisk.recover` reads frames from the start and stops at the first frame that is
short or whose checksum fails; everything from there on is discarded, as a write-ahead log does.
A torn record therefore never reaches the consensus core.
"""

from __future__ import annotations

import hashlib
import random
from enum import Enum

_LEN = 4
_SUM = 8
_HEADER = _LEN + _SUM


def frame(payload: bytes) -> bytes:
    """One record as it lies on the simulated disk."""
    return len(payload).to_bytes(_LEN, "big") + hashlib.sha256(payload).digest()[:_SUM] + payload


def unframe(log: bytes) -> tuple[list[bytes], int]:
    """The intact records at the start of ``log`` and the byte offset where they end."""
    out: list[bytes] = []
    pos = 0
    while pos + _HEADER <= len(log):
        n = int.from_bytes(log[pos : pos + _LEN], "big")
        end = pos + _HEADER + n
        if end > len(log):
            break
        payload = log[pos + _HEADER : end]
        if hashlib.sha256(payload).digest()[:_SUM] != log[pos + _LEN : pos + _HEADER]:
            break
        out.append(payload)
        pos = end
    return out, pos


class CrashMode(Enum):
    """What a crash does to the bytes written since the last sync."""

    LOSE_TAIL = "lose_tail"  # the whole un-synced tail is gone
    KEEP_TAIL = "keep_tail"  # the page cache happened to reach the platter
    PREFIX = "prefix"  # some whole records of the tail survive
    TORN = "torn"  # the tail is cut at an arbitrary byte, mid-record


class SimDisk:
    """The durable bytes of one node, surviving its crashes (never shared between nodes)."""

    def __init__(self) -> None:
        self._durable = bytearray()
        self._volatile = bytearray()
        self._volatile_frames: list[int] = []
        self.writes = 0
        self.syncs = 0
        self.torn_tails = 0

    def write(self, payload: bytes) -> None:
        """Append one record to the volatile tail (not yet durable)."""
        f = frame(payload)
        self._volatile_frames.append(len(f))
        self._volatile += f
        self.writes += 1

    def sync(self) -> None:
        """Make every record written so far durable (fsync)."""
        self._durable += self._volatile
        self._volatile.clear()
        self._volatile_frames.clear()
        self.syncs += 1

    def unsynced(self) -> int:
        """Bytes written but not yet synced."""
        return len(self._volatile)

    def crash(self, rng: random.Random, mode: CrashMode | None = None) -> CrashMode:
        """Power cut: decide the fate of the volatile tail and return what happened.

        ``mode=None`` draws one of the four :class:`CrashMode` values from ``rng``.
        """
        if mode is None:
            mode = rng.choice(list(CrashMode))
        tail = bytes(self._volatile)
        if mode is CrashMode.KEEP_TAIL:
            kept = tail
        elif mode is CrashMode.PREFIX and self._volatile_frames:
            k = rng.randint(0, len(self._volatile_frames))
            kept = tail[: sum(self._volatile_frames[:k])]
        elif mode is CrashMode.TORN and tail:
            kept = tail[: rng.randint(0, len(tail) - 1)]
            self.torn_tails += 1
        else:
            kept = b""
        self._durable += kept
        self._volatile.clear()
        self._volatile_frames.clear()
        return mode

    def recover(self) -> list[bytes]:
        """Records that survived, in write order; a torn tail is cut off the log for good."""
        records, end = unframe(bytes(self._durable))
        del self._durable[end:]
        return records

    def rewrite(self, payloads: list[bytes]) -> None:
        """Compact the log to ``payloads`` and sync (what a WAL checkpoint does)."""
        self._durable = bytearray(b"".join(frame(p) for p in payloads))
        self._volatile.clear()
        self._volatile_frames.clear()
        self.syncs += 1
