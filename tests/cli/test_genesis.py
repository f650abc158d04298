"""`ledger genesis`: the ceremony from contributed vkeys to a frozen genesis and its policy."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from ledger.cli import EXIT_ERROR, EXIT_OK, main
from ledger.genesis import load_genesis, trust_policy
from ledger.policy import parse_policy


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def contribute(tmp_path: Path, n: int = 4) -> list[Path]:
    """Each institution generates its key and saves the printed public keys (a .vkeys file)."""
    files = []
    for i in range(1, n + 1):
        result = run(
            "keys", "generate", "--name", f"v{i}", "--origin", "ex.org/log",
            "--out", str(tmp_path / f"v{i}.key"),
        )  # fmt: skip
        assert result.exit_code == EXIT_OK, result.output
        path = tmp_path / f"v{i}.vkeys"
        path.write_text(result.stdout)
        files.append(path)
    return files


def ceremony(tmp_path: Path, n: int = 4) -> tuple[Path, Result]:
    genesis = tmp_path / "genesis.json"
    vkeys = contribute(tmp_path, n)
    assert run("genesis", "init", "--chain-id", "c1", "--origin", "ex.org/log",
               "--out", str(genesis)).exit_code == EXIT_OK  # fmt: skip
    for i, path in enumerate(vkeys, start=1):
        added = run("genesis", "add-validator", "--genesis", str(genesis), "--name", f"v{i}",
                    "--vkeys-file", str(path), "--url", f"https://v{i}.ex.org")  # fmt: skip
        assert added.exit_code == EXIT_OK, added.output
    final = run("genesis", "finalize", "--genesis", str(genesis), "--time", "2025-01-01T00:00:00Z")
    return genesis, final


def test_ceremony_prints_the_hash_and_writes_the_policy(tmp_path: Path) -> None:
    path, final = ceremony(tmp_path)
    assert final.exit_code == EXIT_OK, final.output
    genesis = load_genesis(path)
    assert f"genesis hash: {genesis.genesis_hash()}" in final.stdout
    assert genesis.genesis_time == 1_735_689_600_000
    assert [v.name for v in genesis.validators] == ["v1", "v2", "v3", "v4"]
    assert genesis.validators[2].url == "https://v3.ex.org"
    policy_text = (tmp_path / "trust-policy").read_text()
    assert policy_text == trust_policy(genesis)
    assert parse_policy(policy_text).groups[0].threshold == 3
    shown = run("genesis", "show", str(path))
    assert shown.exit_code == EXIT_OK
    assert f"genesis hash: {genesis.genesis_hash()}" in shown.stdout


def test_consensus_keys_in_genesis_come_from_the_key_files(tmp_path: Path) -> None:
    from ledger.crypto import read_key_file

    path, _ = ceremony(tmp_path)
    genesis = load_genesis(path)
    for v in genesis.validators:
        keys = read_key_file(tmp_path / f"{v.name}.key")
        assert v.consensus_key == keys.consensus_key.public_key
        assert v.log_vkey == keys.log_vkey


def test_a_final_genesis_cannot_be_extended(tmp_path: Path) -> None:
    path, _ = ceremony(tmp_path)
    before = path.read_bytes()
    result = run("genesis", "add-validator", "--genesis", str(path),
                 "--vkeys-file", str(tmp_path / "v1.vkeys"))  # fmt: skip
    assert result.exit_code == EXIT_ERROR
    assert "already final" in result.stderr
    assert path.read_bytes() == before


def test_add_validator_refusals_leave_the_draft_unchanged(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    [v1, v2] = contribute(tmp_path, 2)
    run("genesis", "init", "--chain-id", "c1", "--origin", "ex.org/log", "--out", str(genesis))
    assert run("genesis", "add-validator", "--genesis", str(genesis),
               "--vkeys-file", str(v1)).exit_code == EXIT_OK  # fmt: skip
    before = genesis.read_bytes()
    cases = [
        (["--vkeys-file", str(v1)], "listed twice"),
        (["--vkeys-file", str(v2), "--name", "v9"], "not 'v9'"),
        (["--vkeys-file", str(v2), "--url", "ftp://x"], "not an http(s) URL"),
        (["--vkeys-file", str(tmp_path / "absent")], "cannot read vkeys file"),
    ]
    for extra, message in cases:
        result = run("genesis", "add-validator", "--genesis", str(genesis), *extra)
        assert result.exit_code == EXIT_ERROR, extra
        assert message in result.stderr, (extra, result.stderr)
        assert genesis.read_bytes() == before


def test_vkeys_of_another_origin_are_refused(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    [v1] = contribute(tmp_path, 1)
    run("genesis", "init", "--chain-id", "c1", "--origin", "other.org/log", "--out", str(genesis))
    result = run("genesis", "add-validator", "--genesis", str(genesis), "--vkeys-file", str(v1))
    assert result.exit_code == EXIT_ERROR
    assert "origin" in result.stderr


def test_init_refuses_to_overwrite_and_finalize_needs_validators(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    assert run("genesis", "init", "--chain-id", "c", "--origin", "o.org/l",
               "--out", str(genesis)).exit_code == EXIT_OK  # fmt: skip
    again = run("genesis", "init", "--chain-id", "c", "--origin", "o.org/l", "--out", str(genesis))
    assert again.exit_code == EXIT_ERROR and "already exists" in again.stderr
    empty = run("genesis", "finalize", "--genesis", str(genesis))
    assert empty.exit_code == EXIT_ERROR and "at least one validator" in empty.stderr
    assert json.loads(genesis.read_text())["genesis_time"] is None


def test_finalize_warns_when_no_fault_is_tolerated(tmp_path: Path) -> None:
    _, final = ceremony(tmp_path, n=3)
    assert final.exit_code == EXIT_OK
    assert "tolerate no faulty validator" in final.stderr


def test_bad_time_is_refused(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.json"
    [v1] = contribute(tmp_path, 1)
    run("genesis", "init", "--chain-id", "c1", "--origin", "ex.org/log", "--out", str(genesis))
    run("genesis", "add-validator", "--genesis", str(genesis), "--vkeys-file", str(v1))
    for bad in ("yesterday", "2025-01-01T00:00:00"):
        result = run("genesis", "finalize", "--genesis", str(genesis), "--time", bad)
        assert result.exit_code == EXIT_ERROR and "--time" in result.stderr
