"""Validator-key rotation on a running in-process 4-node cluster (issue 6, item 3).

Protects: a quorum-approved change submitted to one node is gossiped, carried in a block and in
force at its effective height on every node; the rotated validator's node switches to its new
key; receipts from before verify with the genesis policy and with the policy chain, receipts
from after with the chain; a checkpoint cosigned by the rotated-out (leaked) key plus too few
members of the new set fails; the admin endpoint refuses what it must; a restart replays the
history from the stored blocks.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import aiohttp
import pytest

from ledger.checkpoint import Checkpoint, cosign, parse_checkpoint_body
from ledger.config import ClientToken, hash_token
from ledger.consensus.messages import decode_block
from ledger.consensus.reconfig import ChangeOp, ValidatorInfo, ValidatorSetChange
from ledger.crypto import ValidatorKeys
from ledger.errors import VerificationError
from ledger.node import Node
from ledger.note import Signature, Verifier, parse_note
from ledger.policy_chain import (
    parse_policy_chain,
    policy_chain_from_blocks,
    verify_policy_chain,
    verify_receipt_with_chain,
)
from ledger.receipt import verify_receipt

from .harness import (
    ORIGIN,
    Cluster,
    auth,
    bind_port,
    client_session,
    digest,
    eventually,
    make_cluster,
    run,
)

ADMIN_TOKEN = "admin-token-0123456789"
X = 1  # the validator whose key is rotated (v2)


def _with_admin(cluster: Cluster) -> None:
    admin = ClientToken(name="ops", token_sha256=hash_token(ADMIN_TOKEN), admin=True)
    cluster.configs = [dataclasses.replace(c, clients=(*c.clients, admin))
                       for c in cluster.configs]


async def _start_with_keys(cluster: Cluster, i: int, extra: tuple[ValidatorKeys, ...]) -> Node:
    """(Re)start node ``i`` holding its key file plus ``extra`` keys (harness.start + keys)."""
    sock = cluster.sockets[i] or bind_port(cluster.configs[i].listen_port)
    cluster.sockets[i] = None
    store = None if cluster.lmdb else cluster.stores[i]
    node = Node(cluster.configs[i], keys=cluster.keys[i], store=store, extra_keys=extra)
    await node.start(sock=sock)
    cluster.nodes[i] = node
    return node


async def _anchor(http: aiohttp.ClientSession, url: str, digests: list[bytes]) -> list[str]:
    async with http.post(url + "/v1/anchors?wait=true", headers=auth(),
                         json={"digests": [d.hex() for d in digests]}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    return [item["receipt"] for item in body["anchors"]]


def _post_change(http: aiohttp.ClientSession, url: str, change: ValidatorSetChange,
                 token: str | None) -> aiohttp.client._RequestContextManager:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return http.post(url + "/v1/admin/validator-changes", headers=headers,
                     json={"change": base64.b64encode(change.encode()).decode()})


def _split(receipt: str) -> tuple[str, list[str]]:
    """(everything before the note's signature lines, the signature lines)."""
    cut = receipt.rfind("\n\n")
    return receipt[:cut + 2], receipt[cut + 2:].splitlines()


def _checkpoint_of(receipt: str) -> Checkpoint:
    return parse_checkpoint_body(parse_note(receipt[receipt.index("\n\n") + 2:]).text)


def test_key_rotation_on_running_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        cluster = make_cluster(tmp_path, lmdb=False)
        _with_admin(cluster)
        genesis = cluster.genesis
        genesis_policy = genesis.policy()
        old = cluster.keys[X]
        new = ValidatorKeys.generate(name=old.name, origin=ORIGIN)
        await cluster.start_all()
        try:
            async with client_session() as http:
                before_digests = [digest(k, "before") for k in range(6)]
                before = await _anchor(http, cluster.url(0), before_digests)

                # X's node is restarted holding its old and its new key: it switches at E.
                await cluster.stop(X)
                await _start_with_keys(cluster, X, (new,))

                height = max(cluster.node(i).store.last_height() for i in range(4))  # type: ignore[union-attr]
                effective = height + 4
                roster = genesis.roster()
                unsigned = ValidatorSetChange.create(
                    chain_id=genesis.chain_id, effective_height=effective, prev=roster,
                    ops=[ChangeOp.rotate(old.consensus_key.public_key,
                                         ValidatorInfo.from_keys(new))],
                )
                approvers = [cluster.keys[i].consensus_key for i in (0, 2, 3)]
                too_few = unsigned.signed(approvers[:2])
                change = unsigned.signed(approvers)

                # The admin endpoint: token, role, body and quorum are all checked.
                async with _post_change(http, cluster.url(0), change, None) as r:
                    assert r.status == 401
                async with _post_change(http, cluster.url(0), change, "good-token-0123456789") as r:
                    assert r.status == 403  # an anchoring client, not an operator
                async with _post_change(http, cluster.url(0), too_few, ADMIN_TOKEN) as r:
                    assert r.status == 422, await r.text()
                async with http.post(cluster.url(0) + "/v1/admin/validator-changes",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                     json={"change": base64.b64encode(b"\x93junk").decode()}
                                     ) as r:
                    assert r.status == 400
                async with _post_change(http, cluster.url(0), change, ADMIN_TOKEN) as r:
                    assert r.status == 202, await r.text()
                    assert (await r.json())["change_id"] == change.change_id.hex()

                # Gossiped and carried in a block on every node (no anchor needed for that).
                def scheduled() -> bool:
                    return all(cluster.node(i).replica.driver.validators.history.latest.start_height
                               == effective for i in range(4))
                await eventually(scheduled, what="the change committed on every node")
                assert all(len(cluster.node(i).replica.driver.changes) == 0 for i in range(4))

                # Drive the chain past E; then anchor the "after" batch.
                k = 0
                while min(cluster.node(i).store.last_height()  # type: ignore[union-attr]
                          for i in range(4)) < effective:
                    await _anchor(http, cluster.url(k % 4), [digest(k, "drive")])
                    k += 1
                after_digests = [digest(k, "after") for k in range(6)]
                after = await _anchor(http, cluster.url(2), after_digests)

                node_x = cluster.node(X)
                assert node_x.replica.driver.core is not None
                assert node_x.replica.driver.core.public_key == new.consensus_key.public_key
                driver = node_x.replica.driver
                assert driver.validators.envelope_key(driver.core.height).public_key \
                    == new.consensus_key.public_key

                # The policy chain the node serves is the one of its blocks, and verifies.
                async with http.get(cluster.url(3) + "/v1/policy-chain") as r:
                    assert r.status == 200
                    chain_text = await r.text()
                chain = parse_policy_chain(chain_text)
                store3 = cluster.node(3).store
                assert store3 is not None
                blocks = [decode_block(store3.block(h).block)  # type: ignore[union-attr]
                          for h in range(1, store3.last_height() + 1)]
                assert chain == policy_chain_from_blocks(genesis.chain_id, roster, blocks)
                periods = verify_policy_chain(chain)
                assert len(periods) == 2 and len(chain.links) == 1
                boundary = chain.links[0].boundary_size
                new_policy = periods[1].policy

                for d, text in zip(before_digests, before, strict=True):
                    verify_receipt(text, genesis_policy, d)
                    verify_receipt_with_chain(text, chain, d, genesis_policy=genesis_policy)
                for d, text in zip(after_digests, after, strict=True):
                    assert _checkpoint_of(text).size > boundary  # cosigned by the new set
                    verify_receipt_with_chain(text, chain, d, genesis_policy=genesis_policy)
                    verify_receipt(text, new_policy, d)

                # Precisely the case the chain exists for: a post-change checkpoint cosigned by
                # X's NEW key plus two others is a quorum of the new set, but the genesis policy
                # alone sees only two known cosigners.
                head, lines = _split(after[0])
                body = _checkpoint_of(after[0])
                size = body.size

                def own_lines() -> dict[int, str] | None:
                    out = {}
                    for i in range(4):
                        node_i = cluster.node(i)
                        collector = node_i.replica.driver.validators.collector(node_i.store.size)
                        mine = None if collector is None else collector.own(size)
                        if mine is None:
                            return None
                        out[i] = mine.line
                    return out
                await eventually(lambda: own_lines() is not None, what="every node cosigned")
                own = own_lines()
                assert own is not None
                log_line = lines[0]
                # X's node cosigned with its new cosigner key.
                assert Signature.parse_line(own[X]).key_id \
                    == Verifier.from_vkey(new.cosigner_vkey).key_id
                forged = head + "\n".join([log_line, own[X], own[0], own[2]]) + "\n"
                verify_receipt_with_chain(forged, chain, after_digests[0],
                                          genesis_policy=genesis_policy)
                with pytest.raises(VerificationError):
                    verify_receipt(forged, genesis_policy, after_digests[0])

                # The attack: X's rotated-out key leaked. The attacker cosigns the real
                # post-change checkpoint with it; with two honest cosignatures of the new set
                # that is three genesis keys, enough for an outdated verifier, and too few for
                # the policy of the checkpoint's period.
                stolen = cosign(body, name=old.name, key=old.cosigner_key,
                                timestamp=1_800_000_000).line().rstrip("\n")
                attack = head + "\n".join([log_line, stolen, own[0], own[2]]) + "\n"
                verify_receipt(attack, genesis_policy, after_digests[0])  # the outdated view
                with pytest.raises(VerificationError):
                    verify_receipt_with_chain(attack, chain, after_digests[0],
                                              genesis_policy=genesis_policy)
                with pytest.raises(VerificationError):
                    verify_receipt(attack, new_policy, after_digests[0])

                # A restart replays the history from the stored blocks and keeps anchoring.
                await cluster.stop(0)
                restarted = await cluster.start(0)
                assert restarted.replica.driver.validators.history.latest.start_height == effective
                assert restarted.replica.driver.validators.policy_chain() == chain
                again = [digest(k, "restart") for k in range(3)]
                for d, text in zip(again, await _anchor(http, cluster.url(0), again),
                                   strict=True):
                    verify_receipt_with_chain(text, chain, d, genesis_policy=genesis_policy)
        finally:
            await cluster.stop_all()

    run(main())
