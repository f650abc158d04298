"""Stored-value framing and the compact forms of blocks, certificates and checkpoint notes.

Pure: no I/O. :mod:`ledger.storage.lmdb_store` calls it inside its transactions.

Checksums
---------
Every value the LMDB store writes is *sealed*: ``payload || CRC-32(key || payload)`` (4 bytes,
little-endian, zlib's CRC-32). The key is part of the checksum, so a value that ends up under
another key (a misdirected write, a page mixed up by the file system) fails as surely as a
flipped bit. :func:`unseal` checks it on every read and raises
:class:`~ledger.errors.CorruptionError` naming the value.

Compact records
---------------
A block, its commit certificate and the checkpoint notes make up most of what a small block
costs on disk, and much of it repeats: every block lists digests the tree already holds, every
precommit of a certificate repeats the chain id, height, round and block hash, validator keys
and signer names repeat in every block and note, and a note restates the tree size and root
the store knows. The compact forms drop what can be re-derived and name repeated byte strings
by small ids (:class:`Dictionary`).

Both compact forms are *exact*: :func:`pack_block_record` and :func:`pack_note` rebuild the
original bytes from the compact form before they return it and fall back to storing the bytes
verbatim whenever the rebuilt bytes differ by one bit, whenever the input is not of the shape
they expect (a block in another encoding, a test's ``b"block 1"``), or whenever something they
would re-derive is not what the input says (a block whose digest list is not exactly the leaves
it appended: a digest repeated, or one already in the log; a note whose root is not the stored
tree's). So ``block(h)`` and ``checkpoint(size)`` return exactly the bytes they were given.

The block encoding is the consensus one (``ledger.consensus.messages``: a msgpack array
``[height, prev_hash, time, proposer, tree_size, tree_root, digests, last_commit, changes?]``,
precommits ``[version, type, chain_id, height, round, block_hash, timestamp, validator,
signature]``); this module reads it with msgpack alone and never imports consensus code: it
needs the shape, not the rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ledger.errors import CorruptionError

__all__ = [
    "CRC_BYTES",
    "Dictionary",
    "DictionaryTxn",
    "link_certificate",
    "pack_block_record",
    "pack_note",
    "seal",
    "unpack_block_record",
    "unpack_note",
    "unseal",
]

CRC_BYTES = 4
_crc32 = zlib.crc32


def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` followed by the CRC-32 of ``key || payload``."""
    return payload + (_crc32(payload, _crc32(key)) & 0xFFFFFFFF).to_bytes(CRC_BYTES, "little")


def checksum_ok(key: bytes, value: bytes | memoryview) -> bool:
    """Whether ``value`` is a sealed value whose checksum matches ``key``."""
    if len(value) < CRC_BYTES:
        return False
    end = len(value) - CRC_BYTES
    crc = _crc32(value[:end], _crc32(key)) & 0xFFFFFFFF
    return crc == int.from_bytes(value[end:], "little")


def unseal(key: bytes, value: bytes | memoryview, what: str) -> bytes:
    """The payload of a sealed value, after checking its checksum.

    :raises CorruptionError: ``{what} is damaged (checksum mismatch)``.
    """
    if not checksum_ok(key, value):
        raise CorruptionError(f"{what} is damaged (checksum mismatch)")
    return bytes(value[: len(value) - CRC_BYTES])


# ------------------------------------------------------------------------------- dictionary


