"""Signed notes (c2sp.org/signed-note): vectors, parsing, and the verifier's rules."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, Ed25519Key
from ledger.errors import MalformedError, VerificationError
from ledger.note import (
    MAX_SIGNATURES,
    Note,
    Signature,
    Verifier,
    cosignature_message,
    open_note,
    parse_note,
    sign_ed25519,
)

# The example of golang.org/x/mod/sumdb/note, the reference implementation of signed-note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG_LINE = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# A type-0x04 verifier key of transparency-dev/formats (note/note_cosigv1_test.go).
COSIG_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
# A type-0x04 signature of the same tests, whose timestamp is 1727964367.
COSIG_SIG_B64 = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJ"
    "XORmnFBOBA=="
)


def go_key() -> Ed25519Key:
    raw = base64.b64decode(GO_SKEY.split("+", 4)[-1])
    assert raw[0] == SIG_TYPE_ED25519
    return Ed25519Key(raw[1:])


def test_go_vector_key_id_and_vkey_parse() -> None:
    v = Verifier.from_vkey(GO_VKEY)
    assert v.name == "PeterNeumann" and v.key_id.hex() == "c74f20a3"
    assert v.sig_type == SIG_TYPE_ED25519 and v.vkey == GO_VKEY
    assert go_key().public_key == v.public_key


def test_go_vector_signature_is_reproduced_exactly() -> None:
    sig = sign_ed25519(GO_TEXT, name="PeterNeumann", key=go_key())
    assert sig.line() == GO_SIG_LINE


def test_go_vector_note_opens() -> None:
    opened = open_note(GO_TEXT + "\n" + GO_SIG_LINE, [Verifier.from_vkey(GO_VKEY)])
    assert opened.text == GO_TEXT
    assert [s.verifier.name for s in opened.verified] == ["PeterNeumann"]
    assert opened.verified[0].timestamp is None


def test_cosignature_vkey_of_another_implementation_parses() -> None:
    v = Verifier.from_vkey(COSIG_VKEY)
    assert v.sig_type == SIG_TYPE_COSIGNATURE_V1 and v.key_id.hex() == "da77ade7"
    assert v.vkey == COSIG_VKEY


def test_cosignature_timestamp_is_the_big_endian_prefix() -> None:
    sig = Signature.parse_line(f"\u2014 witness {COSIG_SIG_B64}")
    assert len(sig.signature) == 72
    assert int.from_bytes(sig.signature[:8], "big") == 1727964367


def test_cosignature_message_follows_the_spec() -> None:
    body = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert cosignature_message(body, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + body
    for bad in (-1, 1 << 63):
        with pytest.raises(MalformedError):
            cosignature_message(body, bad)


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # key ID does not match the key
        GO_VKEY.replace("c74f20a3", "C74F20A3"),  # uppercase key ID
        GO_VKEY.replace("c74f20a3", "c74f20a"),  # 7 digits
        GO_VKEY + "=",  # non-canonical base64
        GO_VKEY.replace("PeterNeumann", "Peter Neumann"),  # a space in the name
        "PeterNeumann+c74f20a3",  # missing part
        "PeterNeumann+c74f20a3+AQ==",  # type without a key
        "x+00000000+AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # unsupported type 0x02
        "x+00000000+AQAAAA==",  # key of the wrong size
    ],
)
def test_mangled_vkeys_are_malformed(vkey: str) -> None:
    with pytest.raises(MalformedError):
        Verifier.from_vkey(vkey)


def signer(i: int) -> tuple[Ed25519Key, Verifier]:
    key = Ed25519Key(bytes([i]) * 32)
    return key, Verifier.for_key(name=f"k{i}", sig_type=SIG_TYPE_ED25519, public_key=key.public_key)


TEXT = "origin\n5\nbody line\n"


def signed(*indices: int, text: str = TEXT) -> str:
    sigs = [sign_ed25519(text, name=f"k{i}", key=signer(i)[0]) for i in indices]
    return Note(text=text, signatures=tuple(sigs)).format()


def test_unknown_keys_are_ignored() -> None:
    opened = open_note(signed(1, 2), [signer(2)[1]])
    assert [v.verifier.name for v in opened.verified] == ["k2"]


def test_same_name_but_other_key_is_ignored_not_rejected() -> None:
    # A foreign key that shares the name of a known key (but not its ID) must be ignored.
    foreign = sign_ed25519(TEXT, name="k1", key=Ed25519Key(b"\x09" * 32))
    own = sign_ed25519(TEXT, name="k1", key=signer(1)[0])
    note = Note(text=TEXT, signatures=(foreign, own)).format()
    assert len(open_note(note, [signer(1)[1]]).verified) == 1


def test_failed_known_signature_rejects_the_whole_note() -> None:
    good = sign_ed25519(TEXT, name="k1", key=signer(1)[0])
    bad = Signature(
        name="k2", key_id=signer(2)[1].key_id, signature=bytes(64)
    )  # matches k2's name and ID, but does not verify
    note = Note(text=TEXT, signatures=(good, bad)).format()
    with pytest.raises(VerificationError, match="k2"):
        open_note(note, [signer(1)[1], signer(2)[1]])


def test_note_without_known_signature_is_rejected() -> None:
    with pytest.raises(VerificationError):
        open_note(signed(1), [signer(2)[1]])


def test_duplicate_signature_lines_of_one_key_are_rejected() -> None:
    # Counting one key twice towards a quorum is the attack; refusing the note prevents it.
    text = signed(1)
    line = text.split("\n\n")[1]
    with pytest.raises(VerificationError, match="two signatures"):
        open_note(text + line, [signer(1)[1]])


def test_signature_over_other_text_fails() -> None:
    text = signed(1).replace("body line", "body linE")
    with pytest.raises(VerificationError):
        open_note(text, [signer(1)[1]])


def test_at_least_sixteen_signatures_are_accepted() -> None:
    text = signed(*range(1, 17))
    opened = open_note(text, [signer(i)[1] for i in range(1, 17)])
    assert len(opened.verified) == 16


def test_too_many_signatures_are_malformed() -> None:
    line = signed(1).split("\n\n")[1]
    with pytest.raises(MalformedError):
        parse_note(TEXT + "\n" + line * (MAX_SIGNATURES + 1))


def test_note_text_may_contain_empty_lines() -> None:
    text = "para one\n\npara two\n"
    opened = open_note(signed(1, text=text), [signer(1)[1]])
    assert opened.text == text


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"text\n",
        b"text\n\n",
        b"text\n\n\xe2\x80\x94 k1 AAAAAAA=",  # no final newline
        b"text\n\n- k1 AAAAAAA=\n",  # hyphen, not an em dash
        b"text\n\n\xe2\x80\x94 k1 AAAA\n",  # only a key ID, no signature
        b"text\n\n\xe2\x80\x94 k1  AAAAAAA=\n",  # two spaces
        b"text\n\n\xe2\x80\x94 k+1 AAAAAAA=\n",  # plus in the name
        b"te\rxt\n\n\xe2\x80\x94 k1 AAAAAAA=\n",  # control character
        b"\xff\n\n\xe2\x80\x94 k1 AAAAAAA=\n",  # not UTF-8
    ],
)
def test_malformed_notes_are_rejected(raw: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_note(raw)


def test_same_key_listed_twice_is_harmless() -> None:
    _, v = signer(1)
    twin = Verifier(name=v.name, key_id=v.key_id, sig_type=v.sig_type, public_key=v.public_key)
    assert open_note(signed(1), [v, twin]).verified  # the same key listed twice is harmless


names = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Cs"), blacklist_characters="+"),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() for c in s))
lines = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=30).map(
    lambda s: s + "\n"
)


@settings(max_examples=150, deadline=None)
@given(
    text=st.lists(lines, min_size=1, max_size=4).map("".join),
    sigs=st.lists(
        st.tuples(names, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)),
        min_size=1,
        max_size=5,
    ),
)
def test_note_format_parse_round_trip(text: str, sigs: list[tuple[str, bytes, bytes]]) -> None:
    note = Note(
        text=text,
        signatures=tuple(Signature(name=n, key_id=k, signature=s) for n, k, s in sigs),
    )
    assert parse_note(note.format()) == note
    assert parse_note(note.format().encode()) == note


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_note_parser_raises_only_malformed_error(data: bytes | str) -> None:
    with contextlib.suppress(MalformedError):
        parse_note(data)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_vkey_parser_raises_only_malformed_error(text: str) -> None:
    with contextlib.suppress(MalformedError):
        Verifier.from_vkey(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_opening_garbage_raises_only_our_errors(data: bytes) -> None:
    # Anything appended after a valid note either still opens or fails with our own errors.
    with contextlib.suppress(MalformedError, VerificationError):
        open_note(signed(1).encode() + data, [signer(1)[1]])
