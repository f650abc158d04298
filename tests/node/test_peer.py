"""Peer envelopes (signed, chain-bound, validators only), the peer endpoint, the mempool and the
cosignature collector."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.crypto import Ed25519Key, ValidatorKeys
from ledger.errors import LedgerError, MalformedError, ProtocolError, VerificationError
from ledger.policy import parse_policy
from ledger.prover import trust_policy
from ledger.replica.batching import Mempool, OverloadedError
from ledger.replica.checkpoints import COSIGNATURE_TOLERANCE_S, CosignatureCollector
from ledger.replica.wire import (
    KIND_CONSENSUS,
    KIND_COSIGNATURE,
    KIND_GOSSIP,
    MAX_ENVELOPE_BYTES,
    Cosignature,
    UnknownSenderError,
    decode_cosignature,
    decode_gossip,
    encode_cosignature,
    encode_gossip,
    open_envelope,
    seal_envelope,
)

from .harness import client_session, digest, make_cluster, run

ORIGIN = "ledger.test/peer"
KEYS = [ValidatorKeys(name=f"v{i}", origin=ORIGIN, seed=bytes([i]) * 32) for i in range(1, 5)]
SENDERS = {k.consensus_key.public_key: k.name for k in KEYS}


def seal(key: Ed25519Key, items: list[tuple[int, bytes]], chain: str = "c1") -> bytes:
    return seal_envelope(key=key, chain_id=chain, height=7, seq=1, items=items)


def test_envelope_round_trip() -> None:
    items = [(KIND_CONSENSUS, b"x"), (KIND_GOSSIP, encode_gossip([digest(1)]))]
    env = open_envelope(seal(KEYS[1].consensus_key, items), chain_id="c1", senders=SENDERS)
    assert env.sender == KEYS[1].consensus_key.public_key and env.height == 7
    assert list(env.items) == items


def test_envelope_refusals() -> None:
    data = seal(KEYS[0].consensus_key, [(KIND_CONSENSUS, b"payload")])
    with pytest.raises(ProtocolError, match="another chain"):
        open_envelope(data, chain_id="c2", senders=SENDERS)
    outsider = Ed25519Key(b"\x09" * 32)
    with pytest.raises(UnknownSenderError):
        open_envelope(seal(outsider, [(KIND_CONSENSUS, b"p")]), chain_id="c1", senders=SENDERS)
    tampered = data.replace(b"payload", b"pAyload")
    with pytest.raises(VerificationError):
        open_envelope(tampered, chain_id="c1", senders=SENDERS)
    # a validator's key used by someone else's signature: swap the sender field
    obj = msgpack.unpackb(data)
    obj[2] = KEYS[1].consensus_key.public_key
    with pytest.raises(VerificationError):
        open_envelope(msgpack.packb(obj), chain_id="c1", senders=SENDERS)
    obj = msgpack.unpackb(data)
    obj[5] = [[99, b"x"]]
    with pytest.raises(ProtocolError, match="kind"):
        open_envelope(msgpack.packb(obj), chain_id="c1", senders=SENDERS)
    with pytest.raises(ProtocolError, match="too large"):
        open_envelope(b"\x00" * (MAX_ENVELOPE_BYTES + 1), chain_id="c1", senders=SENDERS)
    with pytest.raises(MalformedError):
        seal(KEYS[0].consensus_key, [(42, b"x")])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_envelope_parser_raises_only_ledger_errors(data: bytes) -> None:
    """Any garbage either opens or raises our own error, never anything else (STYLE.md 5)."""
    for parse in (
        lambda: open_envelope(data, chain_id="c1", senders=SENDERS),
        lambda: decode_gossip(data),
        lambda: decode_cosignature(data),
    ):
        with contextlib.suppress(LedgerError):
            parse()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=50))
def test_gossip_round_trip(digests: list[bytes]) -> None:
    assert decode_gossip(encode_gossip(digests)) == digests


def test_gossip_and_cosignature_refusals() -> None:
    with pytest.raises(ProtocolError):
        decode_gossip(msgpack.packb([b"short"]))
    with pytest.raises(MalformedError):
        encode_gossip([b"short"])
    with pytest.raises(ProtocolError):
        decode_cosignature(msgpack.packb([1, b"x" * 31, "line"]))
    c = Cosignature(size=3, root=b"r" * 32, line="— v1 AAAA")
    assert decode_cosignature(encode_cosignature(c)) == c


def test_mempool_dedups_keeps_order_and_refuses_overflow_whole() -> None:
    pool = Mempool(capacity=4)
    assert pool.add([digest(1), digest(2), digest(1)]) == [digest(1), digest(2)]
    assert pool.add([digest(2), digest(3)]) == [digest(3)]
    with pytest.raises(OverloadedError):
        pool.add([digest(4), digest(5)])
    assert len(pool) == 3  # nothing of the refused batch was added
    assert pool.batch(2) == [digest(1), digest(2)]
    pool.remove([digest(1)])
    assert pool.batch(5) == [digest(2), digest(3)]


def _collectors() -> list[CosignatureCollector]:
    cosigners = {k.name: open_cosigner(k) for k in KEYS}
    return [CosignatureCollector(keys=k, cosigners=cosigners, quorum=3) for k in KEYS]


def open_cosigner(k: ValidatorKeys):  # type: ignore[no-untyped-def]
    from ledger.note import Verifier

    return Verifier.from_vkey(k.cosigner_vkey)


#: The time of the block that produced the tree heads below (UNIX seconds).
T0 = 1_700_000_000


def test_cosignatures_make_a_quorum_note_that_verifies() -> None:
    body = Checkpoint(origin=ORIGIN, size=5, root=hashlib.sha256(b"root").digest())
    collectors = _collectors()
    mine = [c.sign_local(body, timestamp=T0 + i, block_time=T0) for i, c in enumerate(collectors)]
    first = collectors[0]
    assert first.note(5) is None  # only its own
    assert first.add(mine[1], latest_size=5, now=T0 + 5)
    assert not first.add(mine[1], latest_size=5, now=T0 + 5)  # duplicate
    assert first.note(5) is None
    assert first.add(mine[2], latest_size=5, now=T0 + 5)
    note = first.note(5)
    assert note is not None
    policy = parse_policy(trust_policy(KEYS))
    opened = open_checkpoint(note, policy.verifiers())
    result = policy.evaluate((v.verifier for v in opened.note.verified), origin=ORIGIN)
    assert result.cosigners == ("v1", "v2", "v3")


def test_forged_or_conflicting_cosignatures_are_refused() -> None:
    body = Checkpoint(origin=ORIGIN, size=5, root=hashlib.sha256(b"root").digest())
    other = Checkpoint(origin=ORIGIN, size=5, root=hashlib.sha256(b"fork").digest())
    a, b, *_ = _collectors()
    a.sign_local(body, timestamp=T0 + 1, block_time=T0)
    forked = b.sign_local(other, timestamp=T0 + 1, block_time=T0)
    with pytest.raises(VerificationError, match="another root"):
        a.add(forked, latest_size=5, now=T0 + 5)
    # a signature line moved onto the right root does not verify
    with pytest.raises(VerificationError):
        a.add(Cosignature(size=5, root=body.root, line=forked.line), latest_size=5, now=T0 + 5)
    outsider = ValidatorKeys(name="v9", origin=ORIGIN, seed=b"\x07" * 32)
    lone = CosignatureCollector(keys=outsider, cosigners={"v9": open_cosigner(outsider)},
                                quorum=1).sign_local(body, timestamp=T0 + 1, block_time=T0)
    with pytest.raises(MalformedError, match="not a validator"):
        a.add(lone, latest_size=5, now=T0 + 5)
    assert a.count(5) == 1 and a.rejected == 2


def test_cosignatures_for_a_future_size_wait_for_our_commit() -> None:
    body = Checkpoint(origin=ORIGIN, size=9, root=hashlib.sha256(b"r9").digest())
    a, b, c, _ = _collectors()
    assert not a.add(b.sign_local(body, timestamp=T0 + 2, block_time=T0), latest_size=4, now=T0 + 5)
    assert not a.add(c.sign_local(body, timestamp=T0 + 2, block_time=T0), latest_size=4, now=T0 + 5)
    a.sign_local(body, timestamp=T0 + 3, block_time=T0)
    assert a.count(9) == 3 and a.note(9) is not None


def test_a_cosignature_timestamped_outside_the_tolerance_is_refused() -> None:
    # No validator can put into a note a time it could not have seen: more than the tolerance
    # before the block's time, or after the receiver's clock.
    body = Checkpoint(origin=ORIGIN, size=5, root=hashlib.sha256(b"root").digest())
    a, b, c, d = _collectors()
    a.sign_local(body, timestamp=T0, block_time=T0)
    early = b.sign_local(body, timestamp=T0 - COSIGNATURE_TOLERANCE_S - 1, block_time=T0)
    late = c.sign_local(body, timestamp=T0 + 100, block_time=T0)
    edge = d.sign_local(body, timestamp=T0 - COSIGNATURE_TOLERANCE_S, block_time=T0)
    with pytest.raises(VerificationError, match="tolerance"):
        a.add(early, latest_size=5, now=T0)
    with pytest.raises(VerificationError, match="tolerance"):
        a.add(late, latest_size=5, now=T0 + 100 - COSIGNATURE_TOLERANCE_S - 1)
    assert a.add(late, latest_size=5, now=T0 + 100 - COSIGNATURE_TOLERANCE_S)
    assert a.add(edge, latest_size=5, now=T0)
    assert a.count(5) == 3 and a.rejected == 2


# ------------------------------------------------------------------------- the HTTP endpoint


def test_peer_endpoint_refuses_outsiders_forgeries_and_garbage(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        node = await cluster.start(0)  # the other three stay down: nothing commits
        try:
            chain = cluster.genesis.chain_id
            url = cluster.url(0) + "/peer/v1/messages"
            peer_key = cluster.keys[1].consensus_key
            outsider = Ed25519Key(b"\x05" * 32)
            good = seal_envelope(key=peer_key, chain_id=chain, height=0, seq=1,
                                 items=[(KIND_GOSSIP, encode_gossip([digest(1)]))])
            cases = [
                (b"garbage", 400, "protocol"),
                (seal_envelope(key=outsider, chain_id=chain, height=0, seq=1, items=[]),
                 403, "unknown_sender"),
                (seal_envelope(key=cluster.keys[0].consensus_key, chain_id=chain, height=0,
                               seq=1, items=[]), 403, "unknown_sender"),  # itself
                (good.replace(digest(1), digest(2)), 403, "verification_failed"),
                (seal_envelope(key=peer_key, chain_id="other-chain", height=0, seq=1,
                               items=[]), 400, "protocol"),
                (b"\x00" * (MAX_ENVELOPE_BYTES + 1), 413, "body_too_large"),
            ]
            async with client_session() as http:
                for body, status, code in cases:
                    async with http.post(url, data=body) as r:
                        assert r.status == status, await r.text()
                        assert (await r.json())["error"]["code"] == code
                assert len(node.replica.driver.mempool) == 0
                # the oversized body never reached the parser
                assert node.replica.stats.peer_invalid == 5
                async with http.post(url, data=good) as r:
                    assert r.status == 204
                assert digest(1) in node.replica.driver.mempool
                assert node.replica.sync.peers.by_name["v2"].height == 0
                core = node.replica.driver.core
                invalid_before = core.stats.invalid if core else -1
                junk = seal_envelope(
                    key=peer_key, chain_id=chain, height=3, seq=2,
                    items=[(KIND_CONSENSUS, b"\x93junk"), (KIND_GOSSIP, b"\xc1"),
                           (KIND_COSIGNATURE, msgpack.packb([1, b"r" * 32, "— v2 AAAA"]))],
                )
                async with http.post(url, data=junk) as r:
                    assert r.status == 204  # the envelope is good; its items are refused one by one
                assert core is not None and core.stats.invalid == invalid_before + 1
                assert node.replica.stats.peer_invalid == 7
                assert node.replica.sync.peers.by_name["v2"].height == 3
                assert len(node.replica.driver.mempool) == 1
        finally:
            await cluster.stop_all()

    run(main())
