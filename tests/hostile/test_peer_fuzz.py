"""The peer-message fuzzer, short version (the long run: ``tests/hostile/fuzz_peer.py``).

A node fed hostile peer messages, directly through the handler the HTTP endpoint calls and then
over real HTTP, never crashes, halts or answers 5xx, and no invalid or replayed message changes
its state (see :mod:`hostile.peer_fuzz` for the classes and the invariant).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

from node.harness import run

from ledger.consensus.messages import Vote, decode_message
from ledger.errors import LedgerError
from ledger.replica.wire import KIND_CONSENSUS, seal_envelope

from .peer_fuzz import (
    CLASSES,
    Generator,
    Result,
    check_node_unharmed,
    fuzz_direct,
    fuzz_http,
    invalid_total,
    prepared_node,
    settle,
    snapshot,
)

DIRECT_MESSAGES = 15_000
HTTP_MESSAGES = 1_500


def test_hostile_peer_messages_never_crash_the_node_or_change_its_state(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with prepared_node(tmp_path) as (node, corpus, url):
            assert len(corpus.envelopes) >= 20 and all(corpus.items.values())
            before, invalid_before = snapshot(node), invalid_total(node)
            result = Result()
            await fuzz_direct(node, Generator(corpus=corpus, seed=1), DIRECT_MESSAGES, result)
            await fuzz_http(url, Generator(corpus=corpus, seed=2), HTTP_MESSAGES, result)
            print(result.line())
            assert result.sent == DIRECT_MESSAGES + HTTP_MESSAGES
            assert set(result.by_class) == set(CLASSES)
            assert not any(status >= 500 for status in result.statuses)
            check_node_unharmed(node, before, invalid_before, result)

    run(main())


def test_a_forged_far_future_vote_neither_unparks_an_idle_node_nor_raises_its_horizon(
    tmp_path: Path,
) -> None:
    """Found by the fuzzer: a consensus message beyond the core's future window is dropped
    unverified, yet (1) the core raises ``stats.highest_seen_height`` to its claimed height and
    (2) the node counts it as traffic for its current height and unparks: an idle node starts
    an empty height and signs a nil prevote because of one forged message (and, with the
    horizon raised for good, never parks again and runs catch-up on every tick)."""
    async def main() -> None:
        async with prepared_node(tmp_path) as (node, corpus, _url):
            assert node.replica.driver.core is not None
            votes = []
            for payload in corpus.items[KIND_CONSENSUS]:
                with contextlib.suppress(LedgerError):
                    message = decode_message(payload)
                    if isinstance(message, Vote):
                        votes.append(message)
            core = node.replica.driver.core
            forged = replace(votes[0], height=core.height + 1000)  # signature now wrong
            before, horizon = snapshot(node), core.stats.highest_seen_height
            node.receive_envelope(seal_envelope(
                key=corpus.peer_keys[0], chain_id=corpus.chain_id, height=1, seq=99,
                items=[(KIND_CONSENSUS, forged.encode())]))
            await settle(node)
            await asyncio.sleep(0.05)
            parked = node.replica.driver.batch.parked
            assert parked is not None, "one forged message started a height"
            assert snapshot(node) == before
            assert node.replica.driver.core.stats.highest_seen_height == horizon

    run(main())