class Dictionary:
    """Repeated byte strings (validator keys, chain ids, origins, signer names) by small id.

    Ids are dense from 0 and never reused; a string keeps its id forever. The store keeps each
    entry twice on disk (see :class:`~ledger.storage.lmdb_store.LmdbStore`), so a damaged copy
    is restored from its twin.
    """

    __slots__ = ("_by_id", "_by_value")

    def __init__(self, entries: Mapping[int, bytes] | None = None) -> None:
        self._by_id: dict[int, bytes] = dict(entries or {})
        self._by_value: dict[bytes, int] = {v: k for k, v in self._by_id.items()}

    def __len__(self) -> int:
        return len(self._by_id)

    def value(self, ident: int) -> bytes:
        """The string of ``ident``.

        :raises CorruptionError: no such id (a record names an entry that was never stored).
        """
        try:
            return self._by_id[ident]
        except (KeyError, TypeError):
            raise CorruptionError(f"a stored record names dictionary entry {ident!r}, "
                                  "which the store does not hold") from None

    def ident(self, value: bytes) -> int | None:
        """The id of ``value``, or None."""
        return self._by_value.get(value)

    def entries(self) -> dict[int, bytes]:
        """A copy of every entry."""
        return dict(self._by_id)

    def merge(self, added: Mapping[int, bytes]) -> None:
        """Add the entries a committed transaction wrote."""
        for ident, value in added.items():
            self._by_id[ident] = value
            self._by_value[value] = ident


@dataclass
class DictionaryTxn:
    """The dictionary as seen inside one write transaction: committed entries plus new ones.

    The new ones are written by the caller (:attr:`added`) and merged into the
    :class:`Dictionary` only once the transaction commits.
    """

    base: Dictionary
    added: dict[int, bytes] = field(default_factory=dict)
    _by_value: dict[bytes, int] = field(default_factory=dict)

    def ident(self, value: bytes) -> int:
        found = self.base.ident(value)
        if found is None:
            found = self._by_value.get(value)
        if found is None:
            found = len(self.base) + len(self.added)
            self.added[found] = value
            self._by_value[value] = found
        return found

    def value(self, ident: int) -> bytes:
        if ident in self.added:
            return self.added[ident]
        return self.base.value(ident)

    def mark(self) -> int:
        """A point to :meth:`rollback` to (ids are dense, so a count suffices)."""
        return len(self.added)

    def rollback(self, mark: int) -> None:
        """Forget the ids added since :meth:`mark` (a compact form that was not kept)."""
        first = len(self.base) + mark
        for ident in [i for i in self.added if i >= first]:
            del self._by_value[self.added.pop(ident)]


# ----------------------------------------------------------------------- compact block record

_VERBATIM = 0
_COMPACT = 1
_LINKED = 2  # a certificate whose signatures are read from the next block's last commit
_RECORD = 2  # the outer tag of a stored block record
_HASH = 32
_KEY = 32
_SIG = 64


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_bin(value: object, size: int) -> bool:
    return type(value) is bytes and len(value) == size


def _packb(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)


class _NotCompactable(Exception):
    """The input is not of the shape a compact form can describe: store it verbatim."""


def _block_hash(block: bytes) -> bytes:
    """The consensus hash of a block (what its certificate's precommits sign)."""
    from ledger.consensus.block import BLOCK_HASH_DOMAIN  # the rule, not a copy of it

    return hashlib.sha256(BLOCK_HASH_DOMAIN + block).digest()


