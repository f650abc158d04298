"""Storage: the ``Store`` protocol, the durable ``LmdbStore`` and its in-memory twin.

See :mod:`ledger.storage.base` for the rules both implementations follow,
:mod:`ledger.storage.lmdb_store` for the on-disk layout (format 2: checksummed tiles, compact
blocks and notes), :mod:`ledger.storage._index` for the digest index, :mod:`ledger.storage._scrub`
for scrub and repair and :mod:`ledger.storage._migrate` for the upgrade from format 1.
"""

from typing import TYPE_CHECKING, Any

from ledger.storage.base import (
    AppendResult,
    BlockRecord,
    Damage,
    DamageError,
    DiskFullError,
    ScrubReport,
    Store,
    TreeHead,
)
from ledger.storage.memory import MemoryStore

__all__ = [
    "DEFAULT_MAP_SIZE",
    "FORMAT_VERSION",
    "AppendResult",
    "BlockRecord",
    "Damage",
    "DamageError",
    "DiskFullError",
    "LmdbStore",
    "MemoryStore",
    "ScrubReport",
    "Store",
    "TreeHead",
]

if TYPE_CHECKING:
    from ledger.storage.lmdb_store import DEFAULT_MAP_SIZE, FORMAT_VERSION, LmdbStore

    def _both_implement_the_protocol(memory: MemoryStore, durable: LmdbStore) -> list[Store]:
        """Never called: makes mypy check that both classes satisfy ``Store``."""
        return [memory, durable]


def __getattr__(name: str) -> Any:
    """``LmdbStore``, ``DEFAULT_MAP_SIZE`` and ``FORMAT_VERSION`` load lmdb on first use: the
    pure layers (the replica, the simulator) import this package for the protocol and never
    load lmdb."""
    if name in ("LmdbStore", "DEFAULT_MAP_SIZE", "FORMAT_VERSION"):
        from ledger.storage import lmdb_store

        return getattr(lmdb_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
