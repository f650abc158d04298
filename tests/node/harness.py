"""In-process clusters of real nodes on 127.0.0.1 for the node tests.

Ports are bound up front (port 0, the OS picks a free one) so every node's config can name its
peers before any node starts; each node then serves on its pre-bound socket. Every request a
test makes is bounded by the client session's timeout, every wait by a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from ledger.config import (
    LOCAL_TIMEOUTS,
    BatchLimits,
    ClientToken,
    NodeConfig,
    Peer,
    Timeouts,
    hash_token,
)
from ledger.crypto import ValidatorKeys
from ledger.genesis import Genesis, ValidatorInfo
from ledger.node import Node
from ledger.storage.base import Store
from ledger.storage.memory import MemoryStore

ORIGIN = "ledger.test/node"
CHAIN_ID = "node-test"
TOKEN = "good-token-0123456789"
REVOKED_TOKEN = "revoked-token-0123456789"

#: Short consensus timeouts: a lost round costs well under a second on loopback.
FAST_TIMEOUTS = replace(LOCAL_TIMEOUTS, anchor_wait_ms=60_000)


def digest(i: int, salt: str = "") -> bytes:
    """A distinct document digest per ``i`` (and ``salt``)."""
    return hashlib.sha256(f"document {salt} {i}".encode()).digest()


def bind_free_port() -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 with an OS-chosen port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def bind_port(port: int) -> socket.socket:
    """A TCP socket bound to ``port`` on 127.0.0.1 (for restarting a node on its address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class Cluster:
    """``n`` validators: keys, configs and (once started) nodes."""

    tmp: Path
    keys: list[ValidatorKeys]
    configs: list[NodeConfig]
    sockets: list[socket.socket | None]
    lmdb: bool
    nodes: list[Node | None] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)

    @property
    def genesis(self) -> Genesis:
        return self.configs[0].genesis

    def url(self, i: int) -> str:
        return self.configs[i].public_url

    def node(self, i: int) -> Node:
        node = self.nodes[i]
        assert node is not None
        return node

    async def start(self, i: int) -> Node:
        """Start (or restart) node ``i`` on its address."""
        sock = self.sockets[i]
        if sock is None:
            sock = bind_port(self.configs[i].listen_port)
        self.sockets[i] = None
        store = None if self.lmdb else self.stores[i]
        node = Node(self.configs[i], keys=self.keys[i], store=store)
        await node.start(sock=sock)
        self.nodes[i] = node
        return node

    async def start_all(self) -> None:
        for i in range(len(self.configs)):
            await self.start(i)

    async def stop(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None:
            await node.stop()
        self.nodes[i] = None

    async def stop_all(self) -> None:
        for i in range(len(self.configs)):
            await self.stop(i)
        for sock in self.sockets:
            if sock is not None:
                sock.close()


def make_cluster(
    tmp: Path, n: int = 4, *, lmdb: bool = True, batch: BatchLimits | None = None,
    timeouts: Timeouts = FAST_TIMEOUTS,
) -> Cluster:
    """Keys, a genesis and one config per validator, with pre-bound free ports."""
    keys = [ValidatorKeys.generate(name=f"v{i + 1}", origin=ORIGIN) for i in range(n)]
    socks: list[socket.socket | None] = [bind_free_port() for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks if s is not None]
    genesis = Genesis(
        chain_id=CHAIN_ID, origin=ORIGIN, genesis_time=1_700_000_000_000,
        validators=tuple(ValidatorInfo.from_keys(k) for k in keys),
    )
    names = [v.name for v in genesis.validators]  # genesis order (sorted by name)
    by_name = dict(zip([k.name for k in keys], ports, strict=True))
    configs = []
    for k in keys:
        configs.append(NodeConfig(
            name=k.name,
            listen_host="127.0.0.1",
            listen_port=by_name[k.name],
            public_url=f"http://127.0.0.1:{by_name[k.name]}",
            data_dir=tmp / k.name / "data",
            key_file=tmp / k.name / "key",
            genesis_file=tmp / "genesis.json",
            genesis=genesis,
            peers=tuple(Peer(name=m, url=f"http://127.0.0.1:{by_name[m]}")
                        for m in names if m != k.name),
            clients=(
                ClientToken(name="eod", token_sha256=hash_token(TOKEN)),
                ClientToken(name="old", token_sha256=hash_token(REVOKED_TOKEN), revoked=True),
            ),
            batch=batch or BatchLimits(max_batch_digests=10_000, batch_window_ms=20),
            timeouts=timeouts,
        ))
    cluster = Cluster(tmp=tmp, keys=keys, configs=configs, sockets=socks, lmdb=lmdb)
    cluster.nodes = [None] * n
    cluster.stores = [MemoryStore() for _ in range(n)]
    return cluster


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_session() -> aiohttp.ClientSession:
    """A test client: every request bounded to 90 s."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90))


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 60.0, what: str = ""
) -> None:
    """Poll ``check`` every 50 ms until true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def run(coro: Awaitable[Any]) -> Any:
    """Run one test coroutine in a fresh event loop."""
    async def main() -> Any:
        return await coro
    return asyncio.run(main())
