"""The one request middleware of the node: request ids, authorization, limits and the one
error model, for every route of :mod:`ledger.node.app`.

**Errors.** Every refusal leaves as ``{"error": {"code": "...", "message": "..."}}`` with one
status per kind of failure (docs/api.md, "Errors"):

=====  ============================================================================
400    malformed: not JSON (or JSON with a duplicate key), not hex, a bad parameter,
       bytes that do not parse
401    no or unknown bearer token (with ``WWW-Authenticate: Bearer``)
403    a revoked token, a token without the role the route needs, a peer envelope
       from outside the validator set or with a bad signature, ``/peer/`` without
       the client certificate TLS requires
404    no such route, digest, block or checkpoint (and ``/peer/`` on the public
       listener when peers have their own)
405    the route exists for another method
408    the request body did not arrive within ``body_timeout_ms``
409    a conflict with what the node holds
413    the body is larger than the route allows
422    well-formed but invalid: a validator-set change without its quorum, a
       checkpoint that does not verify
429    too many requests in progress from one client address (``Retry-After``)
500    the node's own fault (a failing store, stored data that contradicts itself past
       its checksums, a bug); logged with the request id and, for a bug, its traceback
503    not ready: halted, shutting down, overloaded, too many connections, the disk
       full (``disk_full``), a stored value this read needs is damaged and being
       repaired from peers (``store_damaged``); ``Retry-After`` where it helps
=====  ============================================================================

Each request gets an id (the client's ``X-Request-Id`` if it sent a sane one, else a counter),
returned in the ``X-Request-Id`` header and named in the log line of a 5xx. A client that goes
away in the middle of its request (an aborted upload, a reset) costs one rate-limited line
(:class:`ledger.node.logs.ClientFaults`), never a traceback; so do refused peer envelopes.

**Client address.** The address of the connection, or, when that is one of
``limits.trusted_proxies``, the right-most address of ``X-Forwarded-For`` that is not a trusted
proxy (the one the proxy itself saw). It keys ``max_requests_per_address`` and the log lines.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from ledger.config import ClientToken, NodeConfig
from ledger.errors import LedgerError, MalformedError, NotFoundError, VerificationError
from ledger.node.guard import PEER, Connection, connection_of
from ledger.node.logs import is_client_fault
from ledger.replica import OverloadedError
from ledger.replica.wire import UnknownSenderError
from ledger.storage.base import DamageError

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = [
    "ADMIN",
    "ANY_CLIENT",
    "BODY_TIMEOUT_KEY",
    "PUBLIC",
    "ApiError",
    "ClientGoneError",
    "Route",
    "client_address",
    "error_response",
    "middleware",
    "read_body",
    "status_for",
]

log = logging.getLogger("ledger.node")

#: Who may call a route.
PUBLIC: Final = "public"
ANY_CLIENT: Final = "client"
ADMIN: Final = "admin"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HTTP_CODES: Final = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
#: The application key of the body read timeout (seconds).
BODY_TIMEOUT_KEY: Final = web.AppKey("body_timeout", float)
_DEFAULT_BODY_TIMEOUT: Final = 30.0
#: X-Forwarded-For longer than this is not read (a proxy chain is a handful of addresses).
_MAX_FORWARDED: Final = 1024


class ApiError(LedgerError):
    """An HTTP-level refusal with its own status and code (auth, size, bad parameters)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


class ClientGoneError(LedgerError):
    """The client went away (or stalled past the body timeout) in the middle of its request."""

    code = "client_gone"


@dataclass(frozen=True)
class Route:
    """One entry of the route table: who may call it, its largest body, and whether peers use
    it (``peer``: served on the peer listener too)."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    access: str = PUBLIC
    max_body: int = 0
    peer: bool = False
    peer_only: bool = False


def status_for(exc: LedgerError) -> int:
    """The HTTP status of an error (module docstring)."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, UnknownSenderError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, OverloadedError):
        return 503
    if isinstance(exc, MalformedError):  # ProtocolError and InputError included
        return 400
    if isinstance(exc, VerificationError):
        return 422
    return 500  # StorageError, CorruptionError, ConfigError: our fault, not the client's


def error_response(status: int, code: str, message: str, *,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    """The JSON error body of the module docstring."""
    extra = dict(headers or {})
    if status == 401:
        extra["WWW-Authenticate"] = "Bearer"
    if status in (429, 503) and "Retry-After" not in extra:
        extra["Retry-After"] = "1"
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=extra or None)


def authorize(request: web.Request, config: NodeConfig, access: str) -> ClientToken | None:
    """The client of the request's bearer token, checked for ``access``.

    Raises:
        ApiError: 401 without a known token, 403 for a revoked one or a missing role.
    """
    if access == PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "a bearer token is required")
    client = config.client_for_token(token.strip())
    if client is None:
        raise ApiError(401, "unauthorized", "unknown bearer token")
    if client.revoked:
        raise ApiError(403, "forbidden", f"the token of client {client.name!r} is revoked")
    if access == ADMIN and not client.admin:
        raise ApiError(403, "forbidden", f"client {client.name!r} is not an operator (admin)")
    return client


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, within the body timeout.

    Raises:
        ApiError: 413 ``body_too_large`` beyond ``limit``; 408 ``request_timeout`` when the
            body has not arrived within ``body_timeout_ms``.
        ClientGoneError: the client went away before the body was complete.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    timeout = request.app.get(BODY_TIMEOUT_KEY, _DEFAULT_BODY_TIMEOUT)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.read(64 * 1024)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "request_timeout",
                       f"the request body did not arrive within {timeout:g} s") from None
    except LedgerError:
        raise
    except Exception as exc:
        if is_client_fault(exc):
            raise ClientGoneError(f"the client went away during the body ({exc})") from None
        raise


