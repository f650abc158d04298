"""The consensus core across validator-set changes: a 5-node harness (4 genesis validators plus
one follower that joins) adds a validator, removes one and rotates one's key, with a restart
in between; then single-core checks that a removed validator's and a rotated-out key's votes are
refused, that an under-signed change is never proposed and a block carrying it is invalid."""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
from collections.abc import Sequence

from ledger.consensus import (
    Action,
    Batch,
    Block,
    Broadcast,
    ChangeOp,
    Commit,
    CommitCertificate,
    ConsensusCore,
    Decision,
    Ed25519Signer,
    Persist,
    Proposal,
    SafetyState,
    ScheduleTimeout,
    TimeoutConfig,
    ValidatorHistory,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
    Vote,
    VoteType,
    verify_certificate,
)
from ledger.crypto import ValidatorKeys
from ledger.errors import VerificationError
from ledger.merkle.hashing import EMPTY_ROOT, leaf_hash, node_hash

CHAIN = "reconfig-core"
ORIGIN = "ledger.test/log"
KEYS = [ValidatorKeys(name=f"v{i}", origin=ORIGIN, seed=bytes([i + 11]) * 32) for i in range(6)]
INFOS = [ValidatorInfo.from_keys(k) for k in KEYS]
SIGNERS = [Ed25519Signer(seed=k.consensus_key.seed) for k in KEYS]
GENESIS = ValidatorRoster(members=INFOS[:4])
TIMEOUTS = TimeoutConfig(propose=1000, propose_delta=100, prevote=500, prevote_delta=50,
                         precommit=500, precommit_delta=50, commit=0)

# The three changes of the scenario, signed up front (each by a quorum of the set it modifies).
ADD = ValidatorSetChange.create(chain_id=CHAIN, effective_height=3, prev=GENESIS,
                                ops=[ChangeOp.add(INFOS[4])]).signed(SIGNERS[:3])
R1 = ADD.verify(GENESIS, chain_id=CHAIN)
REMOVE = ValidatorSetChange.create(chain_id=CHAIN, effective_height=6, prev=R1,
                                   ops=[ChangeOp.remove(INFOS[0].consensus_key)]
                                   ).signed(SIGNERS[1:5])
R2 = REMOVE.verify(R1, chain_id=CHAIN)
# Node 1 rotates to the identity "v5" (new consensus, log and cosigner keys).
ROTATE = ValidatorSetChange.create(chain_id=CHAIN, effective_height=9, prev=R2,
                                   ops=[ChangeOp.rotate(INFOS[1].consensus_key, INFOS[5])]
                                   ).signed(SIGNERS[1:4])
R3 = ROTATE.verify(R2, chain_id=CHAIN)


