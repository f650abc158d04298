"""Webhooks: every committed event of an office, POSTed in order to each configured receiver.

The office store writes an ``outbox`` row with every event, in the same transaction (so an
event is announced exactly when it is stored, whichever process stored it: the service, the
CLI or an import). One delivery loop per receiver (:class:`Dispatcher`) reads the outbox after
the receiver's cursor and POSTs each event, one at a time and in order::

    POST <url>
    Content-Type: application/json
    X-Ledger-Delivery: <outbox id>
    X-Ledger-Signature: sha256=<hex HMAC-SHA256 of the body under the receiver's secret>

    {"chain": "<chain id>", "delivery": 17, "event": <signed event>, "hash": "<event hash>",
     "office": "cuw-gdansk"}

(canonical JSON). A 2xx answer moves the cursor on; anything else (a refused connection, a
timeout, a 5xx) is retried after 1, 2, 4, ... seconds (``base_delay`` doubling, at most
``max_delay``) until ``attempts`` tries have failed: the event then goes to the receiver's
dead-letter list (``deadletters``) and the loop goes on with the next one. A receiver that is
down for less than the whole retry schedule (by default about two hours) thus gets every event
once it is back, in order; the ones that ran out of tries an admin replays
(:meth:`Dispatcher.replay`, ``POST /v1/offices/{office}/admin/deadletters/replay``).
Receivers verify the signature and de-duplicate by ``delivery`` (a delivery whose answer was
lost is sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import aiohttp

from ledger.eod import canonical
from ledger.eod.events import SignedEvent
from ledger.eod.store import OfficeStore

__all__ = ["SIGNATURE_HEADER", "Dispatcher", "WebhookSink", "payload", "signature"]

SIGNATURE_HEADER: Final = "X-Ledger-Signature"
DELIVERY_HEADER: Final = "X-Ledger-Delivery"
_PAGE: Final = 200
_POLL: Final = 1.0


@dataclass(frozen=True, kw_only=True)
class WebhookSink:
    """One receiver: where, the HMAC secret, and its retry schedule."""

    name: str
    url: str
    secret: bytes
    attempts: int = 14
    base_delay: float = 1.0
    max_delay: float = 900.0
    timeout: float = 10.0


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Ledger-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def payload(office: str, delivery: int, chain: str, body: bytes) -> bytes:
    """The canonical JSON POSTed for one outbox row (``body``: the stored signed event)."""
    event = SignedEvent.decode(body)
    return canonical.encode(
        {
            "office": office,
            "delivery": delivery,
            "chain": chain,
            "hash": event.hash.hex(),
            "event": event.to_json(),
        }
    )


Counter = Callable[[str, str], None]


class Dispatcher:
    """The delivery loops of one office's receivers (see the module docstring). Store access
    runs on ``executor`` (one thread), HTTP on the event loop; ``count(sink, outcome)`` is
    called per try (``delivered``, ``failed``, ``dead-lettered``)."""

    def __init__(
        self,
        store: OfficeStore,
        office: str,
        sinks: list[WebhookSink],
        executor: Executor,
        *,
        count: Counter | None = None,
    ) -> None:
        self._store = store
        self._office = office
        self._sinks = {s.name: s for s in sinks}
        self._executor = executor
        self._count = count or (lambda sink, outcome: None)
        self._wake = {s.name: asyncio.Event() for s in sinks}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def sinks(self) -> list[str]:
        return sorted(self._sinks)

    async def _bg(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def wake(self) -> None:
        """Something was committed: look at the outbox now (thread-safe via the loop)."""
        for event in self._wake.values():
            event.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for sink in self._sinks.values():
            self._tasks.append(asyncio.create_task(self._loop(sink)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _cursor(self, sink: str) -> int:
        rows = self._store.query("SELECT value FROM cursors WHERE name = ?", f"webhook:{sink}")
        return int(rows[0][0]) if rows else 0

    def _advance(self, sink: str, value: int) -> None:
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO cursors (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                f"webhook:{sink}",
                value,
            )

    def _dead(self, sink: str, delivery: int, attempts: int, error: str) -> None:
        with self._store.transaction():
            self._store.execute(
                "INSERT INTO deadletters (sink, outbox, attempts, error) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(sink, outbox) DO UPDATE SET attempts = excluded.attempts, "
                "error = excluded.error",
                sink,
                delivery,
                attempts,
                error[:500],
            )

    async def _post(self, sink: WebhookSink, delivery: int, body: bytes) -> str | None:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(sink.secret, body),
            DELIVERY_HEADER: str(delivery),
        }
        try:
            async with self._session.post(
                sink.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=sink.timeout),
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__

    async def _deliver(self, sink: WebhookSink, delivery: int, chain: str, body: bytes) -> None:
        data = payload(self._office, delivery, chain, body)
        attempt = 0
        while True:
            error = await self._post(sink, delivery, data)
            if error is None:
                self._count(sink.name, "delivered")
                return
            attempt += 1
            self._count(sink.name, "failed")
            if attempt >= sink.attempts:
                await self._bg(partial(self._dead, sink.name, delivery, attempt, error))
                self._count(sink.name, "dead-lettered")
                return
            await asyncio.sleep(min(sink.max_delay, sink.base_delay * 2 ** (attempt - 1)))

    async def _loop(self, sink: WebhookSink) -> None:
        wake = self._wake[sink.name]
        cursor: int = await self._bg(lambda: self._cursor(sink.name))
        while True:
            wake.clear()
            after = cursor
            rows = await self._bg(
                partial(
                    self._store.query,
                    "SELECT id, chain, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                    after,
                    _PAGE,
                )
            )
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), _POLL)
                continue
            for delivery, chain, body in rows:
                await self._deliver(sink, int(delivery), str(chain), bytes(body))
                cursor = int(delivery)
                await self._bg(partial(self._advance, sink.name, cursor))

    def dead_letters(self, sink: str | None = None) -> list[dict[str, Any]]:
        """The dead-letter list (store read; call from a worker thread)."""
        sql = "SELECT sink, outbox, attempts, error FROM deadletters"
        args: list[object] = []
        if sink is not None:
            sql += " WHERE sink = ?"
            args.append(sink)
        return [
            {"sink": s, "delivery": int(o), "attempts": int(a), "error": e}
            for s, o, a, e in self._store.query(sql + " ORDER BY sink, outbox", *args)
        ]

    async def replay(self, sink_name: str) -> tuple[int, int]:
        """Send the receiver's dead letters again, in order, once each; the delivered ones
        leave the list. Returns (delivered, still dead).

        Raises:
            KeyError: no such receiver.
        """
        sink = self._sinks[sink_name]
        rows = await self._bg(
            lambda: self._store.query(
                "SELECT d.outbox, o.chain, o.body FROM deadletters d JOIN outbox o "
                "ON o.id = d.outbox WHERE d.sink = ? ORDER BY d.outbox",
                sink_name,
            )
        )
        delivered = failed = 0
        for delivery, chain, body in rows:
            data = payload(self._office, int(delivery), str(chain), bytes(body))
            error = await self._post(sink, int(delivery), data)
            if error is None:
                delivered += 1
                self._count(sink_name, "delivered")

                def forget(d: int = int(delivery)) -> None:
                    with self._store.transaction():
                        self._store.execute(
                            "DELETE FROM deadletters WHERE sink = ? AND outbox = ?", sink_name, d
                        )

                await self._bg(forget)
            else:
                failed += 1
        return delivered, failed


Waker = Callable[[], Awaitable[None]]
