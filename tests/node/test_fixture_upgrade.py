"""Stores written before the replica rewrite open, serve and keep growing (issue 10).

``tests/fixtures/devnet-v1`` holds a 4-validator devnet's data directories and the 51 receipts
its nodes handed out, made by the node as it was before ``ledger/replica`` existed. Today's
node opens those very stores: every old receipt verifies offline, every node serves a receipt
for each of those digests at the same index, and the cluster anchors more.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import aiohttp

from ledger.config import load_node_config
from ledger.devnet import free_base_port
from ledger.node import Node
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt

from .harness import client_session, eventually, run

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "devnet-v1"
OLD_BASE = 52725


def _copy_with_ports(tmp: Path) -> tuple[Path, int]:
    root = tmp / "devnet-v1"
    shutil.copytree(FIXTURE, root)
    for key in (root / "keys").glob("*.key"):  # git keeps no 0600: a checkout has 0644
        key.chmod(0o600)
    base = free_base_port(4)
    for config in (root / "nodes").glob("*.toml"):
        text = config.read_text(encoding="utf-8")
        text = re.sub(r"\b(5272[5-8])\b", lambda m: str(base + int(m.group(1)) - OLD_BASE), text)
        config.write_text(text, encoding="utf-8")
    return root, base


def test_old_stores_serve_their_receipts_and_keep_anchoring(tmp_path: Path) -> None:
    root, base = _copy_with_ports(tmp_path)
    policy = parse_policy((root / "trust-policy").read_text(encoding="utf-8"))
    receipts: dict[str, str] = json.loads((root / "receipts.json").read_text(encoding="utf-8"))
    token = (root / "client-token").read_text(encoding="utf-8").strip()
    old = {d: verify_receipt(text, policy, bytes.fromhex(d)).index
           for d, text in receipts.items()}  # the old receipts themselves still verify

    async def main() -> None:
        nodes = [Node(load_node_config(root / "nodes" / f"validator-{i}.toml"))
                 for i in range(1, 5)]
        for node in nodes:
            await node.start()
        try:
            async with client_session() as http:
                for i in range(4):
                    url = f"http://127.0.0.1:{base + i}"
                    for d, index in old.items():
                        async with http.get(f"{url}/v1/proofs/{d}") as r:
                            assert r.status == 200, await r.text()
                            again = verify_receipt(await r.text(), policy, bytes.fromhex(d))
                            assert again.index == index
                await _anchor_more(http, f"http://127.0.0.1:{base + 2}", token, policy)
        finally:
            for node in nodes:
                await node.shutdown(grace=0)

    run(main())


async def _anchor_more(http: aiohttp.ClientSession, url: str, token: str, policy: object) -> None:
    async def ready() -> bool:
        async with http.get(url + "/readyz") as r:
            return r.status == 200

    await eventually(ready, what="the upgraded cluster ready")
    fresh = "ab" * 32
    async with http.post(url + "/v1/anchors?wait=true", json={"digests": [fresh]},
                         headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    entry = body["anchors"][0]
    assert entry["index"] >= 51
    verify_receipt(entry["receipt"], policy, bytes.fromhex(fresh))  # type: ignore[arg-type]
