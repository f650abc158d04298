"""RFC 9162 section 2.1.1 hashing with named domain-separation prefixes.

A leaf hash is ``SHA-256(0x00 || leaf data)`` and an interior node hash is
``SHA-256(0x01 || left || right)``. The distinct one-byte prefixes make a leaf hash and a node
hash of the same bytes different, which defeats the classic second-preimage attack in which an
interior node is presented as a leaf (see ``tests/merkle/test_defense.py``).

In this ledger the leaf data of an anchor is the raw 32-byte SHA-256 digest of the document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

LEAF_HASH_PREFIX = b"\x00"
NODE_HASH_PREFIX = b"\x01"
HASH_SIZE = 32

#: MTH({}) = SHA-256() -- the root of the empty tree (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return ``SHA-256(0x00 || data)``."""
    return _sha256(LEAF_HASH_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return ``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_HASH_PREFIX + left + right).digest()


def leaf_hashes(datas: Iterable[bytes]) -> list[bytes]:
    """Leaf hashes of many leaves at once: ``[leaf_hash(d) for d in datas]``, faster.

    This is the first half of the append hot path. Each hash starts from a copy of a SHA-256
    state that has already absorbed the 0x00 prefix: copying a state is cheaper than creating
    one (OpenSSL 3), and the prefix is never concatenated. Measured ~10% faster than
    ``[sha256(b"\\x00" + d).digest() for d in datas]``; the hashes are identical.
    """
    fresh = _sha256(LEAF_HASH_PREFIX).copy
    out: list[bytes] = []
    append = out.append
    for data in datas:
        h = fresh()
        h.update(data)
        append(h.digest())
    return out
