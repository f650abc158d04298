"""The replica is sans-I/O and small (issue 10): no I/O module anywhere in ``ledger/replica``,
none loaded by importing it, and no class in ``ledger/replica`` or ``ledger/node`` over 400
lines, no function over 80."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ledger"
REPLICA = sorted((PACKAGE / "replica").glob("*.py"))
NODE = sorted((PACKAGE / "node").glob("*.py"))

#: Modules that touch the world: sockets, files, the clock, the environment, randomness,
#: processes and threads, and the node's own I/O layers.
FORBIDDEN = {
    "asyncio", "aiohttp", "socket", "ssl", "select", "selectors", "lmdb", "os", "io", "time",
    "datetime", "random", "secrets", "subprocess", "threading", "multiprocessing", "signal",
    "http", "urllib", "pathlib", "tempfile", "shutil", "click", "prometheus_client",
    "ledger.node", "ledger.config", "ledger.storage.lmdb_store", "ledger.sim", "ledger.cli",
    "ledger.client", "ledger.devnet", "ledger.dbtools", "ledger.fileio",
}
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


@pytest.mark.parametrize("path", REPLICA, ids=[p.name for p in REPLICA])
def test_replica_modules_import_no_io_module(path: Path) -> None:
    bad = sorted(name for name in _imports(path) if _forbidden(name))
    assert not bad, f"{path.name} imports {bad}"


def test_importing_the_replica_loads_no_io_library() -> None:
    probe = ("import sys, ledger.replica; "
             "print(' '.join(sorted(m for m in ('asyncio', 'aiohttp', 'lmdb', 'socket', 'ssl', "
             "'prometheus_client', 'click', 'subprocess', 'multiprocessing') "
             "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_a_planted_io_import_is_caught(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from __future__ import annotations\nimport time as clock\n")
    assert any(_forbidden(n) for n in _imports(planted))


@pytest.mark.parametrize("path", REPLICA + NODE, ids=[f"{p.parent.name}/{p.name}"
                                                      for p in REPLICA + NODE])
def test_no_class_over_400_lines_and_no_function_over_80(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    too_long = []
    for node in ast.walk(tree):
        length = (node.end_lineno or node.lineno) - node.lineno + 1 \
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) else 0
        if isinstance(node, ast.ClassDef) and length > MAX_CLASS_LINES:
            too_long.append(f"class {node.name}: {length} lines")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                and length > MAX_FUNCTION_LINES:
            too_long.append(f"function {node.name}: {length} lines")
    assert not too_long, f"{path.name}: {too_long}"
