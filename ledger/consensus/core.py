"""The Tendermint consensus state machine of one validator: events in, actions out.

This module owns the round state. It implements Algorithm 1 of Buchman, Kwon and Milosevic,
"The latest gossip on BFT consensus" (2018), with ``n = 3f + 1`` validators, ``p`` the local one,
``h_p``/``round_p``/``step_p`` its height, round and step. The rules, by line of Algorithm 1
(``v`` a block, ``id(v)`` its hash, "2f + 1" read as ``ValidatorSet.quorum`` distinct senders):

* **L11 StartRound(r)**: ``round_p <- r``, ``step_p <- propose``; if ``p`` proposes
  ``(h_p, r)`` it broadcasts ``<PROPOSAL, h_p, r, validValue_p or getValue(), validRound_p>``,
  otherwise it schedules OnTimeoutPropose(h_p, r) after ``timeoutPropose(r)``.
* **L22** upon ``<PROPOSAL, h_p, round_p, v, -1>`` from the proposer, ``step_p = propose``:
  prevote ``id(v)`` if ``valid(v)`` and (``lockedRound_p = -1`` or ``lockedValue_p = v``),
  else prevote nil; ``step_p <- prevote``.
* **L28** upon ``<PROPOSAL, h_p, round_p, v, vr>`` and 2f + 1 ``<PREVOTE, h_p, vr, id(v)>``,
  ``step_p = propose``, ``0 <= vr < round_p``: prevote ``id(v)`` if ``valid(v)`` and
  (``lockedRound_p <= vr`` or ``lockedValue_p = v``), else nil; ``step_p <- prevote``.
* **L34** upon 2f + 1 ``<PREVOTE, h_p, round_p, *>`` with ``step_p = prevote``, the first time:
  schedule OnTimeoutPrevote after ``timeoutPrevote(round_p)``.
* **L36** upon ``<PROPOSAL, h_p, round_p, v, *>`` and 2f + 1 ``<PREVOTE, h_p, round_p, id(v)>``,
  ``valid(v)``, ``step_p >= prevote``, the first time: if ``step_p = prevote``, lock
  (``lockedValue_p <- v``, ``lockedRound_p <- round_p``), precommit ``id(v)``,
  ``step_p <- precommit``; in any case ``validValue_p <- v``, ``validRound_p <- round_p``.
* **L44** upon 2f + 1 ``<PREVOTE, h_p, round_p, nil>`` with ``step_p = prevote``: precommit nil;
  ``step_p <- precommit``.
* **L47** upon 2f + 1 ``<PRECOMMIT, h_p, round_p, *>``, the first time: schedule
  OnTimeoutPrecommit after ``timeoutPrecommit(round_p)``.
* **L49** upon ``<PROPOSAL, h_p, r, v, *>`` and 2f + 1 ``<PRECOMMIT, h_p, r, id(v)>`` for any
  round ``r``, no decision yet at ``h_p``: if ``valid(v)``, decide ``v`` (emit ``Commit``), move
  to ``h_p + 1``, reset locks, valid values and the message log, StartRound(0).
* **L55** upon ``f + 1`` messages ``<*, h_p, r, ...>`` from distinct validators with
  ``r > round_p``: StartRound(r).
* **L57** OnTimeoutPropose(h, r): if still ``(h_p, round_p, propose)``, prevote nil.
* **L61** OnTimeoutPrevote(h, r): if still ``(h_p, round_p, prevote)``, precommit nil.
* **L65** OnTimeoutPrecommit(h, r): if still ``(h_p, round_p)``, StartRound(round_p + 1).

Choices the paper leaves open, made here:

* ``valid(v)`` = the core's checks (height, previous hash, ``last_commit`` certificate of the
  previous block, BFT time, proposer is a validator) and then ``Application.validate``; results
  are cached per block hash for the height.
* In L49 the block may be known from any valid proposal of the height or from a ``Decision``
  (catch-up): a block is identified by its hash, and the certificate's precommits are the
  2f + 1 precommits of L49.
* After a decision the next height starts on a ``COMMIT`` timeout (Tendermint's
  ``timeout_commit``, default 0): the driver applies the ``Commit`` action before it delivers
  that timeout, so ``Application.propose``/``validate`` of ``h + 1`` see block ``h`` applied.
* Upon rules are re-evaluated until none fires (a fixpoint) after every event; every rule
  changes a step, a round, a height or a "first time" flag when it fires, so the loop ends.
* Every signature goes through :class:`~ledger.consensus.safety.SafetyState`: the ``Persist``
  action with the new last-signed record and the current locks precedes the ``Broadcast``.
* **Validator-set changes** (:mod:`ledger.consensus.reconfig`): "the validators" always means
  the set *of the height in question* (:meth:`ConsensusCore.validators_at`, from the
  :class:`~ledger.consensus.reconfig.ValidatorHistory` the core keeps): proposer, quorum and
  signatures of a message of height ``h`` use the set of ``h``; a block's ``last_commit`` is
  checked against the set of ``h - 1``; a block's change is part of ``valid(v)``; deciding a
  block appends its change to the history. A node holding several keys (a rotation in
  progress) signs at height ``h`` with the one in the set of ``h``, if any.

Nothing here reads a clock, a random source or does I/O: ``now`` (milliseconds) is given with
every event, and the same inputs give the same actions, which is what the simulator replays.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ledger.consensus.block import GENESIS_PREV_HASH, MAX_BLOCK_DIGESTS, Block, expected_time
from ledger.consensus.evidence import DuplicateVoteEvidence, EvidencePool
from ledger.consensus.messages import (
    CommitCertificate,
    Decision,
    Message,
    Proposal,
    Signer,
    Vote,
    VoteType,
    decode_message,
)
from ledger.consensus.reconfig import ValidatorHistory, ValidatorSetChange
from ledger.consensus.safety import DoubleSignRefused, SafetyState, Step
from ledger.consensus.validators import ValidatorSet
from ledger.errors import ConfigError, CorruptionError, LedgerError, ProtocolError
from ledger.merkle.hashing import HASH_SIZE

#: Messages for heights ``h_p + 1 .. h_p + FUTURE_HEIGHT_WINDOW`` are buffered, not dropped.
FUTURE_HEIGHT_WINDOW = 2

#: At most this many future-height messages are buffered (more are dropped and counted).
MAX_FUTURE_MESSAGES = 4096

#: Rounds further than this above ``round_p`` are ignored (bounds the per-round maps).
MAX_ROUND_AHEAD = 1000


class TimeoutKind(enum.Enum):
    """The timers of Algorithm 1 plus Tendermint's commit timer (start of the next height)."""

    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    COMMIT = "commit"


