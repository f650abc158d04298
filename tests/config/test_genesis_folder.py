"""The example in genesis/ is what its README's ceremony produces (issue 10 item 4).

The README's shell blocks (all but the key generation, which runs on each institution's own
machine) run in a fresh directory holding only the four institutions' public keys; the genesis
and trust policy they produce are byte-identical to the committed example, and `genesis show`
prints the same hash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from docs.harness import parse_blocks

from ledger.genesis import load_genesis, trust_policy

GENESIS = Path(__file__).resolve().parents[2] / "genesis"


def test_the_readme_ceremony_rebuilds_the_example_byte_for_byte(tmp_path: Path) -> None:
    shutil.copytree(GENESIS / "vkeys", tmp_path / "vkeys")
    blocks = [b for b in parse_blocks((GENESIS / "README.md").read_text(encoding="utf-8"))
              if b.runs]
    assert len(blocks) == 2  # assemble, then check
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    outputs = []
    for block in blocks:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.text], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    made = (tmp_path / "genesis.json").read_bytes()
    assert made == (GENESIS / "example-genesis.json").read_bytes()
    policy = (GENESIS / "example-trust-policy").read_bytes()
    assert (tmp_path / "trust-policy").read_bytes() == policy
    genesis = load_genesis(GENESIS / "example-genesis.json")
    assert genesis.genesis_hash() in outputs[1]
    assert trust_policy(genesis) == (GENESIS / "example-trust-policy").read_text(encoding="utf-8")
    assert [v.name for v in genesis.validators] == [
        "cuw-krakow", "mops-krakow", "um-krakow", "zdmk-krakow"]