def mth(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


class ChangeApp:
    """A log of digests whose mempool also holds set changes (proposed while not included)."""

    def __init__(self, changes: Sequence[ValidatorSetChange] = ()) -> None:
        self.leaves: list[bytes] = []
        self.changes = list(changes)
        self.counter = 0

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        self.counter += 1
        batch = (hashlib.sha256(b"%d/%d" % (id(self), self.counter)).digest(),)
        leaves = self.leaves + list(batch)
        # Offer the first change not yet committed; the core leaves it out if not valid now.
        return Batch(digests=batch, tree_size=len(leaves), tree_root=mth(leaves),
                     changes=tuple(self.changes[:1]))

    def validate(self, block: Block) -> None:
        leaves = self.leaves + list(block.digests)
        if block.tree_size != len(leaves) or block.tree_root != mth(leaves):
            raise VerificationError("wrong tree head")

    def apply(self, block: Block) -> None:
        self.leaves += list(block.digests)
        done = {c.change_id for c in block.changes}
        self.changes = [c for c in self.changes if c.change_id not in done]


class Net:
    """Nodes 0..4 (node 4 starts as a follower), FIFO delivery, virtual-time timers, block sync;
    each node holds every key it will ever sign with (node 1 holds its rotated key too)."""

    def __init__(self) -> None:
        self.keys: list[list[Ed25519Signer]] = [[SIGNERS[i]] for i in range(5)]
        self.keys[1].append(SIGNERS[5])
        self.apps = [ChangeApp([ADD, REMOVE, ROTATE]) for _ in range(5)]
        self.commits: list[list[tuple[Block, CommitCertificate]]] = [[] for _ in range(5)]
        self.disk: list[bytes | None] = [None] * 5
        self.cores = [self._core(i) for i in range(5)]
        self.now = 0
        self.queue: list[tuple[int, bytes]] = []
        self.timers: list[tuple[int, int, int, ScheduleTimeout]] = []
        self.seq = itertools.count()
        self.signed_by: dict[int, set[bytes]] = {}

    def _core(self, i: int) -> ConsensusCore:
        blocks = [b for b, _ in self.commits[i]]
        last = self.commits[i][-1] if self.commits[i] else None
        disk = self.disk[i]
        return ConsensusCore(
            chain_id=CHAIN, history=ValidatorHistory.replay(GENESIS, blocks, chain_id=CHAIN),
            signer=self.keys[i][0], signers=self.keys[i][1:], app=self.apps[i],
            timeouts=TIMEOUTS, safety=None if disk is None else SafetyState.decode(disk),
            last_block=None if last is None else last[0],
            last_certificate=None if last is None else last[1],
        )

    def restart(self, i: int) -> None:
        self.timers = [t for t in self.timers if t[2] != i]
        heapq.heapify(self.timers)
        self.cores[i] = self._core(i)
        self.execute(i, self.cores[i].start(self.now))

    def execute(self, i: int, actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, Persist):
                self.disk[i] = a.data
            elif isinstance(a, Broadcast):
                m = a.message
                if isinstance(m, Vote | Proposal):
                    self.signed_by.setdefault(m.height, set()).add(m.validator)
                self.queue += [(j, a.data) for j in range(5) if j != i]
            elif isinstance(a, Commit):
                self.commits[i].append((a.block, a.certificate))
                self.apps[i].apply(a.block)
            else:
                heapq.heappush(self.timers, (a.at, next(self.seq), i, a))

    def sync(self) -> None:
        for i, core in enumerate(self.cores):
            if core.stats.highest_seen_height > core.height + 1:
                for peer in self.commits:
                    if len(peer) >= core.height:
                        b, cert = peer[core.height - 1]
                        self.execute(i, core.on_message(Decision(block=b, certificate=cert),
                                                        self.now))
                        break

    def run(self, heights: int, restart_at: int | None = None) -> None:
        for i, c in enumerate(self.cores):
            self.execute(i, c.start(self.now))
        restarted = False
        for _ in range(100_000):
            if all(len(c) >= heights for c in self.commits):
                return
            if restart_at is not None and not restarted and len(self.commits[2]) == restart_at:
                restarted = True
                self.restart(2)
            self.sync()
            if self.queue:
                j, data = self.queue.pop(0)
                self.execute(j, self.cores[j].on_wire(data, self.now))
            elif self.timers:
                at, _, i, t = heapq.heappop(self.timers)
                self.now = max(self.now, at)
                self.execute(i, self.cores[i].on_timeout(t, self.now))
            else:
                break
        raise AssertionError(f"no progress: {[len(c) for c in self.commits]}")


def run_scenario() -> Net:
    net = Net()
    net.run(heights=11, restart_at=7)
    return net


NET = run_scenario()


def test_all_nodes_agree_and_every_change_is_carried_at_its_first_allowed_height() -> None:
    chains = [[b.hash for b, _ in c[:11]] for c in NET.commits]
    assert all(ch == chains[0] for ch in chains)
    carried = {b.height: b.changes for b, _ in NET.commits[0] if b.changes}
    # ADD (E=3) at 1; REMOVE waits until ADD is in force (3) and must come by 4; ROTATE by 7.
    assert carried == {1: (ADD,), 3: (REMOVE,), 6: (ROTATE,)}
    history = NET.cores[0].history
    assert [e.start_height for e in history.epochs] == [1, 3, 6, 9]


def test_each_certificate_is_a_quorum_of_the_set_of_its_own_height() -> None:
    sets = {h: (GENESIS if h < 3 else R1 if h < 6 else R2 if h < 9 else R3).validator_set
            for h in range(1, 12)}
    for block, cert in NET.commits[4]:
        verify_certificate(cert, block_hash=block.hash, height=block.height,
                           validators=sets[block.height], chain_id=CHAIN)
        assert block.proposer in sets[block.height]
        assert {v.validator for v in cert.precommits} <= set(sets[block.height].keys)
    # Right at a switch the previous set does not suffice: block 3 needs 4 of the 5.
    _b3, c3 = NET.commits[0][2]
    assert sets[3].quorum == 4 and len(c3.precommits) >= 4


def test_signers_follow_the_switch() -> None:
    def heights(signer: Ed25519Signer) -> set[int]:
        return {h for h, keys in NET.signed_by.items() if signer.public_key in keys}

    # The new validator signs from height 3 on, never before (a node that is last to hear of
    # a height may find it decided before its turn to vote, so not necessarily at 3 itself).
    assert heights(SIGNERS[4]) and min(heights(SIGNERS[4])) >= 3
    # The removed validator's node keeps following but never signs from height 6 on.
    assert heights(SIGNERS[0]) and max(heights(SIGNERS[0])) < 6
    assert len(NET.commits[0]) >= 11
    # Node 1 switches keys at height 9: old key until 8, new key from 9.
    assert max(heights(SIGNERS[1])) < 9 and min(heights(SIGNERS[5])) >= 9
    assert NET.cores[1].public_key == SIGNERS[5].public_key


def _fresh_vote(signer: Ed25519Signer, core: ConsensusCore) -> Vote:
    return Vote.create(signer, type=VoteType.PREVOTE, chain_id=CHAIN, height=core.height,
                       round=core.round, block_hash=None, timestamp=1)


def test_removed_validator_and_rotated_out_key_cannot_vote_after_the_switch() -> None:
    core = NET.cores[3]
    assert core.height >= 12
    for signer in (SIGNERS[0], SIGNERS[1]):
        before = core.stats.invalid
        assert core.on_message(_fresh_vote(signer, core), NET.now) == []
        assert core.stats.invalid == before + 1
    # The rotated-in key and the added validator do count.
    before = core.stats.invalid
    core.on_message(_fresh_vote(SIGNERS[5], core), NET.now)
    core.on_message(_fresh_vote(SIGNERS[4], core), NET.now)
    assert core.stats.invalid == before


def test_history_rebuilt_from_stored_blocks_matches_the_live_one() -> None:
    blocks = [b for b, _ in NET.commits[2]]
    rebuilt = ValidatorHistory.replay(GENESIS, blocks, chain_id=CHAIN)
    assert rebuilt == NET.cores[2].history


def test_core_refuses_a_history_behind_its_chain() -> None:
    import pytest

    from ledger.errors import ConfigError

    b, cert = NET.commits[0][4]
    with pytest.raises(ConfigError, match="history"):
        ConsensusCore(chain_id=CHAIN, history=ValidatorHistory.genesis(GENESIS),
                      signer=SIGNERS[0], app=ChangeApp(), last_block=b, last_certificate=cert)


def test_under_signed_change_is_left_out_by_a_proposer_and_invalid_in_a_block() -> None:
    weak = ValidatorSetChange.create(chain_id=CHAIN, effective_height=3, prev=GENESIS,
                                     ops=[ChangeOp.add(INFOS[4])]).signed(SIGNERS[:2])
    # Validator 1 proposes (height 1, round 0): it leaves the change out and counts it.
    proposer = ConsensusCore(chain_id=CHAIN, history=ValidatorHistory.genesis(GENESIS),
                             signer=SIGNERS[1], app=ChangeApp([weak]), timeouts=TIMEOUTS)
    out = proposer.start(0)
    props = [a.message for a in out if isinstance(a, Broadcast)
             and isinstance(a.message, Proposal)]
    assert len(props) == 1 and props[0].block.changes == ()
    assert any("quorum is 3" in r for r in proposer.stats.reasons)
    # A Byzantine proposer puts it in anyway: honest validators prevote nil.
    follower = ConsensusCore(chain_id=CHAIN, history=ValidatorHistory.genesis(GENESIS),
                             signer=SIGNERS[2], app=ChangeApp(), timeouts=TIMEOUTS)
    follower.start(0)
    bad_block = dataclasses.replace(props[0].block, changes=(weak,))
    bad = Proposal.create(SIGNERS[1], chain_id=CHAIN, height=1, round=0, pol_round=-1,
                          block=bad_block)
    votes = [a.message for a in follower.on_message(bad, 1) if isinstance(a, Broadcast)]
    assert len(votes) == 1 and isinstance(votes[0], Vote) and votes[0].block_hash is None
    assert follower.stats.invalid_blocks == 1
    # The same block with a quorum-signed change gets a prevote for it.
    good_block = dataclasses.replace(props[0].block, changes=(ADD,))
    follower2 = ConsensusCore(chain_id=CHAIN, history=ValidatorHistory.genesis(GENESIS),
                              signer=SIGNERS[2], app=ChangeApp(), timeouts=TIMEOUTS)
    follower2.start(0)
    good = Proposal.create(SIGNERS[1], chain_id=CHAIN, height=1, round=0, pol_round=-1,
                           block=good_block)
    votes = [a.message for a in follower2.on_message(good, 1) if isinstance(a, Broadcast)]
    assert isinstance(votes[0], Vote) and votes[0].block_hash == good_block.hash
