"""An in-memory Merkle tree that keeps every full node: the reference for tests.

:class:`InMemoryTree` stores the full nodes of an RFC 9162 tree in one list per level, the same
``(level, index)`` layout a store persists, and implements :class:`~ledger.merkle.proof.NodeReader`
so the proof functions run against it unchanged.

It deliberately does **not** use :meth:`~ledger.merkle.frontier.Frontier.extend`: it appends one
leaf at a time and carries completed pairs upward (the textbook binary-counter construction).
Two independent constructions of the same nodes let the property tests check the fast batch
path against this simple one, and both against a naive recursive MTH.
"""

from __future__ import annotations

from collections.abc import Iterable

from ledger.errors import MalformedError, NotFoundError
from ledger.merkle.hashing import HASH_SIZE, node_hash
from ledger.merkle.proof import consistency_proof, inclusion_proof, root_at

__all__ = ["InMemoryTree"]


class InMemoryTree:
    """All full nodes of an append-only RFC 9162 tree, held in memory (a ``NodeReader``).

    Mutable by design (it is a growing store twin, not a value): :meth:`append` adds leaves.
    Memory is about ``2 * size`` hashes.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Create a tree, optionally with initial leaf hashes.

        :raises MalformedError: a leaf hash is not 32 bytes.
        """
        self._levels: list[list[bytes]] = [[]]
        self.append(leaf_hashes)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def append(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes (already ``SHA-256(0x00 || data)``), one at a time.

        After each leaf, while the level it landed on holds an even number of nodes, the last
        two are a completed pair and their parent (RFC 9162 2.1.1 node hash) goes one level up.

        :raises MalformedError: a leaf hash is not 32 bytes (nothing after it is appended).
        """
        levels = self._levels
        for leaf in leaf_hashes:
            if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
                raise MalformedError("every leaf hash must be 32 bytes")
            levels[0].append(leaf)
            level = 0
            while len(levels[level]) % 2 == 0:
                row = levels[level]
                parent = node_hash(row[-2], row[-1])
                if level + 1 == len(levels):
                    levels.append([])
                levels[level + 1].append(parent)
                level += 1

    def node(self, level: int, index: int) -> bytes:
        """The full node ``(level, index)``.

        :raises NotFoundError: no such full node exists (yet).
        """
        if 0 <= level < len(self._levels) and 0 <= index < len(self._levels[level]):
            return self._levels[level][index]
        raise NotFoundError(f"no full node ({level}, {index}) in a tree of size {self.size}")

    def root(self, size: int | None = None) -> bytes:
        """The MTH of the first ``size`` leaves (default: all), RFC 9162 section 2.1.1.

        :raises MalformedError: ``size`` is negative.
        :raises NotFoundError: ``size`` exceeds the tree.
        """
        return root_at(self, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        :raises MalformedError: ``index`` is not below ``size``.
        :raises NotFoundError: ``size`` exceeds the tree.
        """
        return inclusion_proof(self, index, self.size if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 2.1.4.1 consistency proof between two sizes.

        :raises MalformedError: ``old_size`` is 0 or above ``new_size``.
        :raises NotFoundError: ``new_size`` exceeds the tree.
        """
        return consistency_proof(self, old_size, self.size if new_size is None else new_size)
