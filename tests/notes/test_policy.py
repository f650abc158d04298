"""Trust policies (c2sp.org/tlog-policy): parsing rules and quorum evaluation."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, Ed25519Key
from ledger.errors import MalformedError, VerificationError
from ledger.note import Verifier
from ledger.policy import Policy, parse_policy

ORIGIN = "example.com/log"


def key(i: int) -> Ed25519Key:
    return Ed25519Key(bytes([i]) * 32)


def log_vkey(i: int = 100, origin: str = ORIGIN) -> Verifier:
    return Verifier.for_key(name=origin, sig_type=SIG_TYPE_ED25519, public_key=key(i).public_key)


def wit(i: int) -> Verifier:
    return Verifier.for_key(
        name=f"w{i}.example", sig_type=SIG_TYPE_COSIGNATURE_V1, public_key=key(i).public_key
    )


def witness_lines(*indices: int) -> str:
    return "".join(f"witness W{i} {wit(i).vkey}\n" for i in indices)


def policy(body: str) -> Policy:
    return parse_policy(f"log {log_vkey().vkey}\n" + body)


def signers(*indices: int) -> list[Verifier]:
    return [log_vkey(), *(wit(i) for i in indices)]


# The example of the spec: two of the X witnesses and any one of the Y witnesses.
SPEC_EXAMPLE = (
    witness_lines(1, 2, 3)
    + "group X-witnesses 2 W1 W2 W3\n\n"
    + witness_lines(4, 5, 6)
    + "group Y-witnesses any W4 W5 W6\n\n"
    + "group X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n"
)


def test_spec_example_nested_groups() -> None:
    p = policy("# the example of c2sp.org/tlog-policy\n" + SPEC_EXAMPLE)
    assert p.evaluate(signers(1, 2, 6), origin=ORIGIN).cosigners == ("W1", "W2", "W6")
    with pytest.raises(VerificationError, match="1 of 2 members"):
        p.evaluate(signers(1, 4, 5, 6), origin=ORIGIN)  # only one X witness
    with pytest.raises(VerificationError):
        p.evaluate(signers(1, 2, 3), origin=ORIGIN)  # no Y witness


def test_k_of_n_threshold() -> None:
    p = policy(witness_lines(1, 2, 3, 4) + "group g 3 W1 W2 W3 W4\nquorum g\n")
    p.evaluate(signers(1, 2, 4), origin=ORIGIN)
    with pytest.raises(VerificationError, match="2 of 4 members witnessed, 3 required"):
        p.evaluate(signers(1, 4), origin=ORIGIN)


def test_all_and_any() -> None:
    all_p = policy(witness_lines(1, 2) + "group g all W1 W2\nquorum g\n")
    any_p = policy(witness_lines(1, 2) + "group g any W1 W2\nquorum g\n")
    all_p.evaluate(signers(1, 2), origin=ORIGIN)
    with pytest.raises(VerificationError):
        all_p.evaluate(signers(2), origin=ORIGIN)
    any_p.evaluate(signers(2), origin=ORIGIN)
    with pytest.raises(VerificationError):
        any_p.evaluate(signers(), origin=ORIGIN)


def test_single_witness_quorum_and_quorum_none() -> None:
    p = policy(witness_lines(1) + "quorum W1\n")
    p.evaluate(signers(1), origin=ORIGIN)
    with pytest.raises(VerificationError, match="did not cosign"):
        p.evaluate(signers(), origin=ORIGIN)
    none = policy("quorum none\n")
    none.evaluate(signers(), origin=ORIGIN)
    assert none.fault_tolerance() == 0


def test_a_signer_listed_twice_counts_once() -> None:
    p = policy(witness_lines(1, 2) + "group g 2 W1 W2\nquorum g\n")
    with pytest.raises(VerificationError):
        p.evaluate([log_vkey(), wit(1), wit(1)], origin=ORIGIN)


def test_log_signature_is_required() -> None:
    p = policy(witness_lines(1) + "quorum W1\n")
    with pytest.raises(VerificationError, match="trusted log"):
        p.evaluate([wit(1)], origin=ORIGIN)


def test_log_key_must_be_named_like_the_origin() -> None:
    p = policy(witness_lines(1) + "quorum W1\n")
    with pytest.raises(VerificationError, match="trusted log"):
        p.evaluate(signers(1), origin="other.example/log")


def test_fault_tolerance_is_n_minus_k_of_the_top_group() -> None:
    assert (
        policy(witness_lines(1, 2, 3, 4) + "group g 3 W1 W2 W3 W4\nquorum g\n").fault_tolerance()
        == 1
    )
    assert (
        policy(witness_lines(1, 2, 3, 4) + "group g all W1 W2 W3 W4\nquorum g\n").fault_tolerance()
        == 0
    )
    assert policy(SPEC_EXAMPLE).fault_tolerance() == 0


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        (witness_lines(1) + "group g 1 W1 W1\nquorum g\n", 3, "more than once"),
        (witness_lines(1, 2) + "group a 1 W1\ngroup b 1 W1 W2\nquorum b\n", 5, "more than once"),
        (witness_lines(1) + "group g 1 W9\nquorum g\n", 3, "not defined"),
        ("quorum g\n" + witness_lines(1) + "group g 1 W1\n", 2, "not defined"),
        (witness_lines(1) + "group g 2 W1\nquorum g\n", 3, "threshold"),
        (witness_lines(1) + "group g 0 W1\nquorum g\n", 3, "threshold"),
        (witness_lines(1) + "group g 01 W1\nquorum g\n", 3, "threshold"),
        (witness_lines(1) + "group g all\nquorum g\n", 3, "expected"),
        (witness_lines(1) + "group g any none\nquorum g\n", 3, "none"),
        (witness_lines(1) + "quorum W1\nquorum W1\n", 4, "more than one quorum"),
        (witness_lines(1) + f"witness W1 {wit(2).vkey}\nquorum W1\n", 3, "already defined"),
        (witness_lines(1) + f"witness W2 {wit(1).vkey}\nquorum W1\n", 3, "duplicates"),
        (f"log {log_vkey().vkey}\nquorum none\n", 2, "duplicates"),
        (f"witness none {wit(1).vkey}\nquorum none\n", 2, "predefined"),
        (f"witness W1 {log_vkey(7).vkey}\nquorum W1\n", 2, "type 0x04"),
        (f"log {wit(7).vkey}\nquorum none\n", 2, "type 0x01"),
        (witness_lines(1) + "quorum W1 extra\n", 3, "expected"),
        ("frobnicate x\nquorum none\n", 2, "unknown keyword"),
        ("quorum none\r\n", 2, "control"),
        ("witness W1 not-a-vkey\nquorum W1\n", 2, "verifier key"),
    ],
)
def test_invalid_policies_name_the_line(body: str, line: int, reason: str) -> None:
    with pytest.raises(MalformedError, match=f"policy line {line}: .*{reason}"):
        policy(body)


def test_policy_without_quorum_is_malformed() -> None:
    with pytest.raises(MalformedError, match="no quorum"):
        policy(witness_lines(1))


def test_comments_blank_lines_tabs_and_urls_are_accepted() -> None:
    text = (
        "  # comment\n\n"
        f"log\t{log_vkey().vkey}   https://log.example/\n"
        f"\twitness  W1 {wit(1).vkey} https://w1.example/  \n"
        "quorum W1"  # no final newline
    )
    p = parse_policy(text)
    assert p.logs[0].url == "https://log.example/" and p.witnesses[0].url == "https://w1.example/"


def test_high_octets_in_comments_and_names_are_opaque() -> None:
    text = f"# caf\xe9\nwitness W\xe9 {wit(1).vkey}\nquorum W\xe9\n".encode("latin-1")
    assert parse_policy(text).quorum_witnesses()[0].verifier == wit(1)


def test_format_parse_round_trip() -> None:
    p = policy(SPEC_EXAMPLE)
    assert parse_policy(p.format()) == p


def test_policy_built_in_code_obeys_the_same_rules() -> None:
    p = policy(witness_lines(1) + "quorum W1\n")
    with pytest.raises(MalformedError):
        Policy(logs=p.logs, witnesses=p.witnesses, groups=(), quorum="nobody")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_policy_parser_raises_only_malformed_error(data: bytes | str) -> None:
    with contextlib.suppress(MalformedError):
        parse_policy(data)


TOKENS = [
    "log",
    "witness",
    "group",
    "quorum",
    "none",
    "all",
    "any",
    "1",
    "2",
    "W1",
    "W2",
    "g",
    "#",
    log_vkey().vkey,
    wit(1).vkey,
    wit(2).vkey,
    "\n",
    "\t",
    " ",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_policy_parser_on_token_soup_raises_only_malformed_error(tokens: list[str]) -> None:
    # Near-valid inputs reach deeper into the parser than random bytes do.
    with contextlib.suppress(MalformedError):
        parse_policy(" ".join(tokens))
