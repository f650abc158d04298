"""Notifications by e-mail: on an assignment, on a step awaiting a position, before a deadline.

What is sent, to the addresses the office configured per position (positions act, so the
address is the post's mailbox, e.g. ``ksiegowosc@cuw.example``):

* **assignment** (dekretacja): to the position the matter was assigned to;
* **awaiting** a step: when a draft awaits acceptance at a level, to each position holding the
  level's role (in its unit), but not the submitter nor an earlier acceptor; when a cost
  document awaits the next step of its path, to each position that may take it, but not one
  that did an earlier step;
* **deadline**: once per matter and deadline, when the deadline is due within ``soon`` days or
  has passed (ledger.eod.deadlines), to the case officer (or the assignee).

Sending never blocks or breaks a workflow step: a step only adds rows to the store's ``mail``
queue, in its own commit (so a mail is queued exactly when its step is stored, and never for a
refused one); :class:`Mailer` sends the queue through the configured SMTP server in the
background, retries a failure after 2, 4, 8, ... seconds up to ``attempts`` tries, and then
marks it ``failed`` with the server's answer. Every row stays visible (``GET
/v1/offices/{office}/admin/mail``, ``ledger_eod_mail_total``). Each mail has a key that makes
it unique (``assigned:<event hash>``, ``await:<chain>:<step>``, ``deadline:<chain>:<date>``):
a repeated scan or a retried step never sends it twice.

The text names the matter (register number or case sign) and the step, never a document's
content.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import partial
from typing import Any, Final

from ledger.eod.deadlines import office_terms, watch
from ledger.eod.events import SignedEvent
from ledger.eod.model import EVENT_TERMS, EventType
from ledger.eod.office import Office
from ledger.eod.pki import PositionCertificate
from ledger.eod.rules import CaseState
from ledger.eod.store import OfficeStore

__all__ = ["MailConfig", "Mailer", "queue_deadlines", "queue_for_event"]

_BATCH: Final = 20
_POLL: Final = 1.0


@dataclass(frozen=True, kw_only=True)
class MailConfig:
    """An office's SMTP server, sender, positions' addresses and retry schedule."""

    host: str
    port: int = 25
    sender: str
    addresses: Mapping[str, str] = field(default_factory=dict)
    soon: int = 3
    attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 600.0
    timeout: float = 10.0


def _queue(store: OfficeStore, key: str, rcpt: str, subject: str, body: str) -> None:
    store.execute(
        "INSERT INTO mail (key, rcpt, subject, body, status, attempts, error, next_try) "
        "VALUES (?, ?, ?, ?, 'queued', 0, NULL, 0) ON CONFLICT(key) DO NOTHING",
        key,
        rcpt,
        subject,
        body,
    )


def _name(event: SignedEvent, state: CaseState) -> str:
    register = event.record.data.get("register") if event.record.seq == 0 else None
    return state.case or (state.items[0] if state.items else None) or str(register)


def _holders(
    positions: Mapping[str, PositionCertificate], role: Any, unit: str | None
) -> list[str]:
    return sorted(
        p for p, c in positions.items() if c.allows(role) and (unit is None or c.unit == unit)
    )


def queue_for_event(
    office: Office, config: MailConfig, chain: str, event: SignedEvent, state: CaseState
) -> None:
    """Queue the mails that ``event`` (being stored) calls for; call inside its commit (the
    :attr:`Office.committed` hook)."""
    record = event.record
    name = _name(event, state)
    store = office.store
    if record.type is EventType.ASSIGNED:
        to = str(record.data.get("to"))
        rcpt = config.addresses.get(to)
        if rcpt:
            deadline = record.data.get("deadline")
            _queue(
                store,
                f"assigned:{event.hash.hex()}",
                rcpt,
                f"[{record.office}] {name}: przydzielono / assigned to {to}",
                f"Sprawę {name} zadekretowano na stanowisko {to}"
                + (f", termin {deadline}" if deadline else "")
                + f".\nThe matter {name} was assigned to {to}"
                + (f", deadline {deadline}" if deadline else "")
                + ".\n",
            )
    positions = office.positions()
    waiting: list[str] = []
    step_name = ""
    key = ""
    if state.draft is not None and state.accepted < state.levels and record.type in (
        EventType.SUBMITTED,
        EventType.ACCEPTED,
    ):
        step = state.path[state.accepted]
        done = {state.submitter, *state.acceptors}
        waiting = [p for p in _holders(positions, step.role, step.unit) if p not in done]
        step_name = f"akceptacja, poziom {state.accepted + 1} / acceptance, level " + str(
            state.accepted + 1
        )
        key = f"await:{chain}:{state.draft.hex()[:16]}:{state.accepted}"
    elif (
        state.cost
        and len(state.cost_done) < len(state.path)
        and record.type in (EventType.CASE_OPENED, EventType.ATTACHED, *_COST)
        and (state.attachments > 0 or state.cost_done)
    ):
        step = state.path[len(state.cost_done)]
        done = {who for _, who in state.cost_done}
        waiting = [p for p in _holders(positions, step.role, step.unit) if p not in done]
        english, polish = EVENT_TERMS[step.event]
        step_name = f"{polish} / {english}"
        key = f"await:{chain}:{len(state.cost_done)}"
    for position in waiting:
        rcpt = config.addresses.get(position)
        if rcpt:
            _queue(
                store,
                f"{key}:{position}",
                rcpt,
                f"[{record.office}] {name}: czeka na / awaits {step_name}",
                f"Sprawa {name} czeka na krok: {step_name}.\n"
                f"The matter {name} awaits: {step_name}.\n",
            )


_COST: Final = (
    EventType.SUBSTANTIVE_CHECK,
    EventType.FORMAL_CHECK,
    EventType.ACCOUNT_CODING,
    EventType.COUNTERSIGNED,
    EventType.APPROVED_FOR_PAYMENT,
)


def queue_deadlines(office: Office, config: MailConfig, *, now: int) -> int:
    """Queue a mail for each matter due within ``config.soon`` days or overdue, once per
    deadline; returns how many were new.

    Raises:
        StorageError: the store cannot be read or written.
    """
    found = watch(office.store, office.calendar, office_terms(office.store), now=now,
                  soon=config.soon)
    new = 0
    with office.store.transaction():
        for d in found:
            who = d.officer
            if who is None:
                rows = office.store.query(
                    "SELECT assignee FROM matters WHERE register IS ? AND case_sign IS ?",
                    d.register,
                    d.case,
                )
                who = rows[0][0] if rows else None
            rcpt = config.addresses.get(str(who)) if who else None
            if not rcpt:
                continue
            name = d.case or d.register
            before = office.store.query("SELECT count(*) FROM mail")[0][0]
            verdict = "minął / has passed" if d.state == "overdue" else "upływa / is due"
            _queue(
                office.store,
                f"deadline:{name}:{d.due.isoformat()}",
                rcpt,
                f"[{office.store.office}] {name}: termin {d.due} {verdict}",
                f"Termin sprawy {name} ({d.due}) {verdict.split(' / ')[0]}.\n"
                f"The deadline of {name} ({d.due}) {verdict.split(' / ')[1]}.\n",
            )
            new += int(office.store.query("SELECT count(*) FROM mail")[0][0]) - int(before)
    return new


class Mailer:
    """Sends an office's mail queue in the background (see the module docstring); store and
    SMTP work run on ``executor``; ``count(outcome)`` is called per try (``sent``, ``retry``,
    ``failed``)."""

    def __init__(
        self,
        store: OfficeStore,
        config: MailConfig,
        executor: Executor,
        *,
        count: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._executor = executor
        self._count = count or (lambda outcome: None)
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _due(self) -> list[tuple[Any, ...]]:
        return self._store.query(
            "SELECT id, rcpt, subject, body, attempts FROM mail WHERE status = 'queued' "
            "AND next_try <= ? ORDER BY id LIMIT ?",
            int(self._clock() * 1000),
            _BATCH,
        )

    def _send(self, rcpt: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._config.sender
        message["To"] = rcpt
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(self._config.host, self._config.port,
                          timeout=self._config.timeout) as smtp:
            smtp.send_message(message)

    def _settle(self, mail: int, attempts: int, error: str | None) -> str:
        config = self._config
        with self._store.transaction():
            if error is None:
                self._store.execute(
                    "UPDATE mail SET status = 'sent', attempts = ?, error = NULL WHERE id = ?",
                    attempts,
                    mail,
                )
                return "sent"
            if attempts >= config.attempts:
                self._store.execute(
                    "UPDATE mail SET status = 'failed', attempts = ?, error = ? WHERE id = ?",
                    attempts,
                    error[:500],
                    mail,
                )
                return "failed"
            delay = min(config.max_delay, config.base_delay * 2 ** (attempts - 1))
            self._store.execute(
                "UPDATE mail SET attempts = ?, error = ?, next_try = ? WHERE id = ?",
                attempts,
                error[:500],
                int((self._clock() + delay) * 1000),  # milliseconds
                mail,
            )
            return "retry"

    def _one(self, row: tuple[Any, ...]) -> str:
        mail, rcpt, subject, body, attempts = row
        try:
            self._send(str(rcpt), str(subject), str(body))
            error = None
        except (OSError, smtplib.SMTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return self._settle(int(mail), int(attempts) + 1, error)

    async def run_once(self) -> int:
        """Send what is due now; returns how many were tried."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._executor, self._due)
        for row in rows:
            outcome = await loop.run_in_executor(self._executor, partial(self._one, row))
            self._count(outcome)
        return len(rows)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            if await self.run_once():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL)


def mail_rows(store: OfficeStore, status: str | None = None) -> list[dict[str, Any]]:
    """The mail queue, newest first (for the admin endpoint)."""
    sql = "SELECT id, key, rcpt, subject, status, attempts, error FROM mail"
    args: list[object] = []
    if status is not None:
        sql += " WHERE status = ?"
        args.append(status)
    rows = store.query(sql + " ORDER BY id DESC LIMIT 1000", *args)
    names = ("id", "key", "to", "subject", "status", "attempts", "error")
    return [dict(zip(names, row, strict=True)) for row in rows]
