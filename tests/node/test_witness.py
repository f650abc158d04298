"""C2SP tlog-witness ``add-checkpoint``: the node as a witness of its own log, a standalone
(outside institution's) witness, and the log's side that submits checkpoints to one.

The unit tests drive :class:`ledger.replica.witness.Witness` directly over a MemoryStore; the HTTP
tests run a one-validator node (it commits on its own) and POST to its ``/add-checkpoint``.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from pathlib import Path

import pytest
from aiohttp import web

from ledger.checkpoint import Checkpoint, checkpoint_note, parse_checkpoint_body, sign_checkpoint
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key, ValidatorKeys
from ledger.errors import MalformedError, VerificationError
from ledger.node.witness_api import submit_checkpoint, witness_app
from ledger.note import Signature, Verifier, open_note, parse_note
from ledger.policy import Group, Policy
from ledger.policy import Witness as PolicyWitness
from ledger.replica.witness import (
    MAX_ADD_CHECKPOINT_BYTES,
    META_PREFIX,
    SIZE_CONTENT_TYPE,
    Witness,
    WitnessRefusal,
    add_cosignatures,
    format_add_checkpoint,
    parse_add_checkpoint,
)
from ledger.storage.memory import MemoryStore

from .harness import auth, client_session, digest, make_cluster, run

ORIGIN = "ledger.test/witness"
#: The witnesses' clock in these tests (ms): cosignature timestamps are 1_700_000_000.
NOW_MS = 1_700_000_000_000
LOG = ValidatorKeys(name="v1", origin=ORIGIN, seed=b"\x01" * 32)
OTHER_LOG = ValidatorKeys(name="v9", origin="other.test/log", seed=b"\x09" * 32)
WITNESS_KEY = Ed25519Key(b"\x42" * 32)
WITNESS_NAME = "witness.example/w1"
WITNESS_VKEY = Verifier.for_key(name=WITNESS_NAME, sig_type=SIG_TYPE_COSIGNATURE_V1,
                                public_key=WITNESS_KEY.public_key)


def tree(n: int, salt: str = "") -> MemoryStore:
    store = MemoryStore()
    store.append([digest(i, salt) for i in range(n)])
    return store


def note_for(store: MemoryStore, size: int, *, key: ValidatorKeys = LOG,
             origin: str = ORIGIN) -> str:
    cp = Checkpoint(origin=origin, size=size, root=store.root_at(size))
    return checkpoint_note(cp, [sign_checkpoint(cp, key=key.log_key)])


def request(store: MemoryStore, old: int, size: int, *, key: ValidatorKeys = LOG,
            origin: str = ORIGIN) -> bytes:
    proof = [] if old in (0, size) else store.consistency_proof(old, size)
    note = note_for(store, size, key=key, origin=origin)
    return format_add_checkpoint(old_size=old, proof=proof, note=note)


def make_witness(own_tree: MemoryStore | None = None) -> Witness:
    return Witness(name=WITNESS_NAME, key=WITNESS_KEY,
                   logs=[Verifier.from_vkey(LOG.log_vkey)], state=MemoryStore(),
                   tree=own_tree)


def refusal(witness: Witness, body: bytes) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as info:
        witness.add_checkpoint(body, now=NOW_MS)
    return info.value


def check_cosignature(note: str, line: str) -> None:
    opened = open_note(parse_note(add_cosignatures(note, line, [WITNESS_VKEY])), [WITNESS_VKEY])
    assert opened.verified[0].timestamp == 1_700_000_000


# ----------------------------------------------------------------------- the request format


def test_request_round_trip() -> None:
    store = tree(10)
    body = request(store, 3, 10)
    parsed = parse_add_checkpoint(body)
    assert parsed.old_size == 3 and list(parsed.proof) == store.consistency_proof(3, 10)
    assert parsed.note == note_for(store, 10)


MALFORMED = [
    ("empty", b""),
    ("no old line", b"\n\n" + note_for(tree(2), 2).encode()),
    ("old without size", b"old\n\n" + note_for(tree(2), 2).encode()),
    ("old with leading zero", b"old 01\n\n" + note_for(tree(2), 2).encode()),
    ("old negative", b"old -1\n\n" + note_for(tree(2), 2).encode()),
    ("no empty line", b"old 0\n"),
    ("proof not base64", b"old 1\n!!!!\n\n" + note_for(tree(2), 2).encode()),
    ("proof hash short", b"old 1\n" + base64.b64encode(b"x" * 31) + b"\n\n"
     + note_for(tree(2), 2).encode()),
    ("64 proof lines", b"old 1\n" + (base64.b64encode(b"x" * 32) + b"\n") * 64 + b"\n"
     + note_for(tree(2), 2).encode()),
    ("not utf-8", b"old 0\n\n\xff\xfe"),
    ("checkpoint not a note", b"old 0\n\nhello\n"),
    ("checkpoint body not canonical", b"old 0\n\n" + note_for(tree(2), 2).replace(
        "\n2\n", "\n02\n").encode()),
    ("oversized", b"old 0\n\n" + b"a" * MAX_ADD_CHECKPOINT_BYTES),
]


@pytest.mark.parametrize(("name", "body"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_are_400_and_change_nothing(name: str, body: bytes) -> None:
    witness = make_witness()
    assert refusal(witness, body).status == 400
    assert witness.last(ORIGIN) is None


# ----------------------------------------------------------------------- the witness's checks


def test_first_checkpoint_then_consistent_growth_then_same_again() -> None:
    log = tree(20)
    witness = make_witness()
    check_cosignature(note_for(log, 5), witness.add_checkpoint(request(log, 0, 5), now=NOW_MS))
    last = witness.last(ORIGIN)
    assert last is not None and last.size == 5
    check_cosignature(note_for(log, 20), witness.add_checkpoint(request(log, 5, 20), now=NOW_MS))
    # The same checkpoint again is cosigned again (a log retrying after a lost answer).
    check_cosignature(note_for(log, 20), witness.add_checkpoint(request(log, 20, 20), now=NOW_MS))
    last = witness.last(ORIGIN)
    assert last is not None and last.size == 20 and last.root == log.root_at(20)
    stored = witness.state.get_meta(META_PREFIX + hashlib.sha256(ORIGIN.encode()).digest())
    assert stored is not None and parse_note(stored).text == parse_note(note_for(log, 20)).text


def test_wrong_old_size_is_409_with_the_known_size() -> None:
    log = tree(20)
    witness = make_witness()
    witness.add_checkpoint(request(log, 0, 5), now=NOW_MS)
    for old in (0, 4, 6):
        exc = refusal(witness, request(log, old, 20))
        assert (exc.status, exc.size) == (409, 5)
    last = witness.last(ORIGIN)
    assert last is not None and last.size == 5


def test_same_size_other_root_is_409_split_view() -> None:
    log, fork = tree(8), tree(8, salt="fork")
    witness = make_witness()
    witness.add_checkpoint(request(log, 0, 8), now=NOW_MS)
    exc = refusal(witness, request(fork, 8, 8))
    assert (exc.status, exc.size) == (409, 8)


def test_bad_proofs_are_422_and_change_nothing() -> None:
    log, fork = tree(20), tree(20, salt="fork")
    witness = make_witness()
    witness.add_checkpoint(request(log, 0, 5), now=NOW_MS)
    proof = log.consistency_proof(5, 20)
    note = note_for(log, 20)
    bodies = [
        format_add_checkpoint(old_size=5, proof=[], note=note),  # missing
        format_add_checkpoint(old_size=5, proof=proof[:-1], note=note),  # truncated
        format_add_checkpoint(old_size=5, proof=[*proof, proof[0]], note=note),  # extra
        format_add_checkpoint(old_size=5, proof=[b"\x00" * 32, *proof[1:]], note=note),
        # A log-signed fork whose first 5 leaves differ: no proof can link it to size 5.
        format_add_checkpoint(old_size=5, proof=fork.consistency_proof(5, 20),
                              note=note_for(fork, 20)),
        format_add_checkpoint(old_size=5, proof=[*proof] + [b"\x01" * 32] * 5, note=note),
    ]
    for body in bodies:
        assert refusal(witness, body).status == 422
    fresh = make_witness()
    nonempty = format_add_checkpoint(old_size=0, proof=[b"\x00" * 32], note=note)
    assert refusal(fresh, nonempty).status == 422  # "MUST be empty if the old size is zero"
    last = witness.last(ORIGIN)
    assert last is not None and last.size == 5 and fresh.last(ORIGIN) is None


def test_old_size_above_checkpoint_size_is_400() -> None:
    log = tree(5)
    witness = make_witness()
    body = format_add_checkpoint(old_size=6, proof=[], note=note_for(log, 5))
    assert refusal(witness, body).status == 400


def test_unknown_origin_404_and_untrusted_or_bad_signatures_403() -> None:
    log = tree(5)
    witness = make_witness()
    assert refusal(witness, request(log, 0, 5, key=OTHER_LOG,
                                    origin="other.test/log")).status == 404
    # Signed under the right origin name by a key the witness does not trust.
    impostor = ValidatorKeys(name="v1", origin=ORIGIN, seed=b"\x07" * 32)
    assert refusal(witness, request(log, 0, 5, key=impostor)).status == 403
    # The trusted key's signature over another root: a known key that fails rejects the note.
    good = note_for(log, 5)
    lines = good.split("\n")
    lines[2] = base64.b64encode(b"\x00" * 32).decode()
    forged = "\n".join(lines)
    assert refusal(witness, format_add_checkpoint(old_size=0, proof=[], note=forged)).status \
        == 403
    assert witness.last(ORIGIN) is None


def test_a_validator_witness_cosigns_only_its_own_committed_tree() -> None:
    """One Byzantine validator can sign any tree with its log key; an honest validator's
    witness must still never cosign a head its own store does not hold."""
    own = tree(10)
    witness = make_witness(own_tree=own)
    witness.add_checkpoint(request(own, 0, 4), now=NOW_MS)
    # A fork that extends the true first 4 leaves: the consistency proof verifies...
    fork = tree(4)
    fork.append([digest(i, "fork") for i in range(6)])
    exc = refusal(witness, request(fork, 4, 10))
    assert (exc.status, exc.code) == (422, "contradicts_tree")  # ...but not our tree
    longer = tree(12)
    exc = refusal(witness, request(longer, 4, 12))
    assert (exc.status, exc.code) == (503, "not_committed")  # we may just lag
    last = witness.last(ORIGIN)
    assert last is not None and last.size == 4
    witness.add_checkpoint(request(own, 4, 10), now=NOW_MS)


# ------------------------------------------------------------------ the node's HTTP endpoint


def test_node_endpoint_cosigns_its_checkpoints_and_refuses_by_spec(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=True)
        node = await cluster.start(0)
        url = cluster.url(0) + "/add-checkpoint"
        cosigner = Verifier.from_vkey(cluster.keys[0].cosigner_vkey)
        try:
            async with client_session() as http:
                async def post(body: bytes) -> tuple[int, str, str]:
                    async with http.post(url, data=body) as r:
                        return r.status, r.content_type, await r.text()

                async def anchor(salt: str, n: int) -> str:
                    digests = [digest(i, salt).hex() for i in range(n)]
                    async with http.post(cluster.url(0) + "/v1/anchors?wait=true",
                                         json={"digests": digests}, headers=auth()) as r:
                        assert r.status == 200, await r.text()
                    assert node.replica.checkpoint is not None
                    return node.replica.checkpoint[1]

                first = await anchor("a", 3)
                size1 = parse_checkpoint_body(parse_note(first).text).size
                status, _, text = await post(format_add_checkpoint(old_size=0, proof=[],
                                                                   note=first))
                assert status == 200, text
                # The same key as the validator's quorum cosignature (the note already holds
                # one, made at commit time): verify the new line on its own.
                line = Signature.parse_line(text.rstrip("\n"))
                assert (line.name, line.key_id) == (cosigner.name, cosigner.key_id)
                assert cosigner.verify(parse_note(first).text.encode(), line) is not None

                second = await anchor("b", 5)
                size2 = parse_checkpoint_body(parse_note(second).text).size
                status, ctype, text = await post(format_add_checkpoint(old_size=0, proof=[],
                                                                       note=second))
                assert (status, ctype, text) == (409, SIZE_CONTENT_TYPE, f"{size1}\n")
                assert node.store is not None
                proof = node.store.consistency_proof(size1, size2)
                bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
                status, _, _ = await post(format_add_checkpoint(old_size=size1, proof=bad,
                                                                note=second))
                assert status == 422
                status, _, text = await post(format_add_checkpoint(old_size=size1, proof=proof,
                                                                   note=second))
                assert status == 200, text
                foreign = note_for(tree(3), 3, key=OTHER_LOG, origin="other.test/log")
                status, _, text = await post(format_add_checkpoint(old_size=0, proof=[],
                                                                   note=foreign))
                assert status == 404 and '"unknown_log"' in text
                status, _, _ = await post(b"old 0\n")
                assert status == 400
                status, _, _ = await post(b"x" * (MAX_ADD_CHECKPOINT_BYTES + 1))
                assert status == 413
            # The record is in the store's meta: a restarted node still knows size2.
            await cluster.stop(0)
            node = await cluster.start(0)
            body = format_add_checkpoint(old_size=0, proof=[], note=first)
            async with client_session() as http, http.post(url, data=body) as r:
                assert r.status == 409 and await r.text() == f"{size2}\n"
        finally:
            await cluster.stop_all()

    run(main())


# ------------------------------------------- an outside institution's witness, the log's side


def test_log_submits_to_an_outside_witness_and_the_policy_counts_it(tmp_path: Path) -> None:
    """The ledger's checkpoints, pushed to an outside witness service that trusts the policy's
    log keys; its cosignature is merged and satisfies a policy that requires it."""
    async def main() -> None:
        cluster = make_cluster(tmp_path, n=1, lmdb=False)
        node = await cluster.start(0)
        outside = Witness(name=WITNESS_NAME, key=WITNESS_KEY,
                          logs=[entry.verifier for entry in node.config.genesis.policy().logs],
                          state=MemoryStore())
        runner = web.AppRunner(witness_app(outside))
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        witness_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            assert node.store is not None
            store = node.store
            async with client_session() as http:
                held = 0
                for salt in ("a", "b"):
                    async with http.post(cluster.url(0) + "/v1/anchors?wait=true", json={
                            "digests": [digest(i, salt).hex() for i in range(4)]},
                            headers=auth()) as r:
                        assert r.status == 200
                    assert node.replica.checkpoint is not None
                    note = node.replica.checkpoint[1]
                    # The log forgot what the witness holds (held=0 on the second round): the
                    # 409 tells it, and it retries with the right proof.
                    held, line = await submit_checkpoint(
                        http, witness_url, note=note, old_size=0,
                        proof=store.consistency_proof, witness=WITNESS_VKEY)
                    merged = add_cosignatures(note, line.line(), [WITNESS_VKEY])
            base = node.config.genesis.policy()
            policy = Policy(
                logs=base.logs,
                witnesses=(*base.witnesses, PolicyWitness(name="outside",
                                                          verifier=WITNESS_VKEY)),
                groups=(*base.groups, Group(name="both", threshold=2,
                                            members=("validators", "outside"))),
                quorum="both",
            )
            opened = open_note(merged, policy.verifiers())
            origin = node.config.genesis.origin
            policy.evaluate((v.verifier for v in opened.verified), origin=origin)
            assert node.replica.checkpoint is not None
            without = open_note(node.replica.checkpoint[1], policy.verifiers())
            with pytest.raises(VerificationError):  # the validators alone no longer suffice
                policy.evaluate((v.verifier for v in without.verified), origin=origin)
            assert held == store.size
        finally:
            await runner.cleanup()
            await cluster.stop_all()

    run(main())


def test_add_cosignatures_ignores_unknown_and_refuses_bad_lines() -> None:
    log = tree(3)
    note = note_for(log, 3)
    witness = make_witness()
    line = witness.add_checkpoint(request(log, 0, 3), now=NOW_MS)
    stranger = Verifier.for_key(name="stranger", sig_type=SIG_TYPE_COSIGNATURE_V1,
                                public_key=Ed25519Key(b"\x01" * 32).public_key)
    with pytest.raises(VerificationError):
        add_cosignatures(note, line, [stranger])
    with pytest.raises(VerificationError):
        add_cosignatures(note, "not a signature line\n", [WITNESS_VKEY])
    tampered = line[:-3] + ("A" if line[-3] != "A" else "B") + line[-2:]
    with pytest.raises((VerificationError, MalformedError)):
        add_cosignatures(note, tampered, [WITNESS_VKEY])
    once = add_cosignatures(note, line, [WITNESS_VKEY])
    with pytest.raises(VerificationError):  # already held: nothing to add
        add_cosignatures(once, line, [WITNESS_VKEY])
