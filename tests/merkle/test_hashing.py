"""RFC 9162 2.1.1 hashing: named prefixes, known values, the batch form equals the single form."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import hashing


def test_prefixes_and_sizes_are_those_of_rfc_9162() -> None:
    assert hashing.LEAF_HASH_PREFIX == b"\x00"
    assert hashing.NODE_HASH_PREFIX == b"\x01"
    assert hashing.HASH_SIZE == 32
    assert hashlib.sha256(b"").digest() == hashing.EMPTY_ROOT


def test_leaf_hash_of_empty_data_is_the_known_rfc_6962_value() -> None:
    # The leaf hash that opens the transparency-dev inclusion vectors ("bjQLnP+z...").
    assert hashing.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=40))
def test_batch_leaf_hashes_equal_single_leaf_hashes(datas: list[bytes]) -> None:
    assert hashing.leaf_hashes(datas) == [hashing.leaf_hash(d) for d in datas]
    assert hashing.leaf_hashes(iter(datas)) == [
        hashlib.sha256(b"\x00" + d).digest() for d in datas
    ]


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_node_hash_is_prefixed_concatenation(left: bytes, right: bytes) -> None:
    assert hashing.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashing.node_hash(left, right) != hashing.leaf_hash(left + right)
