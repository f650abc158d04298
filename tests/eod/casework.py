"""An office on a local proving ground with a fixed clock, and the invoice case of the tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from notes.ground import validator

from ledger.crypto import Ed25519Key
from ledger.eod.anchor import LocalLogAnchorer
from ledger.eod.jrwa import default_jrwa_text
from ledger.eod.model import EventType, Role
from ledger.eod.office import Office
from ledger.eod.paths import default_paths_text
from ledger.eod.pki import SigningIdentity
from ledger.eod.records import OfficeRecord
from ledger.eod.store import OfficeStore
from ledger.prover import LocalLog
from ledger.storage.memory import MemoryStore

#: 2024-03-01 09:00:00 UTC, 10:00 in Warsaw
T0 = 1_709_283_600
#: The validators cosign this many seconds after the office's clock.
LEDGER_DELAY = 3

INVOICE = b"%PDF-1.7 Faktura VAT FV/2024/03/117 ..."
CONTRACT = b"%PDF-1.7 Umowa nr 12/2024 na dostawe ..."
INVOICE_DIGEST = hashlib.sha256(INVOICE).digest()
CONTRACT_DIGEST = hashlib.sha256(CONTRACT).digest()

POSITIONS: dict[str, tuple[str, str, tuple[Role, ...]]] = {
    "kanc-1": ("SEK", "Kancelaria ogólna", (Role.REGISTRY,)),
    "dyr": ("D", "Dyrektor", (Role.ASSIGN, Role.ACCEPT, Role.SIGN, Role.APPROVE_PAYMENT)),
    "ref-fk": ("FK", "Referent ds. zamówień", (Role.OFFICER, Role.ASSIGN)),
    "ref-2": ("FK", "Referent", (Role.OFFICER, Role.ASSIGN)),
    "kier-sp": ("SP7", "Kierownik gospodarczy", (Role.SUBSTANTIVE, Role.ACCEPT)),
    "kier-or": ("OR", "Kierownik Referatu Organizacyjnego", (Role.ACCEPT, Role.OFFICER)),
    "sekr": ("OR", "Sekretarz", (Role.ACCEPT,)),
    "ksieg-sek": ("SEK", "Księgowa sekretariatu", (Role.ACCOUNTS,)),
    "ksieg-1": ("FK", "Księgowa", (Role.ACCOUNTS,)),
    "ksieg-2": ("FK", "Starsza księgowa", (Role.ACCOUNTS,)),
    "gk": ("FK", "Główna księgowa", (Role.CHIEF_ACCOUNTANT,)),
    "arch": ("AZ", "Archiwista", (Role.ARCHIVIST,)),
}


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def tick(self, seconds: int = 60) -> None:
        self.now += seconds


@dataclass
class Setup:
    office: Office
    clock: Clock
    log: LocalLog


def make_office(
    root: Path,
    *,
    now: int = T0,
    zone: str = "Europe/Warsaw",
    paths_text: str | None = None,
    ledger_delay: int = LEDGER_DELAY,
) -> Setup:
    """An office 'cuw-gdansk' with the positions above, anchoring to a 4-validator LocalLog
    whose cosigners' clocks run ``ledger_delay`` seconds after the office's."""
    clock = Clock(now)
    log = LocalLog(MemoryStore(), validators=[validator(i) for i in range(1, 5)])
    ca = SigningIdentity(name="ca", key=Ed25519Key(hashlib.sha256(b"office ca").digest()))
    record = OfficeRecord.sign(
        office="cuw-gdansk", name="Centrum Usług Wspólnych", zone=zone, ca=ca.key
    )
    store = OfficeStore.create(
        root,
        record=record,
        ca=ca,
        policy_text=log.trust_policy(),
        paths_text=paths_text or default_paths_text(),
        jrwa_text=default_jrwa_text(),
    )
    anchorer = LocalLogAnchorer(log, clock=lambda: clock.now + ledger_delay)
    office = Office(store, anchorer, clock=clock)
    for position, (unit, title, roles) in POSITIONS.items():
        office.issue_position(position=position, unit=unit, title=title, roles=roles)
    return Setup(office=office, clock=clock, log=log)


def cost_case(setup: Setup, *, until: EventType | None = None) -> str:
    """The invoice with its contract through the whole cost-document path; returns the case
    sign. Stops before ``until`` if given."""
    office, clock = setup.office, setup.clock
    clock.tick()
    register, _, _ = office.register(
        INVOICE_DIGEST,
        actor="kanc-1",
        channel="ksef",
        kind="invoice",
        attachments=1,
        sender_ref="FV/2024/03/117",
    )
    clock.tick()
    deadline = office.calendar.date_of(clock.now) + timedelta(days=14)
    office.assign(register, actor="dyr", to="ref-fk", deadline=deadline.isoformat())
    clock.tick()
    case, _ = office.open_case(register, actor="ref-fk", unit="FK", jrwa_class="3026", kind="cost")
    clock.tick()
    office.attach(case, CONTRACT_DIGEST, actor="ref-fk", kind="contract")
    steps = [
        (EventType.SUBSTANTIVE_CHECK, "kier-sp", {}),
        (EventType.FORMAL_CHECK, "ksieg-1", {}),
        (EventType.ACCOUNT_CODING, "ksieg-2", {"accounts": "Wn 401-01 / Ma 201-117"}),
        (EventType.COUNTERSIGNED, "gk", {}),
        (EventType.APPROVED_FOR_PAYMENT, "dyr", {}),
    ]
    for step, actor, extra in steps:
        if step is until:
            return case
        clock.tick(3600)
        office.cost_step(case, step, actor=actor, **extra)
    if until is EventType.CLOSED:
        return case
    clock.tick()
    office.close(case, actor="ref-fk")
    if until is EventType.ARCHIVED:
        return case
    clock.tick(86400)
    office.archive(case, actor="arch")
    return case


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle, ensure_ascii=False, indent=1).encode("utf-8")
