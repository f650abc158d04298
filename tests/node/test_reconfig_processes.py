"""Key rotation on a real 4-process devnet, driven by the ``ledger validators`` CLI (issue 6).

Protects the acceptance point: a rotation on a running 4-node cluster completes (propose,
approve by a quorum, submit, in force at the effective height, the rotated validator's node
restarted with its new key file cosigns with it); receipts from before verify with
``ledger verify --policy`` and ``--policy-chain``, receipts from after with ``--policy-chain``.
Every wait is bounded; the processes are stopped with SIGTERM (SIGKILL after 15 s).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from ledger.config import ClientToken, format_node_config, hash_token, load_node_config
from ledger.crypto import read_key_file
from ledger.note import Signature, Verifier, parse_note

from .test_cluster_processes import (
    Devnet,
    N,
    anchor_files,
    eventually,
    http,
    ledger_cli,
    make_files,
    verify_files,
)

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "devnet-admin-token-0123456789"
X = 1  # the node whose validator key is rotated


def _ok(*args: str) -> str:
    result = ledger_cli(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_devnet_key_rotation_with_cli(tmp_path: Path) -> None:
    net = Devnet(tmp_path / "D")
    admin = ClientToken(name="ops", token_sha256=hash_token(ADMIN_TOKEN), admin=True)
    for path in net.configs:
        config = load_node_config(path)
        config = dataclasses.replace(config, clients=(*config.clients, admin))
        path.write_text(format_node_config(config, relative_to=path.parent))
    configs = [load_node_config(p) for p in net.configs]
    genesis = str(net.root / "genesis.json")
    docs = tmp_path / "docs"
    try:
        for i in range(N):
            net.start(i)
        eventually(lambda: all(net.ready(i) for i in range(N)), "all four nodes ready")
        before = make_files(docs, "before", 3)
        anchor_files(net, 0, before)
        verify_files(net, before)

        # The new key of X, generated "on its own machine"; its public half as a .vkeys file.
        x = configs[X]
        new_key = tmp_path / "new.key"
        _ok("keys", "generate", "--name", x.name, "--origin", x.genesis.origin,
            "--out", str(new_key))
        vkeys = tmp_path / "new.vkeys"
        vkeys.write_text(_ok("keys", "show", str(new_key)))

        height = max(net.status(i)["height"] for i in range(N))
        effective = height + 4
        change = tmp_path / "change.json"
        _ok("validators", "propose", "--genesis", genesis, "--node", net.urls[0],
            "--rotate", x.name, "--vkeys-file", str(vkeys),
            "--effective-height", str(effective), "--out", str(change))
        # Two approvals are not a quorum of four: the node refuses (exit 1, "invalid").
        for i in (0, 2):
            _ok("validators", "approve", str(change), "--key", str(configs[i].key_file))
        admin_token = tmp_path / "admin-token"
        admin_token.write_text(ADMIN_TOKEN + "\n")
        refused = ledger_cli("validators", "submit", str(change), "--node", net.urls[0],
                             "--admin-token-file", str(admin_token))
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        _ok("validators", "approve", str(change), "--key", str(configs[3].key_file))
        denied = ledger_cli("validators", "submit", str(change), "--node", net.urls[0],
                            "--admin-token-file", str(net.root / "client-token"))  # not an operator
        assert denied.returncode == 2 and "403" in denied.stderr
        _ok("validators", "submit", str(change), "--node", net.urls[0],
            "--admin-token-file", str(admin_token))

        # Drive the chain to E on every node (X follows with its old key from E on).
        k = 0
        while min(net.status(i)["height"] for i in range(N)) < effective:
            anchor_files(net, k % N, make_files(docs, f"drive{k}", 1))
            k += 1
            assert k < 30, "the chain did not reach the effective height"

        # X's operator stops its node, puts the new key file in place and starts it again.
        proc = net.procs[X]
        assert proc is not None
        proc.terminate()
        proc.wait(timeout=20)
        net.procs[X] = None
        shutil.copyfile(new_key, x.key_file)
        net.start(X)
        eventually(lambda: net.ready(X), "the rotated node ready with its new key", timeout=90)

        after = make_files(docs, "after", 3)
        anchor_files(net, X, after)
        chain = tmp_path / "chain.txt"
        _ok("validators", "policy-chain", "--node", net.urls[2], "--genesis", genesis,
            "--out", str(chain))
        for f in before + after:
            _ok("verify", "--policy-chain", str(chain), "--policy",
                str(net.root / "trust-policy"), "--proof", f"{f}.tlog-proof", str(f))
        verify_files(net, before)  # the genesis policy alone still verifies the old ones

        # X's own checkpoint note carries its cosignature by the NEW cosigner key.
        new_id = Verifier.from_vkey(read_key_file(new_key).cosigner_vkey).key_id
        code, text = http("GET", net.urls[X] + "/v1/checkpoint", timeout=5)
        assert code == 200
        ids = [Signature.parse_line(line).key_id
               for line in text[text.rfind("\n\n") + 2:].splitlines()]
        assert new_id in ids
        assert parse_note(text).text  # a well-formed note
    finally:
        net.stop_all()
