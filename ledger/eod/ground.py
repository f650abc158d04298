"""The CLI's offline demo ledger: an :class:`~ledger.eod.anchor.LocalLogAnchorer` over a
proving-ground directory made by ``ledger log init DIR``.

This is the one EOD module that reaches below the public API (into :mod:`ledger.prover` and
the LMDB store), and only to stand in for a cluster on one machine. It is imported lazily by
``ledger eod --ground DIR`` and never by the workflow code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ledger.crypto import read_key_file
from ledger.eod.anchor import LocalLogAnchorer
from ledger.errors import ConfigError

__all__ = ["open_ground"]


@contextmanager
def open_ground(root: Path, *, clock: Callable[[], int]) -> Iterator[LocalLogAnchorer]:
    """Open the proving ground at ``root`` (``store/``, ``keys/*.key``) as an anchorer.

    Raises:
        ConfigError: ``root`` is not a proving ground.
    """
    from ledger.prover import LocalLog
    from ledger.storage.lmdb_store import LmdbStore

    key_files = sorted((root / "keys").glob("*.key"))
    if not key_files or not (root / "store").is_dir():
        raise ConfigError(f"{root} is not a proving ground; run 'ledger log init {root}'")
    validators = [read_key_file(path) for path in key_files]
    store = LmdbStore.open(str(root / "store"))
    try:
        yield LocalLogAnchorer(LocalLog(store, validators=validators), clock=clock)
    finally:
        store.close()
