"""What a replica is: its chain, keys, peers and timing (one frozen value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ledger.consensus import TimeoutConfig, ValidatorRoster
from ledger.consensus.block import MAX_BLOCK_DIGESTS
from ledger.crypto import ValidatorKeys
from ledger.errors import ConfigError
from ledger.replica.batching import MEMPOOL_CAPACITY

__all__ = ["CLIENT_BACKLOG_BLOCKS", "DEFAULT_TICK_MS", "DEFECTS", "MIN_CLIENT_BACKLOG",
           "ReplicaConfig"]

#: A replica takes clients' anchors while fewer than this many blocks' worth are pending: a
#: longer backlog only adds latency, and taking it would starve the commits of CPU.
CLIENT_BACKLOG_BLOCKS: Final = 4
#: ... but always room for two of the largest anchor requests (10,000 digests each).
MIN_CLIENT_BACKLOG: Final = 20_000

#: Housekeeping period: re-broadcast when stuck, re-send our cosignature, catch up.
DEFAULT_TICK_MS: Final = 500
#: Deliberate defects for the simulator's own acceptance tests (never in production):
#: ``send_before_persist`` sends each signed message before its safety record is written;
#: ``keep_last_signed`` keeps only the newest signed message of a height (the liveness bug
#: that :mod:`ledger.replica.safety_log` fixes).
DEFECTS: Final = frozenset({"send_before_persist", "keep_last_signed"})


@dataclass(frozen=True, kw_only=True)
class ReplicaConfig:
    """A replica's chain (id, origin, genesis time and roster), the keys it holds (the
    configured one first, then those of a rotation), its peers (the names of the other
    validators' nodes) and its timing (``timeouts.commit`` is the batch window).

    Raises (on construction):
        ConfigError: no key, a batch size out of range, or an unknown defect.
    """

    chain_id: str
    origin: str
    genesis_time: int
    roster: ValidatorRoster
    keys: tuple[ValidatorKeys, ...]
    peers: tuple[str, ...]
    timeouts: TimeoutConfig
    max_batch: int = 10_000
    mempool_capacity: int = MEMPOOL_CAPACITY
    #: Pending anchors beyond which clients are refused (``None``: :data:`CLIENT_BACKLOG_BLOCKS`
    #: blocks' worth, at least :data:`MIN_CLIENT_BACKLOG`); peers' gossip may fill the capacity.
    max_pending: int | None = None
    tick_ms: int = DEFAULT_TICK_MS
    #: TEST ONLY (see :class:`ledger.consensus.ConsensusCore`).
    unsafe_skip_lock_persist: bool = False
    #: TEST ONLY: one of :data:`DEFECTS`.
    unsafe_defect: str | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("a replica holds at least one validator key")
        if not 1 <= self.max_batch <= MAX_BLOCK_DIGESTS:
            raise ConfigError(f"batch size must be 1..{MAX_BLOCK_DIGESTS}")
        if self.unsafe_defect is not None and self.unsafe_defect not in DEFECTS:
            raise ConfigError(f"unknown defect {self.unsafe_defect!r}")
        if self.tick_ms < 1:
            raise ConfigError("the tick period must be positive")

    @property
    def client_limit(self) -> int:
        """Pending anchors beyond which this replica refuses clients' new ones."""
        if self.max_pending is not None:
            return min(self.max_pending, self.mempool_capacity)
        return min(max(CLIENT_BACKLOG_BLOCKS * self.max_batch, MIN_CLIENT_BACKLOG),
                   self.mempool_capacity)

    @property
    def name(self) -> str:
        """The validator name of this replica."""
        return self.keys[0].name
