"""The one request middleware of the node: request ids, authorization, body limits and the one
error model, for every route of :mod:`ledger.node.app`.

**Errors.** Every refusal leaves as ``{"error": {"code": "...", "message": "..."}}`` with one
status per kind of failure (docs/api.md, "Errors"):

=====  ============================================================================
400    malformed: not JSON, not hex, a bad parameter, bytes that do not parse
401    no or unknown bearer token (with ``WWW-Authenticate: Bearer``)
403    a revoked token, a token without the role the route needs, a peer envelope
       from outside the validator set or with a bad signature
404    no such route, digest, block or checkpoint
405    the route exists for another method
409    a conflict with what the node holds
413    the body is larger than the route allows
422    well-formed but invalid: a validator-set change without its quorum, a
       checkpoint that does not verify
500    the node's own fault (a failing or damaged store); logged with the request id
503    not ready: halted, shutting down, overloaded; ``Retry-After`` where it helps
=====  ============================================================================

Each request gets an id (the client's ``X-Request-Id`` if it sent a sane one, else a counter),
returned in the ``X-Request-Id`` header and named in the log line of a 5xx.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from ledger.config import ClientToken, NodeConfig
from ledger.errors import LedgerError, MalformedError, NotFoundError, VerificationError
from ledger.replica import OverloadedError
from ledger.replica.wire import UnknownSenderError

__all__ = [
    "ADMIN",
    "ANY_CLIENT",
    "PUBLIC",
    "ApiError",
    "Route",
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


class ApiError(LedgerError):
    """An HTTP-level refusal with its own status and code (auth, size, bad parameters)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Route:
    """One entry of the route table: who may call it, and its largest body."""

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    access: str = PUBLIC
    max_body: int = 0


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
    if isinstance(exc, MalformedError):  # ProtocolError included
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
    """The request body, at most ``limit`` bytes.

    Raises:
        ApiError: 413 ``body_too_large`` beyond ``limit``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(config: NodeConfig, routes: Mapping[Handler, Route]) -> Any:
    """The middleware for ``config``'s tokens and the route table ``routes`` (by handler)."""
    counter = itertools.count(1)

    @web.middleware
    async def handle(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else f"r{next(counter)}"
        try:
            route = routes.get(request.match_info.route.handler)
            if route is not None:
                authorize(request, config, route.access)
                if (route.max_body and request.content_length is not None
                        and request.content_length > route.max_body):
                    raise ApiError(413, "body_too_large",
                                   f"request body exceeds {route.max_body} bytes")
            response = await handler(request)
        except LedgerError as exc:
            status = status_for(exc)
            if status >= 500 and status != 503:  # 503 (overloaded, shutting down) is expected
                log.error("%s %s failed [%s]: %s", request.method, request.path, request_id,
                          exc.diagnostics())
            response = error_response(status, exc.code, exc.diagnostics())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.reason if exc.status != 404 else \
                f"no route {request.method} {request.path}"
            response = error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"),
                                      message)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    return handle
