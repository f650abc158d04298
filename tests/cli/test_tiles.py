"""``ledger tiles export`` and ``ledger proof --tiles``: a receipt built from an export served
by a plain static file server verifies with ``ledger verify``; an earlier receipt file is kept;
a fork and bad input end with one line."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tiles.static_server import static_server

from cli.devnets import ledger
from ledger.cli import EXIT_ERROR, EXIT_INVALID, EXIT_OK, main
from ledger.crypto import ValidatorKeys
from ledger.prover import LocalLog, trust_policy
from ledger.storage.lmdb_store import LmdbStore

ORIGIN = "tiles.test/cli"
T0 = 1_800_000_000
#: Two full level-0 tiles and a partial one at the end; a first checkpoint at half of it.
FIRST, SIZE = 300, 600


def digest(i: int, salt: str = "") -> bytes:
    return hashlib.sha256(f"cli tiles {salt} {i}".encode()).digest()


@dataclass(frozen=True)
class Ground:
    store: Path
    policy: Path
    early: Path  # digest(5)'s receipt against the first checkpoint (size FIRST)


def make_ground(root: Path, *, salt: str = "") -> Ground:
    validators = [ValidatorKeys.generate(name=f"v{i}", origin=ORIGIN) for i in range(1, 5)]
    root.mkdir(parents=True, exist_ok=True)
    store_dir = root / "store"
    with LmdbStore.open(store_dir) as store:
        log = LocalLog(store, validators=validators)
        log.append([digest(i, salt) for i in range(FIRST)])
        log.checkpoint(timestamp=T0)
        early = root / "early.tlog-proof"
        early.write_text(log.prove(digest(5, salt)))
        log.append([digest(i, salt) for i in range(FIRST, SIZE)])
        log.checkpoint(timestamp=T0 + 3600)
    policy = root / "trust-policy"
    policy.write_text(trust_policy(validators))
    return Ground(store=store_dir, policy=policy, early=early)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line(result: Result, status: int) -> str:
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    return line


def test_a_receipt_from_tiles_on_a_static_web_server_verifies(tmp_path: Path) -> None:
    ground = make_ground(tmp_path)
    site = tmp_path / "site"
    export = ledger("tiles", "export", "--data-dir", str(ground.store), str(site))
    assert export.returncode == 0, export.stderr
    assert export.stdout.startswith(f"exported tree size {SIZE} of {ORIGIN} to {site}")
    with static_server(site) as url:
        for k in (0, 299, SIZE - 1):
            receipt = tmp_path / f"{k}.tlog-proof"
            made = ledger("proof", "--tiles", url, digest(k).hex(), "--policy",
                          str(ground.policy), "--out", str(receipt))
            assert made.returncode == 0, made.stderr
            assert f"leaf {k} of tree size {SIZE}" in made.stderr
            checked = ledger("verify", "--policy", str(ground.policy), "--proof", str(receipt),
                             "--digest", digest(k).hex())
            assert checked.returncode == 0, checked.stderr
            assert f"index:        {k}\n" in checked.stdout
            assert f"tree size:    {SIZE}\n" in checked.stdout
        # --index skips the search and gives the same receipt.
        given = run("proof", "--tiles", url, "--index", "299", digest(299).hex())
        assert given.exit_code == EXIT_OK, given.output
        assert given.stdout == (tmp_path / "299.tlog-proof").read_text()
        assert "searched" not in given.stderr
        # An existing receipt that proves an earlier moment is never replaced by one from tiles.
        before = ground.early.read_bytes()
        kept = run("proof", "--tiles", url, digest(5).hex(), "--policy", str(ground.policy),
                   "--out", str(ground.early))
        assert kept.exit_code == EXIT_OK, kept.output
        assert f"kept {ground.early}" in kept.stderr
        assert ground.early.read_bytes() == before
        # Absent digests are proven absent (every bundle read), a wrong --index fails.
        absent = one_line(run("proof", "--tiles", url, digest(SIZE).hex()), EXIT_ERROR)
        assert "is not in the log" in absent and f"tree size {SIZE}" in absent
        wrong = one_line(run("proof", "--tiles", url, "--index", "4", digest(5).hex()),
                         EXIT_INVALID)
        assert wrong.startswith("invalid: digest") and "is not leaf 4" in wrong
        beyond = one_line(run("proof", "--tiles", url, "--index", str(SIZE), digest(5).hex()),
                          EXIT_ERROR)
        assert f"is not in the tree of size {SIZE}" in beyond


def test_the_export_directory_itself_is_a_tiles_source(tmp_path: Path) -> None:
    ground = make_ground(tmp_path)
    site = tmp_path / "site"
    assert run("tiles", "export", "--data-dir", str(ground.store), str(site)).exit_code == 0
    # A tampered bundle cannot hide a digest: the bundles no longer rebuild the signed root.
    bundle = site / "tile/entries/001"
    data = bytearray(bundle.read_bytes())
    data[2] ^= 1
    bundle.write_bytes(bytes(data))
    made = run("proof", "--tiles", str(site), digest(SIZE + 1).hex())
    assert "do not rebuild its checkpoint's root" in one_line(made, EXIT_INVALID)
    made = run("proof", "--tiles", str(site), digest(3).hex(), "--policy", str(ground.policy))
    assert made.exit_code == EXIT_OK, made.output


def test_a_re_export_of_a_fork_stops_with_one_line_and_replaces_nothing(tmp_path: Path) -> None:
    ground = make_ground(tmp_path / "a")
    fork = make_ground(tmp_path / "b", salt="fork")
    site = tmp_path / "site"
    assert run("tiles", "export", "--data-dir", str(ground.store), str(site)).exit_code == 0
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    again = run("tiles", "export", "--data-dir", str(ground.store), str(site))
    assert again.exit_code == EXIT_OK
    assert "0 files written" in again.stdout and "checkpoint unchanged" in again.stdout
    refused = one_line(run("tiles", "export", "--data-dir", str(fork.store), str(site)),
                       EXIT_INVALID)
    assert refused.startswith("invalid: ") and "a fork of the log" in refused
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("args", "message"), [
    (["tiles", "export", "out"], "give exactly one of --config FILE or --data-dir DIR"),
    (["tiles", "export", "--data-dir", "no-such-store", "out"], "no store at no-such-store"),
    (["proof", "--tiles", "no-such-dir", "00" * 32], "neither an http(s) URL nor a directory"),
    (["proof", "--tiles", "http://127.0.0.1:1", "00" * 32], "cannot fetch"),
    (["proof", "--index", "3", "--node", "http://127.0.0.1:1", "00" * 32],
     "--index goes with --tiles"),
    (["proof", "--tiles", ".", "--latest", "00" * 32], "--latest does not go with --tiles"),
])
def test_bad_input_gets_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_line(run(*args), EXIT_ERROR)
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "out").exists()