@dataclass(frozen=True, kw_only=True)
class TimeoutConfig:
    """Timeout durations in milliseconds: ``base + round * delta`` per kind (paper section 4:
    timeouts grow with the round so that after GST they eventually exceed message delays)."""

    propose: int = 3000
    propose_delta: int = 500
    prevote: int = 1000
    prevote_delta: int = 500
    precommit: int = 1000
    precommit_delta: int = 500
    commit: int = 0

    def duration(self, kind: TimeoutKind, round: int) -> int:
        """Milliseconds until ``kind`` fires in ``round``."""
        if kind is TimeoutKind.PROPOSE:
            return self.propose + round * self.propose_delta
        if kind is TimeoutKind.PREVOTE:
            return self.prevote + round * self.prevote_delta
        if kind is TimeoutKind.PRECOMMIT:
            return self.precommit + round * self.precommit_delta
        return self.commit


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Broadcast:
    """Send ``message`` (wire bytes ``data``) to every peer. The core has already applied it
    to its own state: the driver need not deliver it back."""

    message: Message
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Persist:
    """Durably store ``record`` (bytes ``data = record.encode()``) *before* executing any later
    action. The newest record replaces the previous one."""

    record: SafetyState
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Commit:
    """``block`` is decided with ``certificate``. Store both durably, then an end-of-height
    marker, then apply the block to the application, before delivering the next event."""

    block: Block
    certificate: CommitCertificate


@dataclass(frozen=True, kw_only=True)
class ScheduleTimeout:
    """Call ``on_timeout(this, now)`` once the clock reads ``at`` (ms) or later. Stale timeouts
    are harmless: the core ignores those whose height/round/step have passed."""

    kind: TimeoutKind
    height: int
    round: int
    at: int


Action = Broadcast | Persist | Commit | ScheduleTimeout


# --- the application ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Batch:
    """What the application contributes to a block: the digests and the tree head after them,
    and optionally a validator-set change waiting in its mempool (the core proposes it only if
    it is valid at this height, see :mod:`ledger.consensus.reconfig`; otherwise it is left out
    and counted in ``stats.reasons["change left out: ..."]``)."""

    digests: tuple[bytes, ...]
    tree_size: int
    tree_root: bytes
    changes: tuple[ValidatorSetChange, ...] = ()


class Application(Protocol):
    """The injected state machine (the Merkle log). Both calls are made only for the current
    height, after every earlier ``Commit`` was applied."""

    def propose(self, height: int, prev_block: Block | None, now: int) -> Batch:
        """Build the batch of the next block (Algorithm 1's ``getValue()``) from the mempool:
        digests not yet in the log and the tree head after appending them."""
        ...

    def validate(self, block: Block) -> None:
        """Raise a :class:`~ledger.errors.LedgerError` if ``block``'s batch is not acceptable:
        wrong tree head for the log plus its digests, too many digests, a malformed digest."""
        ...


# --- counters ----------------------------------------------------------------------------


@dataclass
class CoreStats:
    """Counters a driver can export as metrics. ``invalid`` = rejected before any state change
    (bad signature, unknown validator, wrong chain, wrong proposer, malformed, oversized);
    ``late`` = for a height already decided; ``future_dropped`` = beyond the window or buffer.
    ``highest_seen_height`` = the highest later height that a verified ``Decision`` reached or
    that f+1 distinct validators claimed in validly signed messages (a hint that this node is
    behind and the driver should feed it ``Decision``s; f liars cannot raise it)."""

    received: int = 0
    invalid: int = 0
    late: int = 0
    duplicate: int = 0
    future_buffered: int = 0
    future_dropped: int = 0
    equivocations: int = 0
    proposal_equivocations: int = 0
    invalid_blocks: int = 0
    refused_signs: int = 0
    rounds_skipped: int = 0
    timeouts: int = 0
    commits: int = 0
    highest_seen_height: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


# --- per-height message log --------------------------------------------------------------


