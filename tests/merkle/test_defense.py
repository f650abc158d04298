"""Attacks on the tree, written as tests (RFC 9162 2.1.1 domain separation; proof shape).

- Second preimage: without the 0x00/0x01 prefixes, the concatenation of two child hashes is a
  valid "leaf" whose hash is the parent node, so a shorter tree with a forged leaf would have
  the same root. With the prefixes, presenting an interior node (or its preimage) as a leaf
  gives a different hash, and every such proof fails.
- Proof shape: a verifier must consume exactly the elements the (index, size) pair calls for;
  appending, dropping, duplicating or reordering elements must fail.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError, VerificationError
from ledger.merkle import (
    InMemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

from .oracle import leaves

DATA = [i.to_bytes(32, "big") for i in range(16)]
TREE = InMemoryTree([leaf_hash(d) for d in DATA])
ROOT = TREE.root()


def test_leaf_and_node_hashes_of_the_same_bytes_differ() -> None:
    a, b = leaf_hash(DATA[0]), leaf_hash(DATA[1])
    assert leaf_hash(a + b) != node_hash(a, b)
    assert hashlib.sha256(a + b).digest() != node_hash(a, b)


@pytest.mark.parametrize("level", [1, 2, 3])
def test_second_preimage_interior_node_presented_as_leaf_is_rejected(level: int) -> None:
    # The attacker claims a tree of 16 >> level leaves whose leaf *data* are the preimages of the
    # interior nodes at `level` (left child || right child), with the genuine audit path above
    # each node. Without domain separation the leaf hash would equal the node hash and the
    # proof would verify; with the 0x00 leaf prefix it is a different hash.
    for index in range(16 >> level):
        left, right = TREE.node(level - 1, 2 * index), TREE.node(level - 1, 2 * index + 1)
        forged_leaf = leaf_hash(left + right)
        genuine_path = inclusion_proof(TREE, index << level, 16)[level:]
        with pytest.raises(VerificationError):
            verify_inclusion(forged_leaf, index, 16 >> level, genuine_path, ROOT)
        # The same path does verify the genuine node hash at that position: the rejection above
        # is due to the prefix alone, not to a wrong path.
        verify_inclusion(TREE.node(level, index), index, 16 >> level, genuine_path, ROOT)


def test_second_preimage_unprefixed_tree_would_have_been_fooled() -> None:
    # Negative control: the same attack against a tree with no domain separation succeeds, so
    # the rejection above is due to the prefixes, not to a broken test.
    def naive(nodes: list[bytes]) -> bytes:
        while len(nodes) > 1:
            nodes = [
                hashlib.sha256(nodes[i] + nodes[i + 1]).digest() for i in range(0, len(nodes), 2)
            ]
        return nodes[0]

    base = [hashlib.sha256(d).digest() for d in DATA[:4]]
    forged = [base[0] + base[1], base[2] + base[3]]  # 2 "documents", 64 bytes each
    assert naive(base) == naive([hashlib.sha256(f).digest() for f in forged])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_inclusion_proofs_with_extra_missing_or_reordered_elements_are_rejected(
    data: st.DataObject,
) -> None:
    all_leaves = leaves(40)
    size = data.draw(st.integers(min_value=1, max_value=40))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    tree = InMemoryTree(all_leaves[:size])
    root = tree.root()
    proof = tree.inclusion_proof(index)
    extra = data.draw(st.sampled_from([root, all_leaves[index], b"\x00" * 32]))
    mutations = [
        [*proof, extra],
        [extra, *proof],
        proof[:-1],
        proof[1:],
        [*proof, *proof[-1:]],
        list(reversed(proof)) if len(proof) > 1 and proof[0] != proof[-1] else proof[:-1],
    ]
    for bad in mutations:
        if bad == proof:
            continue
        with pytest.raises(VerificationError):
            verify_inclusion(all_leaves[index], index, size, bad, root)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_consistency_proofs_with_extra_or_missing_elements_are_rejected(
    data: st.DataObject,
) -> None:
    all_leaves = leaves(40)
    new = data.draw(st.integers(min_value=2, max_value=40))
    old = data.draw(st.integers(min_value=1, max_value=new - 1))
    tree = InMemoryTree(all_leaves[:new])
    old_root, new_root = tree.root(old), tree.root()
    proof = consistency_proof(tree, old, new)
    for bad in ([*proof, new_root], [old_root, *proof], proof[:-1], proof[1:], []):
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, new_root, bad)


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_hashes_of_the_wrong_length_raise_only_ledger_errors(length: int) -> None:
    proof = inclusion_proof(TREE, 3, 16)
    odd = b"\x01" * length
    with pytest.raises(LedgerError):
        verify_inclusion(odd, 3, 16, proof, ROOT)
    with pytest.raises(LedgerError):
        verify_inclusion(leaf_hash(DATA[3]), 3, 16, proof, odd)
    with pytest.raises(LedgerError):
        verify_inclusion(leaf_hash(DATA[3]), 3, 16, [odd, *proof[1:]], ROOT)
    with pytest.raises(LedgerError):
        verify_consistency(3, 16, odd, ROOT, consistency_proof(TREE, 3, 16))
