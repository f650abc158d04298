"""One simulated cluster: configuration, nodes, network, clients, checker and the chain oracle.

A :class:`World` is built from a :class:`SimConfig` and a seed and owns everything a run needs;
nothing in it is shared with another run. Validator keys are derived from the seed (Ed25519
signing is deterministic, RFC 8032), so the same ``(seed, config)`` gives the same bytes
everywhere, and every node runs the production :class:`~ledger.replica.Replica`.

The *chain oracle* is the validity half of the checker: it follows every block any honest node
commits and re-derives, independently of the nodes, that the block extends a committed block,
that its time moves forward, and that its tree head is the RFC 9162 head of the parent's tree
plus the batch's digests not committed before (the log anchors a digest once). It also follows
the validator history (scenario 14, :mod:`ledger.sim.reconfig`): every certificate is checked
against the set of its own height, and a committed block whose set change is invalid is a
validity violation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ledger.config import LOCAL_TIMEOUTS
from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    CommitCertificate,
    DuplicateVoteEvidence,
    SafetyState,
    TimeoutConfig,
    ValidatorHistory,
    ValidatorInfo,
    ValidatorRoster,
    verify_certificate,
)
from ledger.consensus.messages import decode_block, decode_certificate
from ledger.crypto import ValidatorKeys
from ledger.errors import LedgerError, VerificationError
from ledger.merkle.frontier import Frontier
from ledger.merkle.hashing import leaf_hashes
from ledger.policy_chain import PolicyChain, policy_chain_from_blocks
from ledger.sim.checkers import InvariantChecker
from ledger.sim.client import SimClients
from ledger.sim.network import LinkFaults, Network
from ledger.sim.scheduler import Scheduler

if TYPE_CHECKING:
    from ledger.sim.node import SimNode
    from ledger.sim.reconfig import Operator

__all__ = ["SIM_ORIGIN", "SIM_TIMEOUTS", "SimConfig", "World", "validator_keys"]

#: Timeouts used in simulation: the local cluster's (:data:`ledger.config.LOCAL_TIMEOUTS`),
#: well above the calm network's delay bound so that rounds succeed after GST, with a 300 ms
#: batch window between heights.
SIM_TIMEOUTS = replace(LOCAL_TIMEOUTS.consensus(), commit=300)
#: The log origin of the simulated chain.
SIM_ORIGIN = "sim.example.org/log"


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything but the seed that decides a run.

    ``byzantine`` maps validator indices to a behaviour name of
    :data:`ledger.sim.byzantine.BEHAVIOURS`. ``faults`` names the nemeses active before GST
    (:data:`ledger.sim.nemesis.FAULTS`). After ``gst_ms`` the network is calm, crashed nodes
    are back and clocks stop jumping; then every honest node must commit ``heights`` more
    heights within ``liveness_bound_ms``, and every acknowledged anchor must be on every honest
    node. ``batch_size`` is the replicas' largest block; ``unsafe_defect`` injects one of
    :data:`ledger.replica.DEFECTS` into every replica (the simulator's own acceptance tests).
    """

    nodes: int = 4
    byzantine: Mapping[int, str] = field(default_factory=dict)
    faults: frozenset[str] = frozenset()
    heights: int = 3
    batch_size: int = 64
    gst_ms: int = 8_000
    liveness_bound_ms: int = 60_000
    check_liveness: bool = True
    unsafe_skip_lock_persist: bool = False
    unsafe_defect: str | None = None
    timeouts: TimeoutConfig = SIM_TIMEOUTS
    tick_ms: int = 600
    max_events: int = 400_000
    link: LinkFaults | None = None
    #: Restrict the ``crash`` nemesis to these points (empty: every point and "between").
    crash_points: tuple[str, ...] = ()
    chain_id: str = "sim-chain"
    #: Scenario 14: a joining endpoint and the add / remove / rotate plan of
    #: :mod:`ledger.sim.reconfig` (needs ``nodes >= 4``).
    reconfig: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("need at least one node")
        if self.reconfig and self.nodes < 4:
            raise ValueError("the reconfiguration scenario needs at least 4 nodes")
        for v in self.byzantine:
            if not 0 <= v < self.nodes:
                raise ValueError(f"byzantine validator {v} out of range")


def validator_keys(seed: int, index: int, *, generation: int = 0) -> ValidatorKeys:
    """The key file of validator ``index`` in a run of ``seed`` (``generation`` > 0: the key
    it rotates to)."""
    master = hashlib.sha256(b"sim-validator\x00%d\x00%d\x00%d" % (seed, index, generation))
    return ValidatorKeys(name=f"v{index}", origin=SIM_ORIGIN, seed=master.digest())


