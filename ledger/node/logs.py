"""Logging that a hostile client cannot turn against the node.

A public node meets clients that abort uploads, reset connections, send garbage heads, hold
sockets open or present certificates nobody trusts. Each such event is the client's doing, so
it costs the node one counter increment and, at most, one line: :class:`ClientFaults` writes
at most one line per kind of event per :data:`LINE_INTERVAL_SECONDS` and says in it how many
lines of that kind it held back (the counts are metrics too: ``ledger_client_faults_total``
and ``ledger_log_lines_suppressed_total``). A traceback is written only for the node's own
faults (an exception that is not a client's doing, in a handler or in the event loop).

Two adapters route the libraries' own logging through it: :class:`ServerLog` replaces
aiohttp's server logger (which writes a full traceback for every malformed request head), and
:func:`loop_exception_handler` takes the event loop's reports of transport errors (resets,
``EMFILE`` on accept).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from aiohttp import http_exceptions, web_exceptions

__all__ = [
    "FAULT_KINDS",
    "LIMITED",
    "LINE_INTERVAL_SECONDS",
    "NODE_LOGGERS",
    "ClientFaults",
    "LogFloodFilter",
    "ServerLog",
    "is_client_fault",
    "loop_exception_handler",
]

log = logging.getLogger("ledger.node")

#: ``extra`` of a line whose caller bounds its rate itself (:class:`LogFloodFilter` lets it
#: pass): :class:`ClientFaults`, the peer links' state changes.
LIMITED: Final = {"rate_limited": True}

#: The kinds of client fault the node counts (``ledger_client_faults_total{kind}``).
FAULT_KINDS: Final = ("aborted", "bad_request", "evicted", "header_timeout", "idle_closed",
                      "peer_refused", "refused_address", "refused_busy", "requests_per_address",
                      "tls_handshake", "transport")

#: At most one line per kind of client fault in this many seconds.
LINE_INTERVAL_SECONDS: Final = 10.0

#: Exceptions a client causes by going away or by sending bytes that do not parse.
_CLIENT_EXCEPTIONS: Final = (
    ConnectionError,  # resets, broken pipes, aborted uploads
    TimeoutError,
    ssl.SSLError,
    http_exceptions.HttpProcessingError,  # BadHttpMessage, LineTooLong, ...
    web_exceptions.HTTPException,
)


def is_client_fault(exc: BaseException | None) -> bool:
    """Whether ``exc`` is something a client (or the network) did to us, not our bug."""
    if exc is None:
        return False
    if isinstance(exc, _CLIENT_EXCEPTIONS):
        return True
    # aiohttp's payload errors wrap the reset that caused them.
    return type(exc).__name__ in ("RequestPayloadError", "ClientConnectionResetError") or (
        isinstance(exc.__cause__, _CLIENT_EXCEPTIONS))


class ClientFaults:
    """Counts client-caused events by kind; logs one line per kind per interval.

    ``clock`` is monotonic seconds (tests pass their own).
    """

    def __init__(self, logger: logging.Logger = log, *,
                 interval: float = LINE_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self.counts: Counter[str] = Counter()
        self.suppressed = 0
        self._next: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def note(self, kind: str, message: str, *args: object) -> None:
        """One event of ``kind``; ``message % args`` is its line if one is due."""
        self.counts[kind] += 1
        now = self._clock()
        if now < self._next.get(kind, 0.0):
            self._held[kind] += 1
            self.suppressed += 1
            return
        held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} more like it in the last {self._interval:g} s not logged)"
        self._next[kind] = now + self._interval
        self._logger.warning(message, *args, extra=LIMITED)

    def count(self, kind: str) -> None:
        """An event that is counted but never logged (an idle connection closed)."""
        self.counts[kind] += 1


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, minus the tracebacks clients can cause.

    aiohttp calls ``logger.exception("Error handling request from %s", remote, exc_info=exc)``
    for every request head that does not parse; here that is one rate-limited line
    (``bad_request``). Anything that is not a client fault keeps its traceback.
    """

    def __init__(self, faults: ClientFaults) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._faults = faults

    def debug(self, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if is_client_fault(exc):  # a non-HTTP first line: aiohttp logs it at debug
            self._faults.count("bad_request")
            self.logger.debug("%s: %s", _format(msg, args), _one_line(exc), **kwargs)
            return
        self.logger.debug(msg, *args, exc_info=exc_info, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any
                  ) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if is_client_fault(exc):
            remote = args[0] if args else "?"
            self._faults.note("bad_request", "request from %s refused: %s", remote,
                              _one_line(exc))
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def _format(msg: object, args: tuple[object, ...]) -> str:
    try:
        return str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        return str(msg)


def _one_line(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "?"
    return " ".join(text.split())[:200]


def loop_exception_handler(faults: ClientFaults
                           ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event-loop exception handler: transport errors a client causes (and ``EMFILE`` on
    accept, which a flood causes) become one rate-limited line; the rest keeps asyncio's
    default report, traceback included."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) or is_client_fault(exc):
            faults.note("transport", "network error: %s (%s)",
                        context.get("message", "?"), _one_line(exc))
            return
        loop.default_exception_handler(context)

    return handle


_DIGITS = re.compile(r"[0-9]+")


class LogFloodFilter(logging.Filter):
    """A safety net under every logger of the node: one message template (the format string,
    digits ignored) is written at most ``burst`` times per ``interval`` seconds; the first line
    after a quiet spell says how many were held back. CRITICAL lines (a halt) always pass.

    :class:`ClientFaults` is the precise tool for the events it knows; this filter bounds the
    rest (a peer's bad cosignatures, a witness refusing proofs) by the same rule. A line
    logged with ``extra=LIMITED`` is bounded by its caller and passes.
    """

    def __init__(self, *, burst: int = 5, interval: float = LINE_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._windows: dict[tuple[str, int, str], list[float | int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL or getattr(record, "rate_limited", False):
            return True
        key = (record.name, record.levelno, _DIGITS.sub("#", str(record.msg)))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now >= float(window[0]) + self._interval:
            held = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 10_000:  # templates are few; never let the map grow
                self._windows = {key: self._windows[key]}
            if held:
                record.msg = f"{record.msg} ({held} similar lines not logged)"
            return True
        if int(window[1]) < self._burst:
            window[1] = int(window[1]) + 1
            return True
        window[2] = int(window[2]) + 1
        self.suppressed += 1
        return False


#: The loggers of a node's process that a network peer can make write.
NODE_LOGGERS: Final = ("ledger.node", "ledger.replica", "ledger.witness", "aiohttp.server",
                       "aiohttp.access", "aiohttp.web", "asyncio")
