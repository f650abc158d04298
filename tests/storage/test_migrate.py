"""The upgrade from format 1 on the committed devnet fixture (stores written by the previous
code, with the receipts they handed out): every receipt still verifies and is served again,
and the upgraded store holds byte for byte the same blocks, checkpoints, metadata and tree."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import lmdb
import pytest
from click.testing import CliRunner

from ledger.checkpoint import parse_checkpoint_body
from ledger.cli import main
from ledger.config import load_genesis
from ledger.dbtools import check_database, migrate
from ledger.errors import StorageError
from ledger.note import parse_note
from ledger.policy import parse_policy
from ledger.receipt import parse_receipt, verify_receipt
from ledger.storage import FORMAT_VERSION, BlockRecord, LmdbStore
from ledger.storage._migrate import KEPT_NAME, STAGING_NAME
from ledger.storage.lmdb_store import stored_format_of

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "devnet-v1"
VALIDATORS = sorted(p.name for p in (FIXTURE / "data").iterdir())
RECEIPTS: dict[str, str] = json.loads((FIXTURE / "receipts.json").read_text())
POLICY = parse_policy((FIXTURE / "trust-policy").read_text())
_U64 = struct.Struct(">Q")


def _copy(tmp_path: Path, name: str) -> Path:
    """A copy of one validator's format-1 store (the fixture itself is never touched)."""
    target = tmp_path / name
    shutil.copytree(FIXTURE / "data" / name, target)
    return target


def _read_v1(path: Path) -> dict[str, object]:
    """What a format-1 store holds, read with raw LMDB (read-only, on the copy)."""
    env = lmdb.open(str(path), max_dbs=32, readonly=True, lock=False)
    try:
        dbs = {n: env.open_db(n, create=False) for n in
               (b"state", b"blocks", b"checkpoints", b"meta")}
        with env.begin() as txn:
            head = bytes(txn.get(b"head", db=dbs[b"state"]))
            blocks = {}
            for key, value in txn.cursor(db=dbs[b"blocks"]):
                n = struct.unpack(">I", value[:4])[0]
                blocks[_U64.unpack(key)[0]] = BlockRecord(
                    height=_U64.unpack(key)[0], block=bytes(value[4 : 4 + n]),
                    certificate=bytes(value[4 + n :]))
            checkpoints = {_U64.unpack(k)[0]: bytes(v) for k, v in
                           txn.cursor(db=dbs[b"checkpoints"])}
            meta = {bytes(k): bytes(v) for k, v in txn.cursor(db=dbs[b"meta"])}
    finally:
        env.close()
    return {"size": _U64.unpack(head[:8])[0], "root": head[8:], "blocks": blocks,
            "checkpoints": checkpoints, "meta": meta}


@pytest.mark.parametrize("name", VALIDATORS)
def test_upgraded_store_serves_the_same_log(tmp_path: Path, name: str) -> None:
    path = _copy(tmp_path, name)
    assert stored_format_of(path) == 1
    old = _read_v1(path)
    with LmdbStore.open(path) as store:  # opening for writing upgrades in place
        assert store.upgraded_from == 1
        head = store.tree_head()
        assert (head.size, head.root) == (old["size"], old["root"])
        blocks = old["blocks"]
        assert isinstance(blocks, dict) and store.last_height() == len(blocks)
        for height, record in blocks.items():
            assert store.block(height) == record  # byte-identical block and certificate
        checkpoints = old["checkpoints"]
        assert isinstance(checkpoints, dict)
        assert store.checkpoint_sizes() == sorted(checkpoints)
        for size, note in checkpoints.items():
            assert store.checkpoint(size) == note
        meta = old["meta"]
        assert isinstance(meta, dict) and meta
        for key, value in meta.items():
            assert store.get_meta(key) == value
        # Every receipt the nodes handed out still verifies, and the store proves it again:
        # the same leaf index, the same inclusion path, the same root at its tree size.
        for digest_hex, text in RECEIPTS.items():
            digest = bytes.fromhex(digest_hex)
            verified = verify_receipt(text, POLICY, digest)
            receipt = parse_receipt(text)
            body = parse_checkpoint_body(parse_note(receipt.checkpoint).text)
            assert store.index_of(digest) == verified.index == receipt.index
            assert store.inclusion_proof(receipt.index, body.size) == list(receipt.proof)
            assert store.root_at(body.size) == body.root
        store.check()
    assert stored_format_of(path) == FORMAT_VERSION
    # The old data file is kept beside the new one; nothing else is left behind.
    assert (path / KEPT_NAME).is_file() and not (path / STAGING_NAME).exists()
    with LmdbStore.open(path) as store:  # a second open does not upgrade again
        assert store.upgraded_from is None
    report = check_database(path, load_genesis(FIXTURE / "genesis.json"))
    assert report.blocks == len(blocks) and report.leaves == old["size"]


def test_read_only_open_of_an_old_store_says_how_to_upgrade(tmp_path: Path) -> None:
    path = _copy(tmp_path, VALIDATORS[0])
    with pytest.raises(StorageError, match=r"format 1; upgrade it with `ledger db migrate"):
        LmdbStore.open(path, readonly=True)
    with pytest.raises(StorageError, match="format 1"):
        LmdbStore.open(path, upgrade=False)
    assert stored_format_of(path) == 1  # untouched


def test_db_migrate_command_upgrades_once(tmp_path: Path) -> None:
    path = _copy(tmp_path, VALIDATORS[1])
    runner = CliRunner()
    first = runner.invoke(main, ["db", "migrate", str(path)])
    assert first.exit_code == 0, first.output
    assert "upgraded" in first.output and KEPT_NAME in first.output
    again = runner.invoke(main, ["db", "migrate", str(path)])
    assert again.exit_code == 0 and "already in the current store format" in again.output
    assert migrate(path) is None
    missing = runner.invoke(main, ["db", "migrate", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no store" in missing.output


def test_an_interrupted_upgrade_is_redone(tmp_path: Path) -> None:
    # A crash after the staging copy was built, or after the old file was linked aside but
    # before the rename: the store is still format 1 and the next open upgrades it cleanly.
    path = _copy(tmp_path, VALIDATORS[2])
    old = _read_v1(path)
    (path / STAGING_NAME).mkdir()
    (path / STAGING_NAME / "data.mdb").write_bytes(b"half-written")
    os.link(path / "data.mdb", path / KEPT_NAME)
    with LmdbStore.open(path) as store:
        assert store.upgraded_from == 1
        assert store.tree_head().root == old["root"]
    assert stored_format_of(path / ".") == FORMAT_VERSION
    assert not (path / STAGING_NAME).exists()
