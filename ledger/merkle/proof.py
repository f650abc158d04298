"""RFC 9162 inclusion and consistency proofs: generation from full nodes, and verification.

Generation (RFC 9162 sections 2.1.3.1 and 2.1.4.1) reads the tree through :class:`NodeReader`,
which serves *full* nodes only: node ``(level, index)`` is the root of the perfect subtree over
leaves ``[index << level, (index + 1) << level)``. Full nodes never change once written, so a
store keeps exactly the rows returned by :meth:`ledger.merkle.frontier.Frontier.extend` and never
rewrites anything. The one hash of a proof that is not a full node is the root of the ragged
right edge of a tree whose size is not a power of two; :func:`subtree_root` folds it from
``O(log n)`` full nodes. Every proof therefore costs ``O(log n)`` node reads, for any size
``<=`` the current size, which is what lets a store answer proofs against old tree heads
(receipts keep the checkpoint they were issued with).

Verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2) is the algorithm of the RFC, written out
step by step, with the conventions of the transparency-dev/merkle test vectors vendored in
``tests/vectors/rfc9162`` (see :func:`verify_consistency`). Verifiers return ``None`` and raise;
they never return ``False``:

- :class:`~ledger.errors.MalformedError` when an input cannot be a hash at all (a leaf hash,
  root or proof element that is not 32 bytes) or a size or index is negative;
- :class:`~ledger.errors.VerificationError` when well-formed inputs do not prove the claim
  (wrong root, flipped bit, wrong index or size, extra or missing proof elements).

Both are :class:`~ledger.errors.LedgerError`; a caller that only wants "valid or not" catches
that root.

This module is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import hmac
from bisect import bisect_left
from collections.abc import Sequence
from typing import Protocol

from ledger.errors import MalformedError, VerificationError
from ledger.merkle.hashing import EMPTY_ROOT, HASH_SIZE, NODE_HASH_PREFIX

__all__ = [
    "Chain",
    "NodeReader",
    "chain_list",
    "consistency_proof",
    "inclusion_chains",
    "inclusion_proof",
    "inclusion_proofs",
    "root_at",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
]


class NodeReader(Protocol):
    """Read access to the full nodes of a tree (``InMemoryTree``, ``MemoryStore``, ``LmdbStore``).

    ``node(level, index)`` returns the 32-byte hash of the full node over leaves
    ``[index << level, (index + 1) << level)``. A reader is only asked for nodes that exist in a
    tree of the size the caller claims; for any other node it raises a
    :class:`~ledger.errors.LedgerError` (``NotFoundError``, or ``CorruptionError`` if the store
    has lost a node it should hold).

    A reader may also offer ``range_root(start, end)`` returning MTH(D[start:end]) (what
    :func:`subtree_root` computes) from a memo: :func:`inclusion_proof` then asks it for the
    ragged right edge, which is the same for every proof against one tree size.
    """

    def node(self, level: int, index: int) -> bytes:
        """The hash of full node ``(level, index)``."""
        ...


#: A SHA-256 state that has absorbed the node prefix; never updated, only copied (a copy is
#: cheaper than a fresh OpenSSL context, which matters in the verifiers' inner loops).
_NODE_STATE = hashlib.sha256(NODE_HASH_PREFIX)
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _node(left: bytes, right: bytes) -> bytes:
    h = _NODE_STATE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def _largest_power_of_two_below(n: int) -> int:
    """``k`` of RFC 9162 section 2.1.1: the largest power of two strictly smaller than ``n > 1``."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------------------------
# Generation


