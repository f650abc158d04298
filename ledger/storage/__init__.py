"""Storage: the ``Store`` protocol, the durable ``LmdbStore`` and its in-memory twin.

See :mod:`ledger.storage.base` for the rules both implementations follow and
:mod:`ledger.storage.lmdb_store` for the on-disk layout (tiles, digest index, integrity checks).
"""

from typing import TYPE_CHECKING

from ledger.storage.base import AppendResult, BlockRecord, Store, TreeHead
from ledger.storage.lmdb_store import DEFAULT_MAP_SIZE, LmdbStore
from ledger.storage.memory import MemoryStore

__all__ = [
    "DEFAULT_MAP_SIZE",
    "AppendResult",
    "BlockRecord",
    "LmdbStore",
    "MemoryStore",
    "Store",
    "TreeHead",
]

if TYPE_CHECKING:

    def _both_implement_the_protocol(memory: MemoryStore, durable: LmdbStore) -> list[Store]:
        """Never called: makes mypy check that both classes satisfy ``Store``."""
        return [memory, durable]
