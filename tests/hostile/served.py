"""A one-validator node served from its own thread (its own event loop), with every log record
of the process captured, for tests that talk to it over raw sockets from the test thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from node.harness import auth, client_session, digest, make_cluster

from ledger.config import Limits
from ledger.node import Node


class LogCapture(logging.Handler):
    """Every record of the process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info]

    def lines(self, logger: str = "ledger.node", level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.records
                if r.name == logger and r.levelno >= level]


@dataclass
class Served:
    port: int
    node: Node
    log: LogCapture
    loop: asyncio.AbstractEventLoop

    def call(self, func: Any) -> Any:
        """Run ``func()`` in the node's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(_call(func), self.loop).result(30)


async def _call(func: Any) -> Any:
    return func()


@contextlib.contextmanager
def served_node(tmp: Path, limits: Limits | None = None, *, anchors: int = 1
                ) -> Iterator[Served]:
    cluster = make_cluster(tmp, n=1, lmdb=False)
    if limits is not None:
        cluster.configs[0] = replace(cluster.configs[0], limits=limits)
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        await cluster.start(0)
        async with client_session() as http:
            body = {"digests": [digest(i, "served").hex() for i in range(anchors)]}
            async with http.post(cluster.url(0) + "/v1/anchors?wait=true", json=body,
                                 headers=auth()) as r:
                assert r.status == 200
        ready.set()
        await stop.wait()
        await cluster.stop_all()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the node did not start"
        yield Served(port=cluster.configs[0].listen_port, node=cluster.node(0), log=capture,
                     loop=loop)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        root.removeHandler(capture)
        root.setLevel(old_level)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """A TCP connection to the node from ``source`` (any 127.0.0.0/8 address works on Linux)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything until the node closes (or a complete head plus what followed it)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def closed_by_node(sock: socket.socket) -> bool:
    """Whether the node closed the connection (EOF or reset) within the socket's timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True