def tree_after(frontier: Frontier, digests: tuple[bytes, ...]) -> Frontier:
    """The frontier after appending ``digests`` (leaf data of new anchors)."""
    return frontier.extend(leaf_hashes(digests))[0]


class World:
    """The cluster of one run. Nodes are attached by the runner (see ``runner.build_world``)."""

    def __init__(self, *, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.chain_id = config.chain_id
        self.origin = SIM_ORIGIN
        self.sched = Scheduler(seed=seed)
        n = config.nodes
        # With reconfig: index n is the joiner, and validator ROTATED gets a second key.
        self.keys = [validator_keys(seed, i) for i in range(n + (1 if config.reconfig else 0))]
        self.genesis_roster = ValidatorRoster(
            members=[ValidatorInfo.from_keys(k) for k in self.keys[:n]])
        #: consensus key -> validator index (a rotated key keeps its validator's index)
        self.key_index = {k.consensus_key.public_key: i for i, k in enumerate(self.keys)}
        #: endpoint -> validator name (twins share one)
        self.names: dict[int, str] = {}
        self.operator: Operator | None = None
        self.history = ValidatorHistory.genesis(self.genesis_roster)
        self.nodes: dict[int, SimNode] = {}
        self.net = Network(scheduler=self.sched, endpoints=[], deliver=self._deliver)
        self.checker = InvariantChecker(honest=frozenset(), validator_of=self._validator_of)
        self.client = SimClients(world=self)
        self._after: dict[bytes, tuple[Frontier, int, int]] = {
            GENESIS_PREV_HASH: (Frontier.empty(), -1, 0)
        }
        self._digest_height: dict[bytes, int] = {}
        self._cert_ok: set[bytes] = set()
        self._blocks: list[Block] = []
        self._policy_chain: tuple[int, PolicyChain] | None = None
        #: Called as ``hook(endpoint, block)`` on every honest commit (targeted nemeses).
        self.commit_hooks: list[Callable[[int, Block], None]] = []
        #: Called as ``hook(endpoint, state)`` when a safety record became durable.
        self.persist_hooks: list[Callable[[int, SafetyState], None]] = []
        #: honest commits by height: block hash -> one certificate (for fork evidence)
        self.certificates: dict[int, dict[bytes, CommitCertificate]] = {}

    def attach(self, nodes: list[SimNode]) -> None:
        """Install the endpoints (in endpoint order) and the honest set of the checker."""
        self.nodes = {n.endpoint: n for n in nodes}
        self.names = {n.endpoint: n.keys[0].name for n in nodes}
        self.net = Network(
            scheduler=self.sched, endpoints=sorted(self.nodes), deliver=self._deliver,
            faults=self.config.link or LinkFaults(),
        )
        self.checker = InvariantChecker(
            honest=frozenset(n.endpoint for n in nodes if n.honest),
            validator_of=self._validator_of,
        )

    def endpoints_of(self, name: str | None, *, exclude: int) -> list[int]:
        """The endpoints running validator ``name`` (``None``: every endpoint), but ``exclude``."""
        return [e for e in sorted(self.nodes)
                if e != exclude and (name is None or self.names[e] == name)]

    def top_height(self) -> int:
        """The highest height any honest node committed."""
        return self.history.height

    def policy_chain(self) -> PolicyChain:
        """The policy chain of the honest commits so far (receipts across set changes)."""
        # A change is in the chain once block E - 1 is committed (its boundary is known).
        changes = sum(1 for b in self._blocks for c in b.changes
                      if c.effective_height - 1 <= len(self._blocks))
        cached = self._policy_chain
        if cached is None or cached[0] != changes:
            chain = policy_chain_from_blocks(self.chain_id, self.genesis_roster, self._blocks)
            self._policy_chain = cached = (changes, chain)
        return cached[1]

    def halted(self, endpoint: int, reason: str) -> None:
        """A replica halted: for an honest one, a violation (no simulated fault may halt it)."""
        if self.nodes[endpoint].honest:
            self.checker.halt_violation(self.sched.now, f"node {endpoint} halted: {reason}")

    def _validator_of(self, endpoint: int) -> int:
        return self.nodes[endpoint].validator

    def _deliver(self, dst: int, src: int, payload: bytes) -> None:
        self.nodes[dst].deliver(src, payload)

    # -- the chain oracle -------------------------------------------------------------------------

    def observe_durable(self, endpoint: int) -> None:
        """Check and record the commits a node made durable but never reported: it crashed
        inside the write that stored them, before the replica's ``Committed`` action left.
        Called as the node boots again, so that the checker sees every honest commit (the
        validity of a later block is judged against them)."""
        node = self.nodes[endpoint]
        if not node.honest:
            return
        for height in range(1, node.store.last_height() + 1):
            if self.checker.observed(endpoint, height):
                continue
            record = node.store.block(height)
            if record is not None:
                self.observe_commit(endpoint, decode_block(record.block),
                                    decode_certificate(record.certificate))

    def observe_commit(self, endpoint: int, block: Block, cert: CommitCertificate) -> None:
        """An endpoint committed ``block``: check it and record it for the checker."""
        node = self.nodes[endpoint]
        if not node.honest:
            return
        self.certificates.setdefault(block.height, {}).setdefault(block.hash, cert)
        change_error: str | None = None
        if block.height == self.history.height + 1:
            # The first honest commit of a height extends the set history (with agreement,
            # every later commit of that height is the same block).
            self._blocks.append(block)
            try:
                self.history = self.history.apply(block, chain_id=self.chain_id)
            except VerificationError as exc:
                change_error = f"committed an invalid set change: {exc}"
                self.history = self.history.apply(replace(block, changes=()),
                                                  chain_id=self.chain_id)

        def validity() -> str | None:
            if block.height > 1:
                prev = node.store.block(block.height - 1)
                if prev is None or block.prev_hash != decode_block(prev.block).hash:
                    return "block does not extend the node's own previous commit"
            elif block.prev_hash != GENESIS_PREV_HASH:
                return "first block does not start the chain"
            return change_error or self.check_block(block)

        def certificate() -> str | None:
            key = hashlib.sha256(cert.encode() + block.hash).digest()
            if key in self._cert_ok:
                return None
            try:
                verify_certificate(cert, block_hash=block.hash, height=block.height,
                                   validators=self.history.set_at(block.height),
                                   chain_id=self.chain_id)
            except VerificationError as exc:
                return f"certificate: {exc}"
            self._cert_ok.add(key)
            return None

        self.checker.on_commit(node=endpoint, height=block.height, block_id=block.hash,
                               time=self.sched.now, check_validity=validity,
                               check_certificate=certificate)
        self.sched.record(self.sched.now, ("commit", endpoint, block.height, block.hash))
        for hook in self.commit_hooks:
            hook(endpoint, block)
        if self.operator is not None:
            self.operator.tick()

    def check_block(self, block: Block) -> str | None:
        """Why ``block`` is not a valid successor of a committed block, or ``None``."""
        if block.hash in self._after:
            return None
        parent = self._after.get(block.prev_hash)
        if parent is None:
            return "block extends a block no honest node committed"
        frontier, parent_time, parent_height = parent
        if block.height != parent_height + 1:
            return f"height {block.height} after parent height {parent_height}"
        if block.time <= parent_time:
            return f"block time {block.time} not after parent time {parent_time}"
        fresh = tuple(d for d in dict.fromkeys(block.digests)
                      if self._digest_height.get(d, block.height) >= block.height)
        try:
            after = tree_after(frontier, fresh)
        except LedgerError as exc:
            return f"batch: {exc}"
        if (after.size, after.root()) != (block.tree_size, block.tree_root):
            return "tree head is not the parent's tree plus the batch"
        for d in fresh:
            self._digest_height.setdefault(d, block.height)
        self._after[block.hash] = (after, block.time, block.height)
        return None

    # -- evidence ---------------------------------------------------------------------------------

    def culprits(self) -> frozenset[int]:
        """Validator indices named by evidence: what honest cores built, plus what conflicting
        commit certificates prove (two precommits of one validator for different blocks in
        one round are :class:`DuplicateVoteEvidence`; each is verified before it counts)."""
        keys: set[bytes] = set()
        for node in self.nodes.values():
            if node.honest:
                node.harvest()
                keys |= node.evidence_culprits
        for certs in self.certificates.values():
            distinct = list(certs.values())
            for i, a in enumerate(distinct):
                for b in distinct[i + 1:]:
                    if a.round != b.round:
                        continue
                    by_key = {v.validator: v for v in a.precommits}
                    for vb in b.precommits:
                        va = by_key.get(vb.validator)
                        if va is None:
                            continue
                        try:
                            ev = DuplicateVoteEvidence.create(va, vb)
                            ev.verify(self.history.set_at(ev.height), self.chain_id)
                        except VerificationError:
                            continue
                        keys.add(ev.culprit)
        return frozenset(self.key_index[k] for k in keys if k in self.key_index)
