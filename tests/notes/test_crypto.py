"""Validator keys: derivation, key files, and PyNaCl wrapped behind our own errors."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ledger.crypto import (
    SIG_TYPE_COSIGNATURE_V1,
    SIG_TYPE_ED25519,
    Ed25519Key,
    ValidatorKeys,
    b64decode_strict,
    check_key_name,
    format_vkey,
    key_id,
    read_key_file,
    verify_ed25519,
    write_key_file,
)
from ledger.errors import ConfigError, MalformedError, VerificationError

SEED = bytes(range(32))


def keys(name: str = "v1.example.org", origin: str = "ledger.example.org/main") -> ValidatorKeys:
    return ValidatorKeys(name=name, origin=origin, seed=SEED)


def test_derived_keys_are_pairwise_distinct() -> None:
    # Log, cosigner and consensus keys must never coincide: no cross-protocol signature reuse.
    k = keys()
    publics = {k.log_key.public_key, k.cosigner_key.public_key, k.consensus_key.public_key}
    assert len(publics) == 3
    assert SEED not in {k.log_key.seed, k.cosigner_key.seed, k.consensus_key.seed}


def test_derivation_is_deterministic_and_depends_only_on_the_seed() -> None:
    a, b = keys(), keys(name="other", origin="elsewhere")
    assert a.log_key == b.log_key and a.cosigner_key == b.cosigner_key
    c = ValidatorKeys(name="v1.example.org", origin="ledger.example.org/main", seed=bytes(32))
    assert c.cosigner_key != a.cosigner_key


def test_vkeys_carry_the_right_names_and_types() -> None:
    k = keys()
    log_name, _, log_material = k.log_vkey.split("+", 2)
    cos_name, _, cos_material = k.cosigner_vkey.split("+", 2)
    assert log_name == k.origin and cos_name == k.name
    assert base64.b64decode(log_material)[0] == SIG_TYPE_ED25519
    assert base64.b64decode(cos_material)[0] == SIG_TYPE_COSIGNATURE_V1


def test_seed_never_appears_in_repr() -> None:
    k = keys()
    text = repr(k) + repr(k.log_key)
    assert SEED.hex() not in text and repr(SEED) not in text


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u2003b", "tab\x01"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedError):
        check_key_name(name)
    with pytest.raises(MalformedError):
        ValidatorKeys(name=name or "x y", origin="o", seed=SEED)


def test_validator_cannot_be_called_none() -> None:
    # "none" is predefined by tlog-policy and could not be listed as a witness.
    with pytest.raises(MalformedError):
        keys(name="none")


def test_key_id_matches_the_signed_note_example_key() -> None:
    # c2sp.org/signed-note's example key: example.com/foo+530d903a+AekyeRrm...
    raw = base64.b64decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    assert key_id("example.com/foo", raw[0], raw[1:]).hex() == "530d903a"
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    assert format_vkey("example.com/foo", raw[0], raw[1:]) == vkey


def test_verify_ed25519_accepts_good_and_rejects_bad_signatures() -> None:
    key = Ed25519Key(SEED)
    sig = key.sign(b"message")
    verify_ed25519(key.public_key, b"message", sig)
    with pytest.raises(VerificationError):
        verify_ed25519(key.public_key, b"messagE", sig)
    with pytest.raises(VerificationError):
        verify_ed25519(key.public_key, b"message", sig[:-1] + bytes([sig[-1] ^ 1]))
    with pytest.raises(VerificationError):
        verify_ed25519(key.public_key, b"message", sig[:63])


def test_verify_ed25519_never_leaks_nacl_errors() -> None:
    # A public key that is not a curve point, and one of the wrong size.
    with pytest.raises(VerificationError):
        verify_ed25519(b"\xff" * 32, b"m", bytes(64))
    with pytest.raises(MalformedError):
        verify_ed25519(b"\x01" * 31, b"m", bytes(64))


def test_seed_of_wrong_size_is_malformed() -> None:
    with pytest.raises(MalformedError):
        Ed25519Key(bytes(31))
    with pytest.raises(MalformedError):
        ValidatorKeys(name="a", origin="b", seed=bytes(33))


def test_strict_base64_rejects_aliases() -> None:
    assert b64decode_strict("AQI=", what="x") == b"\x01\x02"
    for bad in ["AQJ=", "AQI", "AQI=\n", "A QI=", "AQI==", "\u00e9"]:
        with pytest.raises(MalformedError):
            b64decode_strict(bad, what="x")


def test_key_file_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "v1.key"
    write_key_file(path, keys())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == keys()
    assert [p.name for p in tmp_path.iterdir()] == ["v1.key"]  # no temporary file left


def test_key_file_is_not_overwritten_without_permission(tmp_path: Path) -> None:
    path = tmp_path / "v1.key"
    write_key_file(path, keys())
    other = ValidatorKeys.generate(name="v2", origin="o")
    with pytest.raises(ConfigError):
        write_key_file(path, other)
    assert read_key_file(path) == keys()
    write_key_file(path, other, overwrite=True)
    assert read_key_file(path) == other
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.key"
    write_key_file(path, keys())
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_key_file(path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ledger-validator-key/v2\nname a\norigin b\nseed " + base64.b64encode(SEED).decode(),
        "ledger-validator-key/v1\nname a\norigin b\n",
        "ledger-validator-key/v1\nname a\nname a\norigin b\nseed AA==\n",
        "ledger-validator-key/v1\nname a\norigin b\nseed AAAA\n",
        "ledger-validator-key/v1\nname a b\norigin b\nseed " + base64.b64encode(SEED).decode(),
        "ledger-validator-key/v1\nname a\norigin b\ncolour blue\n",
    ],
)
def test_malformed_key_files_raise_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError):
        read_key_file(path)


def test_missing_key_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_key_file(tmp_path / "absent.key")