def client_address(remote: str, forwarded: str | None,
                   proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The client's address: ``remote``, or behind trusted ``proxies`` the right-most address
    of ``X-Forwarded-For`` (``forwarded``) that is not a trusted proxy (module docstring)."""

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in proxies)

    if not proxies or not trusted(remote) or not forwarded or len(forwarded) > _MAX_FORWARDED:
        return remote
    hops = [h.strip() for h in forwarded.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote  # a hop we cannot read: believe nothing left of it
        if not trusted(hop):
            return hop
    return remote


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(node: Node, routes: Mapping[Handler, Route]) -> Any:
    """The middleware of ``node`` over the route table ``routes`` (by handler)."""
    gate = _Gate(node, routes)

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await gate.handle(request, handler)

    return handle


class _Gate:
    """The state of the middleware: request ids, requests in progress per client address."""

    def __init__(self, node: Node, routes: Mapping[Handler, Route]) -> None:
        config = node.config
        self.node = node
        self.config = config
        self.routes = routes
        self.counter = itertools.count(1)
        self.in_progress: Counter[str] = Counter()
        self.proxies = config.limits.proxy_networks()
        self.per_address = config.limits.max_requests_per_address
        self.separate_peers = config.peer_listen_port is not None
        self.require_peer_cert = config.tls is not None and config.tls.require_peer_certificate

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else f"r{next(self.counter)}"
        conn = connection_of(self.node.listeners, request.transport)
        remote = conn.address if conn is not None else (request.remote or "?")
        address = client_address(remote, request.headers.get("X-Forwarded-For"), self.proxies)
        route = self.routes.get(request.match_info.route.handler)
        if conn is not None:
            conn.request_started()
        self.in_progress[address] += 1
        try:
            response = await self._respond(request, handler, route, conn, address, request_id)
        finally:
            self.in_progress[address] -= 1
            if self.in_progress[address] <= 0:
                del self.in_progress[address]
            if conn is not None:
                conn.request_finished()
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    def _admit(self, request: web.Request, route: Route | None, conn: Connection | None,
               address: str) -> None:
        """The listener, per-address and access checks, before the handler runs.

        Raises:
            web.HTTPNotFound: a route this listener does not serve.
            ApiError: 429, 401/403, 413 as in the module docstring.
        """
        on_peer_listener = conn is not None and conn.listener.name == PEER
        if on_peer_listener and (route is None or not route.peer):
            raise web.HTTPNotFound()
        if self.separate_peers and route is not None and route.peer_only \
                and not on_peer_listener:
            raise web.HTTPNotFound()
        transport = request.transport
        if (route is not None and route.peer_only and self.require_peer_cert
                and not (transport and transport.get_extra_info("peercert"))):
            raise ApiError(403, "peer_certificate_required",
                           "peer messages need a client certificate of the validators' CA (TLS)")
        if self.in_progress[address] > self.per_address:
            self.node.faults.note("requests_per_address",
                                  "request from %s refused: %d requests in progress from it",
                                  address, self.in_progress[address] - 1)
            raise ApiError(429, "too_many_requests",
                           f"{self.per_address} requests in progress from {address}; retry "
                           "when one is answered")
        if route is not None:
            authorize(request, self.config, route.access)
            if (route.max_body and request.content_length is not None
                    and request.content_length > route.max_body):
                raise ApiError(413, "body_too_large",
                               f"request body exceeds {route.max_body} bytes")

    async def _respond(self, request: web.Request, handler: Handler, route: Route | None,
                       conn: Connection | None, address: str, request_id: str
                       ) -> web.StreamResponse:
        """The handler's response, or the error model's answer for what it raised."""
        faults = self.node.faults
        try:
            self._admit(request, route, conn, address)
            return await handler(request)
        except ClientGoneError as exc:
            faults.note("aborted", "%s %s from %s aborted [%s]: %s", request.method,
                        request.path, address, request_id, exc.diagnostics())
            return error_response(400, exc.code, exc.diagnostics())
        except DamageError as exc:
            # Never served, never "not found": repaired from peers meanwhile (ledger.node.repair).
            code, message = self.node.care.met(exc)
            return error_response(503, code, message)
        except LedgerError as exc:
            status = status_for(exc)
            if status >= 500 and status != 503:  # 503 (overloaded, stopping) is expected
                log.error("%s %s failed [%s]: %s", request.method, request.path, request_id,
                          exc.diagnostics())
            elif route is not None and route.peer_only and status in (400, 403):
                faults.note("peer_refused", "%s %s from %s refused (%d %s): %s",
                            request.method, request.path, address, status, exc.code,
                            exc.diagnostics())
            headers = exc.headers if isinstance(exc, ApiError) else None
            return error_response(status, exc.code, exc.diagnostics(), headers=headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.reason if exc.status != 404 else \
                f"no route {request.method} {request.path}"
            return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"),
                                  message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_client_fault(exc):
                faults.note("aborted", "%s %s from %s aborted [%s]: %s", request.method,
                            request.path, address, request_id, type(exc).__name__)
                return error_response(400, "client_gone", "the connection failed")
            # Our own fault: the one place a traceback is written.
            log.exception("%s %s failed [%s]", request.method, request.path, request_id)
            return error_response(500, "internal_error",
                                  f"internal error (request id {request_id})")
