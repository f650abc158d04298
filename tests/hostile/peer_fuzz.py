"""A peer-message fuzzer against a running node (shared by the test and ``fuzz_peer.py``).

Invariant (issue 6, item 2): whatever bytes reach ``POST /peer/v1/messages``, the node never
crashes, never halts and never answers 5xx, and an invalid message changes none of the state a
peer could corrupt: tree head, height, mempool, consensus safety record, stored checkpoint, the
core's (height, round). Invalid envelopes are counted by ``replica.stats.peer_invalid``; items
inside a correctly signed envelope by the core's ``stats.invalid``, ``peer_invalid`` or the
cosignature collector's ``rejected``.

How the target is prepared (:func:`prepared_node`): a 4-validator in-process cluster commits a
few blocks while node 0 records every envelope it receives; then the other three stop, so from
then on every message node 0 sees is the fuzzer's. The recorded envelopes are the seeds for
mutations and the "old valid messages" for replays; a replay is valid as an envelope (there is
no replay window, by design: see ``ledger/replica/wire.py``) and must be idempotent.

Message classes (:data:`CLASSES`), drawn uniformly from a seeded ``random.Random``:

* ``random``: random bytes; ``msgpack``: random msgpack values, some with huge declared lengths;
* ``bitflip``, ``truncate``, ``swap``: mutations of recorded envelopes (bits flipped, cut short,
  two fields swapped or one replaced by another type);
* ``oversized``: a frame above ``MAX_ENVELOPE_BYTES`` (rare: each is 5 MiB);
* ``wrong_chain``: an envelope signed by a real validator for another chain id;
* ``replay``: a recorded valid envelope, verbatim;
* ``unknown_sender``: signed by a key outside the validator set; ``self``: signed by node 0's
  own key (a loop-back or a clone);
* ``garbage_items``: correctly signed by a real peer validator, carrying garbage consensus,
  gossip or cosignature items (mutated recorded payloads, random bytes, forged cosignatures).
  A gossip item that happens to decode to real digests would be a *valid* message: the
  generator replaces it, so every garbage item is invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from node.harness import Cluster, auth, client_session, digest, eventually, make_cluster

from ledger.crypto import Ed25519Key
from ledger.errors import MalformedError, ProtocolError, VerificationError
from ledger.node import Node
from ledger.replica.safety_log import SAFETY_KEY
from ledger.replica.wire import (
    KIND_CONSENSUS,
    KIND_COSIGNATURE,
    KIND_GOSSIP,
    MAX_ENVELOPE_BYTES,
    decode_gossip,
    open_envelope,
    seal_envelope,
)

CLASSES = (
    "random", "msgpack", "bitflip", "truncate", "swap", "oversized", "wrong_chain", "replay",
    "unknown_sender", "self", "garbage_items",
)
#: One oversized frame per this many messages (each is MAX_ENVELOPE_BYTES + 1 bytes).
OVERSIZED_EVERY = 5000
#: Classes whose envelope is valid (a 204): the rest must be refused as an envelope.
ACCEPTED = frozenset({"replay", "garbage_items"})


def snapshot(node: Node) -> tuple[Any, ...]:
    """What an invalid (or replayed) message must leave unchanged."""
    assert node.store is not None and node.replica is not None
    core = node.replica.driver.core
    assert core is not None
    return (
        node.store.tree_head(), node.store.last_height(), len(node.replica.driver.mempool),
        node.store.get_meta(SAFETY_KEY), node.store.latest_checkpoint(), node.replica.checkpoint,
        core.height, core.round, node.halted, core.stats.highest_seen_height,
    )


def invalid_total(node: Node) -> int:
    replica = node.replica
    core = replica.driver.core
    return (replica.stats.peer_invalid + replica.driver.checkpoints.rejected()
            + (core.stats.invalid if core else 0))


def _canonical(data: bytes) -> bytes | None:
    """The canonical msgpack re-encoding of ``data``, or ``None`` if it does not decode."""
    try:
        return bytes(msgpack.packb(msgpack.unpackb(data, raw=False), use_bin_type=True))
    except Exception:  # any garbage: not a replay
        return None


@dataclass
class Corpus:
    """Recorded valid envelopes and their items, and the keys to sign new ones with."""

    chain_id: str
    envelopes: list[bytes]
    items: dict[int, list[bytes]]
    peer_keys: list[Ed25519Key]
    own_key: Ed25519Key


@dataclass
class Generator:
    """Seeded hostile messages: ``next()`` returns (class, bytes)."""

    corpus: Corpus
    seed: int
    rng: random.Random = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.outsider = Ed25519Key(self.rng.randbytes(32))
        self._recorded_set = frozenset(_canonical(e) for e in self.corpus.envelopes)

    def next(self) -> tuple[str, bytes]:
        self.count += 1
        if self.count % OVERSIZED_EVERY == 0:
            return "oversized", self._oversized()
        kind = self.rng.choice([c for c in CLASSES if c != "oversized"])
        data = getattr(self, f"_{kind}")()
        if kind in ("swap", "bitflip") and _canonical(data) in self._recorded_set:
            # The same envelope again: two equal fields swapped, a field replaced by its own
            # value, or a bit flip between two encodings of one value (uint16 and int16 of a
            # small number decode alike, and the signature covers the decoded fields).
            kind = "replay"
        return kind, data

    # -- the classes ------------------------------------------------------------------------

    def _random(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 2, 7, 64, 300, 2000]))

    def _value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth < 3 and r < 0.3:
            return [self._value(depth + 1) for _ in range(self.rng.randrange(0, 9))]
        choices: list[Any] = [
            self.rng.randrange(-2**63, 2**64), self.rng.randbytes(self.rng.randrange(0, 80)),
            "x" * self.rng.randrange(0, 40), None, True, 1.5,
            {b"k": 1} if self.rng.random() < 0.5 else {"k": [1]},
            self.corpus.chain_id, 1, 0, 2**63,
        ]
        return self.rng.choice(choices)

    def _msgpack(self) -> bytes:
        r = self.rng.random()
        if r < 0.2:  # a header announcing far more than follows
            return self.rng.choice([b"\xdd\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff\x00",
                                    b"\xdb\x7f\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                                    b"\x97" + b"\x91" * 10_000])
        if r < 0.6:  # the envelope's shape with random fields
            value: Any = [self._value() for _ in range(7)]
            if self.rng.random() < 0.5:
                value[0] = 1
                value[1] = self.corpus.chain_id
        else:
            value = self._value()
        return bytes(msgpack.packb(value, use_bin_type=self.rng.random() < 0.8))

    def _recorded(self) -> bytes:
        return self.rng.choice(self.corpus.envelopes)

    def _bitflip(self) -> bytes:
        data = bytearray(self._recorded())
        for _ in range(self.rng.randrange(1, 9)):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def _truncate(self) -> bytes:
        data = self._recorded()
        return data[: self.rng.randrange(len(data))]

    def _swap(self) -> bytes:
        fields = list(msgpack.unpackb(self._recorded(), raw=False))
        i, j = self.rng.sample(range(len(fields)), 2)
        if self.rng.random() < 0.5:
            fields[i], fields[j] = fields[j], fields[i]
        else:
            fields[i] = self._value()
        if self.rng.random() < 0.2:
            fields = fields[:-1] if self.rng.random() < 0.5 else [*fields, 0]
        return bytes(msgpack.packb(fields, use_bin_type=True))

    def _oversized(self) -> bytes:
        return b"\x97" + b"\x00" * MAX_ENVELOPE_BYTES

    def _items(self) -> list[tuple[int, bytes]]:
        return [(k, p) for k, payloads in self.corpus.items.items()
                for p in self.rng.sample(payloads, min(2, len(payloads)))]

    def _wrong_chain(self) -> bytes:
        key = self.rng.choice(self.corpus.peer_keys)
        chain = self.rng.choice([self.corpus.chain_id + "-test", "", "x" * 64])
        return seal_envelope(key=key, chain_id=chain, height=self.rng.randrange(0, 10),
                             seq=self.count, items=self._items())

    def _replay(self) -> bytes:
        return self._recorded()

    def _unknown_sender(self) -> bytes:
        key = self.outsider if self.rng.random() < 0.5 else Ed25519Key(self.rng.randbytes(32))
        return seal_envelope(key=key, chain_id=self.corpus.chain_id, height=1, seq=self.count,
                             items=self._items())

    def _self(self) -> bytes:
        return seal_envelope(key=self.corpus.own_key, chain_id=self.corpus.chain_id, height=1,
                             seq=self.count, items=self._items())

    def _garbage_payload(self, kind: int) -> bytes:
        seeds = self.corpus.items.get(kind) or [b"\x90"]
        r = self.rng.random()
        if r < 0.4:
            data = bytearray(self.rng.choice(seeds))
            for _ in range(self.rng.randrange(1, 4)):
                i = self.rng.randrange(len(data))
                data[i] ^= 1 << self.rng.randrange(8)
            payload = bytes(data)
        elif r < 0.6:
            payload = self.rng.choice(seeds)[: self.rng.randrange(len(self.rng.choice(seeds)))]
        elif r < 0.8:
            payload = self._msgpack()
        else:
            payload = self._random()
        if kind == KIND_GOSSIP:
            with contextlib.suppress(ProtocolError):
                if decode_gossip(payload):  # real digests: a valid message, not garbage
                    payload = b"\x91\xc4\x1f" + b"\x00" * 31  # one 31-byte "digest"
        if kind == KIND_COSIGNATURE and self.rng.random() < 0.3:
            line = "\u2014 v2 " + self.rng.randbytes(3).hex()
            payload = bytes(msgpack.packb([self.rng.randrange(0, 50), self.rng.randbytes(32),
                                           line], use_bin_type=True))
        return payload

    def _garbage_items(self) -> bytes:
        kinds = [self.rng.choice((KIND_CONSENSUS, KIND_GOSSIP, KIND_COSIGNATURE))
                 for _ in range(self.rng.randrange(1, 5))]
        items = [(k, self._garbage_payload(k)) for k in kinds]
        return seal_envelope(key=self.rng.choice(self.corpus.peer_keys),
                             chain_id=self.corpus.chain_id, height=self.rng.randrange(0, 4),
                             seq=self.count, items=items)


@contextlib.asynccontextmanager
async def prepared_node(tmp: Path, *, blocks: int = 3) -> AsyncIterator[tuple[Node, Corpus, str]]:
    """A 4-validator cluster commits ``blocks`` blocks while node 0 records what it receives;
    then nodes 1-3 stop. Yields node 0, the corpus and node 0's URL."""
    cluster: Cluster = make_cluster(tmp, n=4, lmdb=False)
    recorded: list[bytes] = []
    try:
        await cluster.start_all()
        node = cluster.node(0)
        original = node.receive_envelope

        def record(data: bytes) -> None:
            original(data)
            recorded.append(data)

        node.receive_envelope = record  # type: ignore[method-assign]
        async with client_session() as http:
            for b in range(blocks):
                body = {"digests": [digest(i, f"fuzz-{b}").hex() for i in range(5)]}
                async with http.post(cluster.url(b % 4) + "/v1/anchors?wait=true", json=body,
                                     headers=auth()) as r:
                    assert r.status == 200, await r.text()
        for i in (1, 2, 3):
            await cluster.stop(i)
        del node.receive_envelope  # back to the class's method
        await eventually(lambda: node._inbox == 0, what="node 0's inbox to drain")
        # Idle: the next height is parked until work arrives (ledger/replica/batching.py).
        batch = node.replica.driver.batch
        await eventually(lambda: batch.parked is not None, what="node 0 to park")
        chain = cluster.genesis.chain_id
        names = {k.consensus_key.public_key: k.name for k in cluster.keys}
        items: dict[int, list[bytes]] = {KIND_CONSENSUS: [], KIND_GOSSIP: [], KIND_COSIGNATURE: []}
        for data in recorded:
            for kind, payload in open_envelope(data, chain_id=chain, senders=names).items:
                items[kind].append(payload)
        corpus = Corpus(
            chain_id=chain, envelopes=recorded[-400:], items=items,
            peer_keys=[k.consensus_key for k in cluster.keys[1:]],
            own_key=cluster.keys[0].consensus_key,
        )
        yield node, corpus, cluster.url(0)
    finally:
        await cluster.stop_all()


