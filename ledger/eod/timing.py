"""Proven and claimed times: what the ledger proves about when an EOD event happened.

An office's clock is only a claim. Two facts the office cannot move bound every event:

* **after**: the event names the latest cosigned checkpoint the office had seen (its tree size
  and root, ``seen``). A root cannot be known before its tree exists, and the office saw the
  checkpoint only once a quorum had cosigned it, so the event was made after the validators'
  cosignatures. The checkpoint's proven time is the time bound of
  :func:`ledger.receipt.time_bound` over its quorum's timestamps, the (f + 1)-th smallest: at
  most f of the quorum's timestamps are a liar's, so at least one honest cosignature is no
  earlier than it, and each honest cosignature came before the event. (If the office took the
  root from a block before its checkpoint was cosigned, the bound is early by that cosigning
  delay, a second or two: :data:`MAX_CLOCK_SKEW` covers it.)
* **before**: the event's ledger receipt, cut against the earliest checkpoint that holds it:
  the event existed no later than that receipt's time bound.

So each event is proven to lie in ``[after, before]`` (:class:`ProvenTime`). The office checks
its clock against both before it stores a step (ledger.eod.office): a reading further than
:data:`MAX_CLOCK_SKEW` outside the interval is refused and nothing is stored. The verifier
fails a trail whose recorded ``time`` lies outside it, and flags a ``declared`` time that does.
Retention and destruction are counted from proven times only (ledger.eod.rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ledger.checkpoint import open_checkpoint
from ledger.errors import VerificationError
from ledger.policy import NONE, Policy

__all__ = ["MAX_CLOCK_SKEW", "ProvenTime", "VerifiedCheckpoint", "verify_checkpoint"]

#: How far an office clock may differ from the ledger's proven interval: validators' and
#: offices' clocks differ a little, and cosigning takes a moment. More means a wrong clock or a
#: forged date.
MAX_CLOCK_SKEW: Final = 600


@dataclass(frozen=True, kw_only=True)
class VerifiedCheckpoint:
    """A checkpoint cosigned by the policy's quorum, with its proven time (POSIX seconds)."""

    origin: str
    size: int
    root: bytes
    time: int
    note: str


def verify_checkpoint(note: str, policy: Policy) -> VerifiedCheckpoint:
    """Verify a cosigned checkpoint note under ``policy`` and compute its proven time, exactly
    as :func:`ledger.receipt.verify_receipt` does for the checkpoint of a receipt.

    Raises:
        MalformedError: the note or its checkpoint body does not parse.
        VerificationError: a signature fails, no trusted log signed, the quorum is not met, or
            the policy cannot bound the time.
    """
    if policy.quorum == NONE:
        raise VerificationError("policy requires no cosignatures, so no time can be bounded")
    opened = open_checkpoint(note, policy.verifiers())
    checkpoint = opened.checkpoint
    verified = opened.note.verified
    policy.evaluate((v.verifier for v in verified), origin=checkpoint.origin)
    validators = {w.verifier: w.name for w in policy.quorum_witnesses()}
    stamps = {validators[s.verifier]: s.timestamp for s in verified
              if s.verifier in validators and s.timestamp is not None}
    return VerifiedCheckpoint(
        origin=checkpoint.origin,
        size=checkpoint.size,
        root=checkpoint.root,
        time=policy.time_bound(stamps),
        note=note,
    )


@dataclass(frozen=True, kw_only=True)
class ProvenTime:
    """What the ledger proves about an event's time: made after ``after`` (``None``: the office
    had seen no checkpoint, the ledger was empty) and existing no later than ``before``
    (``None`` while the event is not anchored yet)."""

    after: int | None = None
    before: int | None = None

    def contains(self, ts: int, *, slack: int = 0) -> bool:
        """Whether ``ts`` lies in the interval, widened by ``slack`` seconds on both sides."""
        if self.after is not None and ts < self.after - slack:
            return False
        return not (self.before is not None and ts > self.before + slack)