def _compact_votes(
    votes: object, height: int, block_hash: bytes | None, base_time: int, ids: DictionaryTxn
) -> list[Any]:
    """``[round, block_hash or None, version, type, chain_id id, validator ids, time deltas,
    signatures]`` for precommits that share everything but validator, time and signature.
    ``block_hash`` is None when the certificate's block hash is the expected one (the
    ``prev_hash`` of the block carrying it, or the hash of the block it certifies)."""
    if type(votes) is not list or len(votes) != 4:
        raise _NotCompactable
    cert_height, rnd, bh, precommits = votes
    if not (_is_int(cert_height) and cert_height == height and _is_int(rnd)
            and _is_bin(bh, _HASH) and type(precommits) is list and precommits):
        raise _NotCompactable
    first = precommits[0]
    if type(first) is not list or len(first) != 9:
        raise _NotCompactable
    version, vtype, chain_id = first[0], first[1], first[2]
    if not (_is_int(version) and _is_int(vtype) and type(chain_id) is str):
        raise _NotCompactable
    validators: list[int] = []
    deltas: list[int] = []
    sigs: list[bytes] = []
    for vote in precommits:
        if type(vote) is not list or len(vote) != 9:
            raise _NotCompactable
        v_ver, v_type, v_chain, v_height, v_round, v_hash, ts, validator, sig = vote
        if (v_ver, v_type, v_chain, v_height, v_round, v_hash) != (
            version, vtype, chain_id, height, rnd, bh
        ) or type(v_ver) is not int or type(v_type) is not int or type(v_height) is not int \
                or type(v_round) is not int or not _is_int(ts) \
                or not _is_bin(validator, _KEY) or not _is_bin(sig, _SIG):
            raise _NotCompactable
        validators.append(ids.ident(validator))
        deltas.append(ts - base_time)
        sigs.append(sig)
    return [rnd, None if bh == block_hash else bh, version, vtype,
            ids.ident(chain_id.encode("utf-8")), validators, deltas, b"".join(sigs)]


def _expand_votes(
    compact: Any, height: int, block_hash: bytes | None, base_time: int,
    value: Callable[[int], bytes],
) -> list[Any]:
    rnd, bh, version, vtype, chain_ident, validators, deltas, sigs = compact
    if bh is None:
        bh = block_hash
    chain_id = value(chain_ident).decode("utf-8")
    precommits = [
        [version, vtype, chain_id, height, rnd, bh, base_time + delta, value(vid),
         sigs[_SIG * i : _SIG * (i + 1)]]
        for i, (vid, delta) in enumerate(zip(validators, deltas, strict=True))
    ]
    return [height, rnd, bh, precommits]


def _compact_block(
    wire: object,
    height: int,
    leaves: tuple[int, Sequence[bytes]] | None,
    root_of: Callable[[int], bytes | None],
    ids: DictionaryTxn,
) -> list[Any]:
    if type(wire) is not list or len(wire) not in (8, 9):
        raise _NotCompactable
    w_height, prev_hash, time, proposer, tree_size, tree_root, digests, last_commit = wire[:8]
    if not (_is_int(w_height) and w_height == height and _is_bin(prev_hash, _HASH)
            and _is_int(time) and _is_bin(proposer, _KEY) and _is_int(tree_size)
            and tree_size >= 0 and _is_bin(tree_root, _HASH) and type(digests) is list):
        raise _NotCompactable
    if leaves is not None and digests == list(leaves[1]):
        digest_part: Any = leaves[0]  # the digests are exactly the leaves appended from here
    else:
        if not all(_is_bin(d, _HASH) for d in digests):
            raise _NotCompactable
        digest_part = digests
    root_part = None if root_of(tree_size) == tree_root else tree_root
    if last_commit is None:
        commit_part = None
    else:
        commit_part = _compact_votes(last_commit, height - 1, prev_hash, time, ids)
    compact = [prev_hash, time, ids.ident(proposer), tree_size, root_part, digest_part,
               len(digests), commit_part]
    if len(wire) == 9:
        compact.append(wire[8])  # validator-set changes: rare, kept as they are
    return compact


def _expand_block(
    compact: Any,
    height: int,
    digests_at: Callable[[int, int], list[bytes]],
    root_at: Callable[[int], bytes],
    value: Callable[[int], bytes],
) -> list[Any]:
    prev_hash, time, proposer_ident, tree_size, root_part, digest_part, count, commit_part = \
        compact[:8]
    if type(digest_part) is int:
        digests = digests_at(digest_part, digest_part + count)
    else:
        digests = digest_part
    wire = [
        height,
        prev_hash,
        time,
        value(proposer_ident),
        tree_size,
        root_at(tree_size) if root_part is None else root_part,
        digests,
        None if commit_part is None
        else _expand_votes(commit_part, height - 1, prev_hash, time, value),
    ]
    if len(compact) == 9:
        wire.append(compact[8])
    return wire


