"""Deterministic validators, genesis files and node configs for the config, CLI and client tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger.config import ClientToken, NodeConfig, Peer, format_node_config, hash_token
from ledger.crypto import ValidatorKeys
from ledger.genesis import Genesis, GenesisDraft, ValidatorInfo, format_genesis

ORIGIN = "ledger.example.org/test"
CHAIN_ID = "test-chain"
GENESIS_TIME = 1_735_689_600_000  # 2025-01-01T00:00:00Z in ms
TOKEN = "test-token-0123456789"


def keys(i: int, *, origin: str = ORIGIN, tag: str = "") -> ValidatorKeys:
    """Validator ``i`` (named ``validator-i``) with a seed fixed by ``i`` and ``tag``."""
    seed = hashlib.sha256(f"config test validator {tag}{i}".encode()).digest()
    return ValidatorKeys(name=f"validator-{i}", origin=origin, seed=seed)


def url(i: int) -> str:
    return f"http://127.0.0.1:{7100 + i}"


def make_genesis(n: int = 4, *, with_urls: bool = True) -> Genesis:
    validators = tuple(
        ValidatorInfo.from_keys(keys(i), url=url(i) if with_urls else None)
        for i in range(1, n + 1)
    )
    draft = GenesisDraft(chain_id=CHAIN_ID, origin=ORIGIN, validators=validators)
    return draft.finalize(genesis_time=GENESIS_TIME)


def write_node_files(directory: Path, n: int = 4, *, me: int = 1) -> tuple[Path, NodeConfig]:
    """A genesis and node ``me``'s config in ``directory``; returns (config path, config)."""
    genesis = make_genesis(n)
    (directory / "genesis.json").write_text(format_genesis(genesis))
    config = NodeConfig(
        name=f"validator-{me}",
        listen_host="127.0.0.1",
        listen_port=7100 + me,
        public_url=url(me),
        data_dir=directory / "data",
        key_file=directory / "node.key",
        genesis_file=directory / "genesis.json",
        genesis=genesis,
        peers=tuple(Peer(name=f"validator-{i}", url=url(i)) for i in range(1, n + 1) if i != me),
        clients=(
            ClientToken(name="eod", token_sha256=hash_token(TOKEN)),
            ClientToken(name="old", token_sha256=hash_token("revoked-token"), revoked=True),
        ),
    )
    path = directory / "node.toml"
    path.write_text(format_node_config(config, relative_to=directory))
    return path, config
