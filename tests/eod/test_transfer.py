"""Transfer to the state archive: only archived category A cases past their office-archive
period; the package verifies offline; any one altered byte fails it; nothing follows."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from eod.casework import Setup, make_office
from ledger.eod.rules import WorkflowError
from ledger.eod.transfer import due_for_transfer, transfer, verify_package
from ledger.errors import LedgerError, VerificationError
from ledger.policy import parse_policy

YEAR = 365 * 86400


def _closed_category_a(setup: Setup, title: bytes) -> str:
    office, clock = setup.office, setup.clock
    clock.tick()
    register, _, _ = office.register(hashlib.sha256(title).digest(), actor="kanc-1",
                                     channel="epuap", direction="internal")
    clock.tick()
    case, _ = office.open_case(register, actor="kier-or", unit="OR", jrwa_class="0012")
    clock.tick()
    office.close(case, actor="kier-or")
    clock.tick(86400)
    office.archive(case, actor="arch")
    return case


def test_a_category_a_case_is_transferred_with_a_package_that_verifies(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    office = setup.office
    first = _closed_category_a(setup, b"sprawozdanie 2023")
    second = _closed_category_a(setup, b"plan pracy 2024")
    with pytest.raises(WorkflowError, match="office-archive period of 25 years"):
        transfer(office, [first], actor="arch", archive="Archiwum Państwowe w Gdańsku")
    assert due_for_transfer(office, now=setup.clock.now) == []
    setup.clock.tick(26 * YEAR)
    assert due_for_transfer(office, now=setup.clock.now) == [first, second]
    data, recorded = transfer(office, [second, first], actor="arch",
                              archive="Archiwum Państwowe w Gdańsku")
    assert len(recorded) == 2
    policy = parse_policy(office.store.policy_text())
    from ledger.eod.pki import fingerprint

    key = fingerprint(office.record.ca_public_key)
    package = verify_package(data, policy=policy, office_key=key)
    assert [t.case for t in package.trails] == [first, second]
    assert package.archive == "Archiwum Państwowe w Gdańsku"
    # The trail ends with the transfer; nothing may follow it.
    with pytest.raises(WorkflowError, match="transferred to the state archive"):
        office.destroy(first, actor="arch", consent="ZN.1")
    assert office.store.query("SELECT status FROM matters WHERE case_sign = ?", first) == [
        ("transferred",)
    ]
    # One altered byte, anywhere, fails the package.
    rng = random.Random(13)
    positions = sorted(rng.sample(range(len(data)), 150))
    for pos in positions:
        altered = bytearray(data)
        altered[pos] = (altered[pos] + rng.randrange(1, 256)) % 256
        with pytest.raises(LedgerError):
            verify_package(bytes(altered), policy=policy, office_key=key)


def test_only_archived_category_a_cases_go(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    office, clock = setup.office, setup.clock
    clock.tick()
    register, _, _ = office.register(b"\x01" * 32, actor="kanc-1", channel="post")
    case, _ = office.open_case(register, actor="kier-or", unit="OR", jrwa_class="0143")
    office.close(case, actor="kier-or")
    office.archive(case, actor="arch")
    clock.tick(30 * YEAR)
    with pytest.raises(WorkflowError, match="only category A"):
        transfer(office, [case], actor="arch", archive="AP")


def test_a_package_with_a_case_removed_fails(tmp_path: Path) -> None:
    import json

    from ledger.eod import canonical

    setup = make_office(tmp_path)
    cases = [_closed_category_a(setup, b"a"), _closed_category_a(setup, b"b")]
    setup.clock.tick(26 * YEAR)
    data, _ = transfer(setup.office, cases, actor="arch", archive="AP")
    package = json.loads(data)
    package["trails"].pop()
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_package(canonical.encode(package))
