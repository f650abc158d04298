# ruff: noqa: E501  (the expected timeline below is verbatim output, long lines included)
"""The workflow against real LocalLog receipts: the cost-document path, its timeline, the
office calendar (register years, deadlines, retention in Europe/Warsaw), and the steps that
must be refused before anything is anchored: out of order, wrong role, wrong unit, wrong
officer, retention not run."""

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
from ledger.errors import MalformedError, NotFoundError
from ledger.policy import parse_policy
from ledger.receipt import verify_receipt

EXPECTED_TIMELINE = """\
Case FK.3026.1.2024, office cuw-gdansk (Centrum Usług Wspólnych)
office CA key: SHA256:{ca}
ledger: ledger.example.org/test; trust policy pinned
times: Europe/Warsaw; each event is proven to lie after the ledger checkpoint it names and no later than its receipt

#0   2024-03-01 10:01:00 +01:00  registration (rejestracja przesyłki)
     who:    kanc-1, Kancelaria ogólna (unit SEK)
     what:   item RPW/1/2024, incoming via ksef, invoice, 1 attachment(s), sender's reference FV/2024/03/117; document {inv}
     proven: after 2024-03-01 10:01:03 +01:00, no later than 2024-03-01 10:01:03 +01:00 (leaf 0 of 2)
#1   2024-03-01 10:02:00 +01:00  assignment (dekretacja)
     who:    dyr, Dyrektor (unit D)
     what:   to ref-fk, deadline 2024-03-15
     proven: after 2024-03-01 10:02:03 +01:00, no later than 2024-03-01 10:02:03 +01:00 (leaf 2 of 3)
#2   2024-03-01 10:03:00 +01:00  case opened (założenie sprawy)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   case FK.3026.1.2024, JRWA Dokumentacja księgowa (dowody księgowe), category B5, cost: kontrola merytoryczna → kontrola formalna i rachunkowa → dekretacja księgowa → kontrasygnata → zatwierdzenie do wypłaty
     proven: after 2024-03-01 10:03:03 +01:00, no later than 2024-03-01 10:03:03 +01:00 (leaf 3 of 4)
#3   2024-03-01 10:04:00 +01:00  attachment (dołączenie dokumentu)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   contract; document {con}
     proven: after 2024-03-01 10:04:03 +01:00, no later than 2024-03-01 10:04:03 +01:00 (leaf 4 of 6)
#4   2024-03-01 11:04:00 +01:00  substantive check (kontrola merytoryczna)
     who:    kier-sp, Kierownik gospodarczy (unit SP7)
     what:   document {inv}
     proven: after 2024-03-01 11:04:03 +01:00, no later than 2024-03-01 11:04:03 +01:00 (leaf 6 of 7)
#5   2024-03-01 12:04:00 +01:00  formal and arithmetic check (kontrola formalna i rachunkowa)
     who:    ksieg-1, Księgowa (unit FK)
     what:   document {inv}
     proven: after 2024-03-01 12:04:03 +01:00, no later than 2024-03-01 12:04:03 +01:00 (leaf 7 of 8)
#6   2024-03-01 13:04:00 +01:00  account coding (dekretacja księgowa)
     who:    ksieg-2, Starsza księgowa (unit FK)
     what:   accounts Wn 401-01 / Ma 201-117; document {inv}
     proven: after 2024-03-01 13:04:03 +01:00, no later than 2024-03-01 13:04:03 +01:00 (leaf 8 of 9)
#7   2024-03-01 14:04:00 +01:00  countersignature (kontrasygnata)
     who:    gk, Główna księgowa (unit FK)
     what:   document {inv}
     proven: after 2024-03-01 14:04:03 +01:00, no later than 2024-03-01 14:04:03 +01:00 (leaf 9 of 10)
#8   2024-03-01 15:04:00 +01:00  approval for payment (zatwierdzenie do wypłaty)
     who:    dyr, Dyrektor (unit D)
     what:   document {inv}
     proven: after 2024-03-01 15:04:03 +01:00, no later than 2024-03-01 15:04:03 +01:00 (leaf 10 of 11)
#9   2024-03-01 15:05:00 +01:00  case closed (zakończenie sprawy)
     who:    ref-fk, Referent ds. zamówień (unit FK)
     what:   -
     proven: after 2024-03-01 15:05:03 +01:00, no later than 2024-03-01 15:05:03 +01:00 (leaf 11 of 12)
#10  2024-03-02 15:05:00 +01:00  archived (przekazanie do archiwum zakładowego)
     who:    arch, Archiwista (unit AZ)
     what:   -
     proven: after 2024-03-02 15:05:03 +01:00, no later than 2024-03-02 15:05:03 +01:00 (leaf 12 of 13)

state: in the office archive (archiwum zakładowe)
complete as of 2024-03-02 15:05:03 +01:00: the signed head counts 11 events
document {contract}: in events #3; existed no later than 2024-03-01 10:04:03 +01:00
valid: 11 events; every signature, certificate, ledger receipt, checkpoint, previous-event hash, workflow rule and the signed head check out
"""
CA_FINGERPRINT = "b4oHJ5C/VMUXGWATd0y0PI8PEfaU57bNmcdXlKWyL6A"
DRAFT = hashlib.sha256(b"draft").digest()
SIGNED = hashlib.sha256(b"signed").digest()


