"""``ledger witness``: the key file of a standalone witness, and one clear line for every bad
input (the server itself runs in tests/node/test_outside_witnesses.py and docs/witness.md)."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from ledger.cli import main
from ledger.note import Verifier
from ledger.witness_cli import read_witness_key


def test_init_writes_a_private_key_once_and_key_prints_its_vkey(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["witness", "init", "--dir", str(tmp_path / "w"),
                                "--name", "audit.example/w1"])
    assert done.exit_code == 0, done.output
    key_file = tmp_path / "w" / "witness.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    vkey = done.output.split("vkey: ")[1].strip()
    verifier = Verifier.from_vkey(vkey)
    name, key = read_witness_key(key_file)
    assert (verifier.name, verifier.public_key) == (name, key.public_key) == (
        "audit.example/w1", key.public_key)
    shown = runner.invoke(main, ["witness", "key", "--dir", str(tmp_path / "w")])
    assert shown.exit_code == 0 and shown.output.strip() == vkey
    before = key_file.read_bytes()
    again = runner.invoke(main, ["witness", "init", "--dir", str(tmp_path / "w"),
                                 "--name", "other"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert key_file.read_bytes() == before


def test_bad_inputs_are_one_line_each(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_name = runner.invoke(main, ["witness", "init", "--dir", str(tmp_path / "n"),
                                    "--name", "a+b"])
    assert bad_name.exit_code == 2 and "witness name" in bad_name.output
    assert not (tmp_path / "n").exists()
    missing = runner.invoke(main, ["witness", "key", "--dir", str(tmp_path / "none")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "witness.key").write_text("not a key\n")
    junk = runner.invoke(main, ["witness", "key", "--dir", str(tmp_path / "junk")])
    assert junk.exit_code == 2 and "is not a witness key file" in junk.output
    runner.invoke(main, ["witness", "init", "--dir", str(tmp_path / "w"), "--name", "w"])
    (tmp_path / "policy").write_text("log nonsense\n")
    policy = runner.invoke(main, ["witness", "serve", "--dir", str(tmp_path / "w"),
                                  "--policy", str(tmp_path / "policy"), "--port", "0"])
    assert policy.exit_code == 2 and "malformed policy" in policy.output
    assert len(policy.output.strip().splitlines()) == 1
    absent = runner.invoke(main, ["witness", "serve", "--dir", str(tmp_path / "w"),
                                  "--policy", str(tmp_path / "absent"), "--port", "0"])
    assert absent.exit_code == 2 and "cannot read policy" in absent.output
