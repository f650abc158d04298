"""The invariants every simulated run is checked against (design brief, section 5).

Safety, checked as events happen and again at the end of a run:

* **agreement** -- no two honest nodes commit different blocks at one height;
* **validity** -- every block an honest node commits passes the application's validation
  against the chain that node committed before it;
* **certificate integrity** -- every commit comes with 2f + 1 precommits for that very block,
  from distinct validators, each with a valid signature;
* **no honest double sign** -- no honest validator signs two different messages for one
  ``(height, round, step)``, counting everything it ever signed across all its restarts;
* **reconfiguration** (scenario 14) -- after a validator-set change took effect, no honest core
  accepts a vote of a key that left the set (removed, or rotated out);
* **anchors** -- every receipt an honest replica hands a client verifies offline under the
  trust policy, and at the end of the run every acknowledged digest sits at its receipt's
  index on every honest replica;
* **no halt** -- no honest replica halts (a halt means its store failed or contradicted
  itself, which no simulated fault may cause).

Liveness, checked at the end: after the global stabilisation time (GST, when faults stop and
every crashed honest node has restarted) every honest node commits ``k`` more heights within a
virtual-time bound. Tendermint promises nothing before GST, so nothing is claimed there.

A checker never raises on a violation: it records a :class:`Violation` so that one run can
report every broken property together with the seed that replays it. Checks that need the
consensus core (signature verification, application validation) are passed in as callables so
this module stays a plain bookkeeping layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: Every property the checker knows, by the name reports use.
AGREEMENT = "agreement"
VALIDITY = "validity"
CERTIFICATE = "certificate"
DOUBLE_SIGN = "double_sign"
LIVENESS = "liveness"
RECONFIG = "reconfig"
ANCHOR = "anchor"
HALT = "halt"
SAFETY_PROPERTIES = (AGREEMENT, VALIDITY, CERTIFICATE, DOUBLE_SIGN, RECONFIG, ANCHOR, HALT)


@dataclass(frozen=True, kw_only=True)
class Violation:
    """One broken property, with enough detail to start debugging from the seed."""

    prop: str
    time: int
    detail: str

    @property
    def is_safety(self) -> bool:
        """Liveness is the only non-safety property."""
        return self.prop in SAFETY_PROPERTIES


@dataclass(frozen=True, kw_only=True)
class CommitObservation:
    """An honest node committed ``block_id`` at ``height`` at virtual time ``time``."""

    node: int
    height: int
    block_id: bytes
    time: int


@dataclass
class InvariantChecker:
    """Collects observations from one run and the violations they imply.

    ``honest`` are the endpoint ids whose code and key are honest; twins and Byzantine wrappers
    are left out, because a Byzantine validator may sign anything and commit anything.
    ``validator_of`` maps an endpoint to its validator index (twins share one).
    """

    honest: frozenset[int]
    validator_of: Callable[[int], int]
    violations: list[Violation] = field(default_factory=list)
    first_commit: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    commits: dict[int, list[CommitObservation]] = field(default_factory=dict)
    _signed: dict[tuple[int, int, int, int], bytes] = field(default_factory=dict)
    _committed_ids: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def _fail(self, prop: str, time: int, detail: str) -> None:
        self.violations.append(Violation(prop=prop, time=time, detail=detail))

    # -- safety ---------------------------------------------------------------------------------

    def on_signed(self, *, node: int, height: int, round: int, step: int, signed: bytes,
                  time: int) -> None:
        """An honest node's core emitted a signed message for ``(height, round, step)``.

        ``signed`` are the exact bytes covered by the signature. Re-sending byte-identical
        bytes (after a restart, or as a periodic re-broadcast) is allowed; anything else is a
        double sign.
        """
        if node not in self.honest:
            return
        key = (self.validator_of(node), height, round, step)
        seen = self._signed.setdefault(key, signed)
        if seen != signed:
            self._fail(DOUBLE_SIGN, time,
                       f"validator {key[0]} signed two messages at h={height} r={round} s={step}")

    def observed(self, node: int, height: int) -> bool:
        """Whether the commit of ``node`` at ``height`` was recorded."""
        return (node, height) in self._committed_ids

    def on_commit(
        self,
        *,
        node: int,
        height: int,
        block_id: bytes,
        time: int,
        check_validity: Callable[[], str | None],
        check_certificate: Callable[[], str | None],
    ) -> None:
        """An honest node committed a block; the two callables return an error text or None."""
        if node not in self.honest:
            return
        prev = self._committed_ids.get((node, height))
        if prev is not None:
            if prev != block_id:
                self._fail(AGREEMENT, time, f"node {node} committed two blocks at h={height}")
            return  # re-applying the same block after a restart is not a second commit
        self._committed_ids[(node, height)] = block_id
        self.commits.setdefault(node, []).append(
            CommitObservation(node=node, height=height, block_id=block_id, time=time)
        )
        first = self.first_commit.get(height)
        if first is None:
            self.first_commit[height] = (node, block_id)
        elif first[1] != block_id:
            self._fail(AGREEMENT, time,
                       f"nodes {first[0]} and {node} committed different blocks at h={height}: "
                       f"{first[1].hex()[:16]} vs {block_id.hex()[:16]}")
        err = check_validity()
        if err is not None:
            self._fail(VALIDITY, time, f"node {node} h={height}: {err}")
        err = check_certificate()
        if err is not None:
            self._fail(CERTIFICATE, time, f"node {node} h={height}: {err}")

    def reconfig_violation(self, time: int, detail: str) -> None:
        """An honest core accepted a vote of a key outside the set of its height."""
        self._fail(RECONFIG, time, detail)

    def anchor_violation(self, time: int, detail: str) -> None:
        """A receipt that does not verify, or an acknowledged anchor that is not where it was
        acknowledged."""
        self._fail(ANCHOR, time, detail)

    def halt_violation(self, time: int, detail: str) -> None:
        """An honest replica halted."""
        self._fail(HALT, time, detail)

    # -- liveness -------------------------------------------------------------------------------

    def height_at(self, node: int, time: int) -> int:
        """The highest height ``node`` had committed by virtual ``time`` (0 = none)."""
        return max((c.height for c in self.commits.get(node, ()) if c.time <= time), default=0)

    def liveness_target(self, gst: int, k: int) -> int:
        """The height every honest node must reach: the highest honest height at GST plus
        ``k`` (so a node that was far behind must also catch up, scenario 15)."""
        return max((self.height_at(n, gst) for n in self.honest), default=0) + k

    def liveness_target_met(self, *, gst: int, k: int, now: int) -> bool:
        """Whether every honest node already reached :meth:`liveness_target` (stop early)."""
        if now < gst:
            return False
        target = self.liveness_target(gst, k)
        return all(self.height_at(n, now) >= target for n in self.honest)

    def check_liveness(self, *, gst: int, k: int, bound: int) -> None:
        """Record a failure for each honest node short of the target at ``gst + bound``."""
        target = self.liveness_target(gst, k)
        for node in sorted(self.honest):
            reached = self.height_at(node, gst + bound)
            if reached < target:
                self._fail(LIVENESS, gst + bound,
                           f"node {node} reached h={reached} by {bound} ms after GST; "
                           f"target h={target}")

    # -- results ----------------------------------------------------------------------------------

    @property
    def safety_violations(self) -> list[Violation]:
        """Violations of agreement, validity, certificate integrity or double signing."""
        return [v for v in self.violations if v.is_safety]

    @property
    def liveness_failures(self) -> list[Violation]:
        """Liveness violations."""
        return [v for v in self.violations if not v.is_safety]

    def total_commits(self) -> int:
        """Distinct heights committed by at least one honest node."""
        return len(self.first_commit)
