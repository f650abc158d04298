"""Rules of Algorithm 1 in ledger.consensus.core, one test per rule, plus a 4-node harness.

The single-core tests drive validator 0 by hand with messages signed by validators 1..3; the
harness at the bottom passes wire bytes between 4 cores synchronously under a virtual clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import itertools
import random
from collections.abc import Sequence

import pytest

from ledger.consensus import (
    GENESIS_PREV_HASH,
    Action,
    Batch,
    Block,
    Broadcast,
    Commit,
    CommitCertificate,
    ConsensusCore,
    Decision,
    Ed25519Signer,
    Persist,
    Proposal,
    SafetyState,
    ScheduleTimeout,
    Step,
    TimeoutConfig,
    TimeoutKind,
    ValidatorSet,
    Vote,
    VoteType,
    bft_time,
)
from ledger.errors import VerificationError
from ledger.merkle.hashing import EMPTY_ROOT, leaf_hash, node_hash

CHAIN = "test-chain"
SIGNERS = [Ed25519Signer(seed=bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(keys=[s.public_key for s in SIGNERS])
TIMEOUTS = TimeoutConfig(
    propose=1000, propose_delta=100, prevote=500, prevote_delta=50, precommit=500,
    precommit_delta=50, commit=0,
)


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 Merkle tree hash, the naive recursive definition (test oracle)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


class ToyApp:
    """A log of digests: proposes its pending digests, validates the tree head."""

    def __init__(self, pending: Sequence[bytes] = ()) -> None:
        self.leaves: list[bytes] = []
        self.pending = list(pending)
        self.validated: list[bytes] = []

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        batch = tuple(self.pending[:2])
        leaves = self.leaves + list(batch)
        return Batch(digests=batch, tree_size=len(leaves), tree_root=mth(leaves))

    def validate(self, block: Block) -> None:
        self.validated.append(block.hash)
        leaves = self.leaves + list(block.digests)
        if block.tree_size != len(leaves) or block.tree_root != mth(leaves):
            raise VerificationError("wrong tree head")

    def apply(self, block: Block) -> None:
        self.leaves += list(block.digests)
        self.pending = [d for d in self.pending if d not in block.digests]


def digest(i: int) -> bytes:
    return hashlib.sha256(b"doc %d" % i).digest()


def make_core(index: int = 0, **kw: object) -> tuple[ConsensusCore, ToyApp]:
    app = ToyApp([digest(i) for i in range(4)])
    core = ConsensusCore(
        chain_id=CHAIN, validators=VALIDATORS, signer=SIGNERS[index], app=app,
        timeouts=TIMEOUTS, **kw,  # type: ignore[arg-type]
    )
    return core, app


def first_block(proposer: int = 1, digests: Sequence[bytes] = ()) -> Block:
    leaves = list(digests)
    return Block(
        height=1, prev_hash=GENESIS_PREV_HASH, time=0, proposer=SIGNERS[proposer].public_key,
        tree_size=len(leaves), tree_root=mth(leaves), digests=tuple(digests),
    )


def proposal(block: Block, round: int = 0, pol_round: int = -1, height: int = 1) -> Proposal:
    signer = SIGNERS[VALIDATORS.keys.index(VALIDATORS.proposer(height, round))]
    return Proposal.create(
        signer, chain_id=CHAIN, height=height, round=round, pol_round=pol_round, block=block
    )


def vote(
    i: int, type: VoteType, block_hash: bytes | None, round: int = 0, height: int = 1,
    chain: str = CHAIN, timestamp: int = 10,
) -> Vote:
    return Vote.create(
        SIGNERS[i], type=type, chain_id=chain, height=height, round=round,
        block_hash=block_hash, timestamp=timestamp,
    )


def sent(actions: Sequence[Action]) -> list[Proposal | Vote | Decision]:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def only_vote(actions: Sequence[Action]) -> Vote:
    votes = [m for m in sent(actions) if isinstance(m, Vote)]
    assert len(votes) == 1, actions
    return votes[0]


def feed(
    core: ConsensusCore, msgs: Sequence[Proposal | Vote | Decision], now: int = 5
) -> list[Action]:
    out: list[Action] = []
    for m in msgs:
        out += core.on_message(m, now)
    return out


# --- L11 StartRound ------------------------------------------------------------------------


def test_start_round_line11_non_proposer_schedules_growing_propose_timeout() -> None:
    core, _ = make_core(0)
    actions = core.start(now=0)
    assert sent(actions) == []
    (t,) = [a for a in actions if isinstance(a, ScheduleTimeout)]
    assert (t.kind, t.height, t.round, t.at) == (TimeoutKind.PROPOSE, 1, 0, 1000)


def test_start_round_line11_proposer_persists_then_broadcasts_its_block() -> None:
    core, _ = make_core(1)  # proposer of (1, 0)
    actions = core.start(now=0)
    kinds = [type(a) for a in actions]
    assert kinds.index(Persist) < kinds.index(Broadcast)
    prop = sent(actions)[0]
    assert isinstance(prop, Proposal) and prop.pol_round == -1
    assert prop.block.digests == (digest(0), digest(1))
    persist = next(a for a in actions if isinstance(a, Persist))
    assert persist.record.signed == prop.encode()
    # The proposer prevotes its own valid proposal in the same event (L22).
    assert only_vote(actions).block_hash == prop.block.hash


def test_timeouts_grow_linearly_with_round() -> None:
    assert [TIMEOUTS.duration(TimeoutKind.PROPOSE, r) for r in range(3)] == [1000, 1100, 1200]
    assert TIMEOUTS.duration(TimeoutKind.PREVOTE, 2) == 600
    assert TIMEOUTS.duration(TimeoutKind.PRECOMMIT, 4) == 700


# --- L22 -------------------------------------------------------------------------------------


def test_proposal_line22_valid_block_gets_prevote_for_it() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    v = only_vote(feed(core, [proposal(b)]))
    assert (v.type, v.block_hash, v.round) == (VoteType.PREVOTE, b.hash, 0)
    assert core.step is Step.PREVOTE


def test_proposal_line22_invalid_block_gets_nil_prevote() -> None:
    core, _ = make_core(0)
    core.start(0)
    bad = Block(
        height=1, prev_hash=GENESIS_PREV_HASH, time=0, proposer=SIGNERS[1].public_key,
        tree_size=5, tree_root=EMPTY_ROOT, digests=(),
    )
    assert only_vote(feed(core, [proposal(bad)])).block_hash is None
    assert core.stats.invalid_blocks == 1


@pytest.mark.parametrize(
    "field,value",
    [("time", 7), ("prev_hash", b"\x01" * 32), ("proposer", b"\x09" * 32)],
)
def test_proposal_line22_core_checks_reject_time_prev_hash_and_proposer(
    field: str, value: object
) -> None:
    core, _ = make_core(0)
    core.start(0)
    fields = dict(
        height=1, prev_hash=GENESIS_PREV_HASH, time=0, proposer=SIGNERS[1].public_key,
        tree_size=0, tree_root=EMPTY_ROOT, digests=(),
    )
    fields[field] = value
    bad = Block(**fields)  # type: ignore[arg-type]
    assert only_vote(feed(core, [proposal(bad)])).block_hash is None


def test_proposal_line22_locked_node_prevotes_nil_for_another_value() -> None:
    core, _ = make_core(0)
    core.start(0)
    a = first_block(digests=[digest(0)])
    feed(core, [proposal(a)] + [vote(i, VoteType.PREVOTE, a.hash) for i in (1, 2, 3)])
    assert core.locked_block == a and core.locked_round == 0
    # Round 1 (proposer 2) proposes a different fresh value: the lock forbids it.
    feed(core, [vote(i, VoteType.PRECOMMIT, None) for i in (1, 2, 3)])
    core.on_timeout(ScheduleTimeout(kind=TimeoutKind.PRECOMMIT, height=1, round=0, at=0), 10)
    assert core.round == 1
    b = first_block(proposer=2, digests=[digest(1)])
    assert only_vote(feed(core, [proposal(b, round=1)])).block_hash is None


# --- L28 -------------------------------------------------------------------------------------


def test_proposal_with_pol_line28_unlocks_when_pol_round_not_older_than_lock() -> None:
    core, _ = make_core(0)
    core.start(0)
    a = first_block(digests=[digest(0)])
    b = first_block(proposer=2, digests=[digest(1)])
    # Lock on a in round 0.
    feed(core, [proposal(a)] + [vote(i, VoteType.PREVOTE, a.hash) for i in (1, 2, 3)])
    assert core.locked_round == 0
    # Round 1: b gathers 2f+1 prevotes (we saw them) but we had no proposal in time.
    core.on_message(vote(1, VoteType.PRECOMMIT, None), 5)
    core.on_message(vote(2, VoteType.PRECOMMIT, None), 5)
    core.on_timeout(ScheduleTimeout(kind=TimeoutKind.PRECOMMIT, height=1, round=0, at=0), 10)
    pol = [vote(i, VoteType.PREVOTE, b.hash, round=1) for i in (1, 2, 3)]
    # Round 2: proposer 3 re-proposes b with pol_round 1 >= lockedRound 0: prevote b.
    feed(core, pol)
    feed(core, [vote(i, VoteType.PRECOMMIT, None, round=1) for i in (1, 2)])
    core.on_timeout(ScheduleTimeout(kind=TimeoutKind.PRECOMMIT, height=1, round=1, at=0), 20)
    assert core.round == 2
    v = only_vote(feed(core, [proposal(b, round=2, pol_round=1)]))
    assert v.block_hash == b.hash and v.round == 2


def test_proposal_with_pol_line28_needs_quorum_in_pol_round() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block(proposer=2, digests=[digest(1)])
    feed(core, [vote(i, VoteType.PRECOMMIT, None) for i in (1, 2)])
    core.on_timeout(ScheduleTimeout(kind=TimeoutKind.PRECOMMIT, height=1, round=0, at=0), 10)
    # Only 2 prevotes for b at round 0: the re-proposal justifies nothing yet.
    feed(core, [vote(i, VoteType.PREVOTE, b.hash) for i in (1, 2)])
    assert sent(feed(core, [proposal(b, round=1, pol_round=0)])) == []
    assert core.step is Step.PROPOSE


# --- L34, L36, L44, L47 ----------------------------------------------------------------------


def test_prevote_quorum_line36_persists_lock_before_precommit() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    feed(core, [proposal(b)])
    actions = feed(core, [vote(i, VoteType.PREVOTE, b.hash) for i in (1, 2)])
    persist_at = next(i for i, a in enumerate(actions) if isinstance(a, Persist))
    bcast_at = next(i for i, a in enumerate(actions) if isinstance(a, Broadcast))
    assert persist_at < bcast_at
    record = actions[persist_at]
    assert isinstance(record, Persist)
    assert record.record.locked_block == b and record.record.locked_round == 0
    assert record.record.step is Step.PRECOMMIT
    v = only_vote(actions)
    assert (v.type, v.block_hash) == (VoteType.PRECOMMIT, b.hash)
    assert v.timestamp > b.time  # BFT time: a precommit is later than the block it commits


def test_prevote_quorum_any_line34_schedules_prevote_timeout_once() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    feed(core, [proposal(b)])
    a1 = feed(core, [vote(1, VoteType.PREVOTE, None), vote(2, VoteType.PREVOTE, b.hash)])
    timers = [a for a in a1 if isinstance(a, ScheduleTimeout)]
    assert [(t.kind, t.at) for t in timers] == [(TimeoutKind.PREVOTE, 5 + 500)]
    a2 = feed(core, [vote(3, VoteType.PREVOTE, None)])
    assert not any(isinstance(a, ScheduleTimeout) and a.kind is TimeoutKind.PREVOTE for a in a2)
    # L61: the prevote timeout precommits nil.
    out = core.on_timeout(timers[0], 505)
    assert only_vote(out).block_hash is None and core.step is Step.PRECOMMIT


def test_prevote_quorum_nil_line44_precommits_nil() -> None:
    core, _ = make_core(0)
    core.start(0)
    core.on_timeout(ScheduleTimeout(kind=TimeoutKind.PROPOSE, height=1, round=0, at=0), 1000)
    out = feed(core, [vote(i, VoteType.PREVOTE, None) for i in (1, 2)])
    v = only_vote(out)
    assert (v.type, v.block_hash) == (VoteType.PRECOMMIT, None)
    assert core.locked_round == -1


def test_precommit_quorum_any_line47_then_timeout_line65_starts_next_round() -> None:
    core, _ = make_core(0)
    core.start(0)
    out = feed(core, [vote(i, VoteType.PRECOMMIT, None) for i in (1, 2, 3)])
    (t,) = [a for a in out if isinstance(a, ScheduleTimeout) and a.kind is TimeoutKind.PRECOMMIT]
    assert core.round == 0
    core.on_timeout(t, t.at)
    assert core.round == 1 and core.step is Step.PROPOSE


def test_timeout_propose_line57_prevotes_nil_and_stale_timeouts_do_nothing() -> None:
    core, _ = make_core(0)
    core.start(0)
    stale = ScheduleTimeout(kind=TimeoutKind.PROPOSE, height=1, round=3, at=0)
    assert core.on_timeout(stale, 1000) == []
    t = ScheduleTimeout(kind=TimeoutKind.PROPOSE, height=1, round=0, at=1000)
    assert only_vote(core.on_timeout(t, 1000)).block_hash is None
    assert core.on_timeout(t, 1001) == []  # fires once: step moved on


# --- L49 -------------------------------------------------------------------------------------


def test_decision_line49_commits_with_verifiable_certificate() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block(digests=[digest(0)])
    out = feed(core, [proposal(b)] + [vote(i, VoteType.PRECOMMIT, b.hash, timestamp=50 + i)
                                      for i in (1, 2, 3)])
    (commit,) = [a for a in out if isinstance(a, Commit)]
    assert commit.block == b
    commit.certificate.verify(VALIDATORS, CHAIN, b.hash)
    assert core.height == 2 and core.locked_round == -1 and not core.started
    (t,) = [a for a in out if isinstance(a, ScheduleTimeout) and a.kind is TimeoutKind.COMMIT]
    assert t.height == 2


def test_decision_line49_needs_a_quorum_of_distinct_validators() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    pc = vote(1, VoteType.PRECOMMIT, b.hash)
    out = feed(core, [proposal(b), pc, pc, vote(2, VoteType.PRECOMMIT, b.hash), pc])
    assert not any(isinstance(a, Commit) for a in out)
    assert core.stats.duplicate == 2


def test_decision_message_commits_a_block_missed_by_the_node() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    cert = CommitCertificate.from_votes([vote(i, VoteType.PRECOMMIT, b.hash) for i in (1, 2, 3)])
    out = core.on_message(Decision(block=b, certificate=cert), 5)
    assert [a.block for a in out if isinstance(a, Commit)] == [b]


def test_decision_message_with_short_certificate_is_rejected() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    cert = CommitCertificate.from_votes([vote(i, VoteType.PRECOMMIT, b.hash) for i in (1, 2)])
    assert core.on_message(Decision(block=b, certificate=cert), 5) == []
    assert core.stats.invalid == 1 and core.height == 1


# --- L55 -------------------------------------------------------------------------------------


def test_round_skip_line55_on_f_plus_one_senders_of_a_higher_round() -> None:
    core, _ = make_core(0)
    core.start(0)
    assert feed(core, [vote(1, VoteType.PREVOTE, None, round=5)]) == []
    assert core.round == 0
    feed(core, [vote(2, VoteType.PRECOMMIT, None, round=5)])
    assert core.round == 5 and core.stats.rounds_skipped == 1


def test_round_skip_line55_one_sender_twice_is_not_enough() -> None:
    core, _ = make_core(0)
    core.start(0)
    feed(core, [vote(1, VoteType.PREVOTE, None, round=5),
                vote(1, VoteType.PRECOMMIT, None, round=5)])
    assert core.round == 0


# --- admission: rejected before any state change ---------------------------------------------


def _forged(v: Vote) -> Vote:
    return dataclasses.replace(v, signature=bytes([v.signature[0] ^ 1]) + v.signature[1:])


@pytest.mark.parametrize(
    "make",
    [
        lambda: vote(1, VoteType.PREVOTE, None, round=7, chain="other-chain"),
        lambda: _forged(vote(1, VoteType.PREVOTE, None, round=7)),
        lambda: Vote.create(Ed25519Signer(seed=b"\x77" * 32), type=VoteType.PREVOTE,
                            chain_id=CHAIN, height=1, round=7, block_hash=None, timestamp=0),
        lambda: Proposal.create(SIGNERS[3], chain_id=CHAIN, height=1, round=0, pol_round=-1,
                                block=first_block(proposer=3)),
    ],
    ids=["wrong-chain", "bad-signature", "unknown-validator", "not-the-proposer"],
)
def test_invalid_messages_change_no_state_and_are_counted(make: object) -> None:
    core, _ = make_core(0)
    core.start(0)
    msg = make()  # type: ignore[operator]
    before = (core.round, core.step, dict(core._rounds))
    assert core.on_message(msg, 5) == []
    assert core.on_message(vote(2, VoteType.PREVOTE, None, round=7), 5) == []
    assert (core.round, core.step) == before[:2]  # f+1 = 2 senders needed: the bad one is not one
    assert core.stats.invalid == 1


def test_garbage_bytes_are_counted_invalid() -> None:
    core, _ = make_core(0)
    core.start(0)
    assert core.on_wire(b"\x93\x01\x02", 5) == []
    assert core.on_wire(b"\xc1", 5) == []
    assert core.stats.invalid == 2 and core.stats.reasons["malformed"] == 2


def test_stale_height_messages_are_counted_late() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    feed(core, [proposal(b)] + [vote(i, VoteType.PRECOMMIT, b.hash) for i in (1, 2, 3)])
    assert core.height == 2
    assert core.on_message(vote(3, VoteType.PREVOTE, b.hash), 6) == []
    assert core.stats.late == 1


def test_future_height_messages_are_buffered_within_window_and_bounded() -> None:
    core, _ = make_core(0, max_future_messages=2)
    core.start(0)
    feed(core, [vote(i, VoteType.PREVOTE, None, height=2) for i in (1, 2, 3)])
    feed(core, [vote(1, VoteType.PREVOTE, None, height=9)])
    assert core.stats.future_buffered == 2 and core.stats.future_dropped == 2


def test_double_vote_builds_verifiable_evidence_naming_the_culprit() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    feed(core, [vote(2, VoteType.PREVOTE, b.hash), vote(2, VoteType.PREVOTE, None)])
    (ev,) = core.evidence.items
    assert ev.culprit == SIGNERS[2].public_key
    ev.verify(VALIDATORS, CHAIN)
    assert core.stats.equivocations == 1


def test_equivocating_proposer_second_proposal_is_ignored() -> None:
    core, _ = make_core(0)
    core.start(0)
    a, b = first_block(digests=[digest(0)]), first_block(digests=[digest(1)])
    v = only_vote(feed(core, [proposal(a), proposal(b)]))
    assert v.block_hash == a.hash and core.stats.proposal_equivocations == 1


# --- safety state and restart ----------------------------------------------------------------


def test_unsafe_skip_lock_persist_drops_the_lock_from_the_precommit_record() -> None:
    core, _ = make_core(0, unsafe_skip_lock_persist=True)
    core.start(0)
    b = first_block()
    out = feed(core, [proposal(b)] + [vote(i, VoteType.PREVOTE, b.hash) for i in (1, 2)])
    rec = [a.record for a in out if isinstance(a, Persist)][-1]
    assert rec.step is Step.PRECOMMIT and rec.locked_round == -1
    assert core.locked_round == 0  # in memory the lock is there; only the disk forgets it


def test_restart_resends_last_signed_bytes_and_keeps_lock() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    out = feed(core, [proposal(b)] + [vote(i, VoteType.PREVOTE, b.hash) for i in (1, 2)])
    data = [a.data for a in out if isinstance(a, Persist)][-1]
    precommit = [m for m in sent(out) if isinstance(m, Vote)][-1]
    assert precommit.type is VoteType.PRECOMMIT
    restarted, _ = make_core(0, safety=SafetyState.decode(data))
    again = restarted.start(now=99_999)
    assert [a.data for a in again if isinstance(a, Broadcast)] == [precommit.encode()]
    assert not any(isinstance(a, Persist) for a in again)
    assert restarted.locked_block == b and restarted.step is Step.PRECOMMIT


def test_restart_never_signs_an_earlier_step_again() -> None:
    core, _ = make_core(0)
    core.start(0)
    b = first_block()
    out = feed(core, [proposal(b)] + [vote(i, VoteType.PREVOTE, None) for i in (1, 2, 3)])
    data = [a.data for a in out if isinstance(a, Persist)][-1]
    record = SafetyState.decode(data)
    assert record.hrs == (1, 0, Step.PRECOMMIT)  # precommitted nil at (1, 0)
    restarted, _ = make_core(0, safety=record)
    restarted.start(0)
    # Equivocating peers now show the proposal with a quorum of prevotes for it: L36 would
    # precommit b at (1, 0), but that (height, round, step) is signed: only the old bytes leave.
    later = feed(restarted, [proposal(b)] + [vote(i, VoteType.PREVOTE, b.hash) for i in (1, 2, 3)])
    assert not any(isinstance(a, Persist) for a in later)
    assert [a.data for a in later if isinstance(a, Broadcast)] == []


# --- 4 cores, synchronous network --------------------------------------------------------------


class Cluster:
    """4 cores, delivery of wire bytes, timers on a virtual clock. ``silent`` nodes drop all they
    would send; with a ``seed``, messages are reordered and a ``loss`` share of them dropped,
    and every node calls ``rebroadcast`` every ``REBROADCAST_MS`` (the liveness mechanism)."""

    REBROADCAST_MS = 700

    def __init__(
        self, silent: frozenset[int] = frozenset(), seed: int | None = None, loss: float = 0.0
    ) -> None:
        self.apps = [ToyApp([digest(i) for i in range(10)]) for _ in range(4)]
        self.cores = [self._core(i) for i in range(4)]
        self.silent = silent
        self.rng = random.Random(seed) if seed is not None else None
        self.loss = loss
        self.now = 0
        self.queue: list[tuple[int, bytes]] = []
        self.timers: list[tuple[int, int, int, ScheduleTimeout | None]] = []
        self.seq = itertools.count()
        self.commits: list[list[tuple[Block, CommitCertificate]]] = [[] for _ in range(4)]
        self.disk: list[bytes | None] = [None] * 4

    def _core(self, i: int, safety: SafetyState | None = None) -> ConsensusCore:
        last = self.commits[i][-1] if hasattr(self, "commits") and self.commits[i] else None
        return ConsensusCore(
            chain_id=CHAIN, validators=VALIDATORS, signer=SIGNERS[i], app=self.apps[i],
            timeouts=TIMEOUTS, safety=safety,
            last_block=None if last is None else last[0],
            last_certificate=None if last is None else last[1],
        )

    def restart(self, i: int) -> None:
        """Crash node i (its memory and pending timers are lost) and restart it from disk."""
        self.timers = [t for t in self.timers if t[2] != i]
        heapq.heapify(self.timers)
        disk = self.disk[i]
        self.cores[i] = self._core(i, None if disk is None else SafetyState.decode(disk))
        self.execute(i, self.cores[i].start(self.now))
        heapq.heappush(self.timers, (self.now + self.REBROADCAST_MS, next(self.seq), i, None))

    def execute(self, i: int, actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, Persist):
                self.disk[i] = a.data
            elif isinstance(a, Broadcast):
                if i not in self.silent:
                    self.queue += [(j, a.data) for j in range(4) if j != i]
            elif isinstance(a, Commit):
                self.commits[i].append((a.block, a.certificate))
                self.apps[i].apply(a.block)
            else:
                heapq.heappush(self.timers, (a.at, next(self.seq), i, a))

    def done(self, heights: int) -> bool:
        return all(len(self.commits[i]) >= heights for i in range(4) if i not in self.silent)

    def sync(self) -> None:
        """Block sync as a driver does it: a node that heard of heights beyond its next one is
        fed the next (block, certificate) of a peer that has it."""
        for i, core in enumerate(self.cores):
            if core.stats.highest_seen_height > core.height + 1:
                for peer in self.commits:
                    if len(peer) >= core.height:
                        b, cert = peer[core.height - 1]
                        self.execute(i, core.on_message(Decision(block=b, certificate=cert),
                                                        self.now))
                        break

    def step(self) -> bool:
        if self.rng is not None:
            self.sync()
        if self.queue:
            k = self.rng.randrange(len(self.queue)) if self.rng else 0
            j, data = self.queue.pop(k)
            if self.rng is None or self.rng.random() >= self.loss:
                self.execute(j, self.cores[j].on_wire(data, self.now))
            return True
        if self.timers:
            at, _, i, t = heapq.heappop(self.timers)
            self.now = max(self.now, at)
            if t is None:
                self.execute(i, self.cores[i].rebroadcast(self.now))
                heapq.heappush(
                    self.timers, (self.now + self.REBROADCAST_MS, next(self.seq), i, None)
                )
            else:
                self.execute(i, self.cores[i].on_timeout(t, self.now))
            return True
        return False

    def run(self, heights: int, max_steps: int = 50_000) -> None:
        for i, c in enumerate(self.cores):
            self.execute(i, c.start(self.now))
            if self.rng is not None:
                heapq.heappush(self.timers, (self.REBROADCAST_MS, next(self.seq), i, None))
        self.run_more(heights, max_steps)

    def run_more(self, heights: int, max_steps: int = 50_000) -> None:
        for _ in range(max_steps):
            if self.done(heights) or not self.step():
                break
        if not self.done(heights):
            raise AssertionError(f"no progress: {[len(c) for c in self.commits]}")

    def assert_agreement(self) -> None:
        for height in range(max(len(c) for c in self.commits)):
            decided = {c[height][0].hash for c in self.commits if len(c) > height}
            assert len(decided) == 1, f"fork at height {height + 1}"


def test_four_honest_cores_commit_the_same_blocks_with_increasing_time() -> None:
    net = Cluster()
    net.run(heights=4)
    chains = [[b.hash for b, _ in c[:4]] for c in net.commits]
    assert all(ch == chains[0] for ch in chains)
    blocks = [b for b, _ in net.commits[0][:4]]
    assert [b.height for b in blocks] == [1, 2, 3, 4]
    for prev, nxt in itertools.pairwise(blocks):
        assert nxt.prev_hash == prev.hash and nxt.time > prev.time
        assert nxt.last_commit is not None
        assert nxt.time == bft_time(nxt.last_commit, prev.time)
    for b, cert in net.commits[0]:
        cert.verify(VALIDATORS, CHAIN, b.hash)
    assert net.apps[0].leaves == [digest(i) for i in range(8)]


def test_silent_proposer_costs_a_round_but_the_height_commits() -> None:
    net = Cluster(silent=frozenset({1}))  # proposer of (1, 0)
    net.run(heights=2)
    first = net.commits[0][0][0]
    assert first.proposer != SIGNERS[1].public_key
    assert net.cores[0].stats.timeouts > 0


@pytest.mark.parametrize("seed", range(6))
def test_lossy_reordering_network_with_rebroadcast_keeps_agreement_and_progress(
    seed: int,
) -> None:
    net = Cluster(seed=seed, loss=0.3)
    net.run(heights=3)
    net.assert_agreement()
    for b, cert in net.commits[0]:
        cert.verify(VALIDATORS, CHAIN, b.hash)


@pytest.mark.parametrize("seed", range(4))
def test_crash_restart_mid_height_keeps_agreement_and_never_double_signs(seed: int) -> None:
    net = Cluster(seed=seed, loss=0.1)
    net.run(heights=1)
    signed: dict[tuple[int, int, int, int], bytes] = {}
    rng = random.Random(seed)
    for _ in range(3):
        for _ in range(rng.randrange(5, 60)):
            net.step()
            for i in range(4):
                if net.disk[i] is not None:
                    rec = SafetyState.decode(net.disk[i])  # type: ignore[arg-type]
                    key = (i, *rec.hrs)
                    assert signed.setdefault(key, rec.signed) == rec.signed, "double sign"
        net.restart(rng.randrange(4))
    net.run_more(heights=4)
    net.assert_agreement()
