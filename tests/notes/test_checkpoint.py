"""Checkpoints (c2sp.org/tlog-checkpoint): body codec, log signatures, timestamped cosignatures."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import (
    Checkpoint,
    checkpoint_note,
    cosign,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
)
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, Ed25519Key
from ledger.errors import MalformedError, VerificationError
from ledger.note import Verifier, cosignature_message

ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
LOG_KEY = Ed25519Key(b"\x01" * 32)
WITNESS_KEY = Ed25519Key(b"\x02" * 32)
LOG = Verifier.for_key(
    name="example.com/log", sig_type=SIG_TYPE_ED25519, public_key=LOG_KEY.public_key
)
WITNESS = Verifier.for_key(
    name="w1.example", sig_type=SIG_TYPE_COSIGNATURE_V1, public_key=WITNESS_KEY.public_key
)


def checkpoint(**changes: object) -> Checkpoint:
    fields: dict[str, object] = {"origin": "example.com/log", "size": 20852163, "root": ROOT}
    fields.update(changes)
    return Checkpoint(**fields)  # type: ignore[arg-type]


def test_body_is_origin_size_root_and_extensions() -> None:
    cp = checkpoint(extensions=("ext one",))
    assert cp.body() == f"example.com/log\n20852163\n{ROOT_B64}\next one\n"
    assert parse_checkpoint_body(cp.body()) == cp


@pytest.mark.parametrize(
    "body",
    [
        f"o\n020\n{ROOT_B64}\n",  # leading zero
        f"o\n+20\n{ROOT_B64}\n",  # sign
        f"o\n2_0\n{ROOT_B64}\n",  # underscore
        f"o\n\u0662\n{ROOT_B64}\n",  # a non-ASCII digit
        f"o\n-1\n{ROOT_B64}\n",
        f"o\n18446744073709551616\n{ROOT_B64}\n",  # 2^64
        f"\n20\n{ROOT_B64}\n",  # empty origin
        "o\n20\n" + base64.b64encode(ROOT[:31]).decode() + "\n",  # 31-byte root
        "o\n20\n" + ROOT_B64.rstrip("=") + "\n",  # unpadded root
        f"o\n20\n{ROOT_B64}\n\n",  # empty extension line
        f"o\n20\n{ROOT_B64}",  # no final newline
        "o\n20\n",  # two lines
    ],
)
def test_malformed_bodies_are_rejected(body: str) -> None:
    with pytest.raises(MalformedError):
        parse_checkpoint_body(body)


def test_size_zero_is_allowed() -> None:
    assert parse_checkpoint_body(f"o\n0\n{ROOT_B64}\n").size == 0


def test_log_signature_and_cosignature_open() -> None:
    cp = checkpoint()
    note = checkpoint_note(
        cp,
        [
            sign_checkpoint(cp, key=LOG_KEY),
            cosign(cp, name="w1.example", key=WITNESS_KEY, timestamp=1679315147),
        ],
    )
    opened = open_checkpoint(note, [LOG, WITNESS])
    assert opened.checkpoint == cp
    assert [(v.verifier, v.timestamp) for v in opened.note.verified] == [
        (LOG, None),
        (WITNESS, 1679315147),
    ]


def test_cosignature_is_timestamp_then_signature_of_the_spec_message() -> None:
    cp = checkpoint()
    sig = cosign(cp, name="w1.example", key=WITNESS_KEY, timestamp=1679315147)
    assert sig.key_id == WITNESS.key_id
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    expected = WITNESS_KEY.sign(cosignature_message(cp.body().encode(), 1679315147))
    assert sig.signature[8:] == expected


def test_changing_the_cosignature_time_breaks_it() -> None:
    cp = checkpoint()
    sig = cosign(cp, name="w1.example", key=WITNESS_KEY, timestamp=1000)
    forged = type(sig)(
        name=sig.name, key_id=sig.key_id, signature=(1001).to_bytes(8, "big") + sig.signature[8:]
    )
    note = checkpoint_note(cp, [sign_checkpoint(cp, key=LOG_KEY), forged])
    with pytest.raises(VerificationError):
        open_checkpoint(note, [LOG, WITNESS])


def test_cosignature_covers_extension_lines() -> None:
    cp = checkpoint(extensions=("extension",))
    note = checkpoint_note(cp, [cosign(cp, name="w1.example", key=WITNESS_KEY, timestamp=5)])
    with pytest.raises(VerificationError):
        open_checkpoint(note.replace("extension", "extensioN"), [WITNESS])


def test_log_key_does_not_verify_a_cosignature_and_vice_versa() -> None:
    # Distinct signature types have distinct key IDs: a 0x01 key never matches a 0x04 line.
    cp = checkpoint()
    as_log = Verifier.for_key(
        name="w1.example", sig_type=SIG_TYPE_ED25519, public_key=WITNESS_KEY.public_key
    )
    note = checkpoint_note(cp, [cosign(cp, name="w1.example", key=WITNESS_KEY, timestamp=5)])
    with pytest.raises(VerificationError, match="not signed by any known key"):
        open_checkpoint(note, [as_log])


def test_origin_that_is_not_a_key_name_cannot_be_signed() -> None:
    with pytest.raises(MalformedError):
        sign_checkpoint(checkpoint(origin="has space"), key=LOG_KEY)


@settings(max_examples=150, deadline=None)
@given(
    origin=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1),
        max_size=3,
    ),
)
def test_body_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions))
    assert parse_checkpoint_body(cp.body()) == cp


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_body_parser_raises_only_malformed_error(text: str) -> None:
    with contextlib.suppress(MalformedError):
        parse_checkpoint_body(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_checkpoint_opener_raises_only_our_errors(data: bytes | str) -> None:
    with contextlib.suppress(MalformedError, VerificationError):
        open_checkpoint(data, [LOG, WITNESS])
