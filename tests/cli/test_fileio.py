"""ledger.fileio: files are written whole, with their mode, never through a planted link."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import write_text_atomic
from ledger.errors import ConfigError
from ledger.fileio import FileExistsRefused, FileWriteError, make_private_dir, write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_write_atomic_writes_the_bytes_with_the_mode_and_leaves_no_temporary(
    tmp_path: Path, umask_000: None
) -> None:
    target = tmp_path / "token"
    write_atomic(target, "secret\n", mode=0o600)
    assert target.read_text() == "secret\n"
    assert mode(target) == 0o600  # even under umask 000
    write_atomic(target, b"\x00\x01", mode=0o644)
    assert target.read_bytes() == b"\x00\x01" and mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    target = tmp_path / "client-token"
    target.symlink_to(victim)
    write_atomic(target, "new\n", mode=0o600)
    assert victim.read_text() == "do not touch\n"
    assert not target.is_symlink() and target.read_text() == "new\n"


def test_links_planted_at_the_old_predictable_temporary_names_are_not_followed(
    tmp_path: Path,
) -> None:
    # The former writer used ".NAME.tmp-PID"; an attacker could pre-create it as a link.
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    for name in (f".policy.tmp-{os.getpid()}", ".policy.tmp", "policy.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_atomic(tmp_path / "policy", "policy text\n")
    assert victim.read_text() == "do not touch\n"
    assert (tmp_path / "policy").read_text() == "policy text\n"


def test_replace_false_never_touches_an_existing_target(tmp_path: Path) -> None:
    target = tmp_path / "doc.tlog-proof"
    target.write_text("first receipt\n")
    with pytest.raises(FileExistsRefused, match="already exists"):
        write_atomic(target, "second receipt\n", replace=False)
    assert target.read_text() == "first receipt\n"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsRefused):
        write_atomic(dangling, "x", replace=False)
    assert not (tmp_path / "nowhere").exists()
    write_atomic(tmp_path / "fresh", "ok\n", replace=False)
    assert (tmp_path / "fresh").read_text() == "ok\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "doc.tlog-proof", "fresh"]


def test_an_unwritable_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileWriteError, match=r"cannot write .*missing/x"):
        write_atomic(tmp_path / "missing" / "x", "data")
    # config.write_text_atomic keeps its contract: a ConfigError.
    with pytest.raises(ConfigError, match="cannot write"):
        write_text_atomic(tmp_path / "missing" / "y", "data")


def test_private_directories_are_0700_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    made = make_private_dir(tmp_path / "a" / "b")
    assert made.is_dir()
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o750)
    os.chmod(existing, 0o750)
    make_private_dir(existing)
    assert mode(existing) == 0o750  # an operator's existing directory keeps its mode
    link = tmp_path / "link"
    link.symlink_to(existing)
    with pytest.raises(FileWriteError, match="symbolic link"):
        make_private_dir(link)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileWriteError, match="not a directory"):
        make_private_dir(tmp_path / "file")
