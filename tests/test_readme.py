"""The README is true because it is tested: its shell examples run as written.

Every ``ledger ...`` line of the README's "Local proving ground" and "Verify a receipt" blocks is
executed, in order, in a scratch directory holding a sample ``contract.pdf``; each must exit 0.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_commands(section: str) -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None, f"no shell block in README section {section!r}"
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("ledger "):
            commands.append(shlex.split(line)[1:])
    assert commands, f"README section {section!r} shows no ledger command"
    return commands


def test_readme_proving_ground_commands_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "contract.pdf").write_bytes(b"%PDF-1.7 umowa nr 12/2026\n")
    runner = CliRunner()
    for args in _readme_commands("Local proving ground"):
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"ledger {' '.join(args)}: {result.output}"
    assert (tmp_path / "contract.pdf.tlog-proof").is_file()
    # The "Verify a receipt" block verifies the same receipt against the demo policy.
    for args in _readme_commands("Verify a receipt"):
        args = [a if a != "trust-policy" else "demo/trust-policy" for a in args]
        result = runner.invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, f"ledger {' '.join(args)}: {result.output}"
