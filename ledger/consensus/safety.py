"""The persisted safety state of one validator, and the no-double-sign rule.

Design brief section 4, "persist before you send":

- the *last-signed record* ``(height, round, step, signed bytes)``: after a restart the node
  re-sends only a byte-identical message and never signs for an earlier ``(height, round,
  step)``, nor for the same one with different bytes (CometBFT ``privval`` keeps the same
  record; its ``TestSignSameVoteTwice`` is the model of ``tests/consensus/test_safety.py``);
- ``lockedValue/lockedRound`` and ``validValue/validRound`` of Algorithm 1 (lines 6-9), before
  a precommit: a node that forgets its lock after a crash can prevote for a conflicting value in
  a later round, which is exactly the amnesia that breaks agreement.

The core emits the whole :class:`SafetyState` in a ``Persist`` action before the ``Broadcast``
of every message it signs; the driver stores :meth:`SafetyState.encode` durably (fsync) and only
then sends. Steps are ordered ``PROPOSE < PREVOTE < PRECOMMIT`` within a round, which is the
order in which Algorithm 1 signs, so one record suffices.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from ledger.consensus.block import Block
from ledger.consensus.messages import decode_block
from ledger.errors import CorruptionError, ProtocolError, VerificationError

#: First element of an encoded safety record.
SAFETY_VERSION = 1


class Step(enum.IntEnum):
    """Algorithm 1's ``step_p``, ordered as messages are signed within a round."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class DoubleSignRefused(VerificationError):
    """Signing was refused: it would sign an earlier (height, round, step), or the same one with
    different bytes. Raised by :meth:`SafetyState.check_sign`."""

    code = "double_sign_refused"


@dataclass(frozen=True, kw_only=True)
class SafetyState:
    """What must survive a crash. ``signed`` is the full wire encoding of the last message
    signed (empty before the first); ``height == 0`` means nothing was ever signed."""

    height: int = 0
    round: int = -1
    step: Step = Step.PROPOSE
    signed: bytes = b""
    locked_round: int = -1
    locked_block: Block | None = None
    valid_round: int = -1
    valid_block: Block | None = None

    @property
    def hrs(self) -> tuple[int, int, int]:
        """``(height, round, step)`` of the last signed message."""
        return (self.height, self.round, int(self.step))

    def check_sign(self, *, height: int, round: int, step: Step, data: bytes) -> bool:
        """May a message with wire bytes ``data`` for ``(height, round, step)`` leave?

        Returns ``True`` if it is new (a later ``(height, round, step)``: persist, then send),
        ``False`` if it is a byte-identical re-send of the last signed message (send again,
        nothing to persist). Raises :class:`DoubleSignRefused` otherwise.
        """
        new = (height, round, int(step))
        if new > self.hrs:
            return True
        if new == self.hrs and data == self.signed:
            return False
        raise DoubleSignRefused(
            f"refusing to sign {new}: last signed {self.hrs}"
            + (" with different bytes" if new == self.hrs else "")
        )

    def after_signing(
        self, *, height: int, round: int, step: Step, data: bytes
    ) -> SafetyState:
        """This state with the last-signed record replaced (locks unchanged)."""
        return replace(self, height=height, round=round, step=step, signed=data)

    def encode(self) -> bytes:
        """Canonical msgpack bytes (stored by the driver)."""
        return bytes(msgpack.packb(self._wire(), use_bin_type=True))

    def _wire(self) -> list[Any]:
        return [
            SAFETY_VERSION, self.height, self.round, int(self.step), self.signed,
            self.locked_round, None if self.locked_block is None else self.locked_block.encode(),
            self.valid_round, None if self.valid_block is None else self.valid_block.encode(),
        ]

    @classmethod
    def decode(cls, data: bytes) -> SafetyState:
        """Parse stored bytes; raise :class:`CorruptionError` if they are not a safety record.

        (A torn or flipped record must stop the node, not be half-trusted.)
        """
        try:
            obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
            if type(obj) is not list or len(obj) != 9 or obj[0] != SAFETY_VERSION:
                raise CorruptionError("not a safety record")
            ints = [obj[1], obj[2], obj[3], obj[5], obj[7]]
            if any(type(i) is not int for i in ints) or type(obj[4]) is not bytes:
                raise CorruptionError("safety record field has the wrong type")
            state = cls(
                height=obj[1], round=obj[2], step=Step(obj[3]), signed=obj[4],
                locked_round=obj[5],
                locked_block=None if obj[6] is None else decode_block(obj[6]),
                valid_round=obj[7],
                valid_block=None if obj[8] is None else decode_block(obj[8]),
            )
        except CorruptionError:
            raise
        except (ProtocolError, ValueError, TypeError) as exc:
            raise CorruptionError(f"safety record does not parse: {exc}") from exc
        except Exception as exc:  # msgpack's own exception family on torn bytes
            raise CorruptionError(f"safety record does not parse: {exc!r}") from exc
        if state.encode() != data:
            raise CorruptionError("safety record is not canonical")
        if (state.locked_round == -1) != (state.locked_block is None) or (
            state.valid_round == -1
        ) != (state.valid_block is None):
            raise CorruptionError("safety record lock fields disagree")
        return state
