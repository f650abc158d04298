"""Trails that break the rules but carry valid signatures and receipts: what a faulty or rogue
office client would export if it skipped :func:`ledger.eod.rules.apply` and the clock checks.

The honest :class:`~ledger.eod.office.Office` refuses each of these steps before anchoring, so
they are made here by recording with the rule and clock checks switched off (``rogue``): the
events are then signed by their positions and anchored in the ledger like any other, and only
the verifiers' own rules can catch them. Used by tests/eod/test_trail.py and by the browser
test, which must give the same verdict and reason as ``verify-trail``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ledger.eod.office as office_module
from eod.casework import CONTRACT_DIGEST, INVOICE_DIGEST, Setup, cost_case, make_office
from ledger.eod.events import SignedEvent
from ledger.eod.model import EventType
from ledger.eod.rules import CaseState, Facts

Bundle = dict[str, Any]


def _lenient(state: CaseState, event: SignedEvent, facts: Facts) -> CaseState:
    r = event.record
    return dataclasses.replace(
        state,
        seq=state.seq + 1,
        head=event.hash,
        last_time=r.time,
        case=r.case or state.case,
        invoice=state.invoice or (r.document if r.type is EventType.REGISTERED else None),
    )


@contextlib.contextmanager
def rogue(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> Iterator[None]:
    """Record without the rules and without the clock checks."""
    with monkeypatch.context() as m:

        def fold(events: list[tuple[SignedEvent, Facts]]) -> CaseState:
            state = CaseState()
            for event, facts in events:
                state = _lenient(state, event, facts)
            return state

        m.setattr(office_module, "apply", _lenient)
        m.setattr(office_module, "fold", fold)
        m.setattr(setup.office, "_check_after", lambda now, seen: None)
        m.setattr(setup.office, "_check_before", lambda now, bound: None)
        yield


def _start(setup: Setup) -> str:
    """Register the invoice, assign, open the cost case, attach the contract (all lawful)."""
    office, clock = setup.office, setup.clock
    register, _, _ = office.register(
        INVOICE_DIGEST, actor="kanc-1", channel="ksef", kind="invoice", attachments=1
    )
    clock.tick()
    office.assign(register, actor="dyr", to="ref-fk")
    clock.tick()
    case, _ = office.open_case(register, actor="ref-fk", unit="FK", jrwa_class="3026", kind="cost")
    clock.tick()
    office.attach(case, CONTRACT_DIGEST, actor="ref-fk", kind="contract")
    clock.tick()
    office.cost_step(case, EventType.SUBSTANTIVE_CHECK, actor="kier-sp")
    return case


def _step(setup: Setup, case: str, step: EventType, actor: str, **extra: Any) -> None:
    setup.clock.tick(600)
    setup.office.cost_step(case, step, actor=actor, document=INVOICE_DIGEST, **extra)


def out_of_order(setup: Setup, mp: pytest.MonkeyPatch) -> str:
    case = _start(setup)
    _step(setup, case, EventType.FORMAL_CHECK, "ksieg-1")
    with rogue(mp, setup):
        _step(setup, case, EventType.COUNTERSIGNED, "gk")  # before the account coding
    return case


def wrong_role(setup: Setup, mp: pytest.MonkeyPatch) -> str:
    case = _start(setup)
    with rogue(mp, setup):
        _step(setup, case, EventType.FORMAL_CHECK, "ref-fk")  # an officer, not accounts
    return case


def wrong_unit(setup: Setup, mp: pytest.MonkeyPatch) -> str:
    case = _start(setup)
    with rogue(mp, setup):
        _step(setup, case, EventType.FORMAL_CHECK, "ksieg-sek")  # accounts, but of unit SEK
    return case


def wrong_officer(setup: Setup, mp: pytest.MonkeyPatch) -> str:
    case = cost_case(setup, until=EventType.CLOSED)
    with rogue(mp, setup):
        setup.clock.tick()
        setup.office.close(case, actor="ref-2")  # not the case officer ref-fk
    return case


def backdated(setup: Setup, mp: pytest.MonkeyPatch) -> str:
    """A step whose recorded time lies three days before the checkpoint it names."""
    case = _start(setup)
    setup.clock.tick(600)
    behind = setup.clock.now - 3 * 86400  # the office PC; the ledger's clock stays right
    with rogue(mp, setup):
        mp.setattr(setup.office, "_clock", lambda: behind)
        setup.office.cost_step(
            case, EventType.FORMAL_CHECK, actor="ksieg-1", document=INVOICE_DIGEST
        )
        mp.setattr(setup.office, "_clock", setup.clock)
    return case


#: name -> (how the case is made, what is done to its bundle afterwards)
BROKEN: dict[str, Callable[[Setup, pytest.MonkeyPatch], str]] = {
    "out of order": out_of_order,
    "wrong role": wrong_role,
    "wrong unit": wrong_unit,
    "wrong officer": wrong_officer,
    "backdated": backdated,
}


def broken_bundles(directory: Path) -> dict[str, Bundle]:
    """Every broken trail of :data:`BROKEN`, plus a valid one with its tail dropped and a
    valid one with a declared (claimed) time outside the proven interval."""
    out: dict[str, Bundle] = {}
    mp = pytest.MonkeyPatch()
    try:
        for i, (name, make) in enumerate(BROKEN.items()):
            setup = make_office(directory / f"broken-{i}")
            case = make(setup, mp)
            with rogue(mp, setup):  # the honest office would not even export it
                out[name] = setup.office.trail(case)
        setup = make_office(directory / "tail")
        valid = setup.office.trail(cost_case(setup))
        dropped = copy.deepcopy(valid)
        del dropped["events"][-2:]
        out["dropped tail"] = dropped
        setup = make_office(directory / "declared")
        case = _start(setup)
        setup.office._declared = setup.clock.now - 3 * 86400  # a --at three days back
        setup.clock.tick(600)
        setup.office.cost_step(case, EventType.FORMAL_CHECK, actor="ksieg-1")
        setup.office._declared = None
        out["declared in the past"] = setup.office.trail(case)
    finally:
        mp.undo()
    return out


#: The reason each broken trail fails with, in both verifiers (None: valid but flagged).
REASONS: dict[str, str | None] = {
    "out of order": (
        "event #6 (countersigned): countersignature (kontrasygnata) must come after account "
        "coding (dekretacja księgowa), which is not recorded yet"
    ),
    "wrong role": (
        "event #5 (formal-check): position 'ref-fk' (Referent ds. zamówień) may not record "
        "formal and arithmetic check (kontrola formalna i rachunkowa): it needs the role "
        "'accounts' (księgowość)"
    ),
    "wrong unit": (
        "event #5 (formal-check): formal and arithmetic check (kontrola formalna i rachunkowa) "
        "belongs to unit FK; position 'ksieg-sek' is in unit SEK"
    ),
    "wrong officer": (
        "event #9 (closed): the case officer (prowadzący sprawę) is 'ref-fk'; 'ref-2' may not "
        "record case closed (zakończenie sprawy)"
    ),
    "backdated": None,  # the reason names times; checked by pattern in the tests
    "dropped tail": (
        "the trail holds 9 events, but its signed head counts 11: events were dropped or added"
    ),
    "declared in the past": None,
}