@dataclass
class Result:
    sent: int = 0
    seconds: float = 0.0
    by_class: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    crashes: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (f"peer fuzz: {self.sent} messages in {self.seconds:.1f} s ({rate:,.0f}/s); "
                f"refused {self.refused}; statuses {dict(sorted(self.statuses.items()))}; "
                f"classes {dict(sorted(self.by_class.items()))}; crashes {len(self.crashes)}")


async def settle(node: Node) -> None:
    """Let queued deliveries (``loop.call_soon``) run."""
    for _ in range(1000):
        if node._inbox == 0:
            return
        await asyncio.sleep(0)


async def fuzz_direct(node: Node, gen: Generator, count: int, result: Result) -> None:
    """Feed ``count`` messages to ``node.receive_envelope`` (the HTTP handler's one call)."""
    start = time.monotonic()
    for _ in range(count):
        name, data = gen.next()
        result.by_class[name] += 1
        try:
            node.receive_envelope(data)
        except (MalformedError, VerificationError):
            result.refused += 1  # 400 or 403 over HTTP
            if name in ACCEPTED:
                result.crashes.append(f"{name}: a valid envelope was refused")
        except Exception as exc:  # the invariant: nothing else, ever
            result.crashes.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            if name not in ACCEPTED:
                result.crashes.append(f"{name}: an invalid envelope was accepted")
        result.sent += 1
        if result.sent % 64 == 0:
            await settle(node)
    await settle(node)
    result.seconds += time.monotonic() - start