def at(*parts: int) -> int:
    """A UTC time as POSIX seconds."""
    return int(datetime(*parts, tzinfo=UTC).timestamp())


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
    """The action is refused with ``reason``; nothing reaches the ledger and the office store
    is unchanged."""
    size = setup.log.checkpoint(timestamp=0).split("\n")[1]
    db = setup.office.store.root / "office.db"
    before = db.read_bytes()
    with pytest.raises((WorkflowError, MalformedError, NotFoundError), match=reason):
        action()
    assert setup.log.checkpoint(timestamp=0).split("\n")[1] == size
    assert db.read_bytes() == before


# --------------------------------------------------------------------- the cost path


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
        register, actor="ref-fk", unit="FK", jrwa_class="3026", kind="cost"
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


def test_acceptor_from_another_unit_is_refused(setup: Setup) -> None:
    """The default cost path ties the formal check to the case's unit (FK)."""
    case = cost_case(setup, until=EventType.FORMAL_CHECK)
    refused(
        lambda: setup.office.cost_step(case, EventType.FORMAL_CHECK, actor="ksieg-sek"),
        setup,
        r"formal and arithmetic check \(kontrola formalna i rachunkowa\) belongs to unit FK; "
        r"position 'ksieg-sek' is in unit SEK",
    )


def test_the_case_officer_is_enforced_after_opening(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.CLOSED)
    refused(
        lambda: setup.office.close(case, actor="ref-2"),
        setup,
        r"the case officer \(prowadzący sprawę\) is 'ref-fk'; 'ref-2' may not record case closed",
    )
    # A dekretacja by the original assigner hands the case over; then the new officer closes.
    setup.clock.tick()
    setup.office.assign(case, actor="dyr", to="ref-2")
    refused(lambda: setup.office.close(case, actor="ref-fk"), setup, "officer .* is 'ref-2'")
    setup.clock.tick()
    setup.office.close(case, actor="ref-2")


def test_a_configured_path_orders_and_places_the_steps(tmp_path: Path) -> None:
    """A unit-specific three-step path: approval right after the substantive check, by D."""
    paths = """
[[path]]
kind = "cost"
unit = "*"
steps = [{ event = "formal-check", role = "accounts" }]

[[path]]
kind = "cost"
unit = "FK"
steps = [
  { event = "substantive-check", role = "substantive", unit = "SP7" },
  { event = "approved-for-payment", role = "approve-payment", unit = "D" },
  { event = "countersigned", role = "chief-accountant", unit = "case" },
]

[[path]]
kind = "letter"
unit = "*"
steps = [{ event = "accepted", role = "accept", unit = "case" }]
"""
    setup = make_office(tmp_path / "office", paths_text=paths)
    office = setup.office
    register, _, _ = office.register(INVOICE_DIGEST, actor="kanc-1", channel="ksef", kind="invoice")
    case, _ = office.open_case(register, actor="ref-fk", unit="FK", jrwa_class="3026", kind="cost")
    office.attach(case, CONTRACT_DIGEST, actor="ref-fk", kind="order")
    refused(
        lambda: office.cost_step(case, EventType.FORMAL_CHECK, actor="ksieg-1"),
        setup,
        r"is not a step of this case's path \(kontrola merytoryczna → zatwierdzenie do wypłaty → kontrasygnata\)",
    )
    office.cost_step(case, EventType.SUBSTANTIVE_CHECK, actor="kier-sp")
    office.cost_step(case, EventType.APPROVED_FOR_PAYMENT, actor="dyr")
    refused(lambda: office.close(case, actor="ref-fk"), setup, "closes after the countersignature")
    office.cost_step(case, EventType.COUNTERSIGNED, actor="gk")
    office.close(case, actor="ref-fk")
    assert verify_trail(bundle_bytes(office.trail(case))).state.closed


