"""The validator set of a chain: who may vote, how many faults it tolerates, who proposes.

Tendermint (Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus", 2018, section 2)
assumes ``n`` processes of which at most ``f`` are Byzantine, with ``n >= 3f + 1``. Every
decision needs a *quorum* of ``2f + 1`` matching messages, and ``f + 1`` messages from a round
are enough to know that at least one correct process is in it (the round-skip rule, line 55).

For ``n = 3f + 1`` the quorum is exactly ``2f + 1``. For other ``n`` we use
``floor(2n / 3) + 1``, the smallest count such that any two quorums intersect in more than ``f``
validators; it equals ``2f + 1`` whenever ``n = 3f + 1``. All validators have equal power.

The proposer of ``(height, round)`` is the validator at index ``(height + round) mod n``: a
plain round-robin, so that a silent proposer costs one round and the next round has another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ledger.errors import ConfigError
from ledger.note import MAX_SIGNATURES

#: An Ed25519 public key is 32 bytes (RFC 8032 section 5.1.5).
PUBLIC_KEY_SIZE = 32

#: Upper bound on the number of validators. A checkpoint note carries one log signature plus
#: one cosignature per validator, and a note holds at most
#: :data:`ledger.note.MAX_SIGNATURES` (100) signatures; it also bounds certificates and vote
#: maps. The one limit every layer uses.
MAX_VALIDATORS = MAX_SIGNATURES - 1


def fault_tolerance(n: int) -> int:
    """f: the Byzantine validators ``n`` validators tolerate, the largest f with n >= 3f + 1.

    Raises:
        ConfigError: ``n`` < 1.
    """
    if n < 1:
        raise ConfigError("at least one validator is needed")
    return (n - 1) // 3


def quorum(n: int) -> int:
    """k = n - f: matching messages (votes, cosignatures, approvals) a decision needs; 2f + 1
    when n = 3f + 1, and floor(2n / 3) + 1 for every n (module docstring). The one threshold
    of consensus, checkpoints and trust policies.

    Raises:
        ConfigError: ``n`` < 1.
    """
    return n - fault_tolerance(n)


@dataclass(frozen=True)
class ValidatorSet:
    """An ordered tuple of distinct Ed25519 public keys with equal voting power.

    Build with ``ValidatorSet(keys=(...))``; raises :class:`ConfigError` on an empty set, a key
    that is not 32 bytes, a duplicate key or more than :data:`MAX_VALIDATORS` keys.
    """

    keys: tuple[bytes, ...]
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False, hash=False)

    def __init__(self, *, keys: Sequence[bytes]) -> None:
        keys_t = tuple(bytes(k) for k in keys)
        if not keys_t:
            raise ConfigError("validator set is empty")
        if len(keys_t) > MAX_VALIDATORS:
            raise ConfigError(f"validator set has {len(keys_t)} keys, more than {MAX_VALIDATORS}")
        for k in keys_t:
            if len(k) != PUBLIC_KEY_SIZE:
                raise ConfigError(f"validator key is {len(k)} bytes, expected {PUBLIC_KEY_SIZE}")
        index = {k: i for i, k in enumerate(keys_t)}
        if len(index) != len(keys_t):
            raise ConfigError("validator set has a duplicate key")
        object.__setattr__(self, "keys", keys_t)
        object.__setattr__(self, "_index", index)

    @property
    def n(self) -> int:
        """The number of validators."""
        return len(self.keys)

    @property
    def f(self) -> int:
        """The number of Byzantine validators tolerated (:func:`fault_tolerance`)."""
        return fault_tolerance(self.n)

    @property
    def quorum(self) -> int:
        """Matching messages needed for a decision (:func:`quorum`)."""
        return quorum(self.n)

    @property
    def weak_quorum(self) -> int:
        """``f + 1``: enough messages to contain at least one correct validator's."""
        return self.f + 1

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self.keys)

    def index_of(self, key: bytes) -> int | None:
        """The position of ``key`` in the set, or ``None`` if it is not a validator."""
        return self._index.get(key)

    def proposer(self, height: int, round: int) -> bytes:
        """The public key of the proposer of ``(height, round)``: index ``(height + round) % n``."""
        return self.keys[(height + round) % self.n]
