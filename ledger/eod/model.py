"""The offices' vocabulary: event types, roles, retention categories, with their Polish names.

Everything here is plain data. The order in which events may happen and who may record them is
decided in :mod:`ledger.eod.rules`; how an event is encoded and signed in
:mod:`ledger.eod.events`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ledger.errors import MalformedError

__all__ = [
    "DIRECTIONS",
    "EVENT_TERMS",
    "RECEIPT_KINDS",
    "REGISTER_PREFIX",
    "ROLE_TERMS",
    "Category",
    "EventType",
    "Role",
    "parse_category",
]


class EventType(StrEnum):
    """What happened to an item or a case. The value is what the canonical record carries."""

    REGISTERED = "registered"
    ASSIGNED = "assigned"
    CASE_OPENED = "case-opened"
    ATTACHED = "attached"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SIGNED = "signed"
    SUBSTANTIVE_CHECK = "substantive-check"
    FORMAL_CHECK = "formal-check"
    ACCOUNT_CODING = "account-coding"
    COUNTERSIGNED = "countersigned"
    APPROVED_FOR_PAYMENT = "approved-for-payment"
    DISPATCHED = "dispatched"
    RECEIPT_RECORDED = "receipt-recorded"
    DELIVERED = "delivered"
    CLOSED = "closed"
    REOPENED = "reopened"
    ARCHIVED = "archived"
    DESTROYED = "destroyed"
    TRANSFERRED = "transferred"


#: English and Polish names, as printed in timelines, errors and ``--help`` texts.
EVENT_TERMS: Final[dict[EventType, tuple[str, str]]] = {
    EventType.REGISTERED: ("registration", "rejestracja przesyłki"),
    EventType.ASSIGNED: ("assignment", "dekretacja"),
    EventType.CASE_OPENED: ("case opened", "założenie sprawy"),
    EventType.ATTACHED: ("attachment", "dołączenie dokumentu"),
    EventType.SUBMITTED: ("submitted for acceptance", "przekazanie do akceptacji"),
    EventType.ACCEPTED: ("acceptance", "akceptacja"),
    EventType.REJECTED: ("rejection", "odrzucenie"),
    EventType.SIGNED: ("signature", "podpis"),
    EventType.SUBSTANTIVE_CHECK: ("substantive check", "kontrola merytoryczna"),
    EventType.FORMAL_CHECK: ("formal and arithmetic check", "kontrola formalna i rachunkowa"),
    EventType.ACCOUNT_CODING: ("account coding", "dekretacja księgowa"),
    EventType.COUNTERSIGNED: ("countersignature", "kontrasygnata"),
    EventType.APPROVED_FOR_PAYMENT: ("approval for payment", "zatwierdzenie do wypłaty"),
    EventType.DISPATCHED: ("dispatch", "wysyłka"),
    EventType.RECEIPT_RECORDED: ("official receipt recorded", "zapis poświadczenia UPP/UPO/UPD"),
    EventType.DELIVERED: ("delivery", "doręczenie"),
    EventType.CLOSED: ("case closed", "zakończenie sprawy"),
    EventType.REOPENED: ("case reopened", "wznowienie sprawy"),
    EventType.ARCHIVED: ("archived", "przekazanie do archiwum zakładowego"),
    EventType.DESTROYED: ("destruction", "brakowanie"),
    EventType.TRANSFERRED: ("transfer to the state archive", "przekazanie do archiwum państwowego"),
}


class Role(StrEnum):
    """What a position's certificate authorises it to record (see :data:`ROLE_TERMS`)."""

    REGISTRY = "registry"
    ASSIGN = "assign"
    OFFICER = "officer"
    ACCEPT = "accept"
    SIGN = "sign"
    SUBSTANTIVE = "substantive"
    ACCOUNTS = "accounts"
    CHIEF_ACCOUNTANT = "chief-accountant"
    APPROVE_PAYMENT = "approve-payment"
    ARCHIVIST = "archivist"


ROLE_TERMS: Final[dict[Role, tuple[str, str]]] = {
    Role.REGISTRY: ("registry office: registers, dispatches, records receipts", "kancelaria"),
    Role.ASSIGN: ("assigns items and cases", "dekretujący"),
    Role.OFFICER: ("case officer: opens, attaches, submits, closes", "prowadzący sprawę"),
    Role.ACCEPT: ("accepts or rejects drafts", "akceptujący"),
    Role.SIGN: ("signs outgoing documents", "podpisujący"),
    Role.SUBSTANTIVE: ("substantive check of cost documents", "kontrola merytoryczna"),
    Role.ACCOUNTS: ("formal and arithmetic check, account coding", "księgowość"),
    Role.CHIEF_ACCOUNTANT: ("countersignature", "główny księgowy: kontrasygnata"),
    Role.APPROVE_PAYMENT: ("approval for payment", "kierownik: zatwierdzenie do wypłaty"),
    Role.ARCHIVIST: ("office archive: archives and destroys", "archiwum zakładowe"),
}

#: Item directions and the prefix of their register numbers: the incoming register (rejestr
#: przesyłek wpływających, RPW), the outgoing register (rejestr przesyłek wychodzących) and
#: internal documents (pisma wewnętrzne).
REGISTER_PREFIX: Final[dict[str, str]] = {"incoming": "RPW", "outgoing": "RPWy", "internal": "WEW"}
DIRECTIONS: Final = tuple(REGISTER_PREFIX)

#: Official receipts: UPP (urzędowe poświadczenie przedłożenia), UPO (... odbioru),
#: UPD (... doręczenia). The ledger notarises the hash of the signed XML, byte-exact.
RECEIPT_KINDS: Final = ("UPP", "UPO", "UPD")

#: The period n of B<n> and BE<n>: full years, written without leading zeros (B5, BE10, B50).
_CATEGORY: Final = re.compile(r"A|Bc|B([1-9][0-9]{0,2})|BE([1-9][0-9]{0,2})")


@dataclass(frozen=True, kw_only=True)
class Category:
    """An archival category (kategoria archiwalna).

    ``A``: archival materials, kept forever and transferred to the state archive, never
    destroyed. ``Bn``: destroyed after n full years (1-999), through the office archive.
    ``BEn``: like Bn, but the state archive reviews it first (ekspertyza). ``Bc``: short-lived
    material, destroyed after use in the unit that made it, without passing through the office
    archive. Every destruction (brakowanie) needs the state archive director's consent.
    """

    text: str
    years: int | None  # None for category A
    review: bool = False

    @property
    def archival(self) -> bool:
        return self.years is None


def parse_category(text: str) -> Category:
    """Parse ``A``, ``Bc``, ``B<n>`` or ``BE<n>``.

    Raises:
        MalformedError: anything else.
    """
    match = _CATEGORY.fullmatch(text)
    if match is None:
        raise MalformedError(
            f"archival category {text!r} is not A, Bc, B<n> or BE<n> (n = 1-999 years, no "
            "leading zero)"
        )
    if text == "A":
        return Category(text=text, years=None)
    if text == "Bc":
        return Category(text=text, years=0)
    b, be = match.group(1), match.group(2)
    if be is not None:
        return Category(text=text, years=int(be), review=True)
    return Category(text=text, years=int(b))
