"""`pip install .` gives a working `ledger --version`, with SPDX license metadata and no
setuptools deprecation warnings (issue 14 item 7)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ledger import __version__

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_install_then_ledger_version(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=500, cwd=tmp_path,
    )
    if built.returncode != 0 and "Could not find a version" in built.stderr:
        pytest.skip("the package index offers no setuptools>=77 to build with")
    assert built.returncode == 0, built.stderr
    assert "deprecat" not in (built.stdout + built.stderr).lower(), built.stderr
    [wheel] = wheels.glob("ledger-*.whl")
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"ledger-{__version__}.dist-info/METADATA").decode()
        names = archive.namelist()
    assert "License-Expression: Apache-2.0" in metadata
    assert f"ledger-{__version__}.dist-info/licenses/LICENSE" in names
    # Install it into a fresh environment and run its console script.
    venv = tmp_path / "venv"
    subprocess.run([sys.base_prefix + "/bin/python3", "-m", "venv", str(venv)], check=True,
                   timeout=120, capture_output=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index",
         str(wheel)],
        capture_output=True, text=True, timeout=200,
    )
    assert installed.returncode == 0, installed.stderr
    # The dependencies come from the test environment; the script and package from the wheel.
    deps = sysconfig.get_paths()["purelib"]
    version = subprocess.run(
        [str(venv / "bin" / "ledger"), "--version"], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"ledger {__version__}\n"
