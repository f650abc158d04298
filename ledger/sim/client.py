"""The simulated clients: anchoring load, and the receipts they were given.

A client sends a few fresh digests every few hundred virtual milliseconds to a random live
endpoint, asking to wait for the receipts, as an EOD backend does. Every ``Reply`` an honest
replica sends is an acknowledgement: the client verifies each receipt offline, as an auditor
would, against the chain's trust policy (with the policy chain of the run's validator-set
changes), and keeps the index it names. At the end of a run (:meth:`SimClients.check`) every
acknowledged digest must sit at that very index on every honest replica that committed that
far, and every honest replica must have committed that far.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.errors import LedgerError
from ledger.policy_chain import verify_receipt_with_chain
from ledger.replica import Reply
from ledger.sim.store import Crash

if TYPE_CHECKING:
    from ledger.sim.world import World

__all__ = ["SimClients"]


@dataclass
class SimClients:
    """The anchoring load of one run, and what it was acknowledged."""

    world: World
    #: (endpoint, ticket) -> the digests that request waits for
    waiting: dict[tuple[int, int], tuple[bytes, ...]] = field(default_factory=dict)
    #: acknowledged digest -> its leaf index
    acknowledged: dict[bytes, int] = field(default_factory=dict)
    submitted: int = 0
    stopped: bool = False
    _counter: int = 0

    def start(self) -> None:
        """Schedule the first request."""
        self._schedule()

    def _schedule(self) -> None:
        rng = self.world.sched.rng
        self.world.sched.schedule(rng.randint(50, 400), ("client",), self._request)

    def _request(self) -> None:
        if self.stopped:
            return
        world, rng = self.world, self.world.sched.rng
        live = [e for e, n in sorted(world.nodes.items()) if n.replica is not None]
        if live:
            endpoint = rng.choice(live)
            digests = tuple(self._digest() for _ in range(rng.randint(1, 3)))
            node = world.nodes[endpoint]
            replica = node.replica
            assert replica is not None
            try:
                _, ticket, actions = replica.submit(digests, node.clock.now_ms(), wait=True)
            except LedgerError:
                ticket, actions = None, []
            except Crash:  # an armed crash hit a write the request caused
                self._schedule()
                return
            self.submitted += len(digests)
            if ticket is not None:
                self.waiting[(endpoint, ticket)] = digests
            node.perform(actions)
        self._schedule()

    def _digest(self) -> bytes:
        self._counter += 1
        return hashlib.sha256(b"sim-client\x00%d\x00%d" % (self.world.seed,
                                                          self._counter)).digest()

    def replied(self, endpoint: int, reply: Reply) -> None:
        """A replica answered a waiting request with its receipts."""
        digests = self.waiting.pop((endpoint, reply.ticket), None)
        node = self.world.nodes[endpoint]
        if digests is None or not node.honest:
            return
        for want, status in zip(digests, reply.anchors, strict=True):
            receipt = status.receipt
            if status.digest != want or receipt is None or status.index is None:
                self.world.checker.anchor_violation(
                    self.world.sched.now, f"node {endpoint} replied without a receipt")
                continue
            try:
                verified = verify_receipt_with_chain(receipt, self.world.policy_chain(),
                                                     want)
            except LedgerError as exc:
                self.world.checker.anchor_violation(
                    self.world.sched.now,
                    f"node {endpoint} handed out a receipt that does not verify: {exc}")
                continue
            if verified.index != status.index:
                self.world.checker.anchor_violation(
                    self.world.sched.now, f"node {endpoint}: receipt index differs")
            known = self.acknowledged.setdefault(want, status.index)
            if known != status.index:
                self.world.checker.anchor_violation(
                    self.world.sched.now,
                    f"digest {want.hex()[:16]} acknowledged at {known} and {status.index}")

    def check(self) -> None:
        """End of a run: every acknowledged digest is where its receipt says, everywhere."""
        for endpoint, node in sorted(self.world.nodes.items()):
            if not node.honest:
                continue
            store = node.store
            found = store.index_of_many(list(self.acknowledged))
            for (digest, index), at in zip(self.acknowledged.items(), found, strict=True):
                if at != index:
                    where = "missing" if at is None else f"at index {at}"
                    self.world.checker.anchor_violation(
                        self.world.sched.now,
                        f"acknowledged digest {digest.hex()[:16]} (index {index}) is {where} "
                        f"on honest node {endpoint} (height {store.last_height()})")
