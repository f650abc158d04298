# ruff: noqa: E501  (the expected timeline below is verbatim output, long lines included)
"""The workflow against real LocalLog receipts: the cost-document path, its timeline, and the
steps that must be refused before anything is anchored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eod.casework import (
    CONTRACT_DIGEST,
    INVOICE_DIGEST,
    Setup,
    bundle_bytes,
    cost_case,
    make_office,
)
from ledger.eod.model import EventType
from ledger.eod.rules import WorkflowError
from ledger.eod.trail import render_timeline, verify_trail
from ledger.errors import NotFoundError
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt

EXPECTED_TIMELINE = """\
Case FK.3026.1.2024, office cuw-gdansk (Centrum Usług Wspólnych)
office CA key: SHA256:{ca}
ledger: ledger.example.org/test; trust policy pinned

#0   2024-03-01 09:01:00 UTC  registration (rejestracja przesyłki)
     who:    kanc-1, Kancelaria ogólna (unit SEK)
     what:   item RPW/1/2024, incoming via ksef, invoice, 1 attachment(s), sender's reference FV/2024/03/117; document {inv}
     ledger: existed no later than 2024-03-01 09:01:03 UTC (leaf 0 of 2)
#1   2024-03-01 09:02:00 UTC  assignment (dekretacja)
     who:    dyr, Dyrektor (unit D)
     what:   to ref-fk, deadline 2024-03-15
     ledger: existed no later than 2024-03-01 09:02:03 UTC (leaf 2 of 3)
#2   2024-03-01 09:03:00 UTC  case opened (założenie sprawy)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   case FK.3026.1.2024, category B5, cost document
     ledger: existed no later than 2024-03-01 09:03:03 UTC (leaf 3 of 4)
#3   2024-03-01 09:04:00 UTC  attachment (dołączenie dokumentu)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   contract; document {con}
     ledger: existed no later than 2024-03-01 09:04:03 UTC (leaf 4 of 6)
#4   2024-03-01 10:04:00 UTC  substantive check (kontrola merytoryczna)
     who:    kier-sp, Kierownik gospodarczy (unit SP7)
     what:   document {inv}
     ledger: existed no later than 2024-03-01 10:04:03 UTC (leaf 6 of 7)
#5   2024-03-01 11:04:00 UTC  formal and arithmetic check (kontrola formalna i rachunkowa)
     who:    ksieg-1, Księgowa (unit FK)
     what:   document {inv}
     ledger: existed no later than 2024-03-01 11:04:03 UTC (leaf 7 of 8)
#6   2024-03-01 12:04:00 UTC  account coding (dekretacja księgowa)
     who:    ksieg-2, Starsza księgowa (unit FK)
     what:   accounts Wn 401-01 / Ma 201-117; document {inv}
     ledger: existed no later than 2024-03-01 12:04:03 UTC (leaf 8 of 9)
#7   2024-03-01 13:04:00 UTC  countersignature (kontrasygnata)
     who:    gk, Główna księgowa (unit FK)
     what:   document {inv}
     ledger: existed no later than 2024-03-01 13:04:03 UTC (leaf 9 of 10)
#8   2024-03-01 14:04:00 UTC  approval for payment (zatwierdzenie do wypłaty)
     who:    dyr, Dyrektor (unit D)
     what:   document {inv}
     ledger: existed no later than 2024-03-01 14:04:03 UTC (leaf 10 of 11)
#9   2024-03-01 14:05:00 UTC  case closed (zakończenie sprawy)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   -
     ledger: existed no later than 2024-03-01 14:05:03 UTC (leaf 11 of 12)
#10  2024-03-02 14:05:00 UTC  archived (przekazanie do archiwum zakładowego)
     who:    arch, Archiwista (unit AZ)
     what:   -
     ledger: existed no later than 2024-03-02 14:05:03 UTC (leaf 12 of 13)

