"""Writes serialise per case, not per office: the store's lock is not held across the call to
the ledger, and a step that loses the race for its case's head is built again on the new head."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from eod.casework import CONTRACT_DIGEST, INVOICE_DIGEST, Setup, make_office
from ledger.eod.anchor import Anchorer
from ledger.eod.office import Office
from ledger.eod.store import OfficeStore


class GatedAnchorer:
    """Anchors through ``inner`` (one call at a time); while ``gate`` is closed, the calls of
    the thread named ``slow`` wait for it: a slow network call to the ledger."""

    def __init__(self, inner: Anchorer) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0

    def anchor(self, digests: Sequence[bytes]) -> list[str]:
        if threading.current_thread().name == "slow":
            self.entered.set()
            assert self.gate.wait(20)
        with self.lock:
            self.calls += 1
            return self.inner.anchor(digests)

    def checkpoint(self) -> str | None:
        with self.lock:
            return self.inner.checkpoint()

    def policy(self) -> str:
        return self.inner.policy()


def _second(setup: Setup, root: Path, anchorer: GatedAnchorer, *, locks: bool) -> Office:
    return Office(OfficeStore.open(root), anchorer, clock=setup.clock, chain_locks=locks)


def _two_cases(setup: Setup) -> tuple[str, str]:
    office = setup.office
    refs = []
    for digest in (INVOICE_DIGEST, CONTRACT_DIGEST):
        setup.clock.tick()
        register, _, _ = office.register(digest, actor="kanc-1", channel="post")
        refs.append(register)
    return refs[0], refs[1]


def test_a_slow_anchor_on_one_case_does_not_stall_a_step_on_another(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    first, second = _two_cases(setup)
    gated = GatedAnchorer(setup.office._need_anchorer())
    slow = _second(setup, tmp_path, gated, locks=True)
    fast = _second(setup, tmp_path, gated, locks=True)
    setup.clock.tick()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            slow.assign(first, actor="dyr", to="ref-fk")
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name="slow")
    thread.start()
    assert gated.entered.wait(10)
    # The slow step is inside its anchoring call: a step on another case goes through.
    fast.assign(second, actor="dyr", to="ref-2")
    assert fast.chain(second)[2].assignee == "ref-2"
    assert slow.store.chain_length(slow.store.chain_of(first)) == 1
    gated.gate.set()
    thread.join(20)
    assert not errors
    assert fast.chain(first)[2].assignee == "ref-fk"


def test_a_step_that_lost_the_race_for_the_head_is_rebuilt_on_it(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    first, _ = _two_cases(setup)
    gated = GatedAnchorer(setup.office._need_anchorer())
    # No in-process lock: as two service processes on one store.
    slow = _second(setup, tmp_path, gated, locks=False)
    fast = _second(setup, tmp_path, gated, locks=False)
    setup.clock.tick()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            slow.assign(first, actor="dyr", to="ref-fk")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="slow")
    thread.start()
    assert gated.entered.wait(10)
    fast.assign(first, actor="dyr", to="ref-2")  # wins the race: event 1
    gated.gate.set()
    thread.join(20)
    assert not errors
    _, events, state = fast.chain(first)
    # The slow step's first build (on event 0) lost; it was rebuilt as event 2.
    assert [e.record.type.value for e in events] == ["registered", "assigned", "assigned"]
    assert [e.record.data["to"] for e in events[1:]] == ["ref-2", "ref-fk"]
    assert state.assignee == "ref-fk"
    assert gated.calls >= 3  # the lost build was anchored, then dropped: it proves nothing


def test_a_failed_anchor_gives_its_register_number_back(tmp_path: Path) -> None:
    setup = make_office(tmp_path)

    class Down(GatedAnchorer):
        def anchor(self, digests: Sequence[bytes]) -> list[str]:
            from ledger.client import TransportError

            raise TransportError("the node is down")

    office = _second(setup, tmp_path, Down(setup.office._need_anchorer()), locks=True)
    setup.clock.tick()
    try:
        office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    except Exception as exc:
        assert "down" in str(exc)
    else:
        raise AssertionError("the registration went through a ledger that is down")
    register, _, _ = setup.office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    assert register == "RPW/1/2024"