def pack_block_record(
    height: int,
    block: bytes,
    certificate: bytes,
    *,
    leaves: tuple[int, Sequence[bytes]] | None,
    root_of: Callable[[int], bytes | None],
    ids: DictionaryTxn,
    digests_at: Callable[[int, int], list[bytes]],
    root_at: Callable[[int], bytes],
) -> bytes:
    """The stored form of a block record (unsealed): compact where exact, else verbatim.

    ``leaves`` is ``(first_leaf, digests)`` when this append added exactly ``digests`` as the
    leaves from ``first_leaf`` on; a block whose digest list equals them is stored without it.
    ``root_of(size)`` is the stored tree's root at ``size`` (None beyond the tree);
    ``digests_at`` and ``root_at`` read what the compact form re-derives (the same transaction
    must see the new leaves). New dictionary entries go into ``ids``.
    """
    block_part: list[Any] = [_VERBATIM, block]
    cert_part: list[Any] = [_VERBATIM, certificate]
    mark = ids.mark()
    try:
        wire = _unpackb(block)
        compact = _compact_block(wire, height, leaves, root_of, ids)
        rebuilt = _packb(_expand_block(compact, height, digests_at, root_at, ids.value))
        if rebuilt != block:
            raise _NotCompactable
        block_part = [_COMPACT, compact]
    except Exception:  # not msgpack, not the expected shape, or not exact: verbatim
        ids.rollback(mark)
        return _packb([_RECORD, block_part, cert_part])
    mark = ids.mark()
    try:
        time = wire[2]
        own = _block_hash(block)
        compact_cert = _compact_votes(_unpackb(certificate), height, own, time, ids)
        rebuilt = _packb(_expand_votes(compact_cert, height, own, time, ids.value))
        if rebuilt != certificate:
            raise _NotCompactable
        cert_part = [_COMPACT, compact_cert]
    except Exception:
        ids.rollback(mark)
    return _packb([_RECORD, block_part, cert_part])


def _last_commit_votes(next_stored: bytes) -> tuple[int, list[int], list[int], bytes]:
    """``(time, validator ids, time deltas, signatures)`` of the last commit carried by a
    stored compact block record (the precommits of the block before it).

    :raises ValueError: the record has no compact block with a compact last commit.
    """
    tag, block_part, _ = _unpackb(next_stored)
    if tag != _RECORD or block_part[0] != _COMPACT or block_part[1][7] is None:
        raise ValueError("the next block carries no compact last commit")
    compact = block_part[1]
    votes = compact[7]
    return compact[1], votes[5], votes[6], votes[7]


def link_certificate(stored: bytes, next_stored: bytes) -> bytes | None:
    """``stored`` (a block record) with its certificate's signatures replaced by references to
    the same precommits in the next block's last commit, or None if none can be shared.

    The references point into *block* bytes, which every validator holds identically, never
    into another certificate (those differ from node to node): repairing either record from
    any peer keeps them valid.
    """
    try:
        tag, block_part, cert_part = _unpackb(stored)
        if tag != _RECORD or block_part[0] != _COMPACT or cert_part[0] != _COMPACT:
            return None
        time = block_part[1][1]
        rnd, bh, version, vtype, chain, validators, deltas, sigs = cert_part[1]
        n_time, n_validators, n_deltas, n_sigs = _last_commit_votes(next_stored)
        theirs = {
            (vid, n_time + delta, n_sigs[_SIG * k : _SIG * (k + 1)]): k
            for k, (vid, delta) in enumerate(zip(n_validators, n_deltas, strict=True))
        }
        sources: list[int] = []
        kept: list[bytes] = []
        for i, (vid, delta) in enumerate(zip(validators, deltas, strict=True)):
            sig = sigs[_SIG * i : _SIG * (i + 1)]
            k = theirs.get((vid, time + delta, sig))
            sources.append(-1 if k is None else k)
            if k is None:
                kept.append(sig)
        if all(k < 0 for k in sources):
            return None
        linked = [rnd, bh, version, vtype, chain, validators, deltas, b"".join(kept)]
        return _packb([_RECORD, block_part, [_LINKED, linked, sources]])
    except Exception:
        return None


