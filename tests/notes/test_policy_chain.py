"""Policy chains (ledger.policy_chain): receipts verified across validator-set changes offline.

The chain: genesis v1..v4; change 1 adds v5 (boundary size 10); change 2 rotates v2 to new keys
(boundary 20); change 3 removes v1 (boundary 25). Receipts before a change keep verifying with
the old policy; after it they need the new quorum; old or removed keys no longer count.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
from collections.abc import Sequence

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.cli import main
from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    ChangeOp,
    Ed25519Signer,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
)
from ledger.crypto import ValidatorKeys
from ledger.errors import MalformedError, VerificationError
from ledger.genesis import Genesis, trust_policy
from ledger.merkle.hashing import leaf_hashes
from ledger.merkle.memory import InMemoryTree
from ledger.merkle.proof import inclusion_proof
from ledger.policy import parse_policy
from ledger.policy_chain import (
    PolicyChain,
    parse_policy_chain,
    policy_chain_from_blocks,
    verify_policy_chain,
    verify_receipt_with_chain,
)
from ledger.receipt import build_receipt

from .ground import ORIGIN, digest, validator

CHAIN = "chain-test"
V = {i: validator(i) for i in range(1, 6)}  # v1..v4 genesis, v5 joins
V2_NEW = ValidatorKeys(name="v2.example.org", origin=ORIGIN,
                       seed=hashlib.sha256(b"rotated v2").digest())
GENESIS = Genesis(chain_id=CHAIN, origin=ORIGIN, genesis_time=0,
                  validators=tuple(ValidatorInfo.from_keys(V[i]) for i in range(1, 5)))
ROSTER0 = GENESIS.roster()


def consensus(keys: ValidatorKeys) -> Ed25519Signer:
    return Ed25519Signer(seed=keys.consensus_key.seed)


def change(prev: ValidatorRoster, height: int, ops: Sequence[ChangeOp],
           approvers: Sequence[ValidatorKeys]) -> ValidatorSetChange:
    return ValidatorSetChange.create(chain_id=CHAIN, effective_height=height, prev=prev,
                                     ops=ops).signed(consensus(k) for k in approvers)


ADD = change(ROSTER0, 3, [ChangeOp.add(ValidatorInfo.from_keys(V[5]))], [V[1], V[2], V[3]])
ROSTER1 = ADD.verify(ROSTER0, chain_id=CHAIN)
ROTATE = change(ROSTER1, 6, [ChangeOp.rotate(V[2].consensus_key.public_key,
                                             ValidatorInfo.from_keys(V2_NEW))],
                [V[1], V[2], V[3], V[5]])
ROSTER2 = ROTATE.verify(ROSTER1, chain_id=CHAIN)
REMOVE = change(ROSTER2, 9, [ChangeOp.remove(V[1].consensus_key.public_key)],
                [V2_NEW, V[3], V[4], V[5]])
CHAIN_FILE = (PolicyChain(chain_id=CHAIN, genesis=ROSTER0)
              .with_change(ADD, boundary_size=10)
              .with_change(ROTATE, boundary_size=20)
              .with_change(REMOVE, boundary_size=25))
DIGESTS = [digest(i) for i in range(30)]
TREE = InMemoryTree()
TREE.append(leaf_hashes(DIGESTS))


def receipt(index: int, size: int, cosigners: Sequence[ValidatorKeys],
            log: ValidatorKeys = V[3]) -> str:
    """A receipt for leaf ``index`` at tree ``size``, cosigned by ``cosigners``."""
    cp = Checkpoint(origin=ORIGIN, size=size, root=TREE_ROOTS[size])
    sigs = [sign_checkpoint(cp, key=log.log_key)]
    sigs += [cosign(cp, name=k.name, key=k.cosigner_key, timestamp=1_700_000_000 + i)
             for i, k in enumerate(cosigners)]
    return build_receipt(index=index, proof=inclusion_proof(TREE, index, size),
                         checkpoint_note=checkpoint_note(cp, sigs))


TREE_ROOTS = {}
for _size in range(1, 31):
    _t = InMemoryTree()
    _t.append(leaf_hashes(DIGESTS[:_size]))
    TREE_ROOTS[_size] = _t.root()


def verify(text: str, index: int) -> None:
    verify_receipt_with_chain(text, CHAIN_FILE, DIGESTS[index],
                              genesis_policy=parse_policy(trust_policy(GENESIS)))


# --- the periods -----------------------------------------------------------------------------


def test_chain_file_round_trips_and_verifies_from_the_genesis() -> None:
    text = CHAIN_FILE.format()
    assert parse_policy_chain(text) == CHAIN_FILE
    assert parse_policy_chain(text.encode()) == CHAIN_FILE
    periods = verify_policy_chain(CHAIN_FILE)
    assert [p.after_size for p in periods] == [-1, 10, 20, 25]
    assert periods[0].policy == GENESIS.policy()
    assert [len(p.roster.members) for p in periods] == [4, 5, 5, 4]


def test_receipts_from_before_a_change_keep_verifying_with_the_old_policy() -> None:
    verify(receipt(3, 8, [V[1], V[2], V[3]]), 3)
    # The boundary size itself still belongs to the old set (its last block made it).
    verify(receipt(9, 10, [V[1], V[2], V[4]]), 9)
    verify(receipt(12, 20, [V[1], V[2], V[3], V[5]]), 12)  # old v2 key before the rotation
    verify(receipt(21, 25, [V[1], V2_NEW, V[3], V[5]]), 21)


def test_receipts_after_a_change_need_the_new_quorum() -> None:
    # After the add: 5 validators, quorum 4. Three genesis cosigners no longer suffice.
    with pytest.raises(VerificationError, match="quorum"):
        verify(receipt(11, 15, [V[1], V[2], V[3]]), 11)
    verify(receipt(11, 15, [V[1], V[2], V[3], V[5]]), 11)


def test_rotated_out_cosigner_key_no_longer_counts() -> None:
    # After the rotation, v2's old cosigner key is unknown to the policy: 3 valid of 4 needed.
    with pytest.raises(VerificationError, match="quorum"):
        verify(receipt(22, 23, [V[1], V[2], V[3], V[5]]), 22)
    verify(receipt(22, 23, [V[1], V2_NEW, V[3], V[5]]), 22)


def test_removed_validator_plus_too_few_others_fails() -> None:
    # After the removal of v1: v2', v3, v4, v5, quorum 3. v1's (old) keys count for nothing,
    # and v1 cannot sign as the log any more either.
    with pytest.raises(VerificationError, match="quorum"):
        verify(receipt(27, 28, [V[1], V[3], V[4]]), 27)
    with pytest.raises(VerificationError, match="trusted log"):
        verify(receipt(27, 28, [V2_NEW, V[3], V[4]], log=V[1]), 27)
    verify(receipt(27, 28, [V2_NEW, V[3], V[4]]), 27)
    # The same cosigners as a pre-removal receipt still verify for a size before the change.
    verify(receipt(2, 24, [V[1], V2_NEW, V[3], V[5]]), 2)


# --- the links ---------------------------------------------------------------------------------


def _replace_link(i: int, **kw: object) -> PolicyChain:
    links = list(CHAIN_FILE.links)
    links[i] = dataclasses.replace(links[i], **kw)  # type: ignore[arg-type]
    return dataclasses.replace(CHAIN_FILE, links=tuple(links))


def test_under_signed_or_wrongly_signed_links_are_refused() -> None:
    weak = change(ROSTER1, 6, ROTATE.ops, [V[1], V[2], V[3]])  # 3 of 5, quorum 4
    with pytest.raises(VerificationError, match=r"change 2: .*quorum is 4"):
        verify_policy_chain(_replace_link(1, change=weak))
    # Approved by the set it creates, not the one before it.
    by_new = change(ROSTER1, 6, ROTATE.ops, [V2_NEW, V[3], V[4], V[5]])
    with pytest.raises(VerificationError, match="change 2"):
        verify_policy_chain(_replace_link(1, change=by_new))
    # A change skipped: the next one modifies a roster the chain never reached.
    skipped = dataclasses.replace(CHAIN_FILE, links=(CHAIN_FILE.links[0], CHAIN_FILE.links[2]))
    with pytest.raises(VerificationError, match="another validator set"):
        verify_policy_chain(skipped)
    with pytest.raises(VerificationError, match="chain"):
        verify_policy_chain(dataclasses.replace(CHAIN_FILE, chain_id="elsewhere"))


def test_boundaries_and_heights_must_move_forward() -> None:
    with pytest.raises(VerificationError, match="backwards"):
        verify_policy_chain(_replace_link(2, boundary_size=19))
    early = change(ROSTER1, 4, ROTATE.ops, [V[1], V[2], V[3], V[5]])
    with pytest.raises(VerificationError, match="at least 2"):
        verify_policy_chain(_replace_link(1, change=early))


def test_chain_must_start_from_the_pinned_trust_policy() -> None:
    other = Genesis(chain_id=CHAIN, origin=ORIGIN, genesis_time=0,
                    validators=tuple(ValidatorInfo.from_keys(V[i]) for i in (1, 2, 3, 5)))
    with pytest.raises(VerificationError, match="trust policy"):
        verify_receipt_with_chain(receipt(3, 8, [V[1], V[2], V[3]]), CHAIN_FILE, DIGESTS[3],
                                  genesis_policy=other.policy())


def test_chain_from_blocks_takes_the_tree_size_of_block_e_minus_1() -> None:
    sizes = {1: 4, 2: 10, 3: 12, 4: 16, 5: 20, 6: 22, 7: 24, 8: 25, 9: 30}
    carried = {1: ADD, 4: ROTATE, 7: REMOVE}
    blocks = [Block(height=h, prev_hash=GENESIS_PREV_HASH, time=h, proposer=bytes(32),
                    tree_size=sizes[h], tree_root=bytes(32), digests=(),
                    changes=(carried[h],) if h in carried else ())
              for h in range(1, 10)]
    assert policy_chain_from_blocks(CHAIN, ROSTER0, blocks) == CHAIN_FILE
    # Before block 8 is committed, REMOVE (E = 9) is not in force and not listed.
    assert policy_chain_from_blocks(CHAIN, ROSTER0, blocks[:7]).links == CHAIN_FILE.links[:2]
    with pytest.raises(MalformedError):
        policy_chain_from_blocks(CHAIN, ROSTER0, blocks[1:])


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate", [
    lambda t: t.replace("ledger-policy-chain/v1", "ledger-policy-chain/v2"),
    lambda t: t.replace("chain chain-test\n", ""),
    lambda t: t + "validator late 00 x y\n",
    lambda t: t.replace("change 6 ", "change 7 "),
    lambda t: t.replace("change 3 10 ", "change 3 -1 "),
    lambda t: t.replace("change 3 10 ", "change 3 10 !"),
    lambda t: t + "frobnicate\n",
    lambda t: "\n".join(t.split("\n")[:2]) + "\n",
])
def test_malformed_chain_files_raise_malformed_error(mutate: object) -> None:
    with pytest.raises(MalformedError):
        parse_policy_chain(mutate(CHAIN_FILE.format()))  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_chain_files_raise_only_malformed_error(data: st.DataObject) -> None:
    raw = bytearray(CHAIN_FILE.format().encode())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(MalformedError):
        parse_policy_chain(bytes(raw))


# --- CLI -------------------------------------------------------------------------------------


def test_cli_verify_with_policy_chain(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "chain").write_text(CHAIN_FILE.format())
    (root / "policy").write_text(trust_policy(GENESIS))
    (root / "old.tlog-proof").write_text(receipt(3, 8, [V[1], V[2], V[3]]))
    (root / "bad.tlog-proof").write_text(receipt(27, 28, [V[1], V[3], V[4]]))
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", "--policy-chain", str(root / "chain"), "--policy",
                              str(root / "policy"), "--proof", str(root / "old.tlog-proof"),
                              "--digest", DIGESTS[3].hex()])
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    bad = runner.invoke(main, ["verify", "--policy-chain", str(root / "chain"),
                               "--proof", str(root / "bad.tlog-proof"),
                               "--digest", DIGESTS[27].hex()])
    assert bad.exit_code == 1, bad.output
    broken = runner.invoke(main, ["verify", "--policy-chain", str(root / "policy"),
                                  "--proof", str(root / "old.tlog-proof"),
                                  "--digest", DIGESTS[3].hex()])
    assert broken.exit_code == 2, broken.output
    none = runner.invoke(main, ["verify", "--proof", str(root / "old.tlog-proof"),
                                "--digest", DIGESTS[3].hex()])
    assert none.exit_code == 2, none.output


def test_base64_blob_in_file_is_the_canonical_change() -> None:
    line = CHAIN_FILE.format().splitlines()[-1]
    assert base64.b64decode(line.split(" ")[3]) == REMOVE.encode()
