"""The node's push to an outside witness, on the wire (c2sp.org/tlog-witness ``add-checkpoint``).

A one-validator node (it commits on its own) pushes to a real
:class:`ledger.replica.witness.Witness` served in the same event loop, which records every
request body. What it
protects: the first push is ``old 0`` with no proof; each later one starts from the size the
witness cosigned, with the RFC 9162 consistency proof from it, and carries the node's latest
checkpoint verbatim; after a restart of the node (which forgets the witness's size) the first
push is answered 409 with that size and the node resends from it, which is neither a failure
nor a conflict. The cluster behaviour (down, slow, forked, refusing witnesses) is
tests/node/test_outside_witnesses.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import (
    Checkpoint,
    checkpoint_note,
    cosign,
    parse_checkpoint_body,
    sign_checkpoint,
)
from ledger.config import WitnessEndpoint
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key
from ledger.errors import MalformedError, VerificationError
from ledger.merkle.proof import verify_consistency
from ledger.node.witness_api import witness_app
from ledger.node.witnesses import cosignature_in_answer
from ledger.note import Verifier, parse_note
from ledger.replica.witness import Witness, WitnessRefusal, parse_add_checkpoint
from ledger.storage.memory import MemoryStore

from .harness import auth, client_session, digest, eventually, make_cluster, run

KEY = Ed25519Key(b"\x5a" * 32)
NAME = "recording.witness.test/w"
VERIFIER = Verifier.for_key(name=NAME, sig_type=SIG_TYPE_COSIGNATURE_V1,
                            public_key=KEY.public_key)


class RecordingWitness(Witness):
    """A spec witness that keeps every request body it got and the status it answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []

    def add_checkpoint(self, data: bytes, *, now: int) -> str:
        self.bodies.append(data)
        try:
            line = super().add_checkpoint(data, now=now)
        except WitnessRefusal as exc:
            self.statuses.append(exc.status)
            raise
        self.statuses.append(200)
        return line


def test_pushes_follow_the_spec_and_resync_after_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=False)
        witness = RecordingWitness(name=NAME, key=KEY,
                                   logs=[Verifier.from_vkey(cluster.keys[0].log_vkey)],
                                   state=MemoryStore())
        bodies, statuses = witness.bodies, witness.statuses
        runner = web.AppRunner(witness_app(witness), access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        cluster.configs[0] = dataclasses.replace(cluster.configs[0], witnesses=(
            WitnessEndpoint(name="rec", url=url, vkey=VERIFIER.vkey),))
        node = await cluster.start(0)
        store = cluster.stores[0]
        try:
            async with client_session() as http:
                async def anchor(salt: str) -> int:
                    async with http.post(cluster.url(0) + "/v1/anchors?wait=true",
                                         json={"digests": [digest(i, salt).hex()
                                                           for i in range(3)]},
                                         headers=auth()) as r:
                        assert r.status == 200, await r.text()
                    assert node.replica is not None and node.replica.checkpoint is not None
                    return node.replica.checkpoint[0]

                def cosigned(size: int) -> bool:
                    raw = store.checkpoint(size)
                    return raw is not None and any(
                        s.name == NAME for s in parse_note(raw.decode()).signatures)

                first = await anchor("one")
                await eventually(lambda: cosigned(first), what="the first cosignature")
                second = await anchor("two")
                await eventually(lambda: cosigned(second), what="the second cosignature")
                requests = [parse_add_checkpoint(b) for b in bodies]
                assert (requests[0].old_size, requests[0].proof) == (0, ())
                sizes = [parse_checkpoint_body(parse_note(r.note).text) for r in requests]
                assert sizes[0].size == first and sizes[-1].size == second
                last = requests[-1]
                assert last.old_size == first
                verify_consistency(first, second, store.root_at(first), store.root_at(second),
                                   list(last.proof))
                raw = store.checkpoint(second)
                assert raw is not None
                assert parse_note(last.note).text == parse_note(raw.decode()).text

                # A restart forgets the witness's size: 409 with it, then a push from it.
                # (The latest note already carries the cosignature: it is not pushed again.)
                await cluster.stop(0)
                bodies.clear()
                statuses.clear()
                node = await cluster.start(0)
                await asyncio.sleep(0.3)
                assert not bodies
                assert node.witnesses.states[0].cosigned_size == second
                third = await anchor("three")
                await eventually(lambda: cosigned(third), what="a cosignature after restart")
                assert statuses[0] == 409 and parse_add_checkpoint(bodies[0]).old_size == 0
                assert parse_add_checkpoint(bodies[1]).old_size == second
                state = node.witnesses.states[0]
                assert (state.failures, state.conflicts, state.cosigned_size) == (0, 0, third)
        finally:
            await cluster.stop_all()
            await runner.cleanup()

    run(main())


# ------------------------------------------------------------- the answer, untrusted bytes

_CP = Checkpoint(origin="answers.test/log", size=3, root=b"\x07" * 32)
_NOTE = checkpoint_note(_CP, [sign_checkpoint(_CP, key=Ed25519Key(b"\x01" * 32))])
_GOOD = cosign(_CP, name=NAME, key=KEY, timestamp=1_700_000_000).line()
_OTHER = cosign(_CP, name="other.test/w", key=Ed25519Key(b"\x02" * 32),
                timestamp=1_700_000_000).line()


def test_the_answer_yields_the_configured_keys_cosignature_only() -> None:
    assert cosignature_in_answer(_NOTE, _OTHER + _GOOD, VERIFIER).line() == _GOOD
    with pytest.raises(VerificationError, match="no cosignature by the configured key"):
        cosignature_in_answer(_NOTE, _OTHER, VERIFIER)
    other_cp = Checkpoint(origin="answers.test/log", size=3, root=b"\x08" * 32)
    with pytest.raises(VerificationError):  # a cosignature of another tree head
        cosignature_in_answer(_NOTE, cosign(other_cp, name=NAME, key=KEY,
                                            timestamp=1).line(), VERIFIER)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400),
                 st.builds(lambda a, b: a + _GOOD[: len(_GOOD) // 2] + b,
                           st.text(max_size=40), st.text(max_size=40))))
def test_any_answer_yields_a_verified_cosignature_or_our_error(answer: str) -> None:
    # h11's invariant for untrusted bytes: parsed, or one of our errors, never anything else.
    try:
        got = cosignature_in_answer(_NOTE, answer, VERIFIER)
    except (MalformedError, VerificationError):
        return
    VERIFIER.verify(parse_note(_NOTE).text.encode(), got)
