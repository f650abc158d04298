"""Node config (TOML): round trip, defaults, peers from the genesis, and precise errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.helpers import TOKEN, make_genesis, url, write_node_files
from config.helpers import keys as keys_for
from ledger.config import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH_DIGESTS,
    BatchLimits,
    Timeouts,
    load_node_config,
)
from ledger.config import _toml_str as toml_str
from ledger.consensus import TimeoutConfig
from ledger.errors import ConfigError
from ledger.genesis import format_genesis, validator_for_keys


def test_written_config_loads_back_equal(tmp_path: Path) -> None:
    path, config = write_node_files(tmp_path)
    loaded = load_node_config(path)
    assert loaded == config.__class__(**{**config.__dict__, "source": path})
    assert loaded.genesis == make_genesis(4)
    assert [p.name for p in loaded.peers] == ["validator-2", "validator-3", "validator-4"]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write_node_files(tmp_path / "a")
    moved = tmp_path / "moved"
    (tmp_path / "a").rename(moved)  # the directory moves as a whole
    config = load_node_config(moved / "node.toml")
    assert config.data_dir == moved / "data"
    assert config.key_file == moved / "node.key"
    assert config.genesis_file == moved / "genesis.json"


MINIMAL = """
[node]
name = "validator-1"
listen_port = 7101
data_dir = "data"
key_file = "node.key"
genesis = "genesis.json"
"""


def test_defaults_and_peers_from_the_genesis(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(MINIMAL)
    config = load_node_config(tmp_path / "node.toml")
    assert config.listen_host == "127.0.0.1"
    assert config.public_url == "http://127.0.0.1:7101"
    assert config.batch == BatchLimits()
    assert config.batch.max_batch_digests == DEFAULT_MAX_BATCH_DIGESTS == 10_000
    assert config.batch.batch_window_ms == DEFAULT_BATCH_WINDOW_MS == 25
    assert config.timeouts == Timeouts()
    assert config.timeouts.consensus() == TimeoutConfig()
    assert config.clients == ()
    assert config.peer_urls() == {f"validator-{i}": url(i) for i in (2, 3, 4)}


def test_explicit_peer_overrides_the_genesis_url(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(
        MINIMAL + '[peers]\n"validator-3" = "https://v3.internal:8443/"\n'
    )
    config = load_node_config(tmp_path / "node.toml")
    assert config.peer_urls()["validator-3"] == "https://v3.internal:8443"
    assert config.peer_urls()["validator-2"] == url(2)


def test_timeouts_and_batch_reach_the_consensus_config(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(
        MINIMAL + "[batch]\nmax_batch_digests = 500\nbatch_window_ms = 0\n"
        "[timeouts]\npropose_ms = 700\ncommit_ms = 5\nanchor_wait_ms = 1000\n"
    )
    config = load_node_config(tmp_path / "node.toml")
    assert config.batch == BatchLimits(max_batch_digests=500, batch_window_ms=0)
    consensus = config.timeouts.consensus()
    assert (consensus.propose, consensus.commit, consensus.prevote) == (700, 5, 1000)
    assert config.timeouts.anchor_wait_ms == 1000


def test_tokens_known_revoked_and_unknown(tmp_path: Path) -> None:
    path, _ = write_node_files(tmp_path)
    config = load_node_config(path)
    known = config.client_for_token(TOKEN)
    assert known is not None and known.name == "eod" and not known.revoked
    revoked = config.client_for_token("revoked-token")
    assert revoked is not None and revoked.revoked
    assert config.client_for_token(TOKEN + "x") is None
    assert config.client_for_token("") is None
    assert config.client_for_token("\udcff") is None  # a surrogate-escaped header byte
    assert TOKEN not in path.read_text()  # only the hash is stored


def test_key_file_is_checked_against_the_genesis() -> None:
    genesis = make_genesis(4)
    assert validator_for_keys(genesis, keys_for(2)).name == "validator-2"
    with pytest.raises(ConfigError, match="does not match"):
        validator_for_keys(genesis, keys_for(2, tag="impostor"))
    with pytest.raises(ConfigError, match="not in the genesis"):
        validator_for_keys(genesis, keys_for(9))


# ------------------------------------------------------------------------------ bad configs

BAD_CONFIGS: list[tuple[str, str, str]] = [
    ("invalid toml", "[node\n", "invalid TOML"),
    ("unknown table", MINIMAL + "[nodes]\n", "unknown table or key 'nodes'"),
    ("unknown node key", MINIMAL.replace("[node]", "[node]\nlisten_prot = 1"), "node.listen_prot"),
    ("missing name", MINIMAL.replace('name = "validator-1"', ""), "node.name is missing"),
    ("missing port", MINIMAL.replace("listen_port = 7101", ""), "node.listen_port is missing"),
    ("port too big", MINIMAL.replace("7101", "70000"), "node.listen_port must be between"),
    ("port is string", MINIMAL.replace("7101", '"7101"'), "node.listen_port must be an integer"),
    ("port is bool", MINIMAL.replace("7101", "true"), "node.listen_port must be an integer"),
    ("empty data dir", MINIMAL.replace('"data"', '""'), "node.data_dir must be a non-empty"),
    ("bad log level", MINIMAL + 'log_level = "loud"\n', "node.log_level must be one of"),
    ("bad public url", MINIMAL + 'public_url = "127.0.0.1:1"\n', "node.public_url"),
    ("peer name invalid", MINIMAL + '[peers]\n"bad name" = "http://x:1"\n', 'peers."bad name"'),
    ("peer is self", MINIMAL + '[peers]\n"validator-1" = "http://x:1"\n', "this node itself"),
    ("peer url", MINIMAL + '[peers]\n"validator-2" = "x:1"\n', "not an http(s) URL"),
    ("peer not string", MINIMAL + '[peers]\n"validator-2" = 5\n', "must be a URL string"),
    ("peers not table", MINIMAL + "peers = 3\n", "node.peers"),
    ("clients not array", MINIMAL + "[clients]\nname = 'x'\n", "clients must be an array"),
    (
        "token not hex",
        MINIMAL + "[[clients]]\ntoken_sha256 = 'secret'\n",
        "clients[0].token_sha256 must be 64 lowercase hex",
    ),
    (
        "token missing",
        MINIMAL + "[[clients]]\nname = 'x'\n",
        "clients[0].token_sha256 is missing",
    ),
    (
        "duplicate token",
        MINIMAL + ("[[clients]]\ntoken_sha256 = '" + "a" * 64 + "'\n") * 2,
        "clients[1].token_sha256 duplicates",
    ),
    (
        "revoked not bool",
        MINIMAL + "[[clients]]\ntoken_sha256 = '" + "a" * 64 + "'\nrevoked = 'yes'\n",
        "clients[0].revoked must be true or false",
    ),
    (
        "unknown client key",
        MINIMAL + "[[clients]]\ntoken_sha256 = '" + "a" * 64 + "'\ntoken = 'x'\n",
        "clients[0].token is not a known setting",
    ),
    ("batch zero", MINIMAL + "[batch]\nmax_batch_digests = 0\n", "batch.max_batch_digests"),
    ("batch typo", MINIMAL + "[batch]\nmax_batch_digest = 5\n", "batch.max_batch_digest is not"),
    ("negative timeout", MINIMAL + "[timeouts]\nprevote_ms = -1\n", "timeouts.prevote_ms"),
    ("float timeout", MINIMAL + "[timeouts]\nprevote_ms = 1.5\n", "timeouts.prevote_ms must be an"),
    ("missing genesis", MINIMAL.replace("genesis.json", "nope.json"), "cannot read genesis file"),
]


@pytest.mark.parametrize(("text", "message"), [pytest.param(t, m, id=i) for i, t, m in BAD_CONFIGS])
def test_bad_config_is_a_config_error_naming_file_and_field(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value) or "nope.json" in str(info.value)


def test_a_validator_without_any_url_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4, with_urls=False)))
    (tmp_path / "node.toml").write_text(MINIMAL)
    with pytest.raises(ConfigError, match="no URL for validator 'validator-2'"):
        load_node_config(tmp_path / "node.toml")


def test_unreadable_and_non_utf8_configs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_node_config(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_node_config(tmp_path / "bad.toml")


# The TOML writer is our own: any string must read back as itself through tomllib.
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"k = {toml_str(value)}")["k"] == value
    assert tomllib.loads(f"{toml_str(value)} = 1") == {value: 1}


def test_toml_writer_refuses_lone_surrogates() -> None:
    with pytest.raises(ConfigError, match="surrogate"):
        toml_str("a\ud800b")


def test_a_validator_that_joins_by_a_change_has_a_config(tmp_path: Path) -> None:
    # Its name is in no genesis; the genesis validators are its peers (at their genesis URLs),
    # and a peer that joined later is listed after them.
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(
        MINIMAL.replace('name = "validator-1"', 'name = "validator-9"')
        + '[peers]\n"validator-8" = "http://127.0.0.1:7108"\n')
    config = load_node_config(tmp_path / "node.toml")
    assert config.name == "validator-9"
    names = [p.name for p in config.peers]
    assert names[-1] == "validator-8"
    assert set(names[:-1]) == {v.name for v in config.genesis.validators}


# ---- [limits], [tls], the peer listener (docs/operators.md 3.5 and 4.1)


def test_limits_and_tls_round_trip_and_default(tmp_path: Path) -> None:
    from dataclasses import replace

    from ledger.config import Limits, TlsSettings, format_node_config

    path, config = write_node_files(tmp_path)
    assert load_node_config(path).limits == Limits()
    assert load_node_config(path).tls is None
    changed = replace(
        config, peer_listen_port=7301, peer_listen_host="0.0.0.0",
        limits=Limits(max_connections=100, trusted_proxies=("127.0.0.1/32", "10.0.0.0/8")),
        tls=TlsSettings(cert_file=tmp_path / "tls" / "n.crt", key_file=tmp_path / "tls" / "n.key",
                        ca_file=tmp_path / "tls" / "ca.crt", require_peer_certificate=False,
                        pins=(("validator-3", ("ab" * 32, "cd" * 32)),)))
    path.write_text(format_node_config(changed, relative_to=tmp_path))
    loaded = load_node_config(path)
    assert loaded == replace(changed, source=path)
    assert loaded.tls is not None and loaded.tls.pins_for("validator-3") == ("ab" * 32, "cd" * 32)


@pytest.mark.parametrize(("extra", "message"), [
    ("[limits]\nmax_connection = 5\n", "limits.max_connection is not a known setting"),
    ("[limits]\nmax_connections = 0\n", "limits.max_connections must be between"),
    ("[limits]\ntrusted_proxies = [\"not-an-ip\"]\n", "is not an IP address or network"),
    ("[limits]\ntrusted_proxies = \"127.0.0.1\"\n", "must be a list"),
    ("[tls]\ncert_file = \"a.crt\"\n", "tls.key_file is missing"),
    ("[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n[tls.pins]\n\"validator-1\" = [\"" + "ab" * 32
     + "\"]\n", "is not a peer"),
    ("[tls]\ncert_file = \"a\"\nkey_file = \"b\"\n[tls.pins]\n\"validator-2\" = [\"xyz\"]\n",
     "SHA-256 fingerprints"),
    ("[tls]\ncert_file = \"a\"\nkey_file = \"b\"\nca = \"c\"\n", "tls.ca is not a known setting"),
])
def test_limits_and_tls_errors_name_the_field(tmp_path: Path, extra: str, message: str) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(MINIMAL + extra)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_node_config(tmp_path / "node.toml")


def test_a_peer_listen_host_needs_its_port(tmp_path: Path) -> None:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(MINIMAL.replace(
        'genesis = "genesis.json"', 'genesis = "genesis.json"\npeer_listen_host = "0.0.0.0"'))
    with pytest.raises(ConfigError, match="needs peer_listen_port"):
        load_node_config(tmp_path / "node.toml")
