"""Scenario 14 of the design brief: a validator-set change while the network misbehaves.

With ``SimConfig(reconfig=True)`` the world starts with ``nodes`` genesis validators and one
extra honest endpoint, the *joiner* (validator index ``nodes``), that follows the chain as a
non-validator. An :class:`Operator` (the institutions' administrators, holding every key of the
simulation) then walks through :data:`PLAN`, one change at a time:

1. ``add``: the joiner becomes a validator;
2. ``remove``: validator 0 leaves (its node keeps following the chain, never signs again);
3. ``rotate``: validator 1 moves to a new consensus key (its node holds both keys and switches
   at the effective height).

Each change is approved by exactly a quorum of the set it modifies, offered to every node's
mempool (:class:`~ledger.consensus.sim.app.ToyLog` puts it in its proposals) and takes effect at
its ``effective_height``. Before the first good change the operator offers an *under-signed*
one (one approval short) for a while: honest proposers must leave it out and no honest node may
commit it. A change that misses its window (not included by ``E - 2``) is re-signed for a later
height, as a real operator would. After each switch, the operator injects a prevote signed by
the removed or rotated-out key into every live honest core at its current height; each must
count it invalid (a violation of the ``reconfig`` property otherwise).
"""

from __future__ import annotations

import hashlib
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

if TYPE_CHECKING:
    from ledger.consensus.sim.world import World

#: The planned changes, in order.
PLAN = ("add", "remove", "rotate")
#: Validator indices the plan acts on (the joiner is ``config.nodes``).
REMOVED = 0
ROTATED = 1
#: Heights between a change's planned inclusion and its effect (at least 2, the core's rule).
LEAD = 4
#: The under-signed change is offered for this long (virtual ms) before the good one.
WEAK_OFFER_MS = 2_000
#: Log origin of the simulated validators' log keys.
SIM_ORIGIN = "sim.example.org/log"


def sim_info(seed: int, name: str, consensus_key: bytes) -> ValidatorInfo:
    """A simulated validator's public identity: its consensus key plus log and cosigner vkeys
    derived from ``(seed, name)`` (the simulated nodes never use those two keys)."""
    keys = ValidatorKeys(name=name, origin=SIM_ORIGIN,
                         seed=hashlib.sha256(b"sim-identity\x00%d\x00" % seed
                                             + name.encode()).digest())
    return ValidatorInfo(name=name, consensus_key=consensus_key, log_vkey=keys.log_vkey,
                         cosigner_vkey=keys.cosigner_vkey)


@dataclass
class Operator:
    """Drives :data:`PLAN` through the world (see the module docstring)."""

    world: World
    #: Every consensus signer of the run: genesis validators, the joiner, the rotated key.
    signers: dict[bytes, Ed25519Signer]
    infos: dict[str, ValidatorInfo]
    step: int = 0
    offered: ValidatorSetChange | None = None
    weak: ValidatorSetChange | None = None
    #: Effective heights of the changes that committed, in plan order.
    effective: list[int] = field(default_factory=list)
    #: Virtual time at which an honest node first committed each effective height.
    switch_times: list[int] = field(default_factory=list)
    injected: int = 0
    resigned: int = 0
    _injected_keys: set[tuple[int, int]] = field(default_factory=set)
    @property
    def done(self) -> bool:
        """Every planned change committed and in force at the highest honest height."""
        return len(self.effective) == len(PLAN) and self.world.top_height() >= self.effective[-1]

    def offer(self) -> tuple[ValidatorSetChange, ...]:
        """What a mempool holds now (the core checks it before proposing)."""
        if self.weak is not None and self.world.sched.now < WEAK_OFFER_MS:
            return (self.weak,)
        return () if self.offered is None else (self.offered,)

    def _ops(self, roster: ValidatorRoster) -> list[ChangeOp]:
        what = PLAN[self.step]
        nodes = self.world.config.nodes
        if what == "add":
            return [ChangeOp.add(self.infos[f"v{nodes}"])]
        if what == "remove":
            return [ChangeOp.remove(self.infos[f"v{REMOVED}"].consensus_key)]
        return [ChangeOp.rotate(self.infos[f"v{ROTATED}"].consensus_key,
                                self.infos[f"v{ROTATED}-rotated"])]

    def _sign(self, effective_height: int, approvals: int | None = None) -> ValidatorSetChange:
        roster = self.world.history.latest.roster
        assert roster is not None
        change = ValidatorSetChange.create(chain_id=self.world.chain_id,
                                           effective_height=effective_height, prev=roster,
                                           ops=self._ops(roster))
        k = roster.validator_set.quorum if approvals is None else approvals
        return change.signed(self.signers[m.consensus_key] for m in roster.members[:k])

    def tick(self) -> None:
        """Re-evaluate after every honest commit: advance, (re-)sign, inject stale votes."""
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
        self._inject_stale_votes()

    def _inject_stale_votes(self) -> None:
        """After ``remove`` / ``rotate`` took effect, every live honest core must refuse a
        prevote by the removed validator's key and by the rotated-out key."""
        world = self.world
        stale = []
        if len(self.effective) >= 2 and world.top_height() >= self.effective[1]:
            stale.append((self.effective[1], self.infos[f"v{REMOVED}"].consensus_key))
        if len(self.effective) >= 3 and world.top_height() >= self.effective[2]:
            stale.append((self.effective[2], self.infos[f"v{ROTATED}"].consensus_key))
        for since, key in stale:
            for node in world.nodes.values():
                core = node.core
                if not node.honest or core is None or core.height < since:
                    continue
                if (since, node.endpoint) in self._injected_keys:
                    continue
                self._injected_keys.add((since, node.endpoint))
                vote = Vote.create(self.signers[key], type=VoteType.PREVOTE,
                                   chain_id=world.chain_id, height=core.height,
                                   round=core.round, block_hash=None, timestamp=world.sched.now)
                before = core.stats.invalid
                node.inject(vote)
                self.injected += 1
                if node.core is core and core.stats.invalid != before + 1:
                    world.checker.reconfig_violation(
                        world.sched.now,
                        f"node {node.endpoint} accepted a vote of a key out of the set at "
                        f"h={vote.height} (out since {since})")
