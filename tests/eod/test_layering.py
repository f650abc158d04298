"""The EOD client stays thin: ``ledger/eod`` imports neither the consensus core nor the storage
layer (nor the node or the proving ground); the offline demo ground is built by the top-level
CLI and handed in behind the anchoring interface."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

EOD = Path(__file__).resolve().parents[2] / "ledger" / "eod"
FORBIDDEN = ("ledger.consensus", "ledger.storage", "ledger.prover", "ledger.node", "lmdb")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_of_ledger_eod_imports_consensus_storage_or_the_ground() -> None:
    modules = sorted(EOD.glob("*.py"))
    assert len(modules) > 10
    found = {
        f"{path.name}: {name}"
        for path in modules
        for name in _imports(path)
        if name.startswith(FORBIDDEN)
    }
    assert not found


def test_importing_the_eod_client_loads_no_storage_code() -> None:
    probe = (
        "import sys, ledger.eod.cli, ledger.eod.office, ledger.eod.trail, ledger.eod.anchor\n"
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
