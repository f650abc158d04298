"""``[[witnesses]]`` in the node config: parsed, written back, and every mistake one clear line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from config.helpers import make_genesis
from ledger.config import WitnessEndpoint, format_node_config, load_node_config
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, SIG_TYPE_ED25519, Ed25519Key
from ledger.errors import ConfigError
from ledger.genesis import format_genesis
from ledger.note import Verifier

KEY = Ed25519Key(b"\x33" * 32)
VKEY = Verifier.for_key(name="audit.example/w1", sig_type=SIG_TYPE_COSIGNATURE_V1,
                        public_key=KEY.public_key).vkey
OTHER_VKEY = Verifier.for_key(name="other.example/w", sig_type=SIG_TYPE_COSIGNATURE_V1,
                              public_key=Ed25519Key(b"\x34" * 32).public_key).vkey
LOG_VKEY = Verifier.for_key(name="audit.example/w1", sig_type=SIG_TYPE_ED25519,
                            public_key=KEY.public_key).vkey

MINIMAL = """
[node]
name = "validator-1"
listen_port = 7101
data_dir = "data"
key_file = "node.key"
genesis = "genesis.json"
"""


def load(tmp_path: Path, extra: str) -> object:
    (tmp_path / "genesis.json").write_text(format_genesis(make_genesis(4)))
    (tmp_path / "node.toml").write_text(MINIMAL + extra)
    return load_node_config(tmp_path / "node.toml")


def test_witnesses_parse_and_round_trip(tmp_path: Path) -> None:
    config = load(tmp_path, f"""
[[witnesses]]
name = "audit"
url = "https://witness.example/sub/"
vkey = "{VKEY}"

[[witnesses]]
name = "other"
url = "http://127.0.0.1:7300"
vkey = "{OTHER_VKEY}"
timeout_ms = 1500
""")
    loaded = load_node_config(tmp_path / "node.toml")
    assert loaded == config
    assert [(w.name, w.url, w.timeout_ms) for w in loaded.witnesses] == [
        ("audit", "https://witness.example/sub", 5000), ("other", "http://127.0.0.1:7300", 1500)]
    (tmp_path / "again.toml").write_text(format_node_config(loaded, relative_to=tmp_path))
    again = load_node_config(tmp_path / "again.toml")
    assert again.witnesses == loaded.witnesses
    assert dataclasses.replace(again, source=None) == dataclasses.replace(loaded, source=None)


@pytest.mark.parametrize(("extra", "message"), [
    ('[witnesses]\nname = "a"\n', "witnesses must be an array of tables"),
    (f'[[witnesses]]\nurl = "http://w.example"\nvkey = "{VKEY}"\n', "witnesses[0].name is missing"),
    (f'[[witnesses]]\nname = "a"\nurl = "ftp://w.example"\nvkey = "{VKEY}"\n',
     "is not an http(s) URL"),
    ('[[witnesses]]\nname = "a"\nurl = "http://w.example"\nvkey = "nonsense"\n', "vkey"),
    (f'[[witnesses]]\nname = "a"\nurl = "http://w.example"\nvkey = "{LOG_VKEY}"\n',
     "must be a cosignature key"),
    (f'[[witnesses]]\nname = "a"\nurl = "http://w.example"\nvkey = "{VKEY}"\ntimeout = 5\n',
     "witnesses[0].timeout is not a known setting"),
    (f'[[witnesses]]\nname = "a"\nurl = "http://w.example"\nvkey = "{VKEY}"\ntimeout_ms = 0\n',
     "timeout_ms must be between"),
    (f'[[witnesses]]\nname = "a"\nurl = "http://w.example"\nvkey = "{VKEY}"\n' * 2,
     "duplicates another witness's name"),
])
def test_a_bad_witness_entry_is_one_clear_error(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    assert message in info.value.diagnostics()
    assert "\n" not in info.value.diagnostics()


def test_an_endpoint_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="cosignature key"):
        WitnessEndpoint(name="a", url="http://w.example", vkey=LOG_VKEY)
