"""The replica's view of its peers, and catching up with them (pure; part of the replica).

**Peers.** Every verified envelope tells the sender's last committed height (a hint, never
trusted alone), and a peer that has been quiet is asked for its status. A peer counts as
connected while we exchanged something with it in the last :data:`PEER_FRESH_MS`.

**The target.** Heights are unverified claims: taking the maximum would let one lying
validator keep every node "catching up" (never ready) for ever. The target is the height that
at least one honest validator has reached: the (f + 1)-th highest claim among the validators
of the current set, f being that set's fault tolerance (so after a validator-set change the
new set decides, not the genesis one).

**Fetching.** A replica behind the target asks peers for the blocks it lacks (``Fetch``
actions: the node does the HTTP), up to :data:`WINDOW` heights ahead at once, each from a peer
that claims to have it, spreading heights over the peers that do. Answers can arrive in any
order; they are applied strictly in height order, each block's certificate verified against
the validator set of its own height and the block handed to the core as a ``Decision`` (the
core checks the tree head through the application before it commits). A request that gets no
answer within :data:`FETCH_TIMEOUT_MS` is asked again, of another peer where one exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ledger.consensus import Decision, ScheduleTimeout, TimeoutKind, verify_certificate
from ledger.consensus.messages import decode_block, decode_certificate
from ledger.errors import MalformedError, ProtocolError, VerificationError
from ledger.replica.actions import Fetch, FetchKind

if TYPE_CHECKING:
    from ledger.replica.driver import Driver

__all__ = [
    "FETCH_TIMEOUT_MS",
    "PEER_FRESH_MS",
    "STATUS_POLL_MS",
    "WINDOW",
    "CatchUp",
    "PeerState",
    "Peers",
    "Sync",
]

#: A peer counts as connected if we exchanged a message with it this recently.
PEER_FRESH_MS: Final = 5_000
#: Ask a peer for its status when it has sent nothing for this long.
STATUS_POLL_MS: Final = 2_000
#: Blocks requested ahead of the next height at most.
WINDOW: Final = 16
#: A block request without an answer for this long is asked again.
FETCH_TIMEOUT_MS: Final = 5_000


@dataclass
class PeerState:
    """What we know of one peer (by validator name)."""

    name: str
    height: int = 0
    last_heard: int | None = None
    polling_since: int | None = None


class Peers:
    """Every configured peer, by name."""

    def __init__(self, names: list[str]) -> None:
        self.by_name = {n: PeerState(name=n) for n in names}

    def __iter__(self) -> Iterator[PeerState]:
        return iter(self.by_name.values())

    def set(self, names: list[str]) -> None:
        """The configured peers are now ``names``: new ones start unknown, the others keep
        what we know of them."""
        self.by_name = {n: self.by_name.get(n) or PeerState(name=n) for n in names}

    def heard(self, name: str, now: int, *, height: int | None = None) -> None:
        """A good exchange with ``name`` at ``now``; ``height``: its claimed committed height
        (the latest claim wins: a peer restored from a backup goes down)."""
        peer = self.by_name.get(name)
        if peer is None:
            return
        peer.last_heard = now
        if height is not None:
            peer.height = height

    def connected(self, now: int) -> int:
        """Peers heard from in the last :data:`PEER_FRESH_MS`."""
        return sum(1 for p in self.by_name.values()
                   if p.last_heard is not None and now - p.last_heard <= PEER_FRESH_MS)

    def ever_heard(self) -> int:
        """Peers we ever exchanged a message with (since start)."""
        return sum(1 for p in self.by_name.values() if p.last_heard is not None)

    def to_poll(self, now: int, *, initial: bool) -> list[str]:
        """Peers to ask for their status now: quiet ones not already being asked."""
        out = []
        for p in self.by_name.values():
            if p.polling_since is not None and now - p.polling_since < FETCH_TIMEOUT_MS:
                continue
            if initial or p.last_heard is None or now - p.last_heard > STATUS_POLL_MS:
                p.polling_since = now
                out.append(p.name)
        return out

    def polled(self, name: str, now: int, height: int | None) -> None:
        """A status answer (``None``: the poll failed)."""
        peer = self.by_name.get(name)
        if peer is None:
            return
        peer.polling_since = None
        if height is not None:
            self.heard(name, now, height=height)

    def target(self, *, validators: frozenset[str], f: int) -> int:
        """The (f + 1)-th highest height claimed by the peers in ``validators`` (module
        docstring); 0 if fewer than f + 1 of them have claimed anything."""
        heights = sorted((p.height for p in self.by_name.values() if p.name in validators),
                         reverse=True)
        return heights[f] if len(heights) > f else 0

    def lagging(self, my_height: int, now: int) -> bool:
        """Whether a connected peer is behind us (it may need our re-broadcast)."""
        return any(p.height < my_height and p.last_heard is not None
                   and now - p.last_heard <= PEER_FRESH_MS for p in self.by_name.values())


@dataclass
class CatchUp:
    """Outstanding and fetched blocks (module docstring)."""

    #: height -> (peer asked, time asked)
    asked: dict[int, tuple[str, int]] = field(default_factory=dict)
    #: height -> (block bytes, certificate bytes, peer) fetched and not yet applied
    fetched: dict[int, tuple[bytes, bytes, str]] = field(default_factory=dict)
    blocks_fetched: int = 0

    @property
    def active(self) -> bool:
        """Whether anything is outstanding or waiting to be applied."""
        return bool(self.asked or self.fetched)

    def prune(self, next_height: int) -> None:
        """Forget requests and answers for heights already committed."""
        for h in [h for h in self.fetched if h < next_height]:
            del self.fetched[h]
        for h in [h for h in self.asked if h < next_height]:
            del self.asked[h]

    def plan(self, *, next_height: int, peers: Peers, now: int) -> list[tuple[str, int]]:
        """The (peer, height) requests to make now, for heights ``next_height`` on."""
        self.prune(next_height)
        out: list[tuple[str, int]] = []
        load: dict[str, int] = {}
        for peer, _ in self.asked.values():
            load[peer] = load.get(peer, 0) + 1
        for height in range(next_height, next_height + WINDOW):
            if height in self.fetched:
                continue
            asked = self.asked.get(height)
            if asked is not None and now - asked[1] < FETCH_TIMEOUT_MS:
                continue
            sources = [p.name for p in peers if p.height >= height]
            if not sources:
                break
            if asked is not None and len(sources) > 1:
                sources = [s for s in sources if s != asked[0]] or sources
            peer = min(sources, key=lambda s: (load.get(s, 0), s))
            load[peer] = load.get(peer, 0) + 1
            self.asked[height] = (peer, now)
            out.append((peer, height))
        return out

    def answered(self, peer: str, height: int, answer: tuple[bytes, bytes] | None) -> None:
        """A block request was answered (``None``: failed or refused)."""
        asked = self.asked.get(height)
        if (asked is None or asked[0] != peer) and (answer is None or height in self.fetched):
            return  # a late answer to a request asked again elsewhere, with nothing new
        self.asked.pop(height, None)
        if answer is not None:
            self.fetched[height] = (answer[0], answer[1], peer)

    def take(self, height: int) -> tuple[bytes, bytes, str] | None:
        """The fetched block of ``height``, removed, if it is here."""
        return self.fetched.pop(height, None)


class Sync:
    """Peers' heights, block sync and the switch from follower to signer, over a driver."""

    def __init__(self, driver: Driver, peers: Peers) -> None:
        self.driver = driver
        self.peers = peers
        self.fetches = CatchUp()
        self.signing = False
        self.caught_up = False

    def quorum_at(self, height: int) -> int:
        """The quorum of the validator set of ``height``."""
        return self.driver.validators.roster_at(height).validator_set.quorum

    def target(self) -> int:
        """The height an honest validator of the current set has reached (module docstring)."""
        roster = self.driver.validators.roster_at(self.driver.store.last_height() + 1)
        names = frozenset(m.name for m in roster.members)
        f = (len(roster.members) - 1) // 3
        return self.peers.target(validators=names, f=f)

    def poll(self, now: int, *, initial: bool) -> None:
        """Ask quiet peers for their status."""
        for name in self.peers.to_poll(now, initial=initial):
            self.driver.out.append(Fetch(peer=name, what=FetchKind.STATUS))

    def catch_up(self, now: int) -> None:
        """Ask for the blocks we lack, if peers are ahead.

        One height behind is the normal state of a replica while a commit travels (an
        envelope names its sender's newest height): it still fetches that block, in case
        consensus does not deliver it, but only a replica *far* behind (more than one height)
        stops cosigning the blocks it applies, which would otherwise be one checkpoint
        cosignature per historical block.
        """
        driver = self.driver
        core = driver.require_core()
        height = driver.store.last_height()
        target = self.target()
        self.caught_up = target <= height + 1
        far = target > height + 1 or core.stats.highest_seen_height > core.height + 1
        driver.cosigning = not far
        self.fetches.prune(height + 1)
        if target <= height and not far and not self.fetches.active:
            return
        for peer, h in self.fetches.plan(next_height=height + 1, peers=self.peers, now=now):
            driver.out.append(Fetch(peer=peer, what=FetchKind.BLOCK, height=h))

    def tick(self, now: int) -> None:
        """Housekeeping: polls, catch-up, missing checkpoints, the switch to signing."""
        self.poll(now, initial=False)
        self.catch_up(now)
        self.fetch_missing(now)
        self.maybe_start_signing(now)

    def fetch_missing(self, now: int) -> None:
        """Ask peers for the notes of committed blocks this replica does not hold (after a
        catch-up, or when it never got a quorum of cosignatures for one), round robin over the
        peers that have reached further."""
        driver = self.driver
        sources = [p.name for p in self.peers if p.height >= driver.store.last_height()]
        for n, size in enumerate(driver.checkpoints.missing(now)):
            if sources:
                driver.out.append(Fetch(peer=sources[n % len(sources)],
                                        what=FetchKind.CHECKPOINT, height=size))

    def maybe_start_signing(self, now: int) -> None:
        """Replace the follower core by the signing one once the initial catch-up is done: a
        quorum's worth of peers of the current set told us their height (the (f + 1)-th
        highest of them is then an honest one) and our store reached it. Consensus needs those
        peers anyway, so waiting for them delays nothing."""
        driver = self.driver
        if self.signing or driver.halted is not None:
            return
        height = driver.store.last_height()
        if self.peers.ever_heard() >= self.quorum_at(height + 1) - 1 and self.target() <= height:
            self.signing = True
            driver.build_core(follower=False)
            driver.log.info("caught up at height %d: signing as a validator from here",
                            height)
            driver.start_core(now, lazy=height > 0)

    def on_status(self, peer: str, height: int | None, now: int) -> None:
        """A status poll answered (``None``: it failed)."""
        self.peers.polled(peer, now, height)
        self.catch_up(now)
        self.maybe_start_signing(now)

    def on_block(self, peer: str, height: int, answer: tuple[bytes, bytes] | None,
                 now: int) -> None:
        """A block request answered (``None``: it failed); apply what is next in order."""
        self.fetches.answered(peer, height, answer)
        driver = self.driver
        applied = False
        while True:
            next_height = driver.store.last_height() + 1
            fetched = self.fetches.take(next_height)
            if fetched is None:
                break
            if self._apply(next_height, fetched, now):
                applied = True
                driver.stats.blocks_fetched += 1
        self.catch_up(now)
        if applied and driver.cosigning:
            driver.cosign(now)
            if len(driver.mempool):
                driver.unpark(now)
        self.maybe_start_signing(now)

    def _apply(self, height: int, fetched: tuple[bytes, bytes, str], now: int) -> bool:
        raw_block, raw_cert, peer = fetched
        driver = self.driver
        try:
            block, cert = decode_block(raw_block), decode_certificate(raw_cert)
            if block.height != height:
                raise VerificationError(f"peer sent block {block.height} for height {height}")
            verify_certificate(cert, block_hash=block.hash, height=height,
                               validators=driver.validators.history.set_at(height),
                               chain_id=driver.config.chain_id)
        except (ProtocolError, VerificationError) as exc:
            driver.stats.peer_invalid += 1
            driver.log.warning("peer %s served a bad block %d: %s", peer, height,
                               exc.diagnostics())
            return False
        # After a Commit the core takes no Decision until its COMMIT timer started the height.
        driver.unpark(now, early=True)
        driver.core_event(now, lambda c, t: c.on_message(
            Decision(block=block, certificate=cert), t))
        if driver.store.last_height() >= height and block.tree_size \
                and driver.store.checkpoint(block.tree_size) is None:
            # The block's cosigned checkpoint comes with it, from the peer that had the block.
            driver.out.append(Fetch(peer=peer, what=FetchKind.CHECKPOINT,
                                    height=block.tree_size))
        if driver.store.last_height() < height:
            # The core records a Decision's block but re-evaluates its rules only when the
            # Decision brings a new precommit; a node that saw every precommit but lost the
            # proposal would hold the block and never decide. A propose timeout of the current
            # round re-runs the rules (at worst it prevotes nil early, which is always safe).
            driver.core_event(now, lambda c, t: c.on_timeout(ScheduleTimeout(
                kind=TimeoutKind.PROPOSE, height=c.height, round=c.round, at=t), t))
        if driver.store.last_height() < height:
            driver.stats.peer_invalid += 1
            driver.log.warning("peer %s block %d was refused by consensus (tree head?)", peer,
                               height)
            return False
        return True

    def on_checkpoint(self, peer: str, text: str, now: int) -> None:
        """A peer's latest checkpoint note: adopt it if it is newer and verifies.

        Raises:
            StorageError: storing it failed (the caller halts).
        """
        driver = self.driver
        try:
            stored = driver.checkpoints.adopt(text)
        except (MalformedError, VerificationError) as exc:
            driver.stats.peer_invalid += 1
            driver.log.warning("peer %s served a bad checkpoint: %s", peer, exc.diagnostics())
            return
        if stored:
            driver.answer_waiting()
