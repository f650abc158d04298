"""Blocks, certificates and checkpoint notes: stored compactly, returned byte for byte.

The store keeps a block without the digests the tree already holds, names repeated keys and
names by id, keeps a certificate's precommits once when the next block's last commit carries
them, and drops from a note the size and root it can re-derive. These tests hold it to the
bytes it was given in every shape (real consensus blocks, a repeated digest, a digest already
in the log, blocks that are not consensus blocks at all), to the per-block disk budget, and to
staying readable when a linked record is repaired from a peer.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest
from ops.chain import Chain, digests

from ledger.consensus import CommitCertificate
from ledger.consensus.messages import decode_certificate
from ledger.storage import BlockRecord, DamageError, LmdbStore

from .conftest import TEST_MAP_SIZE, open_lmdb


def pages(path: Path, *names: bytes) -> int:
    env = lmdb.open(str(path), max_dbs=40, readonly=True, lock=False, map_size=TEST_MAP_SIZE)
    try:
        handles = [env.open_db(name, create=False) for name in names]
        with env.begin() as txn:
            total = 0
            for handle in handles:
                st = txn.stat(handle)
                total += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            return total
    finally:
        env.close()


@pytest.mark.parametrize("signers", [3, 4])
def test_small_blocks_cost_under_a_kilobyte_each(tmp_path: Path, signers: int) -> None:
    # 200 one-digest blocks of a 4-validator chain: quorum certificates of `signers`
    # precommits, a checkpoint note with a log signature and 4 cosignatures per block.
    chain = Chain()
    with open_lmdb(tmp_path) as store:
        for h in range(1, 201):
            chain.commit(store, digests(1, b"one %d" % h), signers=signers)
        records = [store.block(h) for h in range(1, 201)]
        notes = [store.checkpoint(size) for size in store.checkpoint_sizes()]
    stored = pages(tmp_path, b"blocks", b"checkpoints", b"dict") * 4096 / 200
    given = sum(len(r.block) + len(r.certificate) for r in records if r) / 200
    given += sum(len(n) for n in notes if n) / 200
    assert stored <= 1024, (stored, given)
    assert stored < given / 2  # what the node hands in, about 2 KB a block


def test_blocks_come_back_byte_for_byte_in_every_shape(tmp_path: Path) -> None:
    chain = Chain()
    first = digests(5, b"first")
    with open_lmdb(tmp_path) as store:
        chain.commit(store, first)  # compact: its digests are the leaves it appended
        chain.commit(store, [*digests(3, b"b"), digests(3, b"b")[0]])  # a repeated digest
        chain.commit(store, [first[2], *digests(2, b"c")])  # a digest already in the log
        chain.commit(store, [])  # no digests at all
        chain.commit(store, digests(4, b"e"), signers=3)
        given = [store.block(h) for h in range(1, 6)]
        store.append(digests(2, b"raw"), block=BlockRecord(height=6, block=b"not msgpack",
                                                           certificate=b"\xc1"))
        store.append([], block=BlockRecord(height=7, block=b"\x93\x01\x02\x03",
                                           certificate=b""))
    with LmdbStore.open(tmp_path, readonly=True) as store:
        assert [store.block(h) for h in range(1, 6)] == given
        assert store.block(6) == BlockRecord(height=6, block=b"not msgpack",
                                             certificate=b"\xc1")
        assert store.block(7) == BlockRecord(height=7, block=b"\x93\x01\x02\x03",
                                             certificate=b"")
        store.check()


def test_linked_certificates_survive_repairs_from_a_peer(tmp_path: Path) -> None:
    # Block 2's certificate keeps its signatures in block 3's last commit. Replacing record 3
    # (the block is the same on every validator) or record 2 with another node's quorum
    # certificate (3 of the 4 precommits) keeps every record readable and exact.
    chain = Chain()
    with open_lmdb(tmp_path) as store:
        for h in range(1, 5):
            chain.commit(store, digests(3, b"h%d" % h))
        original = [store.block(h) for h in range(1, 5)]
        assert all(original)
        record2, record3 = original[1], original[2]
        assert record2 is not None and record3 is not None
        store.repair_block(record3)
        assert [store.block(h) for h in range(1, 5)] == original
        full = decode_certificate(record2.certificate)
        quorum = CommitCertificate(height=full.height, round=full.round,
                                   block_hash=full.block_hash, precommits=full.precommits[1:])
        other = BlockRecord(height=2, block=record2.block, certificate=quorum.encode())
        store.repair_block(other)
        assert store.block(2) == other
        assert store.block(3) == record3
        store.check()


def test_damage_in_the_next_record_names_it(tmp_path: Path) -> None:
    chain = Chain()
    with open_lmdb(tmp_path) as store:
        for h in range(1, 4):
            chain.commit(store, digests(3, b"h%d" % h))
    env = lmdb.open(str(tmp_path), max_dbs=40, map_size=TEST_MAP_SIZE)
    blocks = env.open_db(b"blocks", create=False)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get((3).to_bytes(8, "big"), db=blocks))
        value[10] ^= 1
        txn.put((3).to_bytes(8, "big"), bytes(value), db=blocks)
    env.close()
    with LmdbStore.open(tmp_path) as store:
        with pytest.raises(DamageError, match="blocks/3"):
            store.block(2)  # its certificate's signatures are in block 3
        assert store.block(1) is not None
