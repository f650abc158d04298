"""The validator node: the one package with sockets, clocks and signals.

:class:`~ledger.node.server.Node` runs a :class:`ledger.replica.Replica` on a real clock, an
LMDB store, an aiohttp server (:mod:`~ledger.node.app`) and the peer transport
(:mod:`~ledger.node.peers`); :func:`~ledger.node.server.run_node` is ``ledger node``.
"""

from __future__ import annotations

from ledger.node.server import Node, SystemClock, run_node

__all__ = ["Node", "SystemClock", "run_node"]
