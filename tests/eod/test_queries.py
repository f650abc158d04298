"""The citizen's status lookup, deadlines and registers over a real office (LocalLog receipts).

What it protects: a wrong access code and an unknown register number are indistinguishable
(same exception, same message, same work); the lookup shows the stage, the unit and proven
dates, never names or content; deadlines follow the assignment or KPA art. 35 with the
periods that do not count and art. 57 § 4; registers filter and export CSV.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest

from eod.casework import CONTRACT_DIGEST, INVOICE_DIGEST, Setup, cost_case, make_office
from ledger.eod.deadlines import DEFAULT_TERMS, Terms, add_pause, statutory_end, watch
from ledger.eod.model import EventType
from ledger.eod.registers import register_csv, register_rows
from ledger.eod.status import NOT_FOUND, NoSuchMatter, RateLimiter, lookup
from ledger.errors import MalformedError


def _letter(setup: Setup) -> tuple[str, str]:
    setup.clock.tick()
    register, _, receipt = setup.office.register(
        CONTRACT_DIGEST, actor="kanc-1", channel="epuap", sender_ref="wniosek 7/2024"
    )
    return register, receipt["status_lookup"]["access_code"]


def test_the_registration_receipt_carries_the_number_and_an_unguessable_code(
    tmp_path: Path,
) -> None:
    setup = make_office(tmp_path)
    codes = set()
    for _ in range(3):
        _, code = _letter(setup)
        assert len(code.replace("-", "")) == 20 and code not in codes
        codes.add(code)
    rows = setup.office.store.query("SELECT code_hash FROM access")
    assert len(rows) == 3 and all(code.encode() not in bytes(r[0]) for r in rows)


def test_a_wrong_code_and_an_unknown_number_are_indistinguishable(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    register, code = _letter(setup)
    store, calendar = setup.office.store, setup.office.calendar
    answers = []
    for number, given in [
        (register, "00000-00000-00000-00000"),  # wrong code
        ("RPW/999/2024", code),  # unknown number, a real code
        ("RPW/999/2024", "00000-00000-00000-00000"),
        (register, ""),
        ("x" * 500, code),  # malformed
    ]:
        with pytest.raises(NoSuchMatter) as caught:
            lookup(store, calendar, number, given)
        answers.append((type(caught.value), caught.value.diagnostics(), caught.value.code))
    assert len(set(answers)) == 1
    assert answers[0][1] == NOT_FOUND
    # The right pair, typed loosely, finds it.
    status = lookup(store, calendar, f" {register} ", code.lower().replace("-", " "))
    assert status["stage"] == "registered"


def test_the_status_shows_stages_and_proven_dates_and_nothing_else(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    setup.clock.tick()
    register, _, receipt = setup.office.register(
        INVOICE_DIGEST, actor="kanc-1", channel="ksef", kind="invoice", attachments=1
    )
    code = receipt["status_lookup"]["access_code"]
    office = setup.office
    setup.clock.tick()
    office.assign(register, actor="dyr", to="ref-fk")
    status = lookup(office.store, office.calendar, register, code)
    assert status["stage"] == "assigned" and status["unit"] == "FK"
    setup.clock.tick()
    office.open_case(register, actor="ref-fk", unit="FK", jrwa_class="3026", kind="cost")
    status = lookup(office.store, office.calendar, register, code)
    assert [m["stage"] for m in status["milestones"]] == ["registered", "assigned", "in-progress"]
    assert status["milestones"][0]["no_later_than"].startswith("2024-03-01 10:01:03 +01:00")
    text = repr(status)
    for secret in ("ref-fk", "dyr", "kanc-1", INVOICE_DIGEST.hex(), "Referent", "3026"):
        assert secret not in text
    assert set(status) == {"register", "stage", "unit", "milestones"}


def test_lookups_are_rate_limited_per_client() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)
    assert limiter.allow("a", 1.0) and not limiter.allow("a", 1.0)


def test_statutory_terms_count_months_pauses_and_working_days() -> None:
    # 2024-03-01 + 1 month = 2024-04-01, Easter Monday: the next working day.
    assert statutory_end(date(2024, 3, 1), "1m", 0) == date(2024, 4, 2)
    # Two months from 31 December: the last day of February.
    assert statutory_end(date(2023, 12, 31), "2m", 0) == date(2024, 2, 29)
    # 10 days not counted push a month's end from 2024-05-06 (Monday) to 2024-05-16.
    assert statutory_end(date(2024, 4, 6), "1m", 10) == date(2024, 5, 16)
    assert statutory_end(date(2024, 3, 1), "immediate", 0) == date(2024, 3, 8)
    assert statutory_end(date(2024, 3, 1), "none", 0) is None
    with pytest.raises(MalformedError):
        Terms.from_toml('default = "3m"\n')


def test_deadlines_lists_overdue_and_due_soon_per_unit_and_officer(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    office = setup.office
    cost = cost_case(setup, until=EventType.FORMAL_CHECK)  # assigned deadline +14 days
    letter, _ = _letter(setup)  # statutory: one month
    setup.clock.tick()
    office.assign(letter, actor="dyr", to="ref-2")
    terms = Terms.from_toml(DEFAULT_TERMS)
    store, calendar = office.store, office.calendar
    assert watch(store, calendar, terms, now=setup.clock.now) == []
    every = watch(store, calendar, terms, now=setup.clock.now, include_ok=True)
    assert [(d.case or d.register, d.source, d.due.isoformat()) for d in every] == [
        (cost, "assigned", "2024-03-15"),
        (letter, "statutory", "2024-04-02"),
    ]
    later = calendar.start_of_day(date(2024, 3, 12))
    found = watch(store, calendar, terms, now=later)
    assert [(d.case, d.state, d.unit, d.officer) for d in found] == [
        (cost, "due-soon", "FK", "ref-fk")
    ]
    much_later = calendar.start_of_day(date(2024, 4, 3))
    found = watch(store, calendar, terms, now=much_later)
    assert [(d.state, d.days_left) for d in found] == [("overdue", -19), ("overdue", -1)]
    assert [d.register for d in watch(store, calendar, terms, now=much_later, officer="ref-2")] == [
        letter
    ]
    assert watch(store, calendar, terms, now=much_later, unit="OR") == []
    add_pause(store, store.chain_of(letter), start="2024-03-10", until="2024-03-19",
              reason="wezwanie do uzupełnienia braków (art. 64 § 2)")
    [paused] = watch(store, calendar, terms, now=much_later, officer="ref-2", include_ok=True)
    assert (paused.due.isoformat(), paused.paused_days, paused.state) == ("2024-04-11", 10, "ok")
    with pytest.raises(MalformedError):
        add_pause(store, store.chain_of(letter), start="2024-03-10", until="2024-03-01",
                  reason="x")
    setup.clock.tick()
    office.cost_step(cost, EventType.FORMAL_CHECK, actor="ksieg-1")
    # Closing the case ends the watch.
    for step, actor, extra in [
        (EventType.ACCOUNT_CODING, "ksieg-2", {"accounts": "Wn 401"}),
        (EventType.COUNTERSIGNED, "gk", {}),
        (EventType.APPROVED_FOR_PAYMENT, "dyr", {}),
    ]:
        setup.clock.tick()
        office.cost_step(cost, step, actor=actor, **extra)
    office.close(cost, actor="ref-fk")
    remaining = watch(store, calendar, terms, now=much_later, include_ok=True)
    assert [d.register for d in remaining] == [letter]


def test_registers_filter_and_export_csv(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    office = setup.office
    cost = cost_case(setup, until=EventType.CLOSED)
    _letter(setup)
    invoices = register_rows(office.store, office.calendar, "invoices")
    assert [(r["register"], r["sender_ref"], r["case"], r["unit"], r["stage"], r["date"])
            for r in invoices] == [("RPW/1/2024", "FV/2024/03/117", cost, "FK", "decided",
                                    "2024-03-01")]
    contracts = register_rows(office.store, office.calendar, "contracts", unit="FK")
    assert [(r["case"], r["digest"]) for r in contracts] == [(cost, CONTRACT_DIGEST.hex())]
    assert register_rows(office.store, office.calendar, "invoices", unit="OR") == []
    assert register_rows(office.store, office.calendar, "invoices", since="2024-03-02") == []
    assert register_rows(office.store, office.calendar, "invoices", stage="closed") == []
    parsed = list(csv.reader(io.StringIO(register_csv(invoices, "invoices"))))
    assert parsed[0][0] == "register" and parsed[1][:2] == ["RPW/1/2024", "FV/2024/03/117"]
    with pytest.raises(MalformedError):
        register_rows(office.store, office.calendar, "letters")


def test_reindex_rebuilds_the_index_from_the_trails(tmp_path: Path) -> None:
    setup = make_office(tmp_path)
    office = setup.office
    cost_case(setup, until=EventType.CLOSED)
    _letter(setup)
    tables = ("matters", "milestones", "documents")
    before = {t: sorted(office.store.query(f"SELECT * FROM {t}")) for t in tables}
    with office.store.transaction():
        for t in tables:
            office.store.execute(f"DELETE FROM {t}")
    assert office.reindex() == 2
    assert {t: sorted(office.store.query(f"SELECT * FROM {t}")) for t in tables} == before


def test_a_deadline_mail_is_queued_once_per_deadline(tmp_path: Path) -> None:
    from ledger.eod.notify import MailConfig, mail_rows, queue_deadlines

    setup = make_office(tmp_path)
    office = setup.office
    letter, _ = _letter(setup)
    setup.clock.tick()
    office.assign(letter, actor="dyr", to="ref-2", deadline="2024-03-04")
    config = MailConfig(host="127.0.0.1", sender="eod@x", addresses={"ref-2": "ref2@x"}, soon=3)
    assert queue_deadlines(office, config, now=setup.clock.now) == 1  # due within 3 days
    assert queue_deadlines(office, config, now=setup.clock.now + 86400) == 0  # once
    [mail] = mail_rows(office.store)
    assert mail["to"] == "ref2@x" and "2024-03-04" in mail["subject"]
    assert letter in mail["subject"] and mail["status"] == "queued"