state: in the office archive (archiwum zakładowe)
document {contract}: in events #3; existed no later than 2024-03-01 09:04:03 UTC
valid: 11 events; every signature, certificate, ledger receipt, previous-event hash and workflow rule checks out
"""
CA_FINGERPRINT = "b4oHJ5C/VMUXGWATd0y0PI8PEfaU57bNmcdXlKWyL6A"


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return make_office(tmp_path / "office")


def test_cost_document_path_timeline_is_exact(setup: Setup) -> None:
    """The whole invoice path verifies offline and prints the known timeline, word for word."""
    case = cost_case(setup)
    trail = verify_trail(
        bundle_bytes(setup.office.trail(case)),
        policy=parse_policy(setup.log.trust_policy()),
        office_key="SHA256:" + CA_FINGERPRINT,
        document=CONTRACT_DIGEST,
    )
    expected = EXPECTED_TIMELINE.format(
        ca=CA_FINGERPRINT,
        inv=INVOICE_DIGEST.hex()[:16],
        con=CONTRACT_DIGEST.hex()[:16],
        contract=CONTRACT_DIGEST.hex(),
    )
    assert render_timeline(trail) == expected


def test_official_receipt_and_documents_verify_with_plain_ledger_receipts(setup: Setup) -> None:
    _, recorded, official = setup.office.register(INVOICE_DIGEST, actor="kanc-1", channel="epuap")
    policy = parse_policy(official["policy"])
    # The sender can check the document's own receipt with `ledger verify`: same format.
    verify_receipt(official["document_receipt"], policy, INVOICE_DIGEST)
    verify_receipt(official["event_receipt"], policy, recorded.event.hash)
    assert official["register"] == "RPW/1/2024"


def refused(action: Callable[[], object], setup: Setup, reason: str) -> None:
    """The action is refused with ``reason`` and nothing reaches the ledger."""
    size = setup.log.checkpoint(timestamp=0).split("\n")[1]
    with pytest.raises(WorkflowError, match=reason):
        action()
    assert setup.log.checkpoint(timestamp=0).split("\n")[1] == size


def test_payment_approval_before_countersignature_is_refused(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.COUNTERSIGNED)
    refused(
        lambda: setup.office.cost_step(case, EventType.APPROVED_FOR_PAYMENT, actor="dyr"),
        setup,
        r"approval for payment \(zatwierdzenie do wypłaty\) must come after countersignature",
    )


def test_same_position_cannot_do_two_checks(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.ACCOUNT_CODING)
    refused(
        lambda: setup.office.cost_step(
            case, EventType.ACCOUNT_CODING, actor="ksieg-1", accounts="Wn 401"
        ),
        setup,
        "already did the formal and arithmetic check",
    )


def test_substantive_check_needs_the_attachment(setup: Setup) -> None:
    register, _, _ = setup.office.register(
        INVOICE_DIGEST, actor="kanc-1", channel="ksef", kind="invoice"
    )
    case, _ = setup.office.open_case(
        register, actor="ref-fk", unit="FK", jrwa_class="3026", category="B5", cost=True
    )
    refused(
        lambda: setup.office.cost_step(case, EventType.SUBSTANTIVE_CHECK, actor="kier-sp"),
        setup,
        "needs its attachment",
    )


def test_unauthorised_position_is_refused(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.SUBSTANTIVE_CHECK)
    refused(
        lambda: setup.office.cost_step(case, EventType.SUBSTANTIVE_CHECK, actor="gk"),
        setup,
        "needs the role 'substantive'",
    )


def letter_case(setup: Setup) -> str:
    office = setup.office
    case, _ = office.open_case(None, actor="ref-fk", unit="OR", jrwa_class="0012", category="A")
    setup.clock.tick()
    office.submit(case, hashlib.sha256(b"draft").digest(), actor="ref-fk", levels=2)
    setup.clock.tick()
    office.accept(case, actor="kier-sp")
    return case


def test_signature_before_acceptance_is_refused(setup: Setup) -> None:
    case = letter_case(setup)
    refused(
        lambda: setup.office.sign(case, hashlib.sha256(b"signed").digest(), actor="dyr"),
        setup,
        r"signature \(podpis\) before acceptance: the draft is accepted at 1 of 2 levels",
    )


def test_letter_path_and_deemed_delivery(setup: Setup) -> None:
    office, clock = setup.office, setup.clock
    case = letter_case(setup)
    clock.tick()
    office.accept(case, actor="dyr")
    clock.tick()
    signed = hashlib.sha256(b"signed").digest()
    office.sign(case, signed, actor="dyr")
    clock.tick()
    register, _ = office.dispatch(case, actor="kanc-1", channel="post")
    assert register == "RPWy/1/2024"
    notice = clock.now + 86400
    clock.tick(86400 + 13 * 86400)
    refused(
        lambda: office.deliver(case, actor="kanc-1", deemed=True, notice=notice),
        setup,
        "only after 14 days uncollected",
    )
    clock.tick(86400)
    office.deliver(case, actor="kanc-1", deemed=True, notice=notice)
    office.record_receipt(case, hashlib.sha256(b"<UPD/>").digest(), actor="kanc-1", kind="UPD")
    office.close(case, actor="ref-fk")
    office.archive(case, actor="arch")
    trail = verify_trail(bundle_bytes(office.trail(case)))
    assert trail.state.archived
    # Category A is never destroyed, however long one waits.
    clock.tick(100 * 366 * 86400)
    refused(
        lambda: office.destroy(case, actor="arch", consent="AP-1/2124"),
        setup,
        "category A records are kept forever",
    )


def test_destruction_only_after_retention_and_with_consent(setup: Setup) -> None:
    case = cost_case(setup)  # B5, closed in 2024: retention until 2029-12-31
    setup.clock.now = int(datetime(2029, 12, 31, tzinfo=UTC).timestamp())
    refused(
        lambda: setup.office.destroy(case, actor="arch", consent="AP.4131.17.2030"),
        setup,
        "retention period runs until 2030-01-01",
    )
    setup.clock.now = int(datetime(2030, 2, 1, tzinfo=UTC).timestamp())
    refused(lambda: setup.office.destroy(case, actor="arch", consent=""), setup, "consent")
    setup.office.destroy(case, actor="arch", consent="AP.4131.17.2030")
    assert verify_trail(bundle_bytes(setup.office.trail(case))).state.destroyed
    refused(lambda: setup.office.archive(case, actor="arch"), setup, "destroyed")


def test_reassignment_by_other_than_original_assigner_cannot_change_deadline(
    setup: Setup,
) -> None:
    office = setup.office
    register, _, _ = office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    office.assign(register, actor="dyr", to="ref-fk", method="reply", deadline="2024-03-15")
    refused(
        lambda: office.assign(register, actor="ref-fk", to="ref-2", deadline="2024-04-30"),
        setup,
        "only the original assigner 'dyr' may change the method or the deadline",
    )
    refused(
        lambda: office.assign(register, actor="ref-fk", to="ref-2", method="call"),
        setup,
        "only the original assigner",
    )
    office.assign(register, actor="ref-fk", to="ref-2")  # passing it down unchanged is fine
    office.assign(register, actor="dyr", to="ref-2", deadline="2024-04-30")  # the original may
    refused(
        lambda: office.open_case(
            register, actor="ref-fk", unit="FK", jrwa_class="0012", category="B5"
        ),
        setup,
        "opened by the assignee 'ref-2'",
    )


def test_case_signs_are_unique_per_list(setup: Setup) -> None:
    office = setup.office
    first, _ = office.open_case(None, actor="ref-fk", unit="OR", jrwa_class="0012", category="A")
    second, _ = office.open_case(None, actor="ref-fk", unit="OR", jrwa_class="0012", category="A")
    assert (first, second) == ("OR.0012.1.2024", "OR.0012.2.2024")
    refused(
        lambda: office.open_case(
            None,
            actor="ref-fk",
            unit="OR",
            jrwa_class="0012",
            category="A",
            sign="OR.0012.2.2024.ASO",
        ),
        setup,
        "collides with the existing case OR.0012.2.2024",
    )


def test_unknown_case_and_position(setup: Setup) -> None:
    with pytest.raises(NotFoundError):
        setup.office.close("OR.0012.9.2024", actor="ref-fk")
    with pytest.raises(NotFoundError):
        setup.office.register(INVOICE_DIGEST, actor="nobody", channel="post")