async def fuzz_http(url: str, gen: Generator, count: int, result: Result,
                    *, concurrency: int = 8) -> None:
    """POST ``count`` messages to ``url``/peer/v1/messages, ``concurrency`` at a time."""
    start = time.monotonic()
    target = url + "/peer/v1/messages"
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def worker(n: int) -> None:
            for _ in range(n):
                name, data = gen.next()
                result.by_class[name] += 1
                try:
                    async with http.post(target, data=data) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.crashes.append(f"{name}: connection failed: {exc!r}")
                    continue
                result.statuses[status] += 1
                result.sent += 1
                if status >= 500:
                    result.crashes.append(f"{name}: HTTP {status}")
                elif status != 204:
                    result.refused += 1
                    if name in ACCEPTED:
                        result.crashes.append(f"{name}: a valid envelope got {status}")
                elif name not in ACCEPTED:
                    result.crashes.append(f"{name}: an invalid envelope got 204")

        share = [count // concurrency + (1 if i < count % concurrency else 0)
                 for i in range(concurrency)]
        await asyncio.gather(*(worker(n) for n in share))
    result.seconds += time.monotonic() - start


def check_node_unharmed(node: Node, before: tuple[Any, ...], invalid_before: int,
                        result: Result) -> None:
    """The invariant after a run (raises AssertionError with the evidence)."""
    assert not result.crashes, result.crashes[:20]
    assert node.halted is None, node.halted
    after = snapshot(node)
    assert after == before, f"state changed:\n{before}\n{after}"
    assert invalid_total(node) > invalid_before


__all__ = [
    "ACCEPTED",
    "CLASSES",
    "Corpus",
    "Generator",
    "Result",
    "check_node_unharmed",
    "fuzz_direct",
    "fuzz_http",
    "invalid_total",
    "prepared_node",
    "settle",
    "snapshot",
]
