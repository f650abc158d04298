"""docs/eod.md runs as written: every ```sh block not marked ``<!-- not-run: reason -->``, in
order, in one fresh directory holding a running 4-node devnet as ``devnet/`` (with
``devnet/client-token`` and ``devnet/trust-policy``), with ``ledger`` on PATH and the ports
7100-7103 of the text rewritten to the test devnet's. This is the convention of the shared
doc-execution harness, applied to this document ahead of it; each block must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eod.devnet import running_devnet

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "eod.md"
_BLOCK = re.compile(r"(<!-- not-run:[^>]*-->\n)?```sh\n(.*?)```", re.S)


def sh_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line, body, runs) of each ```sh block."""
    return [
        (text[: m.start()].count("\n") + 1, m.group(2), m.group(1) is None)
        for m in _BLOCK.finditer(text)
    ]


def test_the_block_finder_sees_marked_and_unmarked_blocks() -> None:
    blocks = sh_blocks("a\n```sh\necho 1\n```\n<!-- not-run: x -->\n```sh\nfalse\n```\n")
    assert [(body, runs) for _, body, runs in blocks] == [("echo 1\n", True), ("false\n", False)]


def test_docs_eod_runs_as_written(tmp_path: Path) -> None:
    from docs.harness import parse_blocks

    blocks = parse_blocks(DOC.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b.runs]
    assert len(runnable) >= 5, "docs/eod.md lost its runnable blocks"
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for key in ("LEDGER_EOD_DATA", "LEDGER_NODE", "LEDGER_TOKEN"):
        env.pop(key, None)
    with running_devnet(tmp_path / "devnet") as base:
        ports = {str(7100 + i): str(base + i) for i in range(4)}
        for block in blocks:
            if block.file is not None:  # <!-- file: NAME -->: the block is a file to write
                (tmp_path / block.file).write_text(block.text, encoding="utf-8")
                continue
            if not block.runs:
                continue
            line, body = block.line, block.text
            script = re.sub(r"\b710[0-3]\b", lambda m: ports[m.group(0)], body)
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, (
                f"docs/eod.md block at line {line} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
            if "open-case RPW/1/2026" in body:
                assert "opened case OR.0012.1.2026" in result.stdout
            if "verify-package" in body:
                assert "valid: 1 case(s) for Archiwum Państwowe w Gdańsku" in result.stdout
            if "ledger eod serve" in body:
                assert '"stage": "assigned"' in result.stdout or '"stage":"assigned"' in (
                    result.stdout)
                assert "404\n" in result.stdout  # the wrong code
    assert (tmp_path / "metryka.json").is_file()
    assert (tmp_path / "urzad-odtworzony" / "office.db").is_file()
