"""Byzantine behaviours: node wrappers that hold a validator's real key and sign anything.

Each behaviour runs the production replica underneath (so it knows the height, the round and
the blocks, as a real attacker would) and changes what leaves the node: it rewrites the
replica's outgoing consensus messages, signs with the validator's real key, and seals its own
envelopes with it. The list follows the design
brief's section 5 and CometBFT's Byzantine tests (``TestByzantinePrevoteEquivocation``,
``TestByzantineConflictingProposalsWithPartition``) and Diem's Twins:

========================  ======================================================================
``equivocate``            as proposer, sends one valid block to half the peers and another valid
                          block to the other half
``double_vote``           sends each vote to half the peers and a conflicting vote to the rest
``invalid``               votes for blocks that do not exist, proposes blocks with a wrong tree
                          head, sends votes for absurd rounds and heights
``silent``                sends nothing at all (a silent proposer costs its rounds)
``replay``                re-sends old messages of any height, and signs messages for a foreign
                          chain id with its real key
``forge``                 flips signature bits, claims other validators' keys, signs with a key
                          outside the validator set
``fuzz``                  sends random bytes, bit-flipped and truncated real messages, and one
                          message over the size cap
``twins``                 two copies of honest code running one validator key (two endpoints)
========================  ======================================================================

A Byzantine endpoint is outside the checker's honest set: it may commit or sign anything.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ledger.consensus import Ed25519Signer, Proposal, Vote, VoteType, decode_message
from ledger.consensus.messages import MAX_MESSAGE_BYTES
from ledger.errors import ProtocolError
from ledger.replica import Send
from ledger.sim.node import SimNode, consensus_item

#: History kept by replaying/forging/fuzzing nodes (older entries are overwritten at random).
_HISTORY = 256


class ByzantineNode(SimNode):
    """Base of every behaviour: not honest, remembers consensus bytes it received."""

    honest = False
    behaviour = "byzantine"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: list[bytes] = []
        self.signer = Ed25519Signer(seed=self.keys[0].consensus_key.seed)

    def deliver(self, src: int, payload: bytes) -> None:
        """Remember what arrives (reservoir of :data:`_HISTORY`), then act on it honestly."""
        item = consensus_item(payload)
        if item is not None and len(item) < 64 * 1024:
            if len(self.history) < _HISTORY:
                self.history.append(item)
            else:
                self.history[self.world.sched.rng.randrange(_HISTORY)] = item
        super().deliver(src, payload)

    def broadcast_consensus(self, data: bytes) -> None:
        """Send consensus bytes to every other endpoint."""
        for p in self.peers():
            self.send_consensus_to(p, data)

    def _halves(self) -> tuple[list[int], list[int]]:
        peers = self.peers()
        self.world.sched.rng.shuffle(peers)
        mid = len(peers) // 2
        return peers[:mid], peers[mid:]

    def _random_hash(self) -> bytes:
        return self.world.sched.rng.randbytes(32)

    def _where(self) -> tuple[int, int]:
        core = None if self.replica is None else self.replica.driver.core
        return (1, 0) if core is None else (core.height, core.round)

    def _own(self, action: Send) -> Proposal | Vote | None:
        """The consensus message of ``action`` if this validator signed it."""
        try:
            msg = decode_message(action.payload)
        except ProtocolError:
            return None
        if isinstance(msg, Proposal | Vote) and msg.validator in self.consensus_keys:
            return msg
        return None


class Equivocator(ByzantineNode):
    """Proposes two different valid blocks for one (height, round)."""

    behaviour = "equivocate"

    def emit(self, action: Send) -> None:
        msg = self._own(action)
        replica = self.replica
        if not isinstance(msg, Proposal) or replica is None:
            super().emit(action)
            return
        digests = tuple(self._random_hash() for _ in range(3))
        head = replica.store.preview(digests).head
        other = dataclasses.replace(msg.block, digests=digests, tree_size=head.size,
                                    tree_root=head.root)
        fake = Proposal.create(self.signer, chain_id=msg.chain_id, height=msg.height,
                               round=msg.round, pol_round=msg.pol_round, block=other)
        left, right = self._halves()
        for p in left:
            self.send_consensus_to(p, action.payload)
        for p in right:
            self.send_consensus_to(p, fake.encode())


class DoubleVoter(ByzantineNode):
    """Signs two conflicting votes for every vote it casts."""

    behaviour = "double_vote"

    def emit(self, action: Send) -> None:
        msg = self._own(action)
        if not isinstance(msg, Vote):
            super().emit(action)
            return
        other = None if msg.block_hash is not None else self._random_hash()
        twin = Vote.create(self.signer, type=msg.type, chain_id=msg.chain_id, height=msg.height,
                           round=msg.round, block_hash=other, timestamp=msg.timestamp)
        left, right = self._halves()
        for p in left:
            self.send_consensus_to(p, action.payload)
        for p in right:
            self.send_consensus_to(p, twin.encode())


class InvalidVoter(ByzantineNode):
    """Votes for blocks that do not exist and proposes blocks with a wrong tree head."""

    behaviour = "invalid"

    def emit(self, action: Send) -> None:
        msg = self._own(action)
        if isinstance(msg, Vote):
            bogus = Vote.create(self.signer, type=msg.type, chain_id=msg.chain_id,
                                height=msg.height, round=msg.round,
                                block_hash=self._random_hash(), timestamp=msg.timestamp)
            self.broadcast_consensus(bogus.encode())
        elif isinstance(msg, Proposal):
            bad = dataclasses.replace(msg.block, tree_root=self._random_hash())
            prop = Proposal.create(self.signer, chain_id=msg.chain_id, height=msg.height,
                                   round=msg.round, pol_round=msg.pol_round, block=bad)
            self.broadcast_consensus(prop.encode())
        else:
            super().emit(action)

    def on_tick(self) -> None:
        height, round = self._where()
        for h, r in ((height, round + 5000), (height + 50, 0), (height, 2**31 - 1)):
            v = Vote.create(self.signer, type=VoteType.PRECOMMIT, chain_id=self.world.chain_id,
                            height=h, round=r, block_hash=self._random_hash(), timestamp=0)
            self.broadcast_consensus(v.encode())


class Silent(ByzantineNode):
    """Sends nothing: no votes, no proposals, no gossip, no cosignatures, no answers."""

    behaviour = "silent"

    def emit(self, action: Send) -> None:
        return

    def send_item(self, to: str | None, kind: int, payload: bytes) -> None:
        return

    def answers_fetches(self) -> bool:
        return False


class Replayer(ByzantineNode):
    """Re-sends old messages and signs messages for a foreign chain with its real key."""

    behaviour = "replay"

    def on_tick(self) -> None:
        rng = self.world.sched.rng
        peers = self.peers()
        for _ in range(3):
            if self.history:
                self.send_consensus_to(rng.choice(peers), rng.choice(self.history))
        height, round = self._where()
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            v = Vote.create(self.signer, type=t, chain_id="foreign-chain", height=height,
                            round=round, block_hash=self._random_hash(), timestamp=0)
            self.broadcast_consensus(v.encode())


class Forger(ByzantineNode):
    """Forged signatures, stolen identities and keys outside the validator set."""

    behaviour = "forge"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.stranger = Ed25519Signer(
            seed=hashlib.sha256(b"stranger%d" % self.world.seed).digest()
        )

    def on_tick(self) -> None:
        rng = self.world.sched.rng
        height, round = self._where()
        out: list[bytes] = []
        if self.history:
            raw = rng.choice(self.history)
            try:
                msg = decode_message(raw)
            except ProtocolError:
                msg = None
            if isinstance(msg, Vote):
                sig = bytearray(msg.signature)
                sig[rng.randrange(len(sig))] ^= 1 << rng.randrange(8)
                out.append(dataclasses.replace(msg, signature=bytes(sig)).encode())
                stolen = Vote.create(self.signer, type=msg.type, chain_id=msg.chain_id,
                                     height=msg.height, round=msg.round,
                                     block_hash=self._random_hash(), timestamp=msg.timestamp)
                out.append(dataclasses.replace(stolen, validator=msg.validator).encode())
            elif isinstance(msg, Proposal):
                sig = bytearray(msg.signature)
                sig[0] ^= 0xFF
                out.append(dataclasses.replace(msg, signature=bytes(sig)).encode())
        for t in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            out.append(Vote.create(self.stranger, type=t, chain_id=self.world.chain_id,
                                   height=height, round=round, block_hash=self._random_hash(),
                                   timestamp=0).encode())
        peers = self.peers()
        for data in out:
            self.send_consensus_to(rng.choice(peers), data)


class Fuzzer(ByzantineNode):
    """Random bytes, mutated and truncated real messages, and one oversized message."""

    behaviour = "fuzz"
    oversized_sent = False

    def on_tick(self) -> None:
        rng = self.world.sched.rng
        peers = self.peers()
        out = [rng.randbytes(rng.randint(0, 300))]
        if self.history:
            raw = bytearray(rng.choice(self.history))
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            out.append(bytes(raw))
            whole = rng.choice(self.history)
            out.append(whole[: rng.randrange(len(whole))])
        if not self.oversized_sent:
            self.oversized_sent = True
            # A msgpack array header promising more than the cap, then the cap's worth of bytes.
            out.append(b"\xdd\x00\x00\x00\x09" + bytes(MAX_MESSAGE_BYTES))
        for data in out:
            self.send_consensus_to(rng.choice(peers), data)


class Twin(SimNode):
    """Honest code on a key another endpoint also runs: Byzantine as a pair (Diem Twins).
    The twins seal envelopes with one key, so each refuses the other's as its own loop-back;
    every other node hears both."""

    honest = False
    behaviour = "twins"


#: Behaviour name -> node class. ``twins`` is special-cased by the runner (two endpoints).
BEHAVIOURS: dict[str, type[SimNode]] = {
    cls.behaviour: cls
    for cls in (Equivocator, DoubleVoter, InvalidVoter, Silent, Replayer, Forger, Fuzzer, Twin)
}
