"""A receipt against a later checkpoint carries the first one as an earliest bridge (issue 11
item 2): both time bounds verify, and a bridge that lies is refused."""

from __future__ import annotations

import dataclasses

import pytest

from ledger.errors import VerificationError
from ledger.receipt import EarliestBridge, parse_receipt, verify_receipt

from .ground import BASE_TIME, Ground, digest, make_ground


def _bridged(ground: Ground, d: bytes) -> str:
    """The receipt of ``d`` against a later checkpoint, carrying the first one that held it
    (as the node builds it for ``?against=latest``)."""
    first = parse_receipt(ground.log.prove(d))
    store = ground.log._store  # the proving ground's own store
    first_size = store.size
    ground.log.append([digest(i) for i in range(100, 105)])
    ground.log.checkpoint(timestamp=BASE_TIME + 3600)
    later = parse_receipt(ground.log.prove(d))
    bridge = EarliestBridge(proof=tuple(store.consistency_proof(first_size, store.size)),
                            checkpoint=first.checkpoint)
    return dataclasses.replace(later, extra=bridge.encode()).format()


def test_a_bridged_receipt_proves_the_first_bound_and_the_later_tree() -> None:
    ground = make_ground()
    text = _bridged(ground, ground.digests[3])
    result = verify_receipt(text, ground.policy, ground.digests[3])
    assert result.earliest is not None
    assert (result.earliest.size, result.size) == (11, 16)
    assert result.earliest.time_bound < result.time_bound == BASE_TIME + 3600


def test_a_bridge_that_lies_is_refused() -> None:
    ground = make_ground()
    d = ground.digests[3]
    receipt = parse_receipt(_bridged(ground, d))
    assert receipt.extra is not None
    bridge = EarliestBridge.decode(receipt.extra)
    assert bridge is not None and bridge.proof
    wrong_proof = dataclasses.replace(bridge, proof=(b"\x00" * 32, *bridge.proof[1:]))
    later_note = dataclasses.replace(bridge, checkpoint=receipt.checkpoint, proof=())
    for bad in (wrong_proof, later_note):
        tampered = dataclasses.replace(receipt, extra=bad.encode()).format()
        if bad is later_note:  # the same checkpoint as the receipt's: consistent, fine
            assert verify_receipt(tampered, ground.policy, d).earliest is not None
            continue
        with pytest.raises(VerificationError, match="does not extend"):
            verify_receipt(tampered, ground.policy, d)
    other = make_ground(leaves=2)  # a first checkpoint that does not contain leaf 3
    small = dataclasses.replace(bridge, checkpoint=parse_receipt(
        other.log.prove(other.digests[0])).checkpoint)
    with pytest.raises(VerificationError, match="does not contain the leaf"):
        verify_receipt(dataclasses.replace(receipt, extra=small.encode()).format(),
                       ground.policy, d)


def test_other_extra_data_is_carried_and_ignored() -> None:
    ground = make_ground()
    d = ground.digests[0]
    receipt = parse_receipt(ground.log.prove(d, extra=b"something else"))
    assert receipt.extra == b"something else"
    assert verify_receipt(receipt.format(), ground.policy, d).earliest is None
