"""The sans-I/O replica: everything a validator decides, run by the node and the simulator.

See :mod:`ledger.replica.replica` for the events and :mod:`ledger.replica.actions` for what a
replica asks of whoever runs it.
"""

from __future__ import annotations

from ledger.replica.actions import (
    Action,
    Committed,
    Fetch,
    FetchKind,
    Halt,
    Reply,
    Send,
    SetTimer,
    Timer,
)
from ledger.replica.batching import OverloadedError
from ledger.replica.config import DEFECTS, ReplicaConfig
from ledger.replica.driver import ReplicaStats
from ledger.replica.receipts import AnchorStatus
from ledger.replica.replica import Replica

__all__ = [
    "DEFECTS",
    "Action",
    "AnchorStatus",
    "Committed",
    "Fetch",
    "FetchKind",
    "Halt",
    "OverloadedError",
    "Replica",
    "ReplicaConfig",
    "ReplicaStats",
    "Reply",
    "Send",
    "SetTimer",
    "Timer",
]
