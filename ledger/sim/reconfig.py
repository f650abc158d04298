"""Scenario 14 of the design brief: a validator-set change while the network misbehaves.

With ``SimConfig(reconfig=True)`` the world starts with ``nodes`` genesis validators and one
extra honest endpoint, the *joiner* (validator index ``nodes``), that follows the chain as a
non-validator. An :class:`Operator` (the institutions' administrators, holding every key of the
simulation) then walks through :data:`PLAN`, one change at a time:

1. ``add``: the joiner becomes a validator;
2. ``remove``: validator 0 leaves (its node keeps following the chain, never signs again);
3. ``rotate``: validator 1 moves to a new consensus key (its node holds both keys and switches
   at the effective height).

Each change is approved by exactly a quorum of the set it modifies and submitted, as an
operator does (``POST /v1/admin/validator-changes``), to every live honest replica, which
checks it, queues it for a block and gossips it; it takes effect at its ``effective_height``.
Before the first good change the operator submits an *under-signed* one (one approval short)
for a while: honest replicas must refuse it, and one honest replica gets it into its change
pool directly (as a bug in the pool's check would) to show that the consensus core leaves it
out of proposals too; no honest node may commit it. A change that misses its window (not
included by ``E - 2``) is re-signed for a later height, as a real operator would. After each
switch, the operator relays a prevote signed by the removed or the rotated-out key to every
live honest replica at its current height, in an envelope of a current validator (votes are
signed end to end; the envelope only names the relay); each must refuse it (a violation of
the ``reconfig`` property otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.consensus import (
    ChangeOp,
    Ed25519Signer,
    ValidatorInfo,
    ValidatorRoster,
    ValidatorSetChange,
    Vote,
    VoteType,
)
from ledger.crypto import ValidatorKeys
from ledger.errors import LedgerError
from ledger.replica.wire import KIND_CONSENSUS, seal_envelope
from ledger.sim.store import Crash

if TYPE_CHECKING:
    from ledger.sim.world import World

__all__ = ["LEAD", "PLAN", "REMOVED", "ROTATED", "WEAK_OFFER_MS", "Operator"]

#: The planned changes, in order.
PLAN = ("add", "remove", "rotate")
#: Validator indices the plan acts on (the joiner is ``config.nodes``).
REMOVED = 0
ROTATED = 1
#: Heights between a change's planned inclusion and its effect (at least 2, the core's rule).
LEAD = 4
#: The under-signed change is offered for this long (virtual ms) before the good one.
WEAK_OFFER_MS = 2_000


@dataclass
class Operator:
    """Drives :data:`PLAN` through the world (see the module docstring)."""

    world: World
    #: The joiner's keys and the key validator ROTATED rotates to.
    joiner: ValidatorKeys
    rotated: ValidatorKeys
    step: int = 0
    offered: ValidatorSetChange | None = None
    weak: ValidatorSetChange | None = None
    #: Effective heights of the changes that committed, in plan order.
    effective: list[int] = field(default_factory=list)
    #: Virtual time at which an honest node first committed each effective height.
    switch_times: list[int] = field(default_factory=list)
    injected: int = 0
    resigned: int = 0
    weak_refused: int = 0
    _injected_keys: set[tuple[int, int]] = field(default_factory=set)
    _weak_planted: bool = False

    @property
    def done(self) -> bool:
        """Every planned change committed and in force at the highest honest height."""
        return len(self.effective) == len(PLAN) and self.world.top_height() >= self.effective[-1]

    def _all_keys(self) -> dict[bytes, ValidatorKeys]:
        keys = {k.consensus_key.public_key: k for k in self.world.keys}
        keys[self.rotated.consensus_key.public_key] = self.rotated
        return keys

    def _ops(self) -> list[ChangeOp]:
        what = PLAN[self.step]
        if what == "add":
            return [ChangeOp.add(ValidatorInfo.from_keys(self.joiner))]
        if what == "remove":
            return [ChangeOp.remove(self.world.keys[REMOVED].consensus_key.public_key)]
        return [ChangeOp.rotate(self.world.keys[ROTATED].consensus_key.public_key,
                                ValidatorInfo.from_keys(self.rotated))]

    def _sign(self, effective_height: int, approvals: int | None = None) -> ValidatorSetChange:
        roster = self.world.history.latest.roster
        assert roster is not None
        change = ValidatorSetChange.create(chain_id=self.world.chain_id,
                                           effective_height=effective_height, prev=roster,
                                           ops=self._ops())
        k = roster.validator_set.quorum if approvals is None else approvals
        keys = self._all_keys()
        return change.signed(Ed25519Signer(seed=keys[m.consensus_key].consensus_key.seed)
                             for m in roster.members[:k])

    def tick(self) -> None:
        """Re-evaluate (after every honest commit, and on the operator's own timer): advance,
        (re-)sign, submit, inject stale votes."""
        world = self.world
        history = world.history
        top = history.height
        if len(self.switch_times) < len(self.effective) and top >= self.effective[
            len(self.switch_times)
        ]:
            self.switch_times.append(world.sched.now)
        if self.offered is not None:
            committed = [e for e in history.epochs if e.change is not None
                         and e.change.change_id == self.offered.change_id]
            if committed:
                self.effective.append(committed[0].start_height)
                self.step += 1
                self.offered = None
            elif top >= self.offered.effective_height - 2:
                self.offered = None  # missed its window: void, sign again
                self.resigned += 1
        if self.offered is None and self.step < len(PLAN):
            start = max(top + 1, history.latest.start_height)
            self.offered = self._sign(start + LEAD)
            if self.step == 0 and self.weak is None:
                roster = history.latest.roster
                assert roster is not None
                self.weak = self._sign(start + LEAD, roster.validator_set.quorum - 1)
        self._submit()
        self._inject_stale_votes()

    def _submit(self) -> None:
        """Hand the change of the moment to every live honest replica."""
        world = self.world
        weak_phase = self.weak is not None and world.sched.now < WEAK_OFFER_MS
        change = self.weak if weak_phase else self.offered
        if change is None:
            return
        for node in world.nodes.values():
            replica = node.replica
            if not node.honest or replica is None:
                continue
            if weak_phase and not self._weak_planted:
                # Past the pool's own check: the core must still leave it out of proposals.
                self._weak_planted = replica.driver.changes.add(change)
            try:
                _, actions = replica.submit_change(change, node.clock.now_ms())
            except LedgerError:
                self.weak_refused += weak_phase
                continue
            except Crash:  # an armed crash hit a write the submission caused
                continue
            node.perform(actions)

    def _inject_stale_votes(self) -> None:
        """After ``remove`` / ``rotate`` took effect, every live honest replica must refuse a
        prevote by the removed validator's key and by the rotated-out key."""
        world = self.world
        stale = []
        if len(self.effective) >= 2 and world.top_height() >= self.effective[1]:
            stale.append((self.effective[1], world.keys[REMOVED]))
        if len(self.effective) >= 3 and world.top_height() >= self.effective[2]:
            stale.append((self.effective[2], world.keys[ROTATED]))
        for since, keys in stale:
            for node in world.nodes.values():
                replica = node.replica
                core = None if replica is None else replica.driver.core
                if not node.honest or replica is None or core is None or core.height < since:
                    continue
                if (since, node.endpoint) in self._injected_keys:
                    continue
                self._injected_keys.add((since, node.endpoint))
                vote = Vote.create(Ed25519Signer(seed=keys.consensus_key.seed),
                                   type=VoteType.PREVOTE, chain_id=world.chain_id,
                                   height=core.height, round=core.round, block_hash=None,
                                   timestamp=world.sched.now)
                self.injected += 1
                if not self._refused(node.endpoint, vote):
                    world.checker.reconfig_violation(
                        world.sched.now,
                        f"node {node.endpoint} accepted a vote of a key out of the set at "
                        f"h={vote.height} (out since {since})")

    def _refused(self, endpoint: int, vote: Vote) -> bool:
        """Relay ``vote`` to ``endpoint`` through a current validator; whether it refused."""
        world = self.world
        node = world.nodes[endpoint]
        replica = node.replica
        assert replica is not None and replica.driver.core is not None
        core = replica.driver.core
        roster: ValidatorRoster | None = world.history.latest.roster
        assert roster is not None
        keys = self._all_keys()
        relay = next(keys[m.consensus_key] for m in roster.members
                     if m.name != node.keys[0].name and m.consensus_key in keys)
        data = seal_envelope(key=relay.consensus_key, chain_id=world.chain_id,
                             height=replica.store.last_height(), seq=1,
                             items=[(KIND_CONSENSUS, vote.encode())])
        before = core.stats.invalid
        try:
            name, envelope = replica.open(data, node.clock.now_ms())
            actions = replica.deliver(name, envelope, node.clock.now_ms())
        except LedgerError:
            return True
        except Crash:  # an armed crash hit a write this delivery caused: nothing was taken
            return True
        node.perform(actions)
        return replica.driver.core is not core or core.stats.invalid == before + 1