#: How many different votes of one validator for one (round, type) are kept and counted. An
#: honest validator casts one; an equivocator's conflicting votes must still count towards each
#: value it voted for (the quorum-intersection argument counts it once per value, as the
#: Byzantine validator it is), or an honest node that saw the "wrong" half of an equivocation
#: can never assemble the polka that a peer relays and the height stalls. Bounded, so a
#: validator flooding random hashes costs this much memory and no more.
MAX_VOTES_PER_VALIDATOR = 8


class _VoteSet:
    """Votes of one (round, type): per block hash, the distinct validators that voted for it.

    The first vote of each validator defines :meth:`total` (distinct voters); conflicting votes
    of an equivocator are kept too (up to :data:`MAX_VOTES_PER_VALIDATOR`) and counted for their
    own hash, and the caller turns them into evidence.
    """

    __slots__ = ("by_hash", "first", "votes")

    def __init__(self) -> None:
        self.first: dict[bytes, Vote] = {}
        self.votes: dict[tuple[bytes, bytes | None], Vote] = {}
        self.by_hash: Counter[bytes | None] = Counter()

    def add(self, vote: Vote) -> tuple[bool, Vote | None]:
        """Add ``vote``. Return (whether it was counted, the validator's earlier *conflicting*
        vote if any). A byte-identical or same-hash repeat returns ``(False, None)``."""
        key = (vote.validator, vote.block_hash)
        if key in self.votes:
            return False, None
        earlier = self.first.get(vote.validator)
        if earlier is None:
            self.first[vote.validator] = vote
        elif sum(1 for v, _ in self.votes if v == vote.validator) >= MAX_VOTES_PER_VALIDATOR:
            return False, earlier
        self.votes[key] = vote
        self.by_hash[vote.block_hash] += 1
        return True, earlier

    def total(self) -> int:
        """Distinct validators that voted (for anything) in this (round, type)."""
        return len(self.first)

    def for_hash(self, block_hash: bytes | None) -> list[Vote]:
        """One vote per validator that voted for ``block_hash``."""
        return [v for (_, h), v in self.votes.items() if h == block_hash]

    def all_votes(self) -> list[Vote]:
        """Every kept vote, conflicting ones included (for relaying)."""
        return list(self.votes.values())


@dataclass
class _RoundLog:
    proposal: Proposal | None = None
    prevotes: _VoteSet = field(default_factory=_VoteSet)
    precommits: _VoteSet = field(default_factory=_VoteSet)
    senders: set[bytes] = field(default_factory=set)
    prevote_timer_set: bool = False  # L34 "for the first time"
    precommit_timer_set: bool = False  # L47 "for the first time"
    line36_done: bool = False  # L36 "for the first time"


