"""A start reads the validator history from its index, not from every block (issue 15 item 9).

After a run with three validator-set changes (add, remove, rotate), every replica's store
holds the history index; a node starting from it has exactly the history, period boundaries
and policy chain that replaying every stored block gives, without reading a block. A store
written before the index is replayed once and indexed.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.errors import CorruptionError
from ledger.replica.validators import HISTORY_INDEX_KEY, NodeValidators
from ledger.sim import SimConfig, run_one
from ledger.sim import runner as sim_runner
from ledger.sim.reconfig import PLAN
from ledger.storage.base import Store


def _validators(world: Any, node: Any) -> NodeValidators:
    return NodeValidators(chain_id=world.chain_id, genesis=world.genesis_roster,
                          keys=node.keys)


def _state(v: NodeValidators) -> tuple[Any, ...]:
    return (v.history, dict(v._boundaries), v.policy_chain())


class _CountingStore:
    """A store whose block reads are counted (a start from the index reads none)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.blocks_read = 0

    def block(self, height: int) -> Any:
        self.blocks_read += 1
        return self._store.block(height)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture(scope="module")
def world() -> Any:
    worlds: list[Any] = []
    build = sim_runner.build_world

    def capture(config: SimConfig, seed: int) -> Any:
        worlds.append(build(config, seed))
        return worlds[-1]

    sim_runner.build_world = capture  # type: ignore[assignment]
    try:
        result = run_one(SimConfig(reconfig=True, faults=frozenset({"delay"})), 1)
    finally:
        sim_runner.build_world = build  # type: ignore[assignment]
    assert result.ok, result.describe()
    assert len(result.set_changes) == len(PLAN)
    return worlds[0]


def test_a_start_from_the_index_equals_a_replay_of_every_block(world: Any) -> None:
    for node in world.nodes.values():
        store = node.store
        assert store.get_meta(HISTORY_INDEX_KEY) is not None
        counting = _CountingStore(store)
        indexed = _validators(world, node)
        indexed.sync(counting)  # type: ignore[arg-type]
        assert counting.blocks_read == 0
        assert len(indexed.history.epochs) == 1 + len(PLAN)
        assert indexed.history.height == store.last_height()

        saved = store.get_meta(HISTORY_INDEX_KEY)
        store.put_meta({HISTORY_INDEX_KEY: None})  # a store from before the index
        try:
            replayed = _validators(world, node)
            replayed.sync(store)
            assert _state(replayed) == _state(indexed)
            assert store.get_meta(HISTORY_INDEX_KEY) == saved  # indexed once, the same bytes
        finally:
            store.put_meta({HISTORY_INDEX_KEY: saved})


def test_a_damaged_index_is_refused_with_its_name(world: Any) -> None:
    node = next(iter(world.nodes.values()))
    store = node.store
    saved = store.get_meta(HISTORY_INDEX_KEY)
    store.put_meta({HISTORY_INDEX_KEY: b"\x93\x01"})
    try:
        with pytest.raises(CorruptionError, match="validator history index"):
            _validators(world, node).sync(store)
    finally:
        store.put_meta({HISTORY_INDEX_KEY: saved})