def unpack_block_record(
    height: int,
    stored: bytes,
    *,
    digests_at: Callable[[int, int], list[bytes]],
    root_at: Callable[[int], bytes],
    value: Callable[[int], bytes],
    next_record: Callable[[], bytes | None] | None = None,
) -> tuple[bytes, bytes]:
    """The original ``(block, certificate)`` bytes of a stored record.

    ``next_record()`` returns the stored record of the next height (a linked certificate reads
    its signatures there; see :func:`link_certificate`).

    :raises CorruptionError: the stored form does not decode (its checksum passed, so this is
        a bug or a store written by other code), or a linked certificate's next record is
        missing or does not hold the precommits it names.
    """
    try:
        tag, block_part, cert_part = _unpackb(stored)
        if tag != _RECORD:
            raise ValueError("not a block record")
        if block_part[0] == _VERBATIM:
            block = block_part[1]
            time = None
        else:
            wire = _expand_block(block_part[1], height, digests_at, root_at, value)
            block = _packb(wire)
            time = wire[2]
        if cert_part[0] == _VERBATIM:
            certificate = cert_part[1]
        else:
            if time is None:
                raise ValueError("a compact certificate needs a compact block")
            compact = cert_part[1]
            if cert_part[0] == _LINKED:
                compact = _unlink(compact, cert_part[2], time, next_record)
            certificate = _packb(_expand_votes(compact, height, _block_hash(block), time,
                                               value))
    except CorruptionError:
        raise
    except Exception as exc:
        raise CorruptionError(
            f"stored block {height} does not decode: {exc.__class__.__name__}"
        ) from None
    if type(block) is not bytes or type(certificate) is not bytes:
        raise CorruptionError(f"stored block {height} does not decode")
    return block, certificate


def _unlink(
    compact: list[Any], sources: list[int], time: int,
    next_record: Callable[[], bytes | None] | None,
) -> list[Any]:
    """The compact certificate with the signatures it shares with the next block put back.

    :raises CorruptionError: the next record is missing or does not hold them.
    """
    nxt = None if next_record is None else next_record()
    if nxt is None:
        raise CorruptionError("its certificate shares precommits with the next block, which "
                              "is not stored")
    try:
        n_time, n_validators, n_deltas, n_sigs = _last_commit_votes(nxt)
    except Exception:
        raise CorruptionError("its certificate shares precommits with the next block, which "
                              "does not carry them (one of the two is damaged)") from None
    rnd, bh, version, vtype, chain, validators, deltas, kept = compact
    sigs: list[bytes] = []
    local = 0
    for vid, delta, k in zip(validators, deltas, sources, strict=True):
        if k < 0:
            sigs.append(kept[_SIG * local : _SIG * (local + 1)])
            local += 1
            continue
        if k >= len(n_validators) or n_validators[k] != vid or n_time + n_deltas[k] != \
                time + delta:
            raise CorruptionError("its certificate shares precommits with the next block, "
                                  "which does not carry them (one of the two is damaged)")
        sigs.append(n_sigs[_SIG * k : _SIG * (k + 1)])
    return [rnd, bh, version, vtype, chain, validators, deltas, b"".join(sigs)]


# ----------------------------------------------------------------------- compact checkpoint

