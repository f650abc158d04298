"""Workflow steps from JSON: the one mapping of a request body to an :class:`Office` call.

The service (``ledger eod serve``) and the bulk import (:mod:`ledger.eod.importer`) take the
same objects, so a step posted to ``/v1/offices/{office}/steps/{step}`` and a step of an
imported matter are checked by the same code. Every body names the acting position (``as``)
and, except ``register`` and an ``open-case`` of no item, the matter (``ref``: a register
number or a case sign). Digests are 64 hex characters. Unknown fields are refused. ``at``
(optional, ISO 8601, office local time without an offset) is the time the act is declared to
have happened (a historical item): recorded next to the proven time, never counted from.

Each step returns a JSON object: ``{"event": <hash>, "seq": n, "chain": <chain id>,
"case": <sign or null>}`` plus, for a registration, ``register`` and the official
``receipt`` (with its status access code), for an opening ``case``, for a dispatch
``register``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from ledger.eod.eforms import MAX_EFORM
from ledger.eod.events import parse_hex_digest
from ledger.eod.model import EventType
from ledger.eod.office import Office, Recorded
from ledger.errors import MalformedError

__all__ = ["COST_STEP_NAMES", "STEPS", "run_step"]

COST_STEP_NAMES: Final = {
    "substantive": EventType.SUBSTANTIVE_CHECK,
    "formal": EventType.FORMAL_CHECK,
    "coding": EventType.ACCOUNT_CODING,
    "countersign": EventType.COUNTERSIGNED,
    "approve": EventType.APPROVED_FOR_PAYMENT,
}


class _Body:
    """Typed access to a request body; :meth:`done` refuses fields nobody read."""

    def __init__(self, body: Mapping[str, Any], step: str) -> None:
        if not isinstance(body, Mapping):
            raise MalformedError(f"{step}: the body must be a JSON object")
        self._body = body
        self._step = step
        self._read: set[str] = set()

    def text(self, key: str, *, required: bool = True, limit: int = 500) -> str | None:
        self._read.add(key)
        value = self._body.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise MalformedError(f"{self._step}: field {key!r} must be a non-empty string")
        return value

    def req(self, key: str) -> str:
        value = self.text(key)
        assert value is not None
        return value

    def digest(self, key: str, *, required: bool = True) -> bytes | None:
        text = self.text(key, required=required, limit=64)
        return None if text is None else parse_hex_digest(text, what=f"field {key!r}")

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        self._read.add(key)
        value = self._body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise MalformedError(f"{self._step}: field {key!r} must be an integer {low}-{high}")
        return value

    def flag(self, key: str) -> bool:
        self._read.add(key)
        value = self._body.get(key, False)
        if not isinstance(value, bool):
            raise MalformedError(f"{self._step}: field {key!r} must be true or false")
        return value

    def done(self) -> None:
        unknown = set(self._body) - self._read - {"as", "ref", "at"}
        if unknown:
            raise MalformedError(f"{self._step}: unknown fields {', '.join(sorted(unknown))}")


def _outcome(office: Office, recorded: Recorded, **extra: Any) -> dict[str, Any]:
    record = recorded.event.record
    return {
        "event": recorded.event.hash.hex(),
        "seq": record.seq,
        "case": record.case,
        "type": record.type.value,
        **extra,
    }


def _register(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    eform_text = b.text("eform", required=False, limit=MAX_EFORM * 4 // 3 + 4)
    document = b.digest("document", required=eform_text is None)
    eform = None
    if eform_text is not None:
        try:
            xml = base64.b64decode(eform_text, validate=True)
        except ValueError:
            raise MalformedError("register: 'eform' must be the signed XML in base64") from None
        if document is not None and document != hashlib.sha256(xml).digest():
            raise MalformedError("register: 'document' is not the SHA-256 of the e-form")
        document = hashlib.sha256(xml).digest()
    assert document is not None
    direction = b.text("direction", required=False) or "incoming"
    channel = b.req("channel")
    kind = b.text("kind", required=False) or "letter"
    attachments = b.integer("attachments", 0, 0, 10_000)
    sender_ref = b.text("sender_ref", required=False)
    case = b.text("case", required=False)
    b.done()
    if eform_text is not None:
        eform = office.verify_eform(xml).to_json()
    register, recorded, receipt = office.register(
        document, actor=actor, direction=direction, channel=channel, kind=kind,
        attachments=attachments, sender_ref=sender_ref, case=case, eform=eform,
    )
    if eform is not None:
        return _outcome(office, recorded, register=register, receipt=receipt, eform=eform)
    return _outcome(office, recorded, register=register, receipt=receipt)


def run_step(office: Office, step: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Run workflow step ``step`` (:data:`STEPS`) with ``body``.

    Raises:
        MalformedError: an unknown step, a missing or ill-typed field, an unknown field.
        WorkflowError: the rules refuse the step (nothing was stored).
        NotFoundError: an unknown matter or position.
        LedgerError: the ledger could not be reached (nothing was stored).
    """
    handler = STEPS.get(step)
    if handler is None:
        raise MalformedError(f"no workflow step {step!r}; steps: {', '.join(STEPS)}")
    b = _Body(body, step)
    actor = b.req("as")
    at = b.text("at", required=False, limit=40)
    if at is None:
        return handler(office, b, actor)
    with office.declaring(office.calendar.parse_time(at, what="at")):
        return handler(office, b, actor)


