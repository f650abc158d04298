"""``CheckpointBook.add_outside``: an outside witness's cosignature joins the stored note of a
tree size, is checked first, and survives the note being stored again with one more validator
cosignature (every cosignature is kept, docs/protocol.md section 10)."""

from __future__ import annotations

import time

import pytest

from ledger.checkpoint import Checkpoint, cosign
from ledger.consensus.reconfig import ValidatorInfo, ValidatorRoster
from ledger.crypto import SIG_TYPE_COSIGNATURE_V1, Ed25519Key, ValidatorKeys
from ledger.errors import VerificationError
from ledger.note import Note, Signature, Verifier, parse_note
from ledger.replica.checkpoints import CheckpointBook
from ledger.replica.validators import NodeValidators
from ledger.replica.wire import Cosignature
from ledger.storage.memory import MemoryStore

ORIGIN = "outside.test/log"
KEYS = [ValidatorKeys.generate(name=f"v{i}", origin=ORIGIN) for i in range(1, 5)]
ROSTER = ValidatorRoster(members=[ValidatorInfo.from_keys(k) for k in KEYS])
WITNESS = Ed25519Key(b"\x21" * 32)
WITNESS_VKEY = Verifier.for_key(name="audit.example/w1", sig_type=SIG_TYPE_COSIGNATURE_V1,
                                public_key=WITNESS.public_key)


def book_with_head(size: int = 3) -> tuple[CheckpointBook, MemoryStore, Checkpoint, int]:
    store = MemoryStore()
    store.append([bytes([i]) * 32 for i in range(size)])
    book = CheckpointBook(store=store, origin=ORIGIN, validators=NodeValidators(
        chain_id="outside", genesis=ROSTER, keys=KEYS[:1]))
    now = int(time.time() * 1000)
    assert book.cosign_head(now=now, block_time=now) is not None
    head = Checkpoint(origin=ORIGIN, size=size, root=store.root_at(size))
    return book, store, head, now


def peer(book: CheckpointBook, head: Checkpoint, k: ValidatorKeys, now: int) -> bool:
    line = cosign(head, name=k.name, key=k.cosigner_key, timestamp=now // 1000).line()
    return book.add_peer(Cosignature(size=head.size, root=head.root, line=line.rstrip("\n")),
                         now=now)


def witness_signature(head: Checkpoint, key: Ed25519Key = WITNESS) -> Signature:
    return cosign(head, name=WITNESS_VKEY.name, key=key, timestamp=int(time.time()))


def names(store: MemoryStore, size: int) -> list[str]:
    raw = store.checkpoint(size)
    assert raw is not None
    return [s.name for s in parse_note(raw.decode()).signatures]


def test_the_witness_cosignature_is_kept_when_the_note_is_stored_again() -> None:
    book, store, head, now = book_with_head()
    assert not book.add_outside(head.size, [witness_signature(head)], [WITNESS_VKEY])  # no note
    assert peer(book, head, KEYS[1], now) is False  # two of four: no quorum yet
    assert peer(book, head, KEYS[2], now)
    assert book.add_outside(head.size, [witness_signature(head)], [WITNESS_VKEY])
    assert names(store, head.size)[-1] == "audit.example/w1"
    assert book.latest is not None and "audit.example/w1" in book.latest[1]
    # The fourth validator's cosignature re-stores the note: the witness's line stays.
    assert peer(book, head, KEYS[3], now)
    assert sorted(names(store, head.size)) == sorted(
        [ORIGIN, "v1", "v2", "v3", "v4", "audit.example/w1"])
    # The same witness again changes nothing.
    assert not book.add_outside(head.size, [witness_signature(head)], [WITNESS_VKEY])


def test_a_bad_outside_cosignature_is_refused_and_changes_nothing() -> None:
    book, store, head, now = book_with_head()
    peer(book, head, KEYS[1], now)
    peer(book, head, KEYS[2], now)
    before = store.checkpoint(head.size)
    other = Checkpoint(origin=ORIGIN, size=head.size, root=bytes(32))
    with pytest.raises(VerificationError):  # a signature of another tree head
        book.add_outside(head.size, [witness_signature(other)], [WITNESS_VKEY])
    with pytest.raises(VerificationError, match="not a configured witness key"):
        book.add_outside(head.size, [witness_signature(head, Ed25519Key(b"\x22" * 32))], [])
    assert store.checkpoint(head.size) == before


def test_a_note_adopted_from_a_peer_keeps_only_the_signatures_it_verified() -> None:
    # A Byzantine peer's note with a garbage line under the outside witness's name: stored as
    # is, it would make every receipt of that size fail under a policy requiring the witness.
    book, store, head, now = book_with_head()
    peer(book, head, KEYS[1], now)
    peer(book, head, KEYS[2], now)
    raw = store.checkpoint(head.size)
    assert raw is not None
    garbage = Signature(name=WITNESS_VKEY.name, key_id=WITNESS_VKEY.key_id,
                        signature=b"\x00" * 72)
    planted = parse_note(raw.decode())
    text = Note(text=planted.text, signatures=(*planted.signatures, garbage)).format()
    fresh = MemoryStore()
    fresh.append([bytes([i]) * 32 for i in range(head.size)])
    other = CheckpointBook(store=fresh, origin=ORIGIN, validators=NodeValidators(
        chain_id="outside", genesis=ROSTER, keys=KEYS[3:]))
    assert other.adopt(text)
    adopted = fresh.checkpoint(head.size)
    assert adopted is not None
    assert WITNESS_VKEY.name not in [s.name for s in parse_note(adopted.decode()).signatures]
    assert parse_note(adopted.decode()).signatures == planted.signatures
