"""Negative controls for the chaos checker: it must see a double sign when there is one.

The chaos runs pass with zero violations; these tests show that zero is not the checker's only
answer. No process is started: the checker is fed messages signed with a devnet key directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from chaos.harness import Chaos, ChaosOptions
from ledger.consensus import Ed25519Signer, Vote
from ledger.consensus.messages import VoteType
from ledger.crypto import read_key_file


def _chaos(tmp_path: Path) -> Chaos:
    return Chaos(ChaosOptions(workdir=tmp_path / "chaos", log=lambda line: None))


def _vote(chaos: Chaos, *, block: bytes | None, timestamp: int = 1000) -> Vote:
    keys = read_key_file(chaos.d / "keys" / "validator-2.key")
    return Vote.create(
        Ed25519Signer(seed=keys.consensus_key.seed), type=VoteType.PREVOTE,
        chain_id=chaos.chain_id, height=5, round=1, block_hash=block, timestamp=timestamp,
    )


def test_two_different_votes_for_one_slot_are_a_double_sign(tmp_path: Path) -> None:
    chaos = _chaos(tmp_path)
    try:
        a = _vote(chaos, block=hashlib.sha256(b"a").digest())
        b = _vote(chaos, block=None)
        chaos._double_signs([a, a, b])
        assert len(chaos.report.violations) == 1
        assert "DOUBLE SIGN: validator-2" in chaos.report.violations[0]
    finally:
        chaos.proxy.stop()


def test_a_re_sent_identical_vote_is_not_a_double_sign(tmp_path: Path) -> None:
    chaos = _chaos(tmp_path)
    try:
        a = _vote(chaos, block=hashlib.sha256(b"a").digest())
        chaos._double_signs([a, a, _vote(chaos, block=hashlib.sha256(b"a").digest())])
        assert chaos.report.violations == []
    finally:
        chaos.proxy.stop()


def test_a_forged_second_vote_is_not_blamed_on_the_validator(tmp_path: Path) -> None:
    # Only messages whose signature verifies count: a forger cannot frame an honest node.
    chaos = _chaos(tmp_path)
    try:
        a = _vote(chaos, block=hashlib.sha256(b"a").digest())
        forged = Vote(type=a.type, chain_id=a.chain_id, height=a.height, round=a.round,
                      block_hash=None, timestamp=a.timestamp, validator=a.validator,
                      signature=a.signature)
        chaos._double_signs([a, forged])
        assert chaos.report.violations == []
    finally:
        chaos.proxy.stop()
