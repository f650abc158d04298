"""One simulated cluster: configuration, nodes, network, checker and the chain oracle.

A :class:`World` is built from a :class:`SimConfig` and a seed and owns everything a run needs;
nothing in it is shared with another run. Keys are derived from the seed (Ed25519 signing is
deterministic, RFC 8032), so the same ``(seed, config)`` gives the same bytes everywhere.

The *chain oracle* is the validity half of the checker: it follows every block any honest node
commits and re-derives, independently of the nodes, that the block extends a committed block,
that its time moves forward, and that its tree head is the RFC 9162 head of the parent's tree
plus its batch (:func:`ledger.consensus.sim.app.tree_after`). It also follows the validator
history (scenario 14, :mod:`ledger.consensus.sim.reconfig`): every certificate is checked
against the set of its own height, and a committed block whose set change is invalid is a
validity violation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ledger.consensus import (
    GENESIS_PREV_HASH,
    Block,
    CommitCertificate,
    DuplicateVoteEvidence,
    Ed25519Signer,
    TimeoutConfig,
    ValidatorHistory,
    ValidatorRoster,
    ValidatorSet,
    verify_certificate,
)
from ledger.consensus.sim.app import tree_after
from ledger.consensus.sim.checkers import InvariantChecker
from ledger.consensus.sim.network import LinkFaults, Network
from ledger.consensus.sim.reconfig import ROTATED, Operator, sim_info
from ledger.consensus.sim.scheduler import Scheduler
from ledger.errors import LedgerError, VerificationError
from ledger.merkle.frontier import Frontier

if TYPE_CHECKING:
    from ledger.consensus.sim.node import SimNode

#: Timeouts used in simulation: shorter than production so a run needs fewer events, still
#: well above the calm network's delay bound so that rounds succeed after GST.
SIM_TIMEOUTS = TimeoutConfig(
    propose=800, propose_delta=200, prevote=400, prevote_delta=200,
    precommit=400, precommit_delta=200, commit=300,
)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything but the seed that decides a run.

    ``byzantine`` maps validator indices to a behaviour name of
    :data:`ledger.consensus.sim.byzantine.BEHAVIOURS`. ``faults`` names the nemeses active
    before GST (:data:`ledger.consensus.sim.nemesis.FAULTS`). After ``gst_ms`` the network is
    calm, crashed nodes are back and clocks stop jumping; then every honest node must commit
    ``heights`` more heights within ``liveness_bound_ms``.
    """

    nodes: int = 4
    byzantine: Mapping[int, str] = field(default_factory=dict)
    faults: frozenset[str] = frozenset()
    heights: int = 3
    batch_size: int = 4
    gst_ms: int = 8_000
    liveness_bound_ms: int = 60_000
    check_liveness: bool = True
    unsafe_skip_lock_persist: bool = False
    timeouts: TimeoutConfig = SIM_TIMEOUTS
    tick_ms: int = 600
    max_events: int = 300_000
    link: LinkFaults | None = None
    #: Restrict the ``crash`` nemesis to these points (empty: every point and "between").
    crash_points: tuple[str, ...] = ()
    chain_id: str = "sim-chain"
    #: Scenario 14: a joining endpoint and the add / remove / rotate plan of
    #: :mod:`ledger.consensus.sim.reconfig` (needs ``nodes >= 4``).
    reconfig: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError("need at least one node")
        if self.reconfig and self.nodes < 4:
            raise ValueError("the reconfiguration scenario needs at least 4 nodes")
        for v in self.byzantine:
            if not 0 <= v < self.nodes:
                raise ValueError(f"byzantine validator {v} out of range")


def validator_seed(seed: int, index: int) -> bytes:
    """The 32-byte Ed25519 seed of validator ``index`` in a run of ``seed``."""
    return hashlib.sha256(b"sim-validator\x00%d\x00%d" % (seed, index)).digest()