def _ref(b: _Body) -> str:
    return b.req("ref")


def _assign(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref = _ref(b)
    to = b.req("to")
    method, deadline = b.text("method", required=False), b.text("deadline", required=False)
    b.done()
    recorded = office.assign(ref, actor=actor, to=to, method=method, deadline=deadline)
    return _outcome(office, recorded)


def _open_case(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref = b.text("ref", required=False)
    unit, jrwa_class = b.req("unit"), b.req("class")
    kind = b.text("kind", required=False) or "letter"
    category = b.text("category", required=False)
    reason = b.text("category_reason", required=False)
    sign = b.text("sign", required=False)
    b.done()
    _, recorded = office.open_case(
        ref, actor=actor, unit=unit, jrwa_class=jrwa_class, kind=kind, category=category,
        category_reason=reason, sign=sign,
    )
    return _outcome(office, recorded)


def _document_step(
    call: Callable[..., Recorded], *, kind: bool = False
) -> Callable[[Office, _Body, str], dict[str, Any]]:
    def run(office: Office, b: _Body, actor: str) -> dict[str, Any]:
        ref = _ref(b)
        document = b.digest("document")
        extra = {"kind": b.req("kind")} if kind else {}
        b.done()
        recorded = call(office, ref, document, actor=actor, **extra)
        return _outcome(office, recorded)

    return run


def _accept(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref = _ref(b)
    step = b.text("step", required=False)
    if step is None:
        level = b.integer("level", 0, 0, 9)
        b.done()
        recorded = office.accept(ref, actor=actor, level=level or None)
    else:
        kind = COST_STEP_NAMES.get(step)
        if kind is None:
            raise MalformedError(f"accept: step must be one of {', '.join(COST_STEP_NAMES)}")
        accounts = b.text("accounts", required=False)
        note = b.text("note", required=False)
        document = b.digest("document", required=False)
        b.done()
        recorded = office.cost_step(
            ref, kind, actor=actor, accounts=accounts, note=note, document=document
        )
    return _outcome(office, recorded)


def _reason_step(call: Callable[..., Recorded]) -> Callable[[Office, _Body, str], dict[str, Any]]:
    def run(office: Office, b: _Body, actor: str) -> dict[str, Any]:
        ref, reason = _ref(b), b.req("reason")
        b.done()
        recorded = call(office, ref, actor=actor, reason=reason)
        return _outcome(office, recorded)

    return run


def _plain(call: Callable[..., Recorded]) -> Callable[[Office, _Body, str], dict[str, Any]]:
    def run(office: Office, b: _Body, actor: str) -> dict[str, Any]:
        ref = _ref(b)
        b.done()
        recorded = call(office, ref, actor=actor)
        return _outcome(office, recorded)

    return run


def _dispatch(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref, channel = _ref(b), b.req("channel")
    document = b.digest("document", required=False)
    b.done()
    register, recorded = office.dispatch(ref, actor=actor, channel=channel, document=document)
    return _outcome(office, recorded, register=register)


def _deliver(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref, deemed = _ref(b), b.flag("deemed")
    notice, on = b.text("notice", required=False), b.text("date", required=False)
    b.done()
    recorded = office.deliver(ref, actor=actor, deemed=deemed, notice=notice, on=on)
    return _outcome(office, recorded)


def _destroy(office: Office, b: _Body, actor: str) -> dict[str, Any]:
    ref, consent = _ref(b), b.req("consent")
    b.done()
    recorded = office.destroy(ref, actor=actor, consent=consent)
    return _outcome(office, recorded)


STEPS: Final[dict[str, Callable[[Office, _Body, str], dict[str, Any]]]] = {
    "register": _register,
    "assign": _assign,
    "open-case": _open_case,
    "attach": _document_step(lambda o, r, d, **k: o.attach(r, d, **k), kind=True),
    "submit": _document_step(lambda o, r, d, **k: o.submit(r, d, **k)),
    "accept": _accept,
    "reject": _reason_step(lambda o, r, **k: o.reject(r, **k)),
    "sign": _document_step(lambda o, r, d, **k: o.sign(r, d, **k)),
    "dispatch": _dispatch,
    "record-receipt": _document_step(lambda o, r, d, **k: o.record_receipt(r, d, **k), kind=True),
    "deliver": _deliver,
    "close": _plain(lambda o, r, **k: o.close(r, **k)),
    "reopen": _reason_step(lambda o, r, **k: o.reopen(r, **k)),
    "archive": _plain(lambda o, r, **k: o.archive(r, **k)),
    "destroy": _destroy,
}
