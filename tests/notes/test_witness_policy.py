"""Policies that require outside witnesses (``k of validators AND m of witnesses``): the quorum,
the reason a receipt without the witness fails, and the time bound such a policy proves.

The time-bound rule (:meth:`ledger.policy.Policy.time_bound`): a group of witnesses is a
Byzantine quorum, its bound the (f + 1)-th smallest timestamp with f = n - k; a group of groups
takes the k-th smallest of its members' bounds, so for "all" no member can pull the bound
earlier than another attests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, Ed25519Key, ValidatorKeys
from ledger.errors import VerificationError
from ledger.genesis import trust_policy
from ledger.merkle.hashing import leaf_hash
from ledger.merkle.proof import inclusion_proof
from ledger.note import Signature, Verifier
from ledger.policy import Group, Policy, parse_policy
from ledger.policy import Witness as PolicyWitness
from ledger.policy_chain import verify_receipt_with_chain
from ledger.receipt import build_receipt, verify_checkpoint_note, verify_receipt

from . import test_policy_chain as chain

ORIGIN = "example.com/log"
LOG = Ed25519Key(b"\x64" * 32)
VALIDATORS = [Ed25519Key(bytes([i]) * 32) for i in range(1, 5)]
AUDIT = Ed25519Key(b"\x50" * 32)
OUTSIDE = [Ed25519Key(bytes([0x60 + i]) * 32) for i in range(3)]
DIGEST = b"\x11" * 32
VERIFY_JS = Path(__file__).resolve().parents[2] / "ledger" / "static" / "verify.js"
CHECKPOINT = Checkpoint(origin=ORIGIN, size=1, root=leaf_hash(DIGEST))


def vkey(name: str, key: Ed25519Key) -> str:
    return Verifier.for_key(name=name, sig_type=SIG_TYPE_COSIGNATURE_V1,
                            public_key=key.public_key).vkey


LOG_LINE = "log " + Verifier.for_key(name=ORIGIN, sig_type=SIG_TYPE_ED25519,
                                     public_key=LOG.public_key).vkey + "\n"
VALIDATOR_LINES = "".join(f"witness v{i} {vkey(f'v{i}', k)}\n"
                          for i, k in enumerate(VALIDATORS, start=1))
GENESIS = LOG_LINE + VALIDATOR_LINES + "group validators 3 v1 v2 v3 v4\nquorum validators\n"
WITH_AUDIT = (LOG_LINE + VALIDATOR_LINES + "group validators 3 v1 v2 v3 v4\n"
              f"witness audit {vkey('audit.example/w1', AUDIT)}\n"
              "group required all validators audit\nquorum required\n")
WITH_OUTSIDE = (LOG_LINE + VALIDATOR_LINES + "group validators 3 v1 v2 v3 v4\n"
                + "".join(f"witness o{i} {vkey(f'o{i}.example', k)}\n"
                          for i, k in enumerate(OUTSIDE))
                + "group outside 2 o0 o1 o2\ngroup required all validators outside\n"
                "quorum required\n")


def note(validator_times: dict[int, int], *, audit: int | None = None,
         outside: dict[int, int] | None = None) -> str:
    sigs: list[Signature] = [sign_checkpoint(CHECKPOINT, key=LOG)]
    for i, t in validator_times.items():
        sigs.append(cosign(CHECKPOINT, name=f"v{i}", key=VALIDATORS[i - 1], timestamp=t))
    if audit is not None:
        sigs.append(cosign(CHECKPOINT, name="audit.example/w1", key=AUDIT, timestamp=audit))
    for i, t in (outside or {}).items():
        sigs.append(cosign(CHECKPOINT, name=f"o{i}.example", key=OUTSIDE[i], timestamp=t))
    return checkpoint_note(CHECKPOINT, sigs)


def test_the_validators_policy_keeps_its_bound() -> None:
    # f = 1 of 4: the second smallest of the validators' timestamps.
    times = {1: 1000, 2: 1001, 3: 1005, 4: 1009}
    assert verify_checkpoint_note(note(times), parse_policy(GENESIS)).time_bound == 1001


def test_validators_and_a_witness_both_verify_and_the_later_bound_holds() -> None:
    policy = parse_policy(WITH_AUDIT)
    times = {1: 1000, 2: 1001, 3: 1005, 4: 1009}
    # The witness saw the checkpoint after the validators: its time is the bound ...
    late = verify_checkpoint_note(note(times, audit=1003), policy)
    assert late.time_bound == 1003 and "audit" in late.cosigners
    # ... and a witness claiming an earlier time cannot pull the validators' bound earlier.
    assert verify_checkpoint_note(note(times, audit=5), policy).time_bound == 1001
    # A lying validator (1 of 4) cannot pull it earlier either.
    assert verify_checkpoint_note(note({1: 1, 2: 1001, 3: 1005}, audit=1002),
                                  policy).time_bound == 1002


def test_a_receipt_without_the_witness_fails_naming_it() -> None:
    receipt = build_receipt(index=0, proof=[], checkpoint_note=note({1: 10, 2: 11, 3: 12}))
    verify_receipt(receipt, parse_policy(GENESIS), DIGEST)
    with pytest.raises(VerificationError, match="not satisfied: witness 'audit'"):
        verify_receipt(receipt, parse_policy(WITH_AUDIT), DIGEST)
    # Too few validators with the witness present: the validators' group is named.
    short = build_receipt(index=0, proof=[], checkpoint_note=note({1: 10, 2: 11}, audit=12))
    with pytest.raises(VerificationError, match="not satisfied: group 'validators'"):
        verify_receipt(short, parse_policy(WITH_AUDIT), DIGEST)


def test_m_of_n_outside_witnesses_are_a_byzantine_group_of_their_own() -> None:
    policy = parse_policy(WITH_OUTSIDE)
    times = {1: 1000, 2: 1001, 3: 1005}
    # Two of three outside witnesses (f = 1): their second smallest, 1004, then the later of
    # that and the validators' 1001.
    got = verify_checkpoint_note(note(times, outside={0: 1, 1: 1004, 2: 1010}), policy)
    assert got.time_bound == 1004
    with pytest.raises(VerificationError, match="not satisfied: group 'outside'"):
        verify_checkpoint_note(note(times, outside={2: 1010}), policy)


# ------------------------------------------------------------- the browser verifier agrees

NESTED = (LOG_LINE + VALIDATOR_LINES + "group a 1 v1 v2\ngroup b 2 v3 v4\ngroup top all a b\n"
          "quorum top\n")
TWIN_CASES = [
    ("genesis", GENESIS, {1: 1000, 2: 1001, 3: 1005, 4: 1009}, None, None),
    ("witness late", WITH_AUDIT, {1: 1000, 2: 1001, 3: 1005, 4: 1009}, 1003, None),
    ("witness early", WITH_AUDIT, {1: 1000, 2: 1001, 3: 1005}, 5, None),
    ("witness missing", WITH_AUDIT, {1: 1000, 2: 1001, 3: 1005}, None, None),
    ("validators short", WITH_AUDIT, {1: 1000, 2: 1001}, 1003, None),
    ("outside 2 of 3", WITH_OUTSIDE, {1: 1000, 2: 1001, 3: 1005}, None, {0: 1, 1: 1004}),
    ("outside short", WITH_OUTSIDE, {1: 1000, 2: 1001, 3: 1005}, None, {1: 1004}),
    ("nested, all cosigned", NESTED, {1: 1000, 2: 1001, 3: 1005, 4: 1009}, None, None),
    ("nested, a unbounded", NESTED, {1: 1000, 3: 1005, 4: 1009}, None, None),
]


def python_verdict(receipt: str, policy_text: str) -> dict[str, object]:
    try:
        got = verify_receipt(receipt, parse_policy(policy_text), DIGEST)
    except VerificationError as exc:
        return {"valid": False, "kind": "verification", "reason": exc.diagnostics()}
    return {"valid": True, "cosigners": list(got.cosigners), "time_bound": str(got.time_bound)}


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_the_browser_verifier_computes_the_same_verdicts(tmp_path: Path) -> None:
    # ledger/static/verify.js is the twin of policy.py and receipt.py, message for message.
    cases = []
    for name, policy_text, times, audit, outside in TWIN_CASES:
        receipt = build_receipt(index=0, proof=[], checkpoint_note=note(
            times, audit=audit, outside=outside))
        cases.append({"name": name, "receipt": receipt, "policy": policy_text,
                      "expected": python_verdict(receipt, policy_text)})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = f"""