def subtree_root(reader: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) of RFC 9162 section 2.1.1, computed from full nodes.

    When ``start`` is a multiple of the largest power of two ``<= end - start`` (true of every
    subtree that appears in an RFC 9162 proof), the range splits into ``popcount(end - start)``
    aligned full nodes, largest first, folded from the right: at most ``log2(n) + 1`` reads.
    Any other range follows the RFC's recursive definition, reading whole full nodes wherever the
    recursion meets one.

    :raises MalformedError: the range is empty or negative (``MTH`` of an empty list is only
        defined for the whole tree: use :func:`root_at`).
    :raises LedgerError: whatever ``reader.node`` raises.
    """
    if start < 0 or end <= start:
        raise MalformedError(f"subtree range [{start}, {end}) is empty or negative")
    n = end - start
    top = n.bit_length() - 1
    if start & ((1 << top) - 1):
        # Unaligned: RFC 9162 2.1.1 recursion, MTH(D[0:k]) and MTH(D[k:n]) with k < n.
        k = _largest_power_of_two_below(n)
        return _node(subtree_root(reader, start, start + k), subtree_root(reader, start + k, end))
    # Aligned: the decomposition of n into full nodes, highest level first, then a right fold.
    parts: list[bytes] = []
    position = start
    for level in range(top, -1, -1):
        if (n >> level) & 1:
            parts.append(reader.node(level, position >> level))
            position += 1 << level
    root = parts[-1]
    for left in reversed(parts[:-1]):
        root = _node(left, root)
    return root


def root_at(reader: NodeReader, size: int) -> bytes:
    """The root (MTH, RFC 9162 section 2.1.1) of the tree's first ``size`` leaves.

    ``EMPTY_ROOT`` for size 0; ``popcount(size)`` node reads otherwise.

    :raises MalformedError: ``size`` is negative.
    :raises LedgerError: whatever ``reader.node`` raises (e.g. ``size`` beyond the stored tree).
    """
    if size < 0:
        raise MalformedError(f"tree size must be non-negative, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return subtree_root(reader, 0, size)


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """The audit path PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1, leaf's sibling first.

    Unrolled recursion: below level ``inner = bit_length(index ^ (size - 1))`` the paths to the
    leaf and to the last leaf differ, so the leaf's ancestor at every such level has a sibling;
    each is a full node except possibly the topmost right sibling, which may be the ragged right
    edge (:func:`subtree_root`). From ``inner`` up the leaf's ancestors lie on the right border
    of the tree: an ancestor that is a right child contributes its (full) left sibling, one
    that is a left child has no sibling and is carried up unchanged (the RFC's split ``k``).
    At most ``2 * log2(size) + 1`` node reads.

    :raises MalformedError: ``index`` or ``size`` is negative, or ``index >= size``.
    :raises LedgerError: whatever ``reader.node`` raises.
    """
    if index < 0 or size < 0 or index >= size:
        raise MalformedError(f"leaf index {index} is not in a tree of size {size}")
    inner = (index ^ (size - 1)).bit_length()
    proof: list[bytes] = []
    for level in range(inner):
        sibling = (index >> level) ^ 1
        if ((sibling + 1) << level) <= size:
            proof.append(reader.node(level, sibling))
        else:
            # Only at level inner - 1, and only for a right sibling: the ragged right edge. A
            # reader may memoise it (``range_root``): MTH(D[start:size]) never changes in an
            # append-only log, and every proof against one size needs the same few.
            start = sibling << level
            memo = getattr(reader, "range_root", None)
            proof.append(memo(start, size) if memo is not None
                         else subtree_root(reader, start, size))
    for level in range(inner, (size - 1).bit_length()):
        if (index >> level) & 1:
            proof.append(reader.node(level, (index >> level) ^ 1))
    return proof

#: An inclusion path as a linked list, leaf's sibling first: ``(hash, rest)``, ``None`` for
#: the empty path. The paths of leaves that share ancestors share their upper part (the same
#: tuple objects), so a caller can encode each shared part once.
Chain = tuple[bytes, "Chain"] | None


def inclusion_chains(
    reader: NodeReader, indices: Sequence[int], size: int,
    leaf_hashes: Sequence[bytes] | None = None,
) -> tuple[list[Chain], bytes]:
    """PATH(i, D[0:size]) of every leaf ``i`` of ``indices`` at once (as :data:`Chain`), and
    the root they lead to.

    One walk of RFC 9162's recursive definition over the part of the tree that holds the
    leaves: a subtree without any of them is one :func:`subtree_root` (full nodes), a subtree
    with some is split at ``k``, and each half's hash goes into the paths of the leaves in the
    other half. Leaves that share ancestors share that work and those path elements, so ``m``
    leaves of one block cost about ``2m + log2(size)`` hashes and reads, not ``m log2(size)``.

    The returned root is folded from the leaves (``leaf_hashes``, aligned with ``indices``;
    without them, read from the tree) and the very hashes in the paths: if it equals a
    checkpoint's root, every returned path proves its leaf against that checkpoint, which is
    what :func:`verify_inclusion` would establish leaf by leaf. An index given twice must come
    with the same leaf hash.

    :raises MalformedError: an index is not in ``[0, size)``, or ``leaf_hashes`` is not
        aligned with ``indices`` or gives one leaf two hashes.
    :raises LedgerError: whatever ``reader.node`` raises.
    """
    if leaf_hashes is not None and len(leaf_hashes) != len(indices):
        raise MalformedError("leaf hashes must be given for every index")
    for i in indices:
        if i < 0 or i >= size:
            raise MalformedError(f"leaf index {i} is not in a tree of size {size}")
    chains: list[Chain] = [None] * len(indices)
    if not indices:
        return chains, root_at(reader, size)
    order = sorted(range(len(indices)), key=indices.__getitem__)
    leaves = [indices[n] for n in order]
    memo = getattr(reader, "range_root", None)
    hashes: dict[tuple[int, int], bytes] = {}

    def fold(lo: int, hi: int, first: int, last: int) -> bytes:
        # Bottom up: MTH(D[lo:hi]) of every subtree the walk meets, kept in ``hashes``.
        if first == last:
            if memo is not None and hi == size and (hi - lo) & (hi - lo - 1):
                value = bytes(memo(lo, hi))
            else:
                value = subtree_root(reader, lo, hi)
        elif hi - lo == 1:
            if leaf_hashes is None:
                value = reader.node(0, lo)
            else:
                value = leaf_hashes[order[first]]
                if any(leaf_hashes[n] != value for n in order[first + 1:last]):
                    raise MalformedError(f"leaf {lo} is given with two different hashes")
        else:
            mid = lo + _largest_power_of_two_below(hi - lo)
            split = bisect_left(leaves, mid, first, last)
            value = _node(fold(lo, mid, first, split), fold(mid, hi, split, last))
        hashes[(lo, hi)] = value
        return value

    def link(lo: int, hi: int, first: int, last: int, chain: Chain) -> None:
        # Top down: each leaf's path is its sibling's hash on top of its parent's path.
        if first == last:
            return
        if hi - lo == 1:
            for n in order[first:last]:
                chains[n] = chain
            return
        mid = lo + _largest_power_of_two_below(hi - lo)
        split = bisect_left(leaves, mid, first, last)
        link(lo, mid, first, split, (hashes[(mid, hi)], chain))
        link(mid, hi, split, last, (hashes[(lo, mid)], chain))

    root = fold(0, size, 0, len(leaves))
    link(0, size, 0, len(leaves), None)
    return chains, root


def chain_list(chain: Chain) -> list[bytes]:
    """A :data:`Chain` as a list of hashes, leaf's sibling first."""
    out: list[bytes] = []
    while chain is not None:
        out.append(chain[0])
        chain = chain[1]
    return out


def inclusion_proofs(
    reader: NodeReader, indices: Sequence[int], size: int,
    leaf_hashes: Sequence[bytes] | None = None,
) -> tuple[list[list[bytes]], bytes]:
    """:func:`inclusion_chains` with every path as a list.

    :raises MalformedError: see :func:`inclusion_chains`.
    :raises LedgerError: whatever ``reader.node`` raises.
    """
    chains, root = inclusion_chains(reader, indices, size, leaf_hashes)
    return [chain_list(c) for c in chains], root


def consistency_proof(reader: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 section 2.1.4.1.

    SUBPROOF(m, D[start:end], b) is followed iteratively; its hashes are collected top-down and
    returned bottom-up, the RFC's order. Every MTH it needs is either a full node or (at most
    once, on the first step into a left half) the ragged right edge of ``new_size``, so the
    cost is ``O(log new_size)`` node reads. Equal sizes give the empty proof.

    :raises MalformedError: ``old_size < 1`` (a proof from the empty tree is meaningless:
        RFC 9162 2.1.4 defines it for ``0 < m < n``) or ``old_size > new_size``.
    :raises LedgerError: whatever ``reader.node`` raises.
    """
    if old_size < 1 or new_size < old_size:
        raise MalformedError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == new_size:
        return []
    top_down: list[bytes] = []
    m, start, end = old_size, 0, new_size
    complete = True  # the RFC's flag b: is the current subtree a whole subtree of the old tree?
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            top_down.append(subtree_root(reader, start + k, end))
            end = start + k
        else:
            # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]); D[0:k] is a full node.
            top_down.append(subtree_root(reader, start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}: the old tree's last subtree, a full node
        # (``start`` is aligned to ``m``, a power of two here).
        top_down.append(subtree_root(reader, start, end))
    top_down.reverse()
    return top_down


# --------------------------------------------------------------------------------------------
# Verification


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, _BYTES_LIKE) or len(value) != HASH_SIZE:
        raise MalformedError(f"{what} must be a {HASH_SIZE}-byte hash")


def _check_proof(proof: Sequence[bytes]) -> None:
    for element in proof:
        if not isinstance(element, _BYTES_LIKE) or len(element) != HASH_SIZE:
            raise MalformedError(f"every proof element must be a {HASH_SIZE}-byte hash")


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    The algorithm of RFC 9162 section 2.1.3.2, step by step. ``fn``/``sn`` are the positions of
    the running node and of the tree's last node at the current level; a proof element combines
    on the left when the running node is a right child or the last node of its level (after
    skipping the levels where the RFC's split carried it up without a sibling). A proof must be
    consumed exactly: extra or missing elements fail, because ``sn`` must reach 0 exactly when
    the proof ends.

    :raises MalformedError: ``leaf_hash``, ``root`` or a proof element is not 32 bytes, or
        ``index`` or ``size`` is negative.
    :raises VerificationError: ``index >= size``, the proof has the wrong length for
        ``(index, size)``, or the computed root differs from ``root``.
    """
    _check_hash(leaf_hash, "the leaf hash")
    _check_hash(root, "the root")
    _check_proof(proof)
    if index < 0 or size < 0:
        raise MalformedError("leaf index and tree size must be non-negative")
    if index >= size:
        raise VerificationError(f"leaf index {index} is not in a tree of size {size}")

    fresh = _NODE_STATE.copy
    fn, sn = index, size - 1  # step 2
    r = bytes(leaf_hash)  # step 3
    for p in proof:  # step 4
        if sn == 0:  # 4.a
            raise VerificationError("inclusion proof has too many elements")
        h = fresh()
        if fn & 1 or fn == sn:  # 4.b: r = HASH(0x01 || p || r)
            h.update(p)
            h.update(r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:  # 4.c: r = HASH(0x01 || r || p)
            h.update(r)
            h.update(p)
        r = h.digest()
        fn >>= 1  # 4.d
        sn >>= 1
    if sn != 0:  # step 5
        raise VerificationError("inclusion proof has too few elements")
    if not hmac.compare_digest(r, root):
        raise VerificationError("inclusion proof does not lead to the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    The algorithm of RFC 9162 section 2.1.4.2, with the conventions of the transparency-dev
    vectors:

    - ``old_size > new_size`` fails;
    - ``old_size == new_size == 0`` fails (a statement about the empty tree proves nothing, and
      RFC 9162 2.1.4 defines proofs for ``0 < m``);
    - ``old_size == new_size > 0`` needs an empty proof and byte-identical roots. Nothing is
      hashed in this case, so, as the vectors require, the roots are compared as given and
      not checked for length: two identical byte strings are trivially consistent;
    - ``old_size == 0 < new_size`` fails (every tree extends the empty tree; a proof of it is
      meaningless and accepting one would let a caller believe something was checked);
    - otherwise the roots and every proof element must be 32 bytes and the proof must rebuild
      both roots, consumed exactly.

    :raises MalformedError: a size is negative, or (for different sizes) a root or proof element
        is not 32 bytes.
    :raises VerificationError: the sizes are out of order, a size is 0, the proof is not empty
        for equal sizes, has the wrong length, or does not rebuild both roots.
    """
    if old_size < 0 or new_size < 0:
        raise MalformedError("tree sizes must be non-negative")
    if old_size > new_size:
        raise VerificationError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        raise VerificationError("a consistency proof from the empty tree is meaningless")
    if old_size == new_size:
        if proof:
            raise VerificationError("equal tree sizes need an empty consistency proof")
        if not hmac.compare_digest(bytes(old_root), bytes(new_root)):
            raise VerificationError("equal tree sizes but different roots")
        return
    _check_hash(old_root, "the old root")
    _check_hash(new_root, "the new root")
    _check_proof(proof)
    if not proof:
        raise VerificationError("consistency proof is empty")

    # Step 1: if old_size is a power of two the old root is the first node, implicitly.
    path = [bytes(old_root), *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1  # step 2
    while fn & 1:  # step 3
        fn >>= 1
        sn >>= 1
    fr = sr = bytes(path[0])  # step 4
    for c in path[1:]:  # step 5
        if sn == 0:  # 5.a
            raise VerificationError("consistency proof has too many elements")
        if fn & 1 or fn == sn:  # 5.b
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:  # 5.c
            sr = _node(sr, c)
        fn >>= 1  # 5.d
        sn >>= 1
    if sn != 0:  # step 6
        raise VerificationError("consistency proof has too few elements")
    if not hmac.compare_digest(fr, old_root):
        raise VerificationError("consistency proof does not rebuild the old root")
    if not hmac.compare_digest(sr, new_root):
        raise VerificationError("consistency proof does not rebuild the new root")