# ------------------------------------------------------------------ letters, deliveries


def letter_case(setup: Setup) -> str:
    office = setup.office
    case, _ = office.open_case(None, actor="kier-or", unit="OR", jrwa_class="0012")
    setup.clock.tick()
    office.submit(case, DRAFT, actor="kier-or")
    return case


def test_acceptance_is_by_the_path_level_and_unit(setup: Setup) -> None:
    case = letter_case(setup)
    refused(
        lambda: setup.office.sign(case, SIGNED, actor="dyr"),
        setup,
        r"signature \(podpis\) before acceptance: the draft is accepted at 0 of 1 levels",
    )
    refused(
        lambda: setup.office.accept(case, actor="kier-sp"),
        setup,
        "acceptance at level 1 belongs to unit OR; position 'kier-sp' is in unit SP7",
    )
    refused(
        lambda: setup.office.accept(case, actor="kier-or"),
        setup,
        "already submitted or accepted this draft",
    )
    setup.office.accept(case, actor="sekr")
    setup.office.sign(case, SIGNED, actor="dyr")


def test_deemed_delivery_and_the_appeal_period_around_easter(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office", now=at(2025, 3, 20, 8))
    office, clock = setup.office, setup.clock
    case = letter_case(setup)
    clock.tick()
    office.accept(case, actor="sekr")
    clock.tick()
    office.sign(case, SIGNED, actor="dyr")
    clock.tick()
    register, _ = office.dispatch(case, actor="kanc-1", channel="post")
    assert register == "RPWy/1/2025"
    # First notice on Monday 24 March; deemed delivered with the lapse of 7 April.
    clock.now = at(2025, 4, 7, 21, 59)  # 23:59 in Warsaw: the 14th day has not lapsed
    refused(
        lambda: office.deliver(case, actor="kanc-1", deemed=True, notice="2025-03-24"),
        setup,
        r"not before 2025-04-08 00:00:00 \+02:00",
    )
    refused(
        lambda: office.deliver(case, actor="kanc-1", deemed=True, notice="2025-02-30"),
        setup,
        "notice 2025-02-30 is not a day of the calendar",
    )
    clock.now = at(2025, 4, 7, 22, 0)
    office.deliver(case, actor="kanc-1", deemed=True, notice="2025-03-24")
    office.record_receipt(case, hashlib.sha256(b"<UPD/>").digest(), actor="kanc-1", kind="UPD")
    office.close(case, actor="kier-or")
    timeline = render_timeline(verify_trail(bundle_bytes(office.trail(case))))
    # 14 days from 7 April end on Easter Monday, 21 April: the appeal period ends on the 22nd.
    assert (
        "deemed delivered on 2025-04-07 (first notice 2025-03-24); "
        "the 14-day appeal period ends 2025-04-22" in timeline
    )
    office.archive(case, actor="arch")
    # Category A is never destroyed, however long one waits.
    clock.tick(100 * 366 * 86400)
    refused(
        lambda: office.destroy(case, actor="arch", consent="AP-1/2124"),
        setup,
        "category A records are kept forever",
    )


def test_delivery_around_11_november(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office", now=at(2025, 10, 20, 8))
    office, clock = setup.office, setup.clock
    case = letter_case(setup)
    office.accept(case, actor="sekr")
    office.sign(case, SIGNED, actor="dyr")
    office.dispatch(case, actor="kanc-1", channel="e-doreczenia")
    clock.now = at(2025, 10, 28, 9)
    office.deliver(case, actor="kanc-1", on="2025-10-28")
    timeline = render_timeline(verify_trail(bundle_bytes(office.trail(case))))
    assert "delivered on 2025-10-28; the 14-day appeal period ends 2025-11-12" in timeline


# ----------------------------------------------------------------- calendar and times


def test_register_numbers_follow_the_warsaw_new_year(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office", now=at(2024, 12, 31, 22, 30))  # 23:30 Warsaw
    office = setup.office
    old, _, _ = office.register(hashlib.sha256(b"a").digest(), actor="kanc-1", channel="post")
    setup.clock.now = at(2024, 12, 31, 23, 30)  # 00:30 on 1 January 2025 in Warsaw
    new, _, _ = office.register(hashlib.sha256(b"b").digest(), actor="kanc-1", channel="post")
    assert (old, new) == ("RPW/1/2024", "RPW/1/2025")
    case, _ = office.open_case(new, actor="ref-fk", unit="OR", jrwa_class="0012")
    assert case == "OR.0012.1.2025"


def test_retention_counts_from_the_proven_local_closing(tmp_path: Path) -> None:
    """A B5 case closed at 00:30 on 1 January 2025 (Warsaw) may be destroyed from
    1 January 2031, not 2030 as a UTC calendar would say."""
    setup = make_office(tmp_path / "office", now=at(2024, 12, 31, 12, 0))
    office, clock = setup.office, setup.clock
    case = cost_case(setup, until=EventType.CLOSED)
    clock.now = at(2024, 12, 31, 23, 30)  # 00:30 on 1 January 2025, Warsaw
    office.close(case, actor="ref-fk")
    clock.tick(86400)
    office.archive(case, actor="arch")
    clock.now = at(2030, 12, 31, 22, 59)  # 23:59 on 31 December 2030, Warsaw
    refused(
        lambda: office.destroy(case, actor="arch", consent="AP.4131.17.2031"),
        setup,
        r"category B5: the retention period, counted from the proven closing, runs until "
        r"2031-01-01 00:00:00 \+01:00",
    )
    clock.now = at(2030, 12, 31, 23, 0)  # 00:00 on 1 January 2031, Warsaw
    refused(lambda: office.destroy(case, actor="arch", consent=""), setup, "consent")
    office.destroy(case, actor="arch", consent="AP.4131.17.2031")
    assert verify_trail(bundle_bytes(office.trail(case))).state.destroyed
    refused(lambda: office.archive(case, actor="arch"), setup, "destroyed")


def test_bc_is_destroyed_in_its_unit_without_the_office_archive(setup: Setup) -> None:
    office = setup.office
    case, _ = office.open_case(
        None,
        actor="kier-or",
        unit="OR",
        jrwa_class="0012",
        category="Bc",
        category_reason="kopie robocze planu pracy",
    )
    office.close(case, actor="kier-or")
    refused(
        lambda: office.archive(case, actor="arch"),
        setup,
        "without passing through the office archive",
    )
    refused(
        lambda: office.destroy(case, actor="arch", consent="AP-7"),
        setup,
        "needs the role 'officer'",
    )
    refused(
        lambda: office.destroy(case, actor="ref-fk", consent="AP-7"),
        setup,
        r"category Bc is destroyed in the unit that made it \(OR\); position 'ref-fk' is in unit FK",
    )
    office.destroy(case, actor="kier-or", consent="AP-7")
    assert verify_trail(bundle_bytes(office.trail(case))).state.destroyed


def test_b_categories_go_through_the_office_archive(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.ARCHIVED)
    setup.clock.tick(10 * 366 * 86400)
    refused(
        lambda: setup.office.destroy(case, actor="arch", consent="AP-1"),
        setup,
        "category B5: destruction .* only from the office archive",
    )


def test_reopening_a_closed_case(setup: Setup) -> None:
    case = cost_case(setup, until=EventType.ARCHIVED)
    refused(lambda: setup.office.attach(case, DRAFT, actor="ref-fk", kind="x"), setup, "is closed")
    refused(lambda: setup.office.reopen(case, actor="ref-2", reason="x"), setup, "officer")
    setup.clock.tick()
    setup.office.reopen(case, actor="ref-fk", reason="korekta faktury")
    setup.clock.tick()
    setup.office.attach(case, DRAFT, actor="ref-fk", kind="korekta")
    setup.office.close(case, actor="ref-fk")
    setup.office.archive(case, actor="arch")
    refused(lambda: setup.office.reopen(case, actor="ref-fk", reason="x"), setup, "archived")


# ----------------------------------------------------------------------- dekretacja


def test_deadlines_at_every_assignment_level(setup: Setup) -> None:
    office = setup.office
    register, _, _ = office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    office.assign(register, actor="dyr", to="ref-fk", method="reply", deadline="2024-03-15")
    refused(
        lambda: office.assign(register, actor="ref-fk", to="ref-2", deadline="2024-04-30"),
        setup,
        r"a lower-level assignment \(dekretacja wtórna\) may set a deadline no later than the one above it \(2024-03-15\)",
    )
    refused(
        lambda: office.assign(register, actor="ref-fk", to="ref-2", method="call"),
        setup,
        "only the original assigner 'dyr' may change the method",
    )
    office.assign(register, actor="ref-fk", to="ref-2", deadline="2024-03-10")  # its own level
    refused(
        lambda: office.assign(register, actor="ref-2", to="ref-fk", deadline="2024-03-12"),
        setup,
        r"no later than the one above it \(2024-03-10\)",
    )
    office.assign(register, actor="dyr", to="ref-2", deadline="2024-04-30")  # the original may
    refused(
        lambda: office.open_case(register, actor="ref-fk", unit="FK", jrwa_class="0012"),
        setup,
        "opened by the assignee 'ref-2'",
    )


def test_a_past_deadline_is_refused_at_warsaw_midnight(tmp_path: Path) -> None:
    setup = make_office(tmp_path / "office", now=at(2025, 3, 20, 22, 59))  # 23:59 Warsaw
    office = setup.office
    register, _, _ = office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    office.assign(register, actor="dyr", to="ref-fk", deadline="2025-03-20")  # still today
    setup.clock.now = at(2025, 3, 20, 23, 0)  # 00:00 on 21 March in Warsaw (23:00 UTC)
    refused(
        lambda: office.assign(register, actor="dyr", to="ref-fk", deadline="2025-03-20"),
        setup,
        r"the deadline 2025-03-20 has passed: it ended at 2025-03-21 00:00:00 \+01:00",
    )


def test_case_signs_are_unique_per_list(setup: Setup) -> None:
    office = setup.office
    first, _ = office.open_case(None, actor="ref-fk", unit="OR", jrwa_class="0012")
    second, _ = office.open_case(None, actor="ref-fk", unit="OR", jrwa_class="0012")
    assert (first, second) == ("OR.0012.1.2024", "OR.0012.2.2024")
    refused(
        lambda: office.open_case(
            None, actor="ref-fk", unit="OR", jrwa_class="0012", sign="OR.0012.2.2024.ASO"
        ),
        setup,
        "collides with the existing case OR.0012.2.2024",
    )


# -------------------------------------------------------------------- bad input (point 6)


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda o, r: o.assign(r, actor="dyr", to="nobody"), "unknown position 'nobody'"),
        (
            lambda o, r: o.assign(r, actor="dyr", to="ref-fk", deadline="2024-02-30"),
            "deadline 2024-02-30 is not a day of the calendar",
        ),
        (
            lambda o, r: o.open_case(r, actor="ref-fk", unit="FK", jrwa_class="9999"),
            "JRWA class '9999' is not in the office's subject file list",
        ),
        (
            lambda o, r: o.open_case(
                r, actor="ref-fk", unit="FK", jrwa_class="3026", category="B0", category_reason="x"
            ),
            "archival category 'B0' is not A, Bc, B<n> or BE<n>",
        ),
        (
            lambda o, r: o.open_case(
                r, actor="ref-fk", unit="FK", jrwa_class="3026", category="C5", category_reason="x"
            ),
            "archival category 'C5'",
        ),
        (
            lambda o, r: o.open_case(
                r, actor="ref-fk", unit="FK", jrwa_class="3026", category="B10"
            ),
            r"category B10 differs from JRWA class 3026 .*: B5; give --category-reason",
        ),
        (
            lambda o, r: o.open_case(r, actor="ref-fk", unit="FK", jrwa_class="3026", kind="memo"),
            "no acceptance path for document kind 'memo' in unit 'FK'",
        ),
    ],
    ids=[
        "unknown-position",
        "no-such-day",
        "jrwa-class",
        "category-B0",
        "category-C5",
        "category-without-reason",
        "unknown-kind",
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    setup: Setup, action: Callable[..., object], reason: str
) -> None:
    register, _, _ = setup.office.register(INVOICE_DIGEST, actor="kanc-1", channel="post")
    refused(lambda: action(setup.office, register), setup, reason)


def test_unknown_case_and_position(setup: Setup) -> None:
    with pytest.raises(NotFoundError):
        setup.office.close("OR.0012.9.2024", actor="ref-fk")
    with pytest.raises(NotFoundError):
        setup.office.register(INVOICE_DIGEST, actor="nobody", channel="post")