_DASH = "\u2014 "
_KEY_ID = 4


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def pack_note(
    size: int, note: bytes, *, root: bytes | None, ids: DictionaryTxn
) -> bytes:
    """The stored form of a checkpoint note (unsealed): compact where exact, else verbatim.

    The compact form keeps the origin and each signer's ``name`` and key id by dictionary id,
    the signatures raw (not base64), and drops the size (the key) and the root when ``root``
    (the stored tree's root at ``size``) is what the note says.
    """
    mark = ids.mark()
    try:
        text = note.decode("utf-8")
        body, sep, sigs = text.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise _NotCompactable
        lines = body.split("\n")
        if len(lines) < 3:
            raise _NotCompactable
        origin, size_text, root_text, *extensions = lines
        if size_text != str(size):
            raise _NotCompactable
        note_root = binascii.a2b_base64(root_text.encode("ascii"), strict_mode=True)
        if len(note_root) != _HASH or _b64(note_root) != root_text:
            raise _NotCompactable
        signers: list[int] = []
        times: list[int | None] = []
        blobs: list[bytes] = []
        first_time: int | None = None
        for line in sigs[:-1].split("\n"):
            if not line.startswith(_DASH):
                raise _NotCompactable
            name, space, blob = line[len(_DASH):].partition(" ")
            if not space:
                raise _NotCompactable
            raw = binascii.a2b_base64(blob.encode("ascii"), strict_mode=True)
            if len(raw) <= _KEY_ID or _b64(raw) != blob:
                raise _NotCompactable
            signers.append(ids.ident(name.encode("utf-8") + b"\n" + raw[:_KEY_ID]))
            rest = raw[_KEY_ID:]
            if len(rest) == 8 + _SIG:  # a timestamped cosignature: its time as a small number
                stamp = int.from_bytes(rest[:8], "big")
                if first_time is None:
                    first_time = stamp
                times.append(stamp - first_time)
                blobs.append(rest[8:])
            else:
                times.append(None)
                blobs.append(rest)
        lengths = [len(b) for b in blobs]
        compact = [_COMPACT, ids.ident(origin.encode("utf-8")),
                   None if note_root == root else note_root, extensions, signers,
                   first_time, times, None if set(lengths) == {_SIG} else lengths,
                   b"".join(blobs)]
        stored = _packb(compact)
        if unpack_note(size, stored, root=root, value=ids.value) == note:
            return stored
    except Exception:
        pass
    ids.rollback(mark)
    return _packb([_VERBATIM, note])


def unpack_note(
    size: int, stored: bytes, *, root: bytes | None, value: Callable[[int], bytes]
) -> bytes:
    """The original note bytes of a stored checkpoint.

    :raises CorruptionError: the stored form does not decode.
    """
    try:
        parts = _unpackb(stored)
        if parts[0] == _VERBATIM:
            note = parts[1]
        else:
            (_, origin_ident, note_root, extensions, signers, first_time, times, lengths,
             blobs) = parts
            if note_root is None:
                if root is None:
                    raise ValueError("the note's root is the tree's, which is not there")
                note_root = root
            lines = [value(origin_ident).decode("utf-8"), str(size), _b64(note_root),
                     *extensions]
            out = ["\n".join(lines), "\n\n"]
            offset = 0
            for i, (signer, stamp) in enumerate(zip(signers, times, strict=True)):
                length = _SIG if lengths is None else lengths[i]
                sig = blobs[offset : offset + length]
                offset += length
                name, _, key_id = value(signer).partition(b"\n")
                if stamp is not None:
                    sig = (first_time + stamp).to_bytes(8, "big") + sig
                out.append(f"{_DASH}{name.decode('utf-8')} {_b64(key_id + sig)}\n")
            note = "".join(out).encode("utf-8")
    except CorruptionError:
        raise
    except Exception as exc:
        raise CorruptionError(
            f"stored checkpoint {size} does not decode: {exc.__class__.__name__}"
        ) from None
    if type(note) is not bytes:
        raise CorruptionError(f"stored checkpoint {size} does not decode")
    return note


def note_uses_root(stored: bytes) -> bool:
    """Whether a stored note re-derives its root from the tree."""
    try:
        parts = _unpackb(stored)
        return bool(parts[0] == _COMPACT and parts[2] is None)
    except Exception:
        return False
