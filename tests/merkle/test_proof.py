"""Inclusion and consistency proofs: generated from full nodes, equal to RFC 9162, verified.

The oracle (``oracle.py``) is the recursive text of RFC 9162 2.1; the code under test reads
only full nodes. Sizes 1..64 are exhaustive; Hypothesis draws larger sizes.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError, MalformedError, NotFoundError, VerificationError
from ledger.merkle import (
    EMPTY_ROOT,
    InMemoryTree,
    consistency_proof,
    inclusion_proof,
    inclusion_proofs,
    root_at,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

from .oracle import CountingReader, leaves, mth, path, split, subproof

N_EXHAUSTIVE = 64
N_LARGE = 3000
LEAVES = leaves(N_LARGE)
SMALL = InMemoryTree(LEAVES[: N_EXHAUSTIVE + 1])
LARGE = CountingReader(LEAVES)
ROOTS = {n: mth(LEAVES[:n]) for n in range(N_EXHAUSTIVE + 1)}


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _directions(index: int, size: int) -> list[bool]:
    """For each element of PATH(index, D[size]), bottom up: is the sibling on the left?"""
    if size == 1:
        return []
    k = split(size)
    if index < k:
        return [*_directions(index, k), False]
    return [*_directions(index - k, size - k), True]


def _log2(n: int) -> int:
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


# ---------------------------------------------------------------------------- inclusion


@pytest.mark.parametrize("size", range(1, N_EXHAUSTIVE + 1))
def test_every_leaf_inclusion_proof_equals_rfc_path_and_verifies(size: int) -> None:
    root = ROOTS[size]
    for index in range(size):
        proof = inclusion_proof(SMALL, index, size)
        assert proof == path(index, LEAVES[:size])
        verify_inclusion(LEAVES[index], index, size, proof, root)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_inclusion_proofs_verify_at_large_sizes(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=N_EXHAUSTIVE, max_value=N_LARGE))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof(LARGE, index, size)
    assert proof == path(index, LEAVES[:size])
    verify_inclusion(LEAVES[index], index, size, proof, mth(LEAVES[:size]))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_proof_leaf_index_or_root_is_rejected(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=N_EXHAUSTIVE))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    proof = inclusion_proof(SMALL, index, size)
    root, leaf = ROOTS[size], LEAVES[index]
    target = data.draw(st.sampled_from(["proof", "leaf", "root", "index"] if proof else
                                       ["leaf", "root", "index"]))
    with pytest.raises(VerificationError):
        if target == "proof":
            i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
            bit = data.draw(st.integers(min_value=0, max_value=255))
            bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
            verify_inclusion(leaf, index, size, bad, root)
        elif target == "leaf":
            bit = data.draw(st.integers(min_value=0, max_value=255))
            verify_inclusion(_flip(leaf, bit), index, size, proof, root)
        elif target == "root":
            bit = data.draw(st.integers(min_value=0, max_value=255))
            verify_inclusion(leaf, index, size, proof, _flip(root, bit))
        else:
            bit = data.draw(st.integers(min_value=0, max_value=63))
            verify_inclusion(leaf, index ^ (1 << bit), size, proof, root)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=N_EXHAUSTIVE),
    st.integers(min_value=0, max_value=N_EXHAUSTIVE),
    st.integers(min_value=0, max_value=63),
)
def test_a_size_bit_flip_is_rejected_unless_the_path_shape_is_unchanged(
    size: int, index_seed: int, bit: int
) -> None:
    # RFC 9162 inclusion proofs bind the size only through the path's shape: e.g. leaf 0 of a
    # 5-leaf tree has the same proof and root as a claim of size 7. That is why a receipt binds
    # (size, root) with the signed checkpoint. Here: a flip is accepted exactly when the shape
    # (sibling sides, bottom up) is the same for both sizes, and rejected otherwise.
    index = index_seed % size
    proof = inclusion_proof(SMALL, index, size)
    flipped = size ^ (1 << bit)
    same_shape = index < flipped and _directions(index, flipped) == _directions(index, size)
    if same_shape:
        verify_inclusion(LEAVES[index], index, flipped, proof, ROOTS[size])
    else:
        with pytest.raises(VerificationError):
            verify_inclusion(LEAVES[index], index, flipped, proof, ROOTS[size])


def test_the_size_is_not_bound_for_a_left_edge_leaf_known_rfc_property() -> None:
    # Documents the property above with the smallest example, so nobody relies on the proof
    # alone to establish the tree size.
    proof = inclusion_proof(SMALL, 0, 5)
    verify_inclusion(LEAVES[0], 0, 7, proof, ROOTS[5])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 3), (-1, 4), (0, -1)])
def test_inclusion_proof_for_a_leaf_outside_the_tree_is_malformed(index: int, size: int) -> None:
    with pytest.raises(MalformedError):
        inclusion_proof(SMALL, index, size)


def test_inclusion_proof_beyond_the_stored_tree_raises_not_found() -> None:
    with pytest.raises(NotFoundError):
        inclusion_proof(SMALL, 0, N_EXHAUSTIVE + 2)


def test_verify_inclusion_rejects_index_at_or_beyond_size() -> None:
    with pytest.raises(VerificationError):
        verify_inclusion(LEAVES[0], 1, 1, [], ROOTS[1])
    with pytest.raises(VerificationError):
        verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    with pytest.raises(MalformedError):
        verify_inclusion(LEAVES[0], -1, 1, [], ROOTS[1])


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_inclusion_proof_reads_are_logarithmic(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=N_LARGE))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    LARGE.reads = 0
    inclusion_proof(LARGE, index, size)
    assert LARGE.reads <= 2 * _log2(size) + 1


# ---------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("new", range(1, N_EXHAUSTIVE + 1))
def test_consistency_proofs_between_every_pair_of_small_sizes(new: int) -> None:
    for old in range(1, new + 1):
        proof = consistency_proof(SMALL, old, new)
        assert proof == ([] if old == new else subproof(old, LEAVES[:new], True))
        verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_consistency_proofs_verify_at_large_sizes(data: st.DataObject) -> None:
    new = data.draw(st.integers(min_value=2, max_value=N_LARGE))
    old = data.draw(st.integers(min_value=1, max_value=new))
    LARGE.reads = 0
    proof = consistency_proof(LARGE, old, new)
    assert LARGE.reads <= 3 * _log2(new) + 2
    if old < new:
        assert proof == subproof(old, LEAVES[:new], True)
    verify_consistency(old, new, mth(LEAVES[:old]), mth(LEAVES[:new]), proof)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bit_flip_in_consistency_proof_or_roots_is_rejected(data: st.DataObject) -> None:
    new = data.draw(st.integers(min_value=2, max_value=N_EXHAUSTIVE))
    old = data.draw(st.integers(min_value=1, max_value=new - 1))
    proof = consistency_proof(SMALL, old, new)
    old_root, new_root = ROOTS[old], ROOTS[new]
    target = data.draw(st.sampled_from(["proof", "old_root", "new_root"]))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    with pytest.raises(VerificationError):
        if target == "proof":
            i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
            bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
            verify_consistency(old, new, old_root, new_root, bad)
        elif target == "old_root":
            verify_consistency(old, new, _flip(old_root, bit), new_root, proof)
        else:
            verify_consistency(old, new, old_root, _flip(new_root, bit), proof)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_consistency_between_unrelated_trees_is_rejected(data: st.DataObject) -> None:
    # A proof for the real tree does not link the old root to a forked new tree.
    new = data.draw(st.integers(min_value=2, max_value=N_EXHAUSTIVE))
    old = data.draw(st.integers(min_value=1, max_value=new - 1))
    changed = data.draw(st.integers(min_value=0, max_value=new - 1))
    forked = list(LEAVES[:new])
    forked[changed] = leaves(1, seed=99)[0]
    proof = consistency_proof(SMALL, old, new)
    with pytest.raises(VerificationError):
        verify_consistency(old, new, ROOTS[old], mth(forked), proof)


@pytest.mark.parametrize(("old", "new"), [(0, 0), (0, 5), (6, 5), (-1, 3)])
def test_consistency_proof_for_meaningless_sizes_is_malformed(old: int, new: int) -> None:
    with pytest.raises(MalformedError):
        consistency_proof(SMALL, old, new)


def test_verify_consistency_rules_for_equal_and_zero_sizes() -> None:
    verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    with pytest.raises(VerificationError):
        verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    with pytest.raises(VerificationError):
        verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    with pytest.raises(VerificationError):
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(VerificationError):
        verify_consistency(0, 3, EMPTY_ROOT, ROOTS[3], [])
    with pytest.raises(VerificationError):
        verify_consistency(4, 3, ROOTS[4], ROOTS[3], [])
    with pytest.raises(MalformedError):
        verify_consistency(3, 4, ROOTS[3][:31], ROOTS[4], consistency_proof(SMALL, 3, 4))


# ---------------------------------------------------------------------------- roots


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_subtree_root_of_any_range_equals_the_mth_of_that_range(data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=N_EXHAUSTIVE - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=N_EXHAUSTIVE + 1))
    assert subtree_root(SMALL, start, end) == mth(LEAVES[start:end])


@pytest.mark.parametrize("size", range(N_EXHAUSTIVE + 1))
def test_root_at_every_size_equals_the_mth(size: int) -> None:
    assert root_at(SMALL, size) == ROOTS[size]


def test_root_at_reads_popcount_nodes() -> None:
    for size in (1, 2, 3, 1000, 2047, 2048, N_LARGE):
        LARGE.reads = 0
        assert root_at(LARGE, size) == mth(LEAVES[:size])
        assert LARGE.reads == size.bit_count()


def test_root_and_range_arguments_are_checked() -> None:
    with pytest.raises(MalformedError):
        root_at(SMALL, -1)
    with pytest.raises(MalformedError):
        subtree_root(SMALL, 3, 3)
    with pytest.raises(LedgerError):
        root_at(SMALL, N_EXHAUSTIVE + 2)


# ---- many paths at once (receipts of one block are built together)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, N_LARGE).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), max_size=40))))
def test_batched_paths_equal_the_rfc_paths_and_lead_to_the_root(case: tuple[int, list[int]]
                                                                 ) -> None:
    size, indices = case
    paths, root = inclusion_proofs(LARGE, indices, size)
    assert paths == [path(i, LEAVES[:size]) for i in indices]
    assert root == mth(LEAVES[:size])
    given_leaves = [LEAVES[i] for i in indices]
    assert inclusion_proofs(LARGE, indices, size, given_leaves) == (paths, root)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, N_LARGE).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=1, max_size=20),
                        st.integers(0, 255))))
def test_a_wrong_leaf_changes_the_batched_root(case: tuple[int, list[int], int]) -> None:
    # The root is folded from the given leaves: one altered leaf can never still reach it.
    size, indices, bit = case
    wrong = [LEAVES[i] for i in indices]
    wrong[0] = _flip(wrong[0], bit)
    if len(set(indices)) < len(indices) and indices.count(indices[0]) > 1:
        with pytest.raises(MalformedError, match="two different hashes"):
            inclusion_proofs(LARGE, indices, size, wrong)
        return
    _, root = inclusion_proofs(LARGE, indices, size, wrong)
    assert root != mth(LEAVES[:size])


def test_batched_paths_refuse_bad_input() -> None:
    with pytest.raises(MalformedError):
        inclusion_proofs(LARGE, [5], 5)
    with pytest.raises(MalformedError):
        inclusion_proofs(LARGE, [1, 2], 5, [LEAVES[1]])
    assert inclusion_proofs(LARGE, [], 7) == ([], mth(LEAVES[:7]))