class World:
    """The cluster of one run. Nodes are attached by the runner (see ``runner.build_world``)."""

    def __init__(self, *, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.chain_id = config.chain_id
        self.sched = Scheduler(seed=seed)
        n = config.nodes
        # With reconfig: index n is the joiner, n + 1 the rotated key of validator ROTATED.
        extra = 2 if config.reconfig else 0
        self.signers = [Ed25519Signer(seed=validator_seed(seed, i)) for i in range(n + extra)]
        self.validators = ValidatorSet(keys=[s.public_key for s in self.signers[:n]])
        #: consensus key -> validator index (a rotated key keeps its validator's index)
        self.key_index = {s.public_key: i for i, s in enumerate(self.signers[: n + 1])}
        self.genesis_roster: ValidatorRoster | None = None
        self.operator: Operator | None = None
        self.history = ValidatorHistory.fixed(self.validators)
        if config.reconfig:
            self.key_index[self.signers[n + 1].public_key] = ROTATED
            infos = {f"v{i}": sim_info(seed, f"v{i}", self.signers[i].public_key)
                     for i in range(n + 1)}
            infos[f"v{ROTATED}-rotated"] = sim_info(seed, f"v{ROTATED}-rotated",
                                                    self.signers[n + 1].public_key)
            self.genesis_roster = ValidatorRoster(members=[infos[f"v{i}"] for i in range(n)])
            self.history = ValidatorHistory.genesis(self.genesis_roster)
            self.operator = Operator(world=self, infos=infos,
                                     signers={s.public_key: s for s in self.signers})
        self.nodes: dict[int, SimNode] = {}
        self.net = Network(scheduler=self.sched, endpoints=[], deliver=self._deliver)
        self.checker = InvariantChecker(honest=frozenset(), validator_of=self._validator_of)
        self._after: dict[bytes, tuple[Frontier, int, int]] = {
            GENESIS_PREV_HASH: (Frontier.empty(), -1, 0)
        }
        self._cert_ok: set[bytes] = set()
        #: Called as ``hook(endpoint, block)`` on every honest commit (targeted nemeses).
        self.commit_hooks: list[Callable[[int, Block], None]] = []
        #: honest commits by height: block hash -> one certificate (for fork evidence)
        self.certificates: dict[int, dict[bytes, CommitCertificate]] = {}

    def attach(self, nodes: list[SimNode]) -> None:
        """Install the endpoints (in endpoint order) and the honest set of the checker."""
        self.nodes = {n.endpoint: n for n in nodes}
        self.net = Network(
            scheduler=self.sched, endpoints=sorted(self.nodes), deliver=self._deliver,
            faults=self.config.link or LinkFaults(),
        )
        self.checker = InvariantChecker(
            honest=frozenset(n.endpoint for n in nodes if n.honest),
            validator_of=self._validator_of,
        )

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` as the honest commits so far decide it."""
        return self.history.set_at(height)

    def top_height(self) -> int:
        """The highest height any honest node committed."""
        return self.history.height

    def _validator_of(self, endpoint: int) -> int:
        return self.nodes[endpoint].validator

    def _deliver(self, dst: int, src: int, payload: bytes) -> None:
        self.nodes[dst].deliver(src, payload)

    def mempool_seed(self, endpoint: int, incarnation: int) -> bytes:
        """Distinct per endpoint and per restart, so no two batches share a digest."""
        return hashlib.sha256(b"sim-mempool\x00%d\x00%d\x00%d" % (self.seed, endpoint,
                                                                   incarnation)).digest()

    # -- the chain oracle ---------------------------------------------------------------------

    def observe_commit(self, endpoint: int, block: Block, cert: CommitCertificate) -> None:
        """An endpoint's core emitted ``Commit``: check it and record it for the checker."""
        node = self.nodes[endpoint]
        if not node.honest:
            return
        self.certificates.setdefault(block.height, {}).setdefault(block.hash, cert)
        change_error: str | None = None
        if block.height == self.history.height + 1:
            # The first honest commit of a height extends the set history (with agreement,
            # every later commit of that height is the same block).
            try:
                self.history = self.history.apply(block, chain_id=self.chain_id)
            except VerificationError as exc:
                change_error = f"committed an invalid set change: {exc}"
                self.history = self.history.apply(replace(block, changes=()),
                                                  chain_id=self.chain_id)

        def validity() -> str | None:
            prev = node.chain.get(block.height - 1)
            want_prev = GENESIS_PREV_HASH if block.height == 1 else (
                None if prev is None else prev[0].hash)
            if want_prev is not None and block.prev_hash != want_prev:
                return "block does not extend the node's own previous commit"
            return change_error or self.check_block(block)

        def certificate() -> str | None:
            key = hashlib.sha256(cert.encode() + block.hash).digest()
            if key in self._cert_ok:
                return None
            try:
                verify_certificate(cert, block_hash=block.hash, height=block.height,
                                   validators=self.validators_at(block.height),
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
        try:
            after = tree_after(frontier, block.digests)
        except LedgerError as exc:
            return f"batch: {exc}"
        if (after.size, after.root()) != (block.tree_size, block.tree_root):
            return "tree head is not the parent's tree plus the batch"
        self._after[block.hash] = (after, block.time, block.height)
        return None

    # -- evidence -----------------------------------------------------------------------------

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
                            ev.verify(self.validators_at(ev.height), self.chain_id)
                        except VerificationError:
                            continue
                        keys.add(ev.culprit)
        return frozenset(self.key_index[k] for k in keys if k in self.key_index)
