"""``ledger db check``: a store built from real blocks passes; one flipped byte anywhere fails.

Each corruption is made the way a disk would make it: the stored value is rewritten with one
byte flipped, through raw LMDB (so the B-tree stays valid and only our checks can notice): the
checksum every value carries finds it and the message names the value. A value changed *and
resealed* (a valid checksum: what a bug or a forger would write) is found by the chain checks
instead: hashes, signatures, quorums.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lmdb
import msgpack
import pytest
from click.testing import CliRunner, Result

from ledger.cli import main
from ledger.config import load_node_config
from ledger.consensus import Ed25519Signer
from ledger.dbtools import check_database
from ledger.devnet import init_devnet
from ledger.errors import CorruptionError, StorageError
from ledger.genesis import GenesisDraft, ValidatorInfo, format_genesis
from ledger.storage import LmdbStore
from ledger.storage._codec import seal, unseal
from ledger.storage._tiles import OFFSETS

from .chain import MAP_SIZE as TEST_MAP_SIZE
from .chain import Chain, build_store, digests, validator_keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, Chain]:
    """A store of 4 real blocks (48 leaves: 3 full stratum-0 tiles) and its genesis file."""
    data = tmp_path / "data"
    chain = build_store(data, heights=4, per_block=12)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(format_genesis(chain.genesis), encoding="utf-8")
    return data, genesis, chain


def run_check(data: Path, genesis: Path) -> Result:
    return CliRunner().invoke(
        main, ["db", "check", "--data-dir", str(data), "--genesis", str(genesis)]
    )


def rewrite(data: Path, db: bytes, key: bytes, change: Callable[[bytes], bytes]) -> None:
    """Replace one stored value through raw LMDB, as bit rot under a valid B-tree would."""
    env = lmdb.open(str(data), max_dbs=40, map_size=TEST_MAP_SIZE)
    try:
        handle = env.open_db(db, create=False)
        with env.begin(write=True) as txn:
            value = txn.get(key, db=handle)
            assert value is not None, (db, key)
            txn.put(key, change(bytes(value)), db=handle)
    finally:
        env.close()


def flip(offset: int) -> Callable[[bytes], bytes]:
    def change(value: bytes) -> bytes:
        i = offset % len(value)
        return value[:i] + bytes([value[i] ^ 0x01]) + value[i + 1 :]

    return change


def resealed(key: bytes, change: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Change the payload of a stored value and give it a valid checksum again."""

    def reseal(value: bytes) -> bytes:
        return seal(key, change(unseal(key, value, "test value")))

    return reseal


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def test_clean_store_passes(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    result = run_check(data, genesis)
    assert result.exit_code == 0, result.output
    assert "blocks:      4" in result.output
    assert "leaves:      48" in result.output
    assert "checkpoints: 4" in result.output


def test_config_form_reads_data_dir_and_genesis(tmp_path: Path) -> None:
    # The --config form of the operator's procedure: a devnet node config, its store empty.
    net = init_devnet(tmp_path / "net", nodes=4, base_port=7300, genesis_time_ms=1)
    config = net.configs[0][1]
    data_dir = load_node_config(config).data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    LmdbStore.open(data_dir, map_size=TEST_MAP_SIZE).close()
    result = CliRunner().invoke(main, ["db", "check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "blocks:      0" in result.output


def test_flipped_byte_in_a_tree_node_is_named(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    # Tile 1 of stratum 0 holds leaves 16..31; its level-2 node 0 is the tree node (2, 4).
    rewrite(data, b"tiles00", u64(1), flip(OFFSETS[2][0] + 7))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "tiles00/1 (leaves 16-31)" in result.output
    assert "node (2, 4) does not match the hash of its children" in result.output
    assert "Traceback" not in result.output


def test_flipped_byte_in_a_stored_digest_is_found(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    rewrite(data, b"tiles00", u64(0), flip(OFFSETS[0][3]))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "tiles00/0 (leaves 0-15): damaged (checksum mismatch)" in result.output
    assert "repairable from any other validator's copy" in result.output


def test_resealed_digest_is_found_by_its_hashes(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    rewrite(data, b"tiles00", u64(0), resealed(u64(0), flip(OFFSETS[0][3])))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "node (1, 1) does not match the hash of its children (0, 2) and (0, 3)" \
        in result.output


def test_flipped_byte_in_a_block_names_its_height(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    rewrite(data, b"blocks", u64(3), flip(20))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "blocks/3: damaged (checksum mismatch)" in result.output


def test_resealed_block_is_found_by_the_chain(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    # Name another validator as the block's proposer (resealed): it still decodes, but is no
    # longer what was certified, so its certificate no longer verifies.
    def later(stored: bytes) -> bytes:
        record = msgpack.unpackb(stored, raw=False)
        record[1][1][2] ^= 1  # [tag, [compact, [prev_hash, time, proposer id, ...]], cert]
        return bytes(msgpack.packb(record, use_bin_type=True))

    rewrite(data, b"blocks", u64(4), resealed(u64(4), later))  # the last: nothing links to it
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "block 4:" in result.output


def test_forged_certificate_signature(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    # The last block's record ends with its certificate, whose last bytes are a precommit's
    # signature (earlier certificates share theirs with the next block's last commit).
    rewrite(data, b"blocks", u64(4), resealed(u64(4), flip(-10)))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "block 4: bad Ed25519 signature" in result.output


def test_flipped_byte_in_a_checkpoint_note(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    rewrite(data, b"checkpoints", u64(24), flip(7))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "checkpoints/24: damaged (checksum mismatch)" in result.output


def test_altered_checkpoint_note(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        note = store.checkpoint(24)
        assert note is not None
        store.put_checkpoint(24, note.replace(b"\n", b"\n ", 1))
    result = run_check(data, genesis)
    assert result.exit_code == 1, result.output
    assert "checkpoint at size 24" in result.output


def test_certificate_below_quorum_is_refused(tmp_path: Path) -> None:
    # 2 of 4 precommits is no quorum (3): a forged certificate of a minority must not pass.
    chain = Chain()
    data = tmp_path / "data"
    data.mkdir()
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        chain.commit(store, digests(3, b"a"))
        chain.commit(store, digests(3, b"b"), signers=2)
    with pytest.raises(CorruptionError, match="block 2: certificate has 2 precommits"):
        check_database(data, chain.genesis)


def test_certified_root_that_differs_from_the_stored_tree(tmp_path: Path) -> None:
    # The validators certified a tree head, but the store holds other leaves under it.
    chain = Chain()
    data = tmp_path / "data"
    data.mkdir()
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        chain.commit(store, digests(3, b"a"))
        chain.commit(store, digests(3, b"b"), tree_root=bytes(32), checkpoint=False)
    with pytest.raises(CorruptionError, match="block 2: its tree root differs"):
        check_database(data, chain.genesis)


def test_signed_checkpoint_on_another_root(built: tuple[Path, Path, Chain]) -> None:
    # A quorum note whose root is not the stored tree's: a log that forked from its own notes.
    data, _, chain = built
    note = chain.checkpoint_note(24, bytes(32)).encode()
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        store.put_checkpoint(24, note)
    with pytest.raises(CorruptionError, match="checkpoint at size 24: its root differs"):
        check_database(data, chain.genesis)


def rotated_chain(data: Path) -> tuple[Chain, Ed25519Signer]:
    """Blocks 1-5; block 2 carries a change rotating validator 4 to new keys from height 4."""
    chain = Chain()
    old = chain.signers[3]
    new_keys = validator_keys(4, b"rotated")[3]
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        chain.commit(store, digests(3, b"h1"))
        change = chain.rotate(3, new_keys, effective=4)
        chain.commit(store, digests(3, b"h2"), changes=(change,))
        chain.commit(store, digests(3, b"h3"))
        chain.commit(store, digests(3, b"h4"))
    return chain, old


def test_rotated_validator_set_is_followed(tmp_path: Path) -> None:
    # Blocks from height 4 are certified by the rotated set, and their checkpoints cosigned by
    # the new key: both verify only if the check follows the change from the chain itself.
    chain, _ = rotated_chain(tmp_path / "data")
    with LmdbStore.open(tmp_path / "data", map_size=TEST_MAP_SIZE) as store:
        block = chain.commit(store, digests(3, b"h5"))
        # A quorum of the new set only (validators 2, 3 and the rotated 4): 2 of the old.
        note = chain.checkpoint_note(block.tree_size, block.tree_root, chain.ordered[1:])
        store.put_checkpoint(block.tree_size, note.encode())
    report = check_database(tmp_path / "data", chain.genesis)
    assert report.blocks == 5 and report.checkpoints == 5


def test_rotated_out_key_cannot_certify(tmp_path: Path) -> None:
    # After the rotation, a quorum that counts the old key of validator 4 is no quorum.
    chain, old = rotated_chain(tmp_path / "data")
    with LmdbStore.open(tmp_path / "data", map_size=TEST_MAP_SIZE) as store:
        chain.commit(store, digests(3, b"h5"), certifiers=[*chain.signers[:2], old])
    with pytest.raises(CorruptionError, match="block 5: message from a key that is not a"):
        check_database(tmp_path / "data", chain.genesis)


def test_other_genesis_is_refused(built: tuple[Path, Path, Chain]) -> None:
    # Same chain id, origin and names, other keys: the certificates are not theirs.
    data, _, _ = built
    other = GenesisDraft(
        chain_id="ops-test",
        origin="ledger.example.org/ops-test",
        validators=tuple(ValidatorInfo.from_keys(k) for k in validator_keys(4, b"other")),
    ).finalize(genesis_time=1_732_240_800_000)
    with pytest.raises(CorruptionError, match=r"block 1: .*right genesis"):
        check_database(data, other)


def test_leaves_without_a_block_are_found(built: tuple[Path, Path, Chain]) -> None:
    data, _, chain = built
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE) as store:
        store.append(digests(2, b"unblocked"))  # leaves no validator certified
    with pytest.raises(CorruptionError, match="holds 50 leaves but its last block"):
        check_database(data, chain.genesis)


def test_progress_reports_every_phase(built: tuple[Path, Path, Chain]) -> None:
    data, _, chain = built
    seen: list[tuple[str, int, int]] = []
    check_database(data, chain.genesis, lambda *event: seen.append(event))
    assert [p for p, _, _ in seen if p != "checkpoints"] == ["tree", "blocks"]
    assert seen[-1] == ("checkpoints", 4, 4)


def test_missing_store_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no store"):
        check_database(tmp_path / "nothing", Chain().genesis)


# ----------------------------------------------------------------- damaged files, at open
#
# Run in a subprocess: the point is the process's own output (one line, no traceback), and a
# damaged mapping must never be able to take the test runner down with it.


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "is truncated"),
        ("empty", "is empty"),
        ("meta", "damaged database"),
    ],
)
def test_damaged_file_is_reported_at_open(
    built: tuple[Path, Path, Chain], damage: str, message: str
) -> None:
    data, genesis, _ = built
    mdb = data / "data.mdb"
    if damage == "truncate":
        os.truncate(mdb, mdb.stat().st_size // 2)
    elif damage == "empty":
        os.truncate(mdb, 0)
    else:  # both meta pages (pages 0 and 1) overwritten: not an LMDB file any more
        with open(mdb, "r+b") as handle:
            handle.write(b"\xa5" * 8192)
    proc = cli("db", "check", "--data-dir", str(data), "--genesis", str(genesis))
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr


def test_usage_errors_exit_2(built: tuple[Path, Path, Chain]) -> None:
    data, genesis, _ = built
    runner = CliRunner()
    assert runner.invoke(main, ["db", "check", "--data-dir", str(data)]).exit_code == 2
    both = ["db", "check", "--data-dir", str(data), "--config", str(genesis)]
    assert runner.invoke(main, both).exit_code == 2
    bad = genesis.with_name("bad.json")
    bad.write_text(json.dumps({"format": "nope"}), encoding="utf-8")
    result = runner.invoke(main, ["db", "check", "--data-dir", str(data), "--genesis", str(bad)])
    assert result.exit_code == 2, result.output


def test_rebuild_repairs_a_damaged_digest_index(tmp_path: Path) -> None:
    # The digest index is derived from the tree: `db check --rebuild` (node stopped) rebuilds
    # a damaged run from the stored leaves, says so, and then the whole check passes.
    from ledger.storage._index import IndexParams

    data = tmp_path / "data"
    data.mkdir()
    chain = Chain()
    small = IndexParams(stripe_bits=5, flush=4, fanout=4, filter_bits=3, persist_every=2)
    with LmdbStore.open(data, map_size=TEST_MAP_SIZE, index_params=small) as store:
        for h in range(1, 8):
            chain.commit(store, digests(6, b"r%d" % h))
    genesis = tmp_path / "genesis.json"
    genesis.write_text(format_genesis(chain.genesis), encoding="utf-8")
    env = lmdb.open(str(data), max_dbs=40, map_size=TEST_MAP_SIZE)
    stripes = env.open_db(b"stripes", create=False)  # a completed stripe's single run
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db=stripes)
        assert cursor.first()
        key, value = bytes(cursor.key()), bytearray(cursor.value())
        value[3] ^= 0x10
        txn.put(key, bytes(value), db=stripes)
    env.close()
    result = run_check(data, genesis)
    assert result.exit_code == 1 and "runs/" in result.output, result.output
    assert "ledger db check --rebuild" in result.output
    fixed = CliRunner().invoke(
        main, ["db", "check", "--data-dir", str(data), "--genesis", str(genesis), "--rebuild"]
    )
    assert fixed.exit_code == 0, fixed.output
    assert "rebuilt runs/" in fixed.output and "blocks:      7" in fixed.output
    assert run_check(data, genesis).exit_code == 0
