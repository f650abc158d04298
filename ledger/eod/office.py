"""The office: every workflow step as one library call, checked, signed, anchored and stored.

Each step follows the same path (:meth:`Office._record`), inside one store transaction:

1. load the chain (the item's or the case's events) and fold it through the rules;
2. build the canonical record (seq, previous hash, case, document digest, position, time);
3. **check it with** :func:`ledger.eod.rules.apply`: a refused step raises
   :class:`~ledger.eod.rules.WorkflowError` here, before anything is signed or anchored;
4. sign it with the position's key, anchor the event hash (and the document digest, the first
   time it is seen) and verify each receipt against the office's pinned trust policy;
5. store the event, the receipts and the new references, and commit.

If anchoring fails, nothing is stored; the step can simply be repeated (it gets a new time and
thus a new hash; an anchored but unused hash proves nothing and harms nothing).

The clock is injected (``clock``), so tests replay a case with fixed times.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ledger.eod import canonical
from ledger.eod.anchor import Anchorer
from ledger.eod.casesign import CaseSign, format_case_sign, parse_case_sign
from ledger.eod.events import EventRecord, SignedEvent
from ledger.eod.model import DIRECTIONS, REGISTER_PREFIX, EventType, Role
from ledger.eod.pki import PositionCertificate, SigningIdentity, check_identifier, issue_certificate
from ledger.eod.rules import COST_PATH, CaseState, WorkflowError, apply, fold
from ledger.eod.store import OfficeStore
from ledger.eod.trail import OFFICIAL_RECEIPT_FORMAT, TRAIL_FORMAT
from ledger.errors import ConfigError, MalformedError, NotFoundError
from ledger.policy import Policy, parse_policy
from ledger.receipt import verify_receipt

__all__ = ["Office", "Recorded"]

_CASE_COUNTER: Final = "case/{unit}/{cls}/{year}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recorded:
    """The outcome of one step: the stored event, its receipt, and the chain's new state."""

    event: SignedEvent
    receipt: str
    state: CaseState


