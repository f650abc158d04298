"""`ledger.devnet.free_base_port`: the one search for a run of free ports on 127.0.0.1."""

from __future__ import annotations

import socket

from ledger.devnet import free_base_port


def test_free_base_port_returns_a_run_that_can_all_be_bound() -> None:
    base = free_base_port(4)
    held = []
    try:
        for port in range(base, base + 4):
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", port))  # raises if the run was not free
    finally:
        for s in held:
            s.close()
