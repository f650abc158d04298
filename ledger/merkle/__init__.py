"""Pure RFC 9162 Merkle tree: hashing, frontier append, proofs from full nodes, verification.

No I/O at all: storage feeds :class:`Frontier` and serves nodes through :class:`NodeReader`;
the consensus core and the simulator compute tree heads with :class:`Frontier` alone.
"""

from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_HASH_PREFIX,
    NODE_HASH_PREFIX,
    leaf_hash,
    leaf_hashes,
    node_hash,
)
from ledger.merkle.memory import InMemoryTree
from ledger.merkle.proof import (
    NodeReader,
    consistency_proof,
    inclusion_proof,
    inclusion_proofs,
    root_at,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_HASH_PREFIX",
    "NODE_HASH_PREFIX",
    "Frontier",
    "InMemoryTree",
    "NodeReader",
    "consistency_proof",
    "inclusion_proof",
    "inclusion_proofs",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "root_at",
    "subtree_root",
    "verify_consistency",
    "verify_inclusion",
]
