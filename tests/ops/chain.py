"""A real chain written by hand: blocks, commit certificates and quorum checkpoints.

Everything a node would store for committed heights, built from deterministic validator keys
(so a subprocess can rebuild the same validators and keep appending to the same chain): block
``h`` extends block ``h - 1``, carries its certificate as ``last_commit``, has the BFT time the
consensus core demands, commits to the tree head ``Store.preview`` gives, and is stored with a
certificate of precommits from ``signers`` validators. A checkpoint note signed by validator 0
as the log and cosigned by every validator is stored at each new tree size.

Run as a script (``python -m ops.chain DATA_DIR SECONDS``) it keeps committing blocks of 5
digests to ``DATA_DIR`` for ``SECONDS``: the writer of the cross-process hot-backup test.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledger.checkpoint import Checkpoint, checkpoint_note, cosign, sign_checkpoint
from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    CommitCertificate,
    Ed25519Signer,
    ValidatorSet,
    Vote,
    VoteType,
)
from ledger.consensus.block import expected_time
from ledger.consensus.messages import decode_block, decode_certificate
from ledger.consensus.reconfig import (
    ChangeOp,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
)
from ledger.crypto import ValidatorKeys
from ledger.genesis import Genesis, GenesisDraft
from ledger.storage import LmdbStore
from ledger.storage.base import BlockRecord

CHAIN_ID = "ops-test"
ORIGIN = "ledger.example.org/ops-test"
GENESIS_TIME = 1_732_240_800_000
#: Small map for tests: the default 64 GiB reservation is pointless for a few hundred leaves.
MAP_SIZE = 1 << 28


def validator_keys(n: int = 4, tag: bytes = b"ops") -> list[ValidatorKeys]:
    """``n`` validators with fixed seeds, so every process derives the same keys."""
    return [
        ValidatorKeys(
            name=f"validator-{i}", origin=ORIGIN, seed=hashlib.sha256(b"%s %d" % (tag, i)).digest()
        )
        for i in range(1, n + 1)
    ]


def make_genesis(keys: list[ValidatorKeys]) -> Genesis:
    draft = GenesisDraft(
        chain_id=CHAIN_ID,
        origin=ORIGIN,
        validators=tuple(ValidatorInfo.from_keys(k) for k in keys),
    )
    return draft.finalize(genesis_time=GENESIS_TIME)


def digests(n: int, tag: bytes) -> list[bytes]:
    return [hashlib.sha256(tag + i.to_bytes(8, "big")).digest() for i in range(n)]


@dataclass
class Chain:
    """Commits blocks to a store as a 4-validator cluster would."""

    keys: list[ValidatorKeys] = field(default_factory=validator_keys)
    prev: Block | None = None
    prev_cert: CommitCertificate | None = None

    def __post_init__(self) -> None:
        self.genesis = make_genesis(self.keys)
        by_name = {k.name: k for k in self.keys}
        self.ordered = [by_name[v.name] for v in self.genesis.validators]  # genesis order
        self.signers = [Ed25519Signer(seed=k.consensus_key.seed) for k in self.ordered]
        self.validators = ValidatorSet(keys=self.genesis.consensus_keys())
        self.roster = ValidatorRoster(members=[ValidatorInfo.from_keys(k) for k in self.ordered])
        self.pending: tuple[int, list[ValidatorKeys]] | None = None

    def rotate(self, index: int, new: ValidatorKeys, *, effective: int) -> ValidatorSetChange:
        """A change, approved by every current validator, rotating validator ``index`` (genesis
        order) to the identity ``new`` from height ``effective`` on; carry it in a block."""
        change = ValidatorSetChange.create(
            chain_id=CHAIN_ID,
            effective_height=effective,
            prev=self.roster,
            ops=[ChangeOp.rotate(self.ordered[index].consensus_key.public_key,
                                 ValidatorInfo.from_keys(new))],
        ).signed(self.signers)
        keys = list(self.ordered)
        keys[index] = new
        self.pending = (effective, keys)
        return change

    def _enter(self, height: int) -> None:
        """Switch to the scheduled validators once ``height`` reaches the change's height."""
        if self.pending is not None and height >= self.pending[0]:
            self.ordered = self.pending[1]
            self.pending = None
            self.signers = [Ed25519Signer(seed=k.consensus_key.seed) for k in self.ordered]
            self.validators = ValidatorSet(keys=[s.public_key for s in self.signers])
            self.roster = ValidatorRoster(
                members=[ValidatorInfo.from_keys(k) for k in self.ordered]
            )

    def resume(self, store: LmdbStore) -> None:
        """Continue after the last block stored in ``store``."""
        record = store.block(store.last_height())
        if record is not None:
            self.prev = decode_block(record.block)
            self.prev_cert = decode_certificate(record.certificate)

    def commit(
        self,
        store: LmdbStore,
        batch: list[bytes],
        *,
        signers: int = 4,
        checkpoint: bool = True,
        tree_root: bytes | None = None,
        changes: tuple[ValidatorSetChange, ...] = (),
        certifiers: list[Ed25519Signer] | None = None,
    ) -> Block:
        """Commit ``batch`` as the next block, certified by the first ``signers`` validators.

        ``tree_root`` replaces the block's true tree root (a chain that certified a tree other
        than the one stored). ``certifiers`` replaces the validators whose precommits form the
        certificate.
        """
        height = 1 if self.prev is None else self.prev.height + 1
        self._enter(height)
        head = store.preview(batch).head
        block = Block(
            height=height,
            prev_hash=GENESIS_PREV_HASH if self.prev is None else self.prev.hash,
            time=expected_time(
                height=height,
                last_commit=self.prev_cert,
                prev_block=self.prev,
                genesis_time=GENESIS_TIME,
            ),
            proposer=self.validators.proposer(height, 0),
            tree_size=head.size,
            tree_root=head.root if tree_root is None else tree_root,
            digests=tuple(batch),
            last_commit=self.prev_cert,
            changes=changes,
        )
        votes = [
            Vote.create(
                signer,
                type=VoteType.PRECOMMIT,
                chain_id=CHAIN_ID,
                height=height,
                round=0,
                block_hash=block.hash,
                timestamp=block.time + 1 + i,
            )
            for i, signer in enumerate(
                self.signers[:signers] if certifiers is None else certifiers
            )
        ]
        cert = CommitCertificate.from_votes(votes)
        record = BlockRecord(height=height, block=block.encode(), certificate=cert.encode())
        result = store.append(batch, block=record)
        assert result.head == head or tree_root is not None
        if checkpoint and head.size:
            store.put_checkpoint(head.size, self.checkpoint_note(head.size, head.root).encode())
        self.prev, self.prev_cert = block, cert
        return block

    def checkpoint_note(
        self, size: int, root: bytes, cosigners: list[ValidatorKeys] | None = None
    ) -> str:
        """A note signed by validator 0 as the log, cosigned by ``cosigners`` (default: all)."""
        body = Checkpoint(origin=ORIGIN, size=size, root=root)
        sigs = [sign_checkpoint(body, key=self.ordered[0].log_key)]
        sigs += [
            cosign(body, name=k.name, key=k.cosigner_key, timestamp=GENESIS_TIME // 1000 + size)
            for k in (self.ordered if cosigners is None else cosigners)
        ]
        return checkpoint_note(body, sigs)


def build_store(path: Path, heights: int = 4, per_block: int = 12) -> Chain:
    """A closed store at ``path`` with ``heights`` committed blocks of ``per_block`` digests
    (the second block repeats one digest of the first, as clients may)."""
    chain = Chain()
    path.mkdir(parents=True, exist_ok=True)
    with LmdbStore.open(path, map_size=MAP_SIZE) as store:
        for h in range(1, heights + 1):
            batch = digests(per_block, b"block %d" % h)
            if h == 2:
                batch.append(digests(1, b"block 1")[0])  # already anchored: no new leaf
            chain.commit(store, batch)
    return chain


def _write_for(path: Path, seconds: float) -> None:
    """Keep committing blocks to the store at ``path`` for ``seconds`` (the node's role)."""
    chain = Chain()
    deadline = time.monotonic() + seconds
    with LmdbStore.open(path, map_size=MAP_SIZE) as store:
        chain.resume(store)
        print("writing", flush=True)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            chain.commit(store, digests(5, b"writer %d" % n))


if __name__ == "__main__":
    _write_for(Path(sys.argv[1]), float(sys.argv[2]))
