"""Genesis: canonical hash, validation with precise errors, and the derived trust policy."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from config.helpers import CHAIN_ID, GENESIS_TIME, ORIGIN, keys, make_genesis
from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.errors import ConfigError, VerificationError
from ledger.genesis import (
    Genesis,
    GenesisDraft,
    ValidatorInfo,
    format_genesis,
    format_vkeys,
    load_genesis,
    load_genesis_draft,
    parse_genesis,
    parse_vkeys,
    trust_policy,
)
from ledger.note import open_note
from ledger.policy import parse_policy
from ledger.prover import trust_policy as prover_trust_policy

# The genesis hash of make_genesis() is a published value institutions compare: it must never
# change for the same content, across versions of this code.
GOLDEN_HASH = "9b32225ec733b2cd9fcb15787e8fb60b1ce2d756453e50d8fde40e246158733d"


def test_genesis_hash_is_stable_across_versions() -> None:
    genesis = make_genesis()
    assert genesis.genesis_hash() == GOLDEN_HASH
    assert genesis.genesis_hash() == hashlib.sha256(genesis.canonical_bytes()).hexdigest()


def test_genesis_file_round_trips_to_the_same_hash(tmp_path: Path) -> None:
    genesis = make_genesis()
    path = tmp_path / "genesis.json"
    path.write_text(format_genesis(genesis))
    loaded = load_genesis(path)
    assert loaded == genesis
    assert loaded.genesis_hash() == GOLDEN_HASH


def test_canonical_encoding_ignores_file_whitespace_and_key_order() -> None:
    obj = make_genesis().to_json()
    shuffled = json.dumps(dict(reversed(list(obj.items()))), indent=7).encode()
    assert parse_genesis(shuffled).genesis_hash() == GOLDEN_HASH


def test_validator_order_does_not_change_the_hash() -> None:
    genesis = make_genesis()
    draft = GenesisDraft(chain_id=CHAIN_ID, origin=ORIGIN)
    for v in reversed(genesis.validators):
        draft = draft.with_validator(v)
    assert draft.finalize(genesis_time=GENESIS_TIME).genesis_hash() == GOLDEN_HASH
    assert [v.name for v in genesis.validators] == sorted(v.name for v in genesis.validators)


def _changed_genesis(field: str) -> Genesis:
    g = make_genesis()
    first = g.validators[0]
    other = ValidatorInfo.from_keys(keys(1, tag="other"), url=first.url)
    changes: dict[str, Any] = {
        "chain_id": {"chain_id": CHAIN_ID + "x"},
        "genesis_time": {"genesis_time": GENESIS_TIME + 1},
        "validators+1": {"validators": (*g.validators, ValidatorInfo.from_keys(keys(5)))},
        "validators-1": {"validators": g.validators[1:]},
        "url": {"validators": (dataclasses.replace(first, url=None), *g.validators[1:])},
        "log_vkey": {
            "validators": (
                dataclasses.replace(first, log_vkey=other.log_vkey),
                *g.validators[1:],
            )
        },
        "cosigner_vkey": {
            "validators": (
                dataclasses.replace(first, cosigner_vkey=other.cosigner_vkey),
                *g.validators[1:],
            )
        },
        "consensus_key": {
            "validators": (
                dataclasses.replace(first, consensus_key=other.consensus_key),
                *g.validators[1:],
            )
        },
    }
    if field == "origin":
        return Genesis(
            chain_id=g.chain_id,
            origin=ORIGIN + "2",
            genesis_time=g.genesis_time,
            validators=tuple(
                ValidatorInfo.from_keys(keys(i, origin=ORIGIN + "2"), url=v.url)
                for i, v in enumerate(g.validators, start=1)
            ),
        )
    return dataclasses.replace(g, **changes[field])


@pytest.mark.parametrize(
    "field",
    [
        "chain_id",
        "origin",
        "genesis_time",
        "validators+1",
        "validators-1",
        "url",
        "log_vkey",
        "cosigner_vkey",
        "consensus_key",
    ],
)
def test_any_change_changes_the_genesis_hash(field: str) -> None:
    assert _changed_genesis(field).genesis_hash() != GOLDEN_HASH


# ------------------------------------------------------------------------------ parse errors


def _genesis_json(**changes: Any) -> dict[str, Any]:
    obj = make_genesis().to_json()
    obj.update(changes)
    return obj


def _validator_json(**changes: Any) -> dict[str, Any]:
    obj = _genesis_json()
    obj["validators"][0].update(changes)
    return obj


BAD_GENESIS: list[tuple[str, Any, str]] = [
    ("not json", b"{", "not valid UTF-8 JSON"),
    ("not utf-8", b"\xff\xfe", "not valid UTF-8 JSON"),
    ("a list", b"[]", "must be an object"),
    ("wrong format", _genesis_json(format="ledger-genesis/v9"), "field 'format'"),
    ("unknown field", _genesis_json(extra=1), "unknown field 'extra'"),
    ("chain id type", _genesis_json(chain_id=5), "field 'chain_id' must be a string"),
    ("empty chain id", _genesis_json(chain_id=""), "chain_id must be 1 to 64 bytes"),
    ("long chain id", _genesis_json(chain_id="c" * 65), "chain_id must be 1 to 64 bytes"),
    ("space in chain id", _genesis_json(chain_id="a b"), "chain_id must not contain spaces"),
    ("origin with space", _genesis_json(origin="a b"), "origin"),
    ("draft", _genesis_json(genesis_time=None), "is a draft"),
    ("time is bool", _genesis_json(genesis_time=True), "genesis_time"),
    ("time is str", _genesis_json(genesis_time="2025"), "genesis_time"),
    ("negative time", _genesis_json(genesis_time=-1), "genesis_time"),
    ("no validators", _genesis_json(validators=[]), "at least one validator"),
    ("validators not list", _genesis_json(validators={}), "'validators' must be a list"),
    ("validator not object", _genesis_json(validators=[1]), "validators[0] must be an object"),
    ("missing key", _validator_json(consensus_key=None), "validators[0]"),
    ("short key", _validator_json(consensus_key="ab" * 31), "consensus_key must be 64"),
    ("upper hex key", _validator_json(consensus_key="AB" * 32), "consensus_key must be 64"),
    ("unknown validator field", _validator_json(power=10), "unknown field 'power'"),
    ("bad vkey", _validator_json(log_vkey="nonsense"), "log vkey"),
    ("log vkey as cosigner", _validator_json(cosigner_vkey=keys(1).log_vkey), "type 0x04"),
    ("cosigner vkey as log", _validator_json(log_vkey=keys(1).cosigner_vkey), "type 0x01"),
    ("foreign cosigner", _validator_json(cosigner_vkey=keys(2).cosigner_vkey), "expected the"),
    ("foreign origin", _validator_json(log_vkey=keys(1, origin="x.org/y").log_vkey), "origin"),
    ("bad url", _validator_json(url="ftp://x"), "not an http(s) URL"),
    ("reserved name", _validator_json(name="none"), "reserved"),
]


def _duplicate(field: str) -> dict[str, Any]:
    obj = _genesis_json()
    if field == "name":
        obj["validators"][1] = dict(obj["validators"][0])
    else:
        obj["validators"][1][field] = obj["validators"][0][field]
    return obj


BAD_GENESIS += [
    ("duplicate validator", _duplicate("name"), "listed twice"),
    ("shared log key", _duplicate("log_vkey"), "log key duplicates"),
    ("shared consensus key", _duplicate("consensus_key"), "consensus key duplicates"),
]


@pytest.mark.parametrize(
    ("content", "message"),
    [pytest.param(c, m, id=i) for i, c, m in BAD_GENESIS],
)
def test_bad_genesis_is_a_config_error_naming_file_and_field(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = tmp_path / "genesis.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(ConfigError) as info:
        load_genesis(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_and_oversized_genesis_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read genesis file"):
        load_genesis(tmp_path / "absent.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_genesis(big)


def test_draft_and_final_are_not_interchangeable(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    draft = GenesisDraft(chain_id=CHAIN_ID, origin=ORIGIN).with_validator(
        ValidatorInfo.from_keys(keys(1))
    )
    path.write_text(format_genesis(draft))
    assert load_genesis_draft(path) == draft
    with pytest.raises(ConfigError, match="draft"):
        load_genesis(path)
    path.write_text(format_genesis(draft.finalize(genesis_time=1)))
    with pytest.raises(ConfigError, match="already final"):
        load_genesis_draft(path)


def test_draft_refuses_a_second_validator_of_the_same_name() -> None:
    draft = GenesisDraft(chain_id=CHAIN_ID, origin=ORIGIN).with_validator(
        ValidatorInfo.from_keys(keys(1))
    )
    with pytest.raises(ConfigError, match="listed twice"):
        draft.with_validator(ValidatorInfo.from_keys(keys(1, tag="new")))


def test_finalize_needs_a_validator() -> None:
    with pytest.raises(ConfigError, match="at least one validator"):
        GenesisDraft(chain_id=CHAIN_ID, origin=ORIGIN).finalize(genesis_time=0)


# ----------------------------------------------------------------------------------- vkeys


def test_vkeys_round_trip_through_the_keys_generate_format() -> None:
    k = keys(3)
    text = f"wrote v3.key (mode 0600)\n{format_vkeys(k)}"
    assert parse_vkeys(text, url="https://v3.example.org") == ValidatorInfo.from_keys(
        k, url="https://v3.example.org"
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.replace("consensus key:", "consensus:"), "line 5"),
        (lambda t: t + "name: again\n", "given twice"),
        (lambda t: "\n".join(t.splitlines()[:-1]), "missing 'consensus key'"),
        (lambda t: t.replace("origin:        " + ORIGIN, "origin: other.org/x"), "not for origin"),
        (lambda t: t + "hello\n", "expected '<label>: <value>'"),
    ],
)
def test_bad_vkeys_are_refused_with_the_line(mutate: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_vkeys(mutate(format_vkeys(keys(1))), source="v1.vkeys")


# ---------------------------------------------------------------------------- trust policy


@pytest.mark.parametrize(("n", "k"), [(1, 1), (3, 3), (4, 3), (5, 4), (7, 5), (10, 7)])
def test_trust_policy_lists_every_key_and_needs_n_minus_f(n: int, k: int) -> None:
    genesis = make_genesis(n)
    text = trust_policy(genesis)
    policy = parse_policy(text)
    assert GOLDEN_HASH in text or n != 4
    assert [log.verifier.vkey for log in policy.logs] == [v.log_vkey for v in genesis.validators]
    assert [(w.name, w.verifier.vkey) for w in policy.witnesses] == [
        (v.name, v.cosigner_vkey) for v in genesis.validators
    ]
    assert policy.quorum == "validators"
    [group] = policy.groups
    assert (group.name, group.threshold) == ("validators", k)
    assert group.members == tuple(v.name for v in genesis.validators)
    assert policy.fault_tolerance() == n - k


def test_trust_policy_equals_the_provers_for_the_same_keys() -> None:
    validators = [keys(i) for i in range(1, 5)]
    ours = parse_policy(trust_policy(make_genesis(4)))
    assert ours == parse_policy(prover_trust_policy(validators))


def _checkpoint_signed_by(cosigners: list[int]) -> str:
    body = Checkpoint(origin=ORIGIN, size=1, root=b"\x07" * 32)
    sigs = [sign_checkpoint(body, key=keys(1).log_key)]
    sigs += [
        cosign(body, name=keys(i).name, key=keys(i).cosigner_key, timestamp=1_700_000_000)
        for i in cosigners
    ]
    return checkpoint_note(body, sigs)


def test_trust_policy_accepts_a_quorum_and_refuses_less() -> None:
    policy = parse_policy(trust_policy(make_genesis(4)))
    good = open_note(_checkpoint_signed_by([1, 2, 4]), policy.verifiers())
    result = policy.evaluate([s.verifier for s in good.verified], origin=ORIGIN)
    assert result.cosigners == ("validator-1", "validator-2", "validator-4")
    short = open_note(_checkpoint_signed_by([2, 3]), policy.verifiers())
    with pytest.raises(VerificationError, match="2 of 4"):
        policy.evaluate([s.verifier for s in short.verified], origin=ORIGIN)