class Office:
    """One office's EOD client over its :class:`OfficeStore` and an :class:`Anchorer`."""

    def __init__(
        self, store: OfficeStore, anchorer: Anchorer | None, *, clock: Callable[[], int]
    ) -> None:
        self.store = store
        self._anchorer = anchorer
        self._clock = clock
        self._policy: Policy | None = None

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = parse_policy(self.store.policy_text())
        return self._policy

    # ----------------------------------------------------------------------- positions

    def issue_position(
        self, *, position: str, unit: str, title: str, roles: Iterable[Role]
    ) -> PositionCertificate:
        """``eod keys issue``: a new key for a position, certified by the office CA.

        Raises:
            MalformedError: bad identifier, empty unit or title, no roles.
            ConfigError: the position exists.
        """
        check_identifier(position, what="position id")
        if position == "ca":
            raise MalformedError("'ca' is reserved for the office CA key")
        identity = SigningIdentity.generate(position)
        cert = issue_certificate(
            ca=self.store.identity("ca"),
            office=self.store.office,
            position=position,
            unit=unit,
            title=title,
            roles=roles,
            public_key=identity.key.public_key,
            issued=self._clock(),
        )
        self.store.add_position(cert, identity)
        return cert

    # ------------------------------------------------------------------ the common path

    def chain(self, ref: str) -> tuple[str, list[SignedEvent], CaseState]:
        """A chain's id, events and folded state, by register number or case sign.

        Raises:
            NotFoundError: unknown reference.
            WorkflowError: the stored chain breaks a rule (a damaged store).
        """
        chain = self.store.chain_of(ref)
        events = self.store.events(chain)
        state = fold([(e, self.store.certificate(e.record.position)) for e in events])
        return chain, events, state

    def _record(
        self,
        chain: str | None,
        *,
        kind: EventType,
        actor: str,
        document: bytes | None = None,
        data: Mapping[str, Any] | None = None,
        case: str | None = None,
        new_refs: Iterable[str] = (),
        on_state: Callable[[CaseState], None] | None = None,
        prepare: Callable[[CaseState], tuple[Mapping[str, Any], bytes | None, str | None]]
        | None = None,
    ) -> Recorded:
        if self._anchorer is None:
            raise ConfigError("no ledger configured: give --node URL or --ground DIR")
        with self.store.transaction():
            cert = self.store.certificate(actor)
            if chain is None:
                state, events = CaseState(), []
            else:
                events = self.store.events(chain)
                state = fold([(e, self.store.certificate(e.record.position)) for e in events])
            if on_state is not None:
                on_state(state)
            if prepare is not None:
                data, document, case = prepare(state)
            record = EventRecord(
                office=self.store.office,
                seq=state.seq,
                prev=state.head,
                type=kind,
                case=case if kind is EventType.CASE_OPENED else (case or state.case),
                document=document,
                position=actor,
                time=self._clock(),
                data=dict(data or {}),
            )
            event = record.sign(self.store.identity(actor).key)
            new_state = apply(state, event, cert)  # refuses before anything is anchored
            digests = [event.hash]
            if document is not None and self.store.receipt(document) is None:
                digests.append(document)
            receipts = self._anchorer.anchor(digests)
            if len(receipts) != len(digests):
                raise MalformedError("the ledger returned the wrong number of receipts")
            for digest, receipt in zip(digests, receipts, strict=True):
                verify_receipt(receipt, self.policy, digest)
                self.store.add_receipt(digest, receipt)
            chain_id = chain if chain is not None else event.hash.hex()
            self.store.add_event(chain_id, event)
            for ref in new_refs:
                self.store.add_ref(ref, chain_id)
            if kind is EventType.CASE_OPENED and record.case is not None:
                sign = parse_case_sign(record.case)
                self.store.add_case(sign.original, _list_key(sign), chain_id)
                self.store.add_ref(sign.original, chain_id)
            return Recorded(event=event, receipt=receipts[0], state=new_state)

    def _year(self) -> int:
        return datetime.fromtimestamp(self._clock(), tz=UTC).year

    # --------------------------------------------------------------------------- steps

    def register(
        self,
        document: bytes,
        *,
        actor: str,
        direction: str = "incoming",
        channel: str,
        kind: str = "letter",
        attachments: int = 0,
        sender_ref: str | None = None,
        case: str | None = None,
    ) -> tuple[str, Recorded, dict[str, Any]]:
        """Rejestracja przesyłki: register an item; returns its register number, the step and
        the official receipt (a JSON object for the sender, see docs/eod.md).

        ``case``: register the item straight into an open case.
        """
        if direction not in DIRECTIONS:
            raise MalformedError(f"direction must be one of {', '.join(DIRECTIONS)}")
        chain = self.store.chain_of(case) if case is not None else None
        numbers: list[str] = []

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            year = self._year()
            prefix = REGISTER_PREFIX[direction]
            register = f"{prefix}/{self.store.next_number(f'{prefix}/{year}')}/{year}"
            numbers.append(register)
            data: dict[str, Any] = {
                "direction": direction,
                "register": register,
                "channel": channel,
                "kind": kind,
                "attachments": attachments,
            }
            if sender_ref:
                data["sender_ref"] = sender_ref
            return data, document, state.case

        recorded = self._record(
            chain,
            kind=EventType.REGISTERED,
            actor=actor,
            prepare=prepare,
            new_refs=numbers,
        )
        register = numbers[0]
        return register, recorded, self._official_receipt(register, recorded)

    def assign(
        self,
        ref: str,
        *,
        actor: str,
        to: str,
        method: str | None = None,
        deadline: str | None = None,
    ) -> Recorded:
        """Dekretacja: name the position responsible, with method and deadline (optional)."""
        data: dict[str, Any] = {"to": to}
        if method is not None:
            data["method"] = method
        if deadline is not None:
            data["deadline"] = deadline
        return self._record(
            self.store.chain_of(ref), kind=EventType.ASSIGNED, actor=actor, data=data
        )

    def open_case(
        self,
        ref: str | None,
        *,
        actor: str,
        unit: str,
        jrwa_class: str,
        category: str,
        cost: bool = False,
        sign: str | None = None,
    ) -> tuple[str, Recorded]:
        """Założenie sprawy: open a case (from item ``ref`` or new) and give it its case sign.

        Without ``sign`` the next number of the unit's yearly case list for the class is used;
        with it, an existing sign (a case carried over from paper) is parsed and must be free.
        """
        chain = self.store.chain_of(ref) if ref is not None else None
        signs: list[CaseSign] = []

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            if sign is not None:
                chosen = parse_case_sign(sign)
            else:
                year = self._year()
                while True:
                    number = self.store.next_number(
                        _CASE_COUNTER.format(unit=unit, cls=jrwa_class, year=year)
                    )
                    chosen = format_case_sign(
                        unit=unit, jrwa_class=jrwa_class, number=number, year=year
                    )
                    if self.store.case_taken(_list_key(chosen)) is None:
                        break
            taken = self.store.case_taken(_list_key(chosen))
            if taken is not None:
                raise WorkflowError(
                    f"case sign {chosen.original} collides with the existing case {taken} "
                    "(same unit, class, year and number)"
                )
            signs.append(chosen)
            return {"category": category, "cost": cost}, None, chosen.original

        recorded = self._record(chain, kind=EventType.CASE_OPENED, actor=actor, prepare=prepare)
        return signs[0].original, recorded

    def attach(self, ref: str, document: bytes, *, actor: str, kind: str) -> Recorded:
        """Dołączenie: attach a document (contract, order, ...) to a case by its digest."""
        return self._record(
            self.store.chain_of(ref),
            kind=EventType.ATTACHED,
            actor=actor,
            document=document,
            data={"kind": kind},
        )

    def submit(self, ref: str, document: bytes, *, actor: str, levels: int = 1) -> Recorded:
        """Projekt do akceptacji: submit a draft for ``levels`` levels of acceptance."""
        return self._record(
            self.store.chain_of(ref),
            kind=EventType.SUBMITTED,
            actor=actor,
            document=document,
            data={"levels": levels},
        )

    def accept(self, ref: str, *, actor: str, level: int | None = None) -> Recorded:
        """Akceptacja: accept the pending draft at ``level`` (default: the next level)."""

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            chosen = level if level is not None else state.accepted + 1
            return {"level": chosen}, state.draft, state.case

        return self._record(
            self.store.chain_of(ref), kind=EventType.ACCEPTED, actor=actor, prepare=prepare
        )

    def reject(self, ref: str, *, actor: str, reason: str) -> Recorded:
        """Odrzucenie: return the pending draft with a reason."""

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            return {"reason": reason}, state.draft, state.case

        return self._record(
            self.store.chain_of(ref), kind=EventType.REJECTED, actor=actor, prepare=prepare
        )

    def sign(self, ref: str, document: bytes, *, actor: str) -> Recorded:
        """Podpis: sign the accepted draft; ``document`` is the signed file's digest."""

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            if state.draft is None:
                raise WorkflowError("signature (podpis) before acceptance: no draft was submitted")
            return {"draft": state.draft.hex()}, document, state.case

        return self._record(
            self.store.chain_of(ref), kind=EventType.SIGNED, actor=actor, prepare=prepare
        )

    def cost_step(
        self,
        ref: str,
        step: EventType,
        *,
        actor: str,
        accounts: str | None = None,
        note: str | None = None,
        document: bytes | None = None,
    ) -> Recorded:
        """One step of the cost-document path (see :data:`ledger.eod.rules.COST_PATH`), on the
        case's invoice (or ``document`` for a cost case opened without a registered invoice)."""
        if step not in COST_PATH:
            raise MalformedError(f"{step.value} is not a step of the cost-document path")

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            data: dict[str, Any] = {}
            if step is EventType.ACCOUNT_CODING:
                if accounts is None:
                    raise WorkflowError("account coding (dekretacja księgowa) needs --accounts")
                data["accounts"] = accounts
            elif note is not None:
                data["note"] = note
            return data, document or state.invoice, state.case

        return self._record(self.store.chain_of(ref), kind=step, actor=actor, prepare=prepare)

    def dispatch(
        self, ref: str, *, actor: str, channel: str, document: bytes | None = None
    ) -> tuple[str, Recorded]:
        """Wysyłka: dispatch the signed document (default: the last one signed)."""
        numbers: list[str] = []

        def prepare(state: CaseState) -> tuple[Mapping[str, Any], bytes | None, str | None]:
            year = self._year()
            prefix = REGISTER_PREFIX["outgoing"]
            register = f"{prefix}/{self.store.next_number(f'{prefix}/{year}')}/{year}"
            numbers.append(register)
            chosen = document or (state.signed[-1] if state.signed else None)
            if chosen is None:
                raise WorkflowError("dispatch (wysyłka) of a document that was not signed (podpis)")
            return {"channel": channel, "register": register}, chosen, state.case

        recorded = self._record(
            self.store.chain_of(ref),
            kind=EventType.DISPATCHED,
            actor=actor,
            prepare=prepare,
            new_refs=numbers,
        )
        return numbers[0], recorded

    def record_receipt(self, ref: str, document: bytes, *, actor: str, kind: str) -> Recorded:
        """Record an official receipt (UPP, UPO or UPD) by the digest of its signed XML."""
        return self._record(
            self.store.chain_of(ref),
            kind=EventType.RECEIPT_RECORDED,
            actor=actor,
            document=document,
            data={"kind": kind},
        )

    def deliver(
        self, ref: str, *, actor: str, deemed: bool = False, notice: int | None = None
    ) -> Recorded:
        """Doręczenie: delivered, or deemed delivered 14 days after the first notice."""
        data: dict[str, Any] = {"deemed": deemed}
        if deemed:
            if notice is None:
                raise MalformedError("a deemed delivery needs the time of the first notice")
            data["notice"] = notice
        return self._record(
            self.store.chain_of(ref), kind=EventType.DELIVERED, actor=actor, data=data
        )

    def close(self, ref: str, *, actor: str) -> Recorded:
        """Zakończenie sprawy."""
        return self._record(self.store.chain_of(ref), kind=EventType.CLOSED, actor=actor)

    def archive(self, ref: str, *, actor: str) -> Recorded:
        """Przekazanie do archiwum zakładowego."""
        return self._record(self.store.chain_of(ref), kind=EventType.ARCHIVED, actor=actor)

    def destroy(self, ref: str, *, actor: str, consent: str) -> Recorded:
        """Brakowanie: record the lawful destruction (never a deletion of the trail)."""
        return self._record(
            self.store.chain_of(ref),
            kind=EventType.DESTROYED,
            actor=actor,
            data={"consent": consent},
        )

    # ---------------------------------------------------------------- receipts, trails

    def _official_receipt(self, register: str, recorded: Recorded) -> dict[str, Any]:
        record = recorded.event.record
        assert record.document is not None
        document_receipt = self.store.receipt(record.document)
        cert = self.store.certificate(record.position)
        return {
            "format": OFFICIAL_RECEIPT_FORMAT,
            "office": self._office_json(),
            "register": register,
            "case": record.case,
            "document": record.document.hex(),
            "event": recorded.event.to_json(),
            "event_receipt": recorded.receipt,
            "document_receipt": document_receipt,
            "certificates": [cert.to_json()],
            "policy": self.store.policy_text(),
        }

    def _office_json(self) -> dict[str, Any]:
        return {
            "id": self.store.office,
            "name": self.store.meta("name"),
            "ca_public_key": _b64(self.store.identity("ca").key.public_key),
        }

    def trail(self, ref: str) -> dict[str, Any]:
        """The self-contained audit-trail bundle of a case (format in :mod:`ledger.eod.trail`).

        Raises:
            NotFoundError: unknown case, or a receipt missing from the store.
        """
        _, events, _ = self.chain(ref)
        positions = sorted({e.record.position for e in events})
        documents = sorted({e.record.document for e in events if e.record.document is not None})
        entries = []
        for event in events:
            receipt = self.store.receipt(event.hash)
            if receipt is None:
                raise NotFoundError(f"event {event.record.seq} has no stored receipt")
            entries.append({"event": event.to_json(), "receipt": receipt})
        doc_entries = []
        for digest in documents:
            receipt = self.store.receipt(digest)
            if receipt is not None:
                doc_entries.append({"digest": digest.hex(), "receipt": receipt})
        case = next((e.record.case for e in reversed(events) if e.record.case), None)
        return {
            "format": TRAIL_FORMAT,
            "office": self._office_json(),
            "case": case or ref,
            "policy": self.store.policy_text(),
            "certificates": [self.store.certificate(p).to_json() for p in positions],
            "events": entries,
            "documents": doc_entries,
        }


def _list_key(sign: CaseSign) -> str:
    return canonical.encode({"k": list(sign.list_key)}).decode("utf-8")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