const fs = require("fs");
require({json.dumps(str(VERIFY_JS))});
const cases = JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / "cases.json"))}, "utf8"));
(async () => {{
  const out = [];
  for (const c of cases) {{
    const r = await globalThis.LedgerVerify.check(new TextEncoder().encode(c.receipt),
      new TextEncoder().encode(c.policy), {json.dumps(DIGEST.hex())});
    out.push(r.valid ? {{valid: true, cosigners: r.cosigners, time_bound: r.time_bound}}
                     : {{valid: false, kind: r.kind, reason: r.reason}});
  }}
  process.stdout.write(JSON.stringify(out));
}})();
"""
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    for case, got in zip(cases, json.loads(done.stdout), strict=True):
        assert got == case["expected"], case["name"]
    assert cases[1]["expected"]["time_bound"] == "1003"
    assert "not satisfied: witness 'audit'" in str(cases[3]["expected"]["reason"])


# ------------------------------------------------------- across validator-set changes

def chain_receipt(index: int, size: int, cosigners: list[ValidatorKeys], *,
                  audit: bool) -> str:
    cp = Checkpoint(origin=chain.ORIGIN, size=size, root=chain.TREE_ROOTS[size])
    sigs = [sign_checkpoint(cp, key=cosigners[0].log_key)]
    sigs += [cosign(cp, name=k.name, key=k.cosigner_key, timestamp=1_700_000_000 + i)
             for i, k in enumerate(cosigners)]
    if audit:
        sigs.append(cosign(cp, name="audit.example/w1", key=AUDIT, timestamp=1_700_000_100))
    return build_receipt(index=index, proof=inclusion_proof(chain.TREE, index, size),
                         checkpoint_note=checkpoint_note(cp, sigs))


def pinned_with_audit() -> Policy:
    base = parse_policy(trust_policy(chain.GENESIS))
    return Policy(logs=base.logs,
                  witnesses=(*base.witnesses, PolicyWitness(
                      name="audit", verifier=Verifier.from_vkey(vkey("audit.example/w1", AUDIT)))),
                  groups=(*base.groups, Group(name="required", threshold=2,
                                              members=("validators", "audit"))),
                  quorum="required")


def test_a_chain_pinned_to_a_policy_with_a_witness_requires_it_in_every_period() -> None:
    v = chain.V
    pinned = pinned_with_audit()
    for index, size, cosigners in [(3, 8, [v[1], v[2], v[3]]),               # genesis period
                                   (11, 15, [v[1], v[2], v[3], v[5]]),       # after the add
                                   (26, 30, [chain.V2_NEW, v[3], v[4], v[5]])]:  # after remove
        got = verify_receipt_with_chain(chain_receipt(index, size, cosigners, audit=True),
                                        chain.CHAIN_FILE, chain.DIGESTS[index],
                                        genesis_policy=pinned)
        assert "audit" in got.cosigners and got.time_bound == 1_700_000_100
        with pytest.raises(VerificationError, match="not satisfied: witness 'audit'"):
            verify_receipt_with_chain(chain_receipt(index, size, cosigners, audit=False),
                                      chain.CHAIN_FILE, chain.DIGESTS[index],
                                      genesis_policy=pinned)
        # The genesis policy alone still verifies the receipt without the witness.
        verify_receipt_with_chain(chain_receipt(index, size, cosigners, audit=False),
                                  chain.CHAIN_FILE, chain.DIGESTS[index],
                                  genesis_policy=parse_policy(trust_policy(chain.GENESIS)))


def test_a_pinned_policy_must_extend_the_genesis_policy() -> None:
    pinned = pinned_with_audit()
    tampered = Policy(logs=pinned.logs, witnesses=pinned.witnesses,
                      groups=(Group(name="validators", threshold=1,
                                    members=pinned.groups[0].members), *pinned.groups[1:]),
                      quorum=pinned.quorum)
    v = chain.V
    with pytest.raises(VerificationError, match="does not start from the given trust policy"):
        verify_receipt_with_chain(chain_receipt(3, 8, [v[1], v[2], v[3]], audit=True),
                                  chain.CHAIN_FILE, chain.DIGESTS[3], genesis_policy=tampered)