class ConsensusCore:
    """One validator's Tendermint state machine (see the module docstring for the rules).

    Start a fresh chain with ``last_block=None``; restart with the last committed block and its
    certificate from storage and the newest persisted :class:`SafetyState`. Then call
    :meth:`start` once, and the event methods after it; each returns the actions to execute in
    order (see ``ledger/consensus/CORE_API.md``).

    Raises :class:`ConfigError` on an inconsistent configuration and :class:`CorruptionError`
    if ``safety`` claims a height beyond ``last_block + 1`` (storage lost committed blocks).
    """

    def __init__(
        self,
        *,
        chain_id: str,
        validators: ValidatorSet | None = None,
        history: ValidatorHistory | None = None,
        signer: Signer,
        signers: Sequence[Signer] = (),
        app: Application,
        timeouts: TimeoutConfig | None = None,
        genesis_time: int = 0,
        last_block: Block | None = None,
        last_certificate: CommitCertificate | None = None,
        safety: SafetyState | None = None,
        future_window: int = FUTURE_HEIGHT_WINDOW,
        max_future_messages: int = MAX_FUTURE_MESSAGES,
        unsafe_skip_lock_persist: bool = False,
    ) -> None:
        if not chain_id or len(chain_id.encode()) > 64:
            raise ConfigError("chain id must be 1..64 bytes")
        if (last_block is None) != (last_certificate is None):
            raise ConfigError("last_block and last_certificate go together")
        if last_block is not None and last_certificate is not None and (
            last_certificate.height != last_block.height
            or last_certificate.block_hash != last_block.hash
        ):
            raise ConfigError("last_certificate does not commit last_block")
        if (validators is None) == (history is None):
            raise ConfigError("give either validators (a fixed set) or a validator history")
        applied = 0 if last_block is None else last_block.height
        if history is None:
            assert validators is not None
            history = ValidatorHistory.fixed(validators, height=applied)
        if history.height != applied:
            raise ConfigError(
                f"validator history is at height {history.height}, the chain at {applied}"
            )
        self.chain_id = chain_id
        self._history = history
        self._signers: tuple[Signer, ...] = (signer, *signers)
        if len({s.public_key for s in self._signers}) != len(self._signers):
            raise ConfigError("the same key is given twice as a signer")
        self._me = signer.public_key
        self._app = app
        self.timeouts = timeouts or TimeoutConfig()
        self.genesis_time = genesis_time
        self._future_window = future_window
        self._max_future = max_future_messages
        #: TEST ONLY. Deliberately breaks crash safety: the Persist before a precommit does not
        #: carry the new lock, so a crash right after it forgets the lock (amnesia). Exists so
        #: the simulator can prove its crash-restart scenarios catch exactly this defect.
        self.unsafe_skip_lock_persist = unsafe_skip_lock_persist

        self.stats = CoreStats()
        self.evidence = EvidencePool()
        self.last_block = last_block
        self.last_certificate = last_certificate
        self.height = 1 if last_block is None else last_block.height + 1
        self.round = 0
        self.step = Step.PROPOSE
        self.started = False
        self.locked_round = -1
        self.locked_block: Block | None = None
        self.valid_round = -1
        self.valid_block: Block | None = None
        self._rounds: dict[int, _RoundLog] = {}
        self._blocks: dict[bytes, Block] = {}
        self._validity: dict[bytes, bool] = {}
        # Verified certificates received in ``Decision`` messages for this height, by block
        # hash. A certificate is a complete proof of 2f+1 precommits on its own: it decides even
        # when this node holds a conflicting vote of an equivocator for the same round, which
        # the per-round vote sets (one vote per validator) would refuse to count.
        self._certified: dict[bytes, CommitCertificate] = {}
        # The highest later height each validator validly claimed (see ``_note_claim``).
        self._claims: dict[bytes, int] = {}
        # Verified messages of future heights, with the set they were verified against.
        self._future: list[tuple[Message, ValidatorSet]] = []

        safety = safety or SafetyState()
        if safety.height > self.height:
            raise CorruptionError(
                f"safety state is at height {safety.height} but the chain is at {self.height}"
            )
        self._safety = safety
        # The persisted record, as last written, for the unsafe variant's stale lock fields.
        self._persisted = safety

    # --- public events ---------------------------------------------------------------------

    def start(self, now: int) -> list[Action]:
        """Start (or, after a restart, resume) the current height. Call exactly once.

        Fresh: StartRound(0) (L10). After a restart at the height of the safety record: restore
        locks and valid values, resume at its round and step, and re-send the last signed
        message byte for byte (never re-sign it).
        """
        if self.started:
            raise ConfigError("start() called twice")
        s = self._safety
        if s.height != self.height or s.round < 0:
            return self._start_height(now)
        out: list[Action] = []
        self.started = True
        self.locked_round, self.locked_block = s.locked_round, s.locked_block
        self.valid_round, self.valid_block = s.valid_round, s.valid_block
        for b in (s.locked_block, s.valid_block):
            if b is not None:
                self._blocks[b.hash] = b
        self.round = s.round
        # A signed proposal leaves us in `propose` (we still prevote on it); a signed vote
        # leaves us in its step.
        self.step = s.step
        if s.signed:
            try:
                own = decode_message(s.signed)
            except ProtocolError as exc:
                raise CorruptionError(f"persisted last-signed message: {exc}") from exc
            out.append(Broadcast(message=own, data=s.signed))
            self._record(own)
        out.append(self._schedule(TimeoutKind.PROPOSE, now))
        if self.step >= Step.PREVOTE:
            out.append(self._schedule(TimeoutKind.PREVOTE, now))
        if self.step >= Step.PRECOMMIT:
            out.append(self._schedule(TimeoutKind.PRECOMMIT, now))
        out += self._evaluate(now)
        return out

    def on_message(self, msg: Message, now: int) -> list[Action]:
        """Handle a peer message. Invalid ones (wrong chain, unknown sender, bad signature,
        wrong proposer, malformed block) change no state: they are counted in :attr:`stats`
        and return no actions. Never raises for anything a peer can send."""
        self.stats.received += 1
        try:
            accepted = self._admit(msg)
        except LedgerError as exc:
            self._reject(type(exc).__name__)
            return []
        if not accepted or not self.started:
            return []
        return self._evaluate(now)

    def on_wire(self, data: bytes, now: int) -> list[Action]:
        """Decode untrusted peer bytes, then :meth:`on_message`. Malformed or oversized bytes
        are counted as invalid and return no actions."""
        try:
            msg = decode_message(data)
        except ProtocolError:
            self.stats.received += 1
            self._reject("malformed")
            return []
        return self.on_message(msg, now)

    def on_timeout(self, timeout: ScheduleTimeout, now: int) -> list[Action]:
        """A timer scheduled by a :class:`ScheduleTimeout` action fired (L57, L61, L65, or the
        start of the next height). Stale timers return no actions."""
        if timeout.height != self.height:
            return []
        self.stats.timeouts += 1
        if timeout.kind is TimeoutKind.COMMIT:
            return [] if self.started else self._start_height(now)
        if not self.started or timeout.round != self.round:
            return []
        if timeout.kind is TimeoutKind.PROPOSE:
            out = self._on_timeout_propose_line57(now)
        elif timeout.kind is TimeoutKind.PREVOTE:
            out = self._on_timeout_prevote_line61(now)
        else:
            out = self._on_timeout_precommit_line65(now)
        return out + self._evaluate(now)

    def rebroadcast(self, now: int) -> list[Action]:
        """Re-send what peers may have missed (design brief section 4: liveness assumes what
        one correct node received eventually reaches all): the current round's proposal and
        votes, the votes of the previous round, the prevotes that justify the proposal's
        ``pol_round``, and the decision of the previous height for peers still on it. Changes
        no state; call it periodically."""
        out: list[Action] = []
        msgs: list[Message] = []
        if self.last_block is not None and self.last_certificate is not None:
            msgs.append(Decision(block=self.last_block, certificate=self.last_certificate))
        log = self._rounds.get(self.round)
        if log is not None and log.proposal is not None:
            msgs.append(log.proposal)
            pol = log.proposal.pol_round
            if pol >= 0 and pol in self._rounds:
                msgs += self._rounds[pol].prevotes.for_hash(log.proposal.block.hash)
        # The votes of the previous round too: a peer still in it may lack exactly the
        # precommit that would start its precommit timer (L47) or the prevotes of a polka, and
        # no rule lets it leave that round on the strength of one peer's higher-round messages.
        for r in (self.round - 1, self.round):
            held = self._rounds.get(r)
            if held is not None:
                msgs += held.prevotes.all_votes()
                msgs += held.precommits.all_votes()
        for m in msgs:
            out.append(Broadcast(message=m, data=m.encode()))
        return out

    # --- read-only views -------------------------------------------------------------------

    @property
    def safety(self) -> SafetyState:
        """The safety state as of the last signature (what the last ``Persist`` carried)."""
        return self._safety

    @property
    def public_key(self) -> bytes:
        """The key this node signs with at the current height (the first ``signer`` when none
        of its keys is in the current set)."""
        active = self._signer_at(self.height)
        return self._me if active is None else active.public_key

    @property
    def validators(self) -> ValidatorSet:
        """The validator set of the current height."""
        return self._history.set_at(self.height)

    @property
    def history(self) -> ValidatorHistory:
        """The validator history including every committed block (after a ``Commit`` action it
        already holds that block's change); a driver may persist or inspect it."""
        return self._history

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` (final up to the current height + 1). Raises
        :class:`ConfigError` for ``height < 1``."""
        return self._history.set_at(height)

    def proposer(self, height: int, round: int) -> bytes:
        """The proposer of ``(height, round)``."""
        return self._history.set_at(height).proposer(height, round)

    def _signer_at(self, height: int) -> Signer | None:
        """The key this node signs with at ``height``: the one in that height's set."""
        validators = self._history.set_at(height)
        for s in self._signers:
            if s.public_key in validators:
                return s
        return None

    # --- admission: every check before any state change ------------------------------------

    def _reject(self, reason: str) -> None:
        self.stats.invalid += 1
        self.stats.reasons[reason] += 1

    def _admit(self, msg: Message) -> bool:
        """Verify ``msg`` and add it to the message log (or the future buffer). Returns whether
        the current height's log changed. Raises a :class:`LedgerError` for an invalid message,
        before touching any state."""
        if isinstance(msg, Decision):
            height, chain = msg.block.height, None
        else:
            height, chain = msg.height, msg.chain_id
        if chain is not None and chain != self.chain_id:
            raise ProtocolError("wrong chain id")
        if height < self.height:
            self.stats.late += 1
            return False
        if height > self.height:
            if height > self.height + self._future_window or len(self._future) >= self._max_future:
                self.stats.future_dropped += 1
                self._note_claim(msg, height)
                return False
            # Never buffer what could be forged. The set of height + 2 is not final yet (block
            # ``height`` may schedule a change for it): re-checked when the height starts.
            self._verify(msg)
            self._note_claim(msg, height, verified=True)
            self._future.append((msg, self.validators_at(height)))
            self.stats.future_buffered += 1
            return False
        if not isinstance(msg, Decision) and msg.round > self.round + MAX_ROUND_AHEAD:
            raise ProtocolError("round too far ahead")
        self._verify(msg)
        return self._record(msg)

    def _note_claim(self, msg: Message, height: int, *, verified: bool = False) -> None:
        """Raise the ``highest_seen_height`` hint from a *verified* claim of a later height.

        A ``Decision`` whose certificate verifies proves a quorum got there. A signed vote or
        proposal counts as its validator's claim, and the hint is the (f+1)-th highest claim of
        distinct validators, so f Byzantine validators cannot keep this node "behind" (and its
        driver catching up for ever) by signing messages for heights nobody reached. Far heights
        are checked against the latest known set (changes not yet seen make a claim fail, which
        only delays the hint). A message that does not verify moves nothing.
        """
        if not verified:
            try:
                msg.verify(self._history.latest.validators, self.chain_id)
            except LedgerError:
                return
        if isinstance(msg, Decision):
            best = height
        else:
            claims = self._claims
            if claims.get(msg.validator, 0) >= height:
                return
            claims[msg.validator] = height
            ranked = sorted(claims.values(), reverse=True)
            weak = self._history.latest.validators.weak_quorum
            if len(ranked) < weak:
                return
            best = ranked[weak - 1]
        self.stats.highest_seen_height = max(self.stats.highest_seen_height, best)

    def _verify(self, msg: Message) -> None:
        height = msg.block.height if isinstance(msg, Decision) else msg.height
        validators = self.validators_at(height)
        msg.verify(validators, self.chain_id)
        if isinstance(msg, Proposal):
            if msg.validator != validators.proposer(msg.height, msg.round):
                raise ProtocolError("proposal from a validator that is not the proposer")
            if len(msg.block.digests) > MAX_BLOCK_DIGESTS:
                raise ProtocolError("oversized block")

    def _log(self, round: int) -> _RoundLog:
        log = self._rounds.get(round)
        if log is None:
            log = self._rounds[round] = _RoundLog()
        return log

    def _record(self, msg: Message) -> bool:
        """Add a verified message of the current height to the log; return whether it is new."""
        if isinstance(msg, Decision):
            changed = msg.block.hash not in self._certified
            self._certified.setdefault(msg.block.hash, msg.certificate)
            self._blocks.setdefault(msg.block.hash, msg.block)
            for v in msg.certificate.precommits:
                changed |= self._record(v)
            return changed
        log = self._log(msg.round)
        if isinstance(msg, Proposal):
            if log.proposal is not None:
                if log.proposal.block.hash != msg.block.hash:
                    self.stats.proposal_equivocations += 1
                else:
                    self.stats.duplicate += 1
                return False
            log.proposal = msg
            self._blocks.setdefault(msg.block.hash, msg.block)
            log.senders.add(msg.validator)
            return True
        votes = log.prevotes if msg.type is VoteType.PREVOTE else log.precommits
        counted, earlier = votes.add(msg)
        if earlier is not None:
            self.stats.equivocations += 1
            self.evidence.add(DuplicateVoteEvidence.create(earlier, msg))
        elif not counted:
            self.stats.duplicate += 1
        if counted:
            log.senders.add(msg.validator)
        return counted

    # --- valid(v) ----------------------------------------------------------------------------

    def _valid(self, block: Block) -> bool:
        """Algorithm 1's ``valid(v)``: core checks, then the application's. Cached per hash."""
        key = block.hash
        cached = self._validity.get(key)
        if cached is not None:
            return cached
        try:
            self._check_block(block)
            self._app.validate(block)
            ok = True
        except LedgerError as exc:
            self.stats.invalid_blocks += 1
            self.stats.reasons[f"invalid block: {type(exc).__name__}"] += 1
            ok = False
        self._validity[key] = ok
        return ok

    def _check_block(self, block: Block) -> None:
        if block.height != self.height:
            raise ProtocolError("block for another height")
        prev_hash = GENESIS_PREV_HASH if self.last_block is None else self.last_block.hash
        if block.prev_hash != prev_hash:
            raise ProtocolError("block does not extend the last committed block")
        if block.proposer not in self.validators:
            raise ProtocolError("block proposer is not a validator")
        # A carried set change: approved by a quorum of the current set, none pending, lead
        # rule (ledger.consensus.reconfig). Raises VerificationError.
        self._history.check_changes(self.height, block.changes, chain_id=self.chain_id)
        if len(block.digests) > MAX_BLOCK_DIGESTS or len(block.tree_root) != HASH_SIZE:
            raise ProtocolError("block is oversized or has a malformed tree root")
        if self.height == 1:
            if block.last_commit is not None:
                raise ProtocolError("first block carries a last commit")
        else:
            if block.last_commit is None or block.last_commit.height != self.height - 1:
                raise ProtocolError("block lacks the previous height's certificate")
            # Block h - 1 was decided by the set of h - 1, which differs from ours right at a
            # set change.
            block.last_commit.verify(self.validators_at(self.height - 1), self.chain_id,
                                     prev_hash)
        want = expected_time(
            height=self.height, last_commit=block.last_commit, prev_block=self.last_block,
            genesis_time=self.genesis_time,
        )
        if block.time != want:
            raise ProtocolError(f"block time {block.time} is not the BFT time {want}")

    # --- signing: persist before you send ----------------------------------------------------

    def _sign_and_send(
        self, height: int, round: int, step: Step, build: Callable[[], Message]
    ) -> list[Action]:
        """Sign via ``build`` unless the safety state forbids it; emit Persist then Broadcast,
        and apply the message to our own log. A refused signature is counted, not raised:
        staying silent is always safe."""
        if self._signer_at(height) is None:
            return []
        hrs = (height, round, int(step))
        if hrs == self._safety.hrs:
            # Already signed at this (height, round, step), e.g. before a restart: re-send the
            # byte-identical message, never a fresh signature.
            msg = decode_message(self._safety.signed)
            self._record(msg)
            return [Broadcast(message=msg, data=self._safety.signed)]
        msg = build()
        data = msg.encode()
        try:
            self._safety.check_sign(height=height, round=round, step=step, data=data)
        except DoubleSignRefused:
            self.stats.refused_signs += 1
            return []
        new = replace(
            self._safety.after_signing(height=height, round=round, step=step, data=data),
            locked_round=self.locked_round, locked_block=self.locked_block,
            valid_round=self.valid_round, valid_block=self.valid_block,
        )
        persisted = new
        if self.unsafe_skip_lock_persist and step is Step.PRECOMMIT:
            persisted = replace(
                new,
                locked_round=self._persisted.locked_round,
                locked_block=self._persisted.locked_block,
                valid_round=self._persisted.valid_round,
                valid_block=self._persisted.valid_block,
            )
        self._safety = new
        self._persisted = persisted
        self._record(msg)
        return [
            Persist(record=persisted, data=persisted.encode()),
            Broadcast(message=msg, data=data),
        ]

    def _vote(self, type: VoteType, block_hash: bytes | None, now: int) -> list[Action]:
        step = Step.PREVOTE if type is VoteType.PREVOTE else Step.PRECOMMIT
        timestamp = now
        if type is VoteType.PRECOMMIT and block_hash is not None:
            # BFT time: a precommit for B is later than B's time (ledger.consensus.block).
            timestamp = max(now, self._blocks[block_hash].time + 1)
        height, round = self.height, self.round
        signer = self._signer_at(height)
        if signer is None:
            return []
        return self._sign_and_send(
            height, round, step,
            lambda: Vote.create(
                signer, type=type, chain_id=self.chain_id, height=height, round=round,
                block_hash=block_hash, timestamp=timestamp,
            ),
        )

    def _schedule(self, kind: TimeoutKind, now: int) -> ScheduleTimeout:
        return ScheduleTimeout(
            kind=kind, height=self.height, round=self.round,
            at=now + self.timeouts.duration(kind, self.round),
        )

    # --- heights and rounds ------------------------------------------------------------------

    def _start_height(self, now: int) -> list[Action]:
        """Begin the current height: StartRound(0), then admit buffered messages for it."""
        self.started = True
        out = self._start_round_line11(0, now)
        self._admit_buffered()
        return out + self._evaluate(now)

    def _admit_buffered(self) -> None:
        """Move buffered messages of the (new) current height into its log; keep later ones.
        A message verified against a set that is no longer the set of its height (a change
        committed since) is verified again, and dropped if it no longer passes."""
        pending, self._future = self._future, []
        for msg, checked_with in pending:
            height = msg.block.height if isinstance(msg, Decision) else msg.height
            if height < self.height:
                continue
            if checked_with != self.validators_at(height):
                try:
                    self._verify(msg)
                except LedgerError as exc:
                    self._reject(type(exc).__name__)
                    continue
                checked_with = self.validators_at(height)
            if height == self.height:
                self._record(msg)
            else:
                self._future.append((msg, checked_with))

    def _start_round_line11(self, round: int, now: int) -> list[Action]:
        """L11-21 StartRound(round)."""
        self.round = round
        self.step = Step.PROPOSE
        out: list[Action] = []
        signer = self._signer_at(self.height)
        if signer is not None and self.validators.proposer(self.height, round) == (
            signer.public_key
        ):
            if self.valid_block is not None:  # L15-16
                block, pol_round = self.valid_block, self.valid_round
            else:  # L18 getValue()
                block, pol_round = self._new_block(now, signer.public_key), -1
            height = self.height
            out += self._sign_and_send(
                height, round, Step.PROPOSE,
                lambda: Proposal.create(
                    signer, chain_id=self.chain_id, height=height, round=round,
                    pol_round=pol_round, block=block,
                ),
            )
        # L21. We also schedule it as the proposer: harmless (L57 checks the step) and it keeps
        # a proposer whose signature was refused from stalling.
        out.append(self._schedule(TimeoutKind.PROPOSE, now))
        return out

    def _new_block(self, now: int, proposer: bytes) -> Block:
        batch = self._app.propose(self.height, self.last_block, now)
        changes = tuple(batch.changes)
        if changes:
            try:
                self._history.check_changes(self.height, changes, chain_id=self.chain_id)
            except LedgerError as exc:
                # Never propose a block we would judge invalid: leave the change out.
                self.stats.reasons[f"change left out: {exc.diagnostics()}"] += 1
                changes = ()
        time = expected_time(
            height=self.height, last_commit=self.last_certificate, prev_block=self.last_block,
            genesis_time=self.genesis_time,
        )
        block = Block(
            height=self.height,
            prev_hash=GENESIS_PREV_HASH if self.last_block is None else self.last_block.hash,
            time=time,
            proposer=proposer,
            tree_size=batch.tree_size,
            tree_root=batch.tree_root,
            digests=tuple(batch.digests),
            last_commit=self.last_certificate,
            changes=changes,
        )
        self._blocks[block.hash] = block
        return block

    # --- the upon rules ------------------------------------------------------------------------

    def _evaluate(self, now: int) -> list[Action]:
        """Fire upon rules until none applies (each firing changes state, so this ends)."""
        out: list[Action] = []
        rules = (
            self._on_decision_line49,
            self._on_round_skip_line55,
            self._on_proposal_line22,
            self._on_proposal_with_pol_line28,
            self._on_prevote_quorum_any_line34,
            self._on_prevote_quorum_value_line36,
            self._on_prevote_quorum_nil_line44,
            self._on_precommit_quorum_any_line47,
        )
        while self.started:
            for rule in rules:
                acts = rule(now)
                if acts is not None:
                    out += acts
                    break
            else:
                break
        return out

    def _current(self) -> _RoundLog:
        return self._log(self.round)

    def _on_proposal_line22(self, now: int) -> list[Action] | None:
        """L22-27: a fresh proposal (validRound -1) in step propose."""
        log = self._current()
        p = log.proposal
        if self.step is not Step.PROPOSE or p is None or p.pol_round != -1:
            return None
        v = p.block
        self.step = Step.PREVOTE
        if self._valid(v) and (self.locked_round == -1 or self.locked_block == v):
            return self._vote(VoteType.PREVOTE, v.hash, now)  # L24
        return self._vote(VoteType.PREVOTE, None, now)  # L26

    def _on_proposal_with_pol_line28(self, now: int) -> list[Action] | None:
        """L28-33: a re-proposal justified by 2f+1 prevotes in its pol_round ``vr``."""
        log = self._current()
        p = log.proposal
        if self.step is not Step.PROPOSE or p is None:
            return None
        vr = p.pol_round
        if not 0 <= vr < self.round:
            return None
        pol = self._rounds.get(vr)
        v = p.block
        if pol is None or pol.prevotes.by_hash[v.hash] < self.validators.quorum:
            return None
        self.step = Step.PREVOTE
        if self._valid(v) and (self.locked_round <= vr or self.locked_block == v):
            return self._vote(VoteType.PREVOTE, v.hash, now)  # L30
        return self._vote(VoteType.PREVOTE, None, now)  # L32

    def _on_prevote_quorum_any_line34(self, now: int) -> list[Action] | None:
        """L34-35: 2f+1 prevotes of any kind in step prevote, first time: prevote timer."""
        log = self._current()
        if (
            self.step is not Step.PREVOTE
            or log.prevote_timer_set
            or log.prevotes.total() < self.validators.quorum
        ):
            return None
        log.prevote_timer_set = True
        return [self._schedule(TimeoutKind.PREVOTE, now)]

    def _on_prevote_quorum_value_line36(self, now: int) -> list[Action] | None:
        """L36-43: proposal v and 2f+1 prevotes for id(v), step >= prevote, first time: lock
        and precommit v (from step prevote); always record v as the valid value."""
        log = self._current()
        p = log.proposal
        if log.line36_done or p is None or self.step < Step.PREVOTE:
            return None
        v = p.block
        if log.prevotes.by_hash[v.hash] < self.validators.quorum or not self._valid(v):
            return None
        log.line36_done = True
        out: list[Action] = []
        if self.step is Step.PREVOTE:
            self.locked_block, self.locked_round = v, self.round  # L38-39
            self.valid_block, self.valid_round = v, self.round  # L42-43, before we persist
            self.step = Step.PRECOMMIT
            out = self._vote(VoteType.PRECOMMIT, v.hash, now)  # L40
        self.valid_block, self.valid_round = v, self.round  # L42-43
        return out

    def _on_prevote_quorum_nil_line44(self, now: int) -> list[Action] | None:
        """L44-46: 2f+1 nil prevotes in step prevote: precommit nil."""
        log = self._current()
        if self.step is not Step.PREVOTE or log.prevotes.by_hash[None] < self.validators.quorum:
            return None
        self.step = Step.PRECOMMIT
        return self._vote(VoteType.PRECOMMIT, None, now)

    def _on_precommit_quorum_any_line47(self, now: int) -> list[Action] | None:
        """L47-48: 2f+1 precommits of any kind, first time: precommit timer."""
        log = self._current()
        if log.precommit_timer_set or log.precommits.total() < self.validators.quorum:
            return None
        log.precommit_timer_set = True
        return [self._schedule(TimeoutKind.PRECOMMIT, now)]

    def _on_decision_line49(self, now: int) -> list[Action] | None:
        """L49-54: 2f+1 precommits for id(v) in any round r, v known and valid: decide."""
        for certified, cert in self._certified.items():
            # The certificate was verified on admission (2f+1 distinct valid precommits).
            if self._valid(self._blocks[certified]):
                return self._decide(self._blocks[certified], cert, now)
        quorum = self.validators.quorum
        for r in sorted(self._rounds):
            precommits = self._rounds[r].precommits
            for block_hash, count in precommits.by_hash.items():
                if block_hash is None or count < quorum:
                    continue
                block = self._blocks.get(block_hash)
                if block is None or not self._valid(block):
                    continue
                cert = CommitCertificate.from_votes(precommits.for_hash(block_hash))
                return self._decide(block, cert, now)
        return None

    def _decide(self, block: Block, cert: CommitCertificate, now: int) -> list[Action]:
        """L51-54: emit Commit, move to the next height with a fresh log; StartRound(0) runs
        on the COMMIT timeout, after the driver applied the block."""
        self.stats.commits += 1
        out: list[Action] = [Commit(block=block, certificate=cert)]
        # valid(block) held, so its change (if any) applies; this schedules it.
        self._history = self._history.apply(block, chain_id=self.chain_id)
        self.last_block, self.last_certificate = block, cert
        self.height += 1
        self.round, self.step, self.started = 0, Step.PROPOSE, False
        self.locked_round, self.locked_block = -1, None  # L53
        self.valid_round, self.valid_block = -1, None
        self._rounds, self._blocks, self._validity = {}, {}, {}
        self._certified = {}
        out.append(self._schedule(TimeoutKind.COMMIT, now))
        # Buffered messages for the new height enter its log now (verified when buffered, again
        # if the set changed); the rules run when the height starts.
        self._admit_buffered()
        return out

    def _on_round_skip_line55(self, now: int) -> list[Action] | None:
        """L55-56: f+1 distinct validators sent messages for a round above ours: go there."""
        weak = self.validators.weak_quorum
        higher = [
            r for r, log in self._rounds.items() if r > self.round and len(log.senders) >= weak
        ]
        if not higher:
            return None
        self.stats.rounds_skipped += 1
        return self._start_round_line11(max(higher), now)

    # --- timeouts ------------------------------------------------------------------------------

    def _on_timeout_propose_line57(self, now: int) -> list[Action]:
        """L57-60: no proposal acted on in time: prevote nil."""
        if self.step is not Step.PROPOSE:
            return []
        self.step = Step.PREVOTE
        return self._vote(VoteType.PREVOTE, None, now)

    def _on_timeout_prevote_line61(self, now: int) -> list[Action]:
        """L61-64: no 2f+1 prevotes for one value in time: precommit nil."""
        if self.step is not Step.PREVOTE:
            return []
        self.step = Step.PRECOMMIT
        return self._vote(VoteType.PRECOMMIT, None, now)

    def _on_timeout_precommit_line65(self, now: int) -> list[Action]:
        """L65-67: no decision in this round in time: next round."""
        return self._start_round_line11(self.round + 1, now)
