"""``ledger db backup`` / ``restore``: hot copies under load restore into stores that verify.

The property: a backup taken while blocks keep being committed is one committed state of the
chain (never a torn mix), so it restores into a store that passes the full check, whose tree
head is a prefix of the writer's log (same root at that size), ending exactly at a block.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import main
from ledger.dbtools import backup, backup_store, check_database, restore
from ledger.errors import CorruptionError, StorageError
from ledger.genesis import format_genesis
from ledger.storage import LmdbStore

from .chain import MAP_SIZE, Chain, build_store, digests

ROOT = Path(__file__).resolve().parents[2]


def test_backup_under_load_in_another_thread(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    chain = Chain()
    stop = threading.Event()
    errors: list[BaseException] = []
    with LmdbStore.open(data, map_size=MAP_SIZE) as store:
        chain.commit(store, digests(7, b"first"))

        def writer() -> None:
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    chain.commit(store, digests(5, b"load %d" % n), checkpoint=n % 2 == 0)
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            results = [backup_store(store, tmp_path / f"backup-{i}") for i in range(4)]
        finally:
            stop.set()
            thread.join(timeout=60)
        assert not errors, errors
        final = store.tree_head()
        # Each backup is a prefix of the log the writer kept growing.
        for result in results:
            assert store.root_at(result.head.size) == result.head.root
    assert final.size > results[0].head.size, "the writer never ran during the backups"
    for i, result in enumerate(results):
        restored = tmp_path / f"restored-{i}"
        outcome = restore(result.path, restored, genesis=chain.genesis)
        assert outcome.head == result.head and outcome.set_aside is None
        report = check_database(restored, chain.genesis)
        assert report.head == result.head
        assert report.blocks == result.height and report.leaves == result.head.size
        assert (result.path / "data.mdb").is_file()  # restore copies, never moves the backup


def test_cli_backup_while_another_process_writes(tmp_path: Path) -> None:
    # The operator's situation: the node (here a writer process) keeps committing blocks while
    # `ledger db backup` copies its data directory from another process.
    data = tmp_path / "data"
    chain = build_store(data, heights=2)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(format_genesis(chain.genesis), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    writer = subprocess.Popen(
        [sys.executable, "-m", "ops.chain", str(data), "4"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        runner = CliRunner()
        dest = tmp_path / "backup"
        result = runner.invoke(main, ["db", "backup", "--data-dir", str(data), str(dest)])
        assert result.exit_code == 0, result.output
        assert "backed up" in result.output
    finally:
        assert writer.wait(timeout=60) == 0
    restored = tmp_path / "restored"
    result = runner.invoke(
        main, ["db", "restore", str(dest), "--data-dir", str(restored), "--genesis", str(genesis)]
    )
    assert result.exit_code == 0, result.output
    check = runner.invoke(
        main, ["db", "check", "--data-dir", str(restored), "--genesis", str(genesis)]
    )
    assert check.exit_code == 0, check.output
    with LmdbStore.open(data, readonly=True) as live, LmdbStore.open(restored) as copy:
        head = copy.tree_head()
        assert head.size >= 24 and live.root_at(head.size) == head.root
        assert live.size > head.size or live.last_height() == copy.last_height()


def test_backup_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    build_store(tmp_path / "data", heights=1)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(StorageError, match="not empty"):
        backup(tmp_path / "data", dest)
    assert (dest / "keep.txt").read_text(encoding="utf-8") == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "dest"]  # no staging left
    backup(tmp_path / "data", tmp_path / "empty-is-fine")


def test_restore_keeps_the_old_data_dir_aside(tmp_path: Path) -> None:
    chain = build_store(tmp_path / "data", heights=3)
    backup(tmp_path / "data", tmp_path / "backup")
    runner = CliRunner()
    args = ["db", "restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "data")]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2 and "not empty" in refused.output
    for n in (1, 2):
        done = runner.invoke(main, [*args, "--force"])
        assert done.exit_code == 0, done.output
        assert f"data.replaced-{n}" in done.output
        assert (tmp_path / f"data.replaced-{n}" / "data.mdb").is_file()
    assert check_database(tmp_path / "data", chain.genesis).blocks == 3


def test_restore_refuses_a_running_store(tmp_path: Path) -> None:
    build_store(tmp_path / "data", heights=1)
    backup(tmp_path / "data", tmp_path / "backup")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import lmdb, sys; e = lmdb.open(sys.argv[1], max_dbs=32, map_size=1 << 28); "
            "print('open', flush=True); sys.stdin.read()",
            str(tmp_path / "data"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(StorageError, match="open in another process"):
            restore(tmp_path / "backup", tmp_path / "data", force=True)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not (tmp_path / "data.replaced-1").exists()
    restore(tmp_path / "backup", tmp_path / "data", force=True)
    assert (tmp_path / "data.replaced-1").is_dir()


def test_a_damaged_backup_is_never_restored(tmp_path: Path) -> None:
    chain = build_store(tmp_path / "data", heights=2)
    backup(tmp_path / "data", tmp_path / "backup")
    mdb = tmp_path / "backup" / "data.mdb"
    os.truncate(mdb, mdb.stat().st_size - 4096)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CorruptionError, match="truncated"):
        restore(tmp_path / "backup", tmp_path / "data", force=True, genesis=chain.genesis)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # data untouched, no staging
    result = CliRunner().invoke(
        main, ["db", "restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "new")]
    )
    assert result.exit_code == 1 and "damaged" in result.output
    assert not (tmp_path / "new").exists()
