"""The local proving ground: trust policy derivation, checkpoints, receipts."""

from __future__ import annotations

import pytest

from ledger.checkpoint import parse_checkpoint_body
from ledger.consensus.validators import fault_tolerance
from ledger.consensus.validators import quorum as quorum_threshold
from ledger.errors import MalformedError, NotFoundError
from ledger.note import parse_note
from ledger.policy import parse_policy
from ledger.prover import LocalLog, trust_policy
from ledger.receipt import verify_receipt
from ledger.storage.memory import MemoryStore

from .ground import ORIGIN, digest, make_ground, validator


@pytest.mark.parametrize(
    ("n", "f", "k"), [(1, 0, 1), (3, 0, 3), (4, 1, 3), (5, 1, 4), (6, 1, 5), (7, 2, 5), (10, 3, 7)]
)
def test_quorum_is_more_than_two_thirds(n: int, f: int, k: int) -> None:
    assert (fault_tolerance(n), quorum_threshold(n)) == (f, k)
    assert 3 * k > 2 * n  # any two quorums share an honest validator when n >= 3f + 1


def test_trust_policy_lists_log_and_cosigner_keys_and_the_quorum() -> None:
    validators = [validator(i) for i in range(1, 5)]
    policy = parse_policy(trust_policy(validators))
    assert [log.verifier.vkey for log in policy.logs] == [v.log_vkey for v in validators]
    assert [(w.name, w.verifier.vkey) for w in policy.witnesses] == [
        (v.name, v.cosigner_vkey) for v in validators
    ]
    assert policy.groups[0].threshold == 3 and policy.quorum == "validators"
    assert policy.fault_tolerance() == fault_tolerance(4)


def test_validators_must_share_an_origin_and_have_distinct_names() -> None:
    with pytest.raises(MalformedError):
        trust_policy([validator(1), validator(2, origin="other.example/log")])
    with pytest.raises(MalformedError):
        trust_policy([validator(1), validator(1)])
    with pytest.raises(MalformedError):
        trust_policy([])


def test_checkpoint_covers_the_tree_head_and_is_stored() -> None:
    store = MemoryStore()
    log = LocalLog(store, validators=[validator(i) for i in range(1, 5)])
    log.append([digest(0), digest(1), digest(0)])
    note = log.checkpoint(timestamp=1)
    checkpoint = parse_checkpoint_body(parse_note(note).text)
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 2)
    assert checkpoint.root == store.tree_head().root
    assert store.latest_checkpoint() == note.encode()


def test_a_digest_appended_twice_keeps_its_index() -> None:
    log = LocalLog(MemoryStore(), validators=[validator(1)])
    assert log.append([digest(0), digest(1)]) == (0, 1)
    assert log.append([digest(1), digest(2)]) == (1, 2)


def test_prove_needs_a_known_digest_and_a_covering_checkpoint() -> None:
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    log.append([digest(0)])
    with pytest.raises(NotFoundError, match="no checkpoint"):
        log.prove(digest(0))
    log.checkpoint(timestamp=1)
    log.append([digest(1)])
    with pytest.raises(NotFoundError, match="not yet covered"):
        log.prove(digest(1))
    with pytest.raises(NotFoundError, match="not in the log"):
        log.prove(digest(2))
    with pytest.raises(MalformedError):
        log.prove(b"short")


def test_receipts_stay_valid_after_the_log_grows() -> None:
    g = make_ground(leaves=3)
    old = g.log.prove(g.digests[1])
    g.log.append([digest(i) for i in range(3, 40)])
    g.log.checkpoint(timestamp=2_000_000_000)
    new = g.log.prove(g.digests[1])
    assert verify_receipt(old, g.policy, g.digests[1]).size == 3
    assert verify_receipt(new, g.policy, g.digests[1]).size == 40


def test_checkpoint_arguments_are_checked() -> None:
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    with pytest.raises(MalformedError):
        log.checkpoint(timestamp=[1, 2])  # four cosigners, two times
    with pytest.raises(MalformedError):
        log.checkpoint(timestamp=1, cosigners=[0, 0])
    with pytest.raises(MalformedError):
        log.checkpoint(timestamp=1, cosigners=[4])
    with pytest.raises(MalformedError):
        log.checkpoint(timestamp=-1)
