"""A synchronous Python client of a ledger node's public API, for EOD backends and the CLI.

::

    policy = parse_policy(Path("trust-policy").read_bytes())
    with LedgerClient(os.environ["LEDGER_NODE"], token=read_token_file("client-token"),
                      policy=policy) as client:
        [result] = client.anchor([hashlib.sha256(document).digest()])
    write_atomic("document.pdf.tlog-proof", result.receipt, replace=False)  # ledger.fileio

Only digests leave the machine: the caller hashes its documents (SHA-256) and sends the 32-byte
digests, hex-encoded. The API (issue 4, item 2):

* ``POST /v1/anchors[?wait=true]`` with ``{"digests": ["<64 hex>", ...]}`` and a bearer token;
  the answer is ``{"anchors": [{"digest", "status", "index", "receipt"}, ...], "timed_out"}``,
  one entry per digest in request order, ``status`` one of ``pending`` (in a mempool),
  ``committed`` (in a block, checkpoint being cosigned) and ``anchored`` (covered by a cosigned
  checkpoint); with ``wait=true`` every entry is anchored and carries its receipt (a
  c2sp.org/tlog-proof text) unless the node gave up waiting (``timed_out``, status 202).
  Re-anchoring a known digest returns its existing index.
* ``GET /v1/proofs/{digest}``: the receipt as text (202 while pending, 404 if unknown).
* ``GET /v1/checkpoint``, ``/v1/policy``, ``/v1/status``, ``/readyz``, ``/metrics``.
* Errors: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx or 5xx status.

Why the standard library (:mod:`http.client`) rather than aiohttp: an EOD backend calls this from
plain synchronous code, often inside a web framework's worker; an event loop in a thread would
be a second concurrency model to reason about for no gain on one connection. The client keeps
one HTTP/1.1 connection open (keep-alive) and reconnects once if the server closed it between
requests; anchoring is idempotent (a known digest keeps its index), so that retry cannot anchor
twice. One :class:`LedgerClient` is **not** thread-safe: use one per thread.

Receipts are checked when the client is given the chain's trust policy (``policy=``): every
receipt returned by :meth:`LedgerClient.anchor` and :meth:`LedgerClient.proof` is verified with
:func:`ledger.receipt.verify_receipt` against its digest before it is handed back, so a faulty or
malicious node cannot hand out a receipt that an auditor would later reject.

Errors: everything raised is a :class:`~ledger.errors.LedgerError`. An HTTP error status raises a
subclass of :class:`HttpError` carrying the server's error ``code`` and ``message``:

=========================  ==========================================================
status                     exception
=========================  ==========================================================
400, 405, 408, 413, 422    :class:`BadRequestError` (also a :class:`MalformedError`);
                           414 too
401                        :class:`UnauthorizedError` (no or unknown token)
403                        :class:`ForbiddenError` (revoked token)
404                        :class:`HttpNotFoundError` (also a :class:`NotFoundError`)
429, 503                   :class:`UnavailableError` (not ready, overloaded, too many
                           requests or connections: retry later)
other 4xx, 5xx             :class:`HttpError` / :class:`ServerError` (5xx)
=========================  ==========================================================

A connection failure or a socket timeout raises :class:`TransportError`; a response that is not
what the API promises raises :class:`BadResponseError`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ledger.errors import ConfigError, LedgerError, MalformedError, NotFoundError
from ledger.merkle.hashing import HASH_SIZE
from ledger.policy import Policy
from ledger.receipt import MAX_RECEIPT_SIZE, verify_receipt

__all__ = [
    "CACERT_ENV",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TIMEOUT",
    "MAX_DIGESTS_PER_REQUEST",
    "NODE_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "AnchorResult",
    "BadRequestError",
    "BadResponseError",
    "ForbiddenError",
    "HttpError",
    "HttpNotFoundError",
    "LedgerClient",
    "PendingError",
    "ServerError",
    "TransportError",
    "UnauthorizedError",
    "UnavailableError",
    "parse_digest",
    "parse_metrics",
    "read_token_file",
    "resolve_node",
    "resolve_token",
    "tls_context",
]

#: The API accepts 1 to 10,000 digests per request (issue 4, item 2).
MAX_DIGESTS_PER_REQUEST: Final = 10_000
#: Digests per request when :meth:`LedgerClient.anchor` splits a long list.
DEFAULT_BATCH_SIZE: Final = 1_000
#: Seconds a socket operation may block; above the node's default anchor wait (30 s).
DEFAULT_TIMEOUT: Final = 60.0
#: A response larger than this is refused (10,000 receipts of a few KiB fit easily).
MAX_RESPONSE_SIZE: Final = 128 * 1024 * 1024

#: Where the CLI and other tools look for the node and the client token (``ledger anchor``,
#: ``proof``, ``status``, ``validators``, ``eod``); see :func:`resolve_node`,
#: :func:`resolve_token`.
NODE_ENV: Final = "LEDGER_NODE"
#: A PEM CA bundle to verify an https node's certificate against (``--cacert``), when it is
#: not signed by a CA of the system's trust store (an institutions' private CA).
CACERT_ENV: Final = "LEDGER_CACERT"
TOKEN_ENV: Final = "LEDGER_TOKEN"
TOKEN_FILE_ENV: Final = "LEDGER_TOKEN_FILE"
MAX_TOKEN_FILE: Final = 4096

_USER_AGENT: Final = "ledger-client/1"


# ------------------------------------------------------------------------------- errors


class HttpError(LedgerError):
    """The node answered with an error status; ``code`` and ``message`` are the server's."""

    code = "http_error"

    def __init__(self, *, url: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{url}: HTTP {status} {code}: {message}")
        self.url = url
        self.status = status
        self.code = code
        self.message = message


class BadRequestError(HttpError, MalformedError):
    """The node refused the request as malformed (400, 405, 413, 414, 422)."""


class UnauthorizedError(HttpError):
    """No bearer token, or one the node does not know (401)."""


class ForbiddenError(HttpError):
    """The bearer token was revoked (403)."""


class HttpNotFoundError(HttpError, NotFoundError):
    """The digest, height or route does not exist on the node (404)."""


class ServerError(HttpError):
    """The node failed (5xx)."""


class UnavailableError(ServerError):
    """The node is not ready, is overloaded, or its wait for a commit timed out (503)."""


class PendingError(LedgerError):
    """Not yet anchored (202): a proof asked for too early, or an anchor request whose wait
    the node gave up on. Ask again later; a digest keeps its index."""

    code = "pending"


class TransportError(LedgerError):
    """The node could not be reached, or a socket operation timed out."""

    code = "transport"


class BadResponseError(MalformedError):
    """The node's answer is not what the API promises (wrong type, shape, size or count)."""

    code = "bad_response"


_STATUS_ERRORS: Final[Mapping[int, type[HttpError]]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: HttpNotFoundError,
    405: BadRequestError,
    408: BadRequestError,
    413: BadRequestError,
    414: BadRequestError,
    422: BadRequestError,
    429: UnavailableError,
    503: UnavailableError,
}


def _error_for(url: str, status: int, body: bytes) -> HttpError:
    code, message = f"http_{status}", http.client.responses.get(status, "error")
    try:
        payload = json.loads(body.decode("utf-8"))
        error = payload["error"]
        if isinstance(error["code"], str) and isinstance(error["message"], str):
            code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        pass  # not our JSON error body (a proxy's HTML page): keep the generic code
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else HttpError)
    return cls(url=url, status=status, code=code, message=message[:500])


# -------------------------------------------------------------------------------- values


def parse_digest(value: bytes | str) -> bytes:
    """A SHA-256 digest as 32 raw bytes, from raw bytes or 64 hex digits (either case).

    Raises:
        MalformedError: not 32 bytes, or not 64 hex digits.
    """
    if isinstance(value, bytes):
        if len(value) != HASH_SIZE:
            raise MalformedError(f"a digest must be {HASH_SIZE} bytes, got {len(value)}")
        return value
    text = value.strip()
    if len(text) != 2 * HASH_SIZE:
        raise MalformedError(f"a digest must be {2 * HASH_SIZE} hex digits: {value!r}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise MalformedError(f"a digest must be {2 * HASH_SIZE} hex digits: {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class AnchorResult:
    """One digest's outcome: ``status`` is ``"pending"``, ``"committed"`` (with ``index``) or
    ``"anchored"`` (with ``index`` and, when waited for, ``receipt``)."""

    digest: bytes
    status: str
    index: int | None
    receipt: str | None


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str, *, optional: bool) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise BadResponseError(f"{where}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _parse_anchor(entry: object, expected: bytes, where: str) -> AnchorResult:
    if not isinstance(entry, dict):
        raise BadResponseError(f"{where} is not an object")
    digest_hex = _field(entry, "digest", str, where, optional=False)
    try:
        digest = parse_digest(digest_hex)
    except MalformedError:
        raise BadResponseError(f"{where}: digest is not 64 hex digits") from None
    if digest != expected:
        raise BadResponseError(f"{where}: answers digest {digest_hex}, not {expected.hex()}")
    status = _field(entry, "status", str, where, optional=False)
    index = _field(entry, "index", int, where, optional=True)
    receipt = _field(entry, "receipt", str, where, optional=True)
    if index is not None and index < 0:
        raise BadResponseError(f"{where}: negative index")
    return AnchorResult(digest=digest, status=status, index=index, receipt=receipt)


# -------------------------------------------------------------------------------- client


class LedgerClient:
    """A keep-alive HTTP client of one node's public API (see the module docstring).

    ``base_url`` is ``http://host:port`` or ``https://host:port/prefix``; ``token`` the bearer
    token for anchoring; ``timeout`` seconds per socket operation; ``policy`` (optional) the
    chain's trust policy, to verify every receipt before returning it.

    Raises (on construction):
        MalformedError: ``base_url`` is not an http(s) URL with a host.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        policy: Policy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MalformedError(f"node URL {base_url!r} is not an http(s) URL with a host")
        if parts.query or parts.fragment:
            raise MalformedError(f"node URL {base_url!r} must not have a query or fragment")
        try:
            port = parts.port
        except ValueError:
            raise MalformedError(f"node URL {base_url!r} has an invalid port") from None
        if token is not None and (not token or any(c in token for c in "\r\n")):
            raise MalformedError("the token is empty or contains a line break")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._policy = policy
        self._ssl_context = ssl_context
        self._conn: http.client.HTTPConnection | None = None

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the kept-alive connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------- transport

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl_context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
        return self._conn

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        accept: str = "application/json",
    ) -> tuple[int, str, bytes]:
        """Send one request; return (status, content type, body) for any status.

        Raises:
            TransportError: the node is unreachable or a socket operation timed out.
            BadResponseError: the response is larger than :data:`MAX_RESPONSE_SIZE`.
        """
        headers = {"Accept": accept, "User-Agent": _USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        url = self.base_url + path
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, self._prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_RESPONSE_SIZE + 1)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                # A kept-alive connection the server closed while idle: retry once on a fresh
                # one. Safe for every request of this API (anchoring is idempotent).
                if reused and attempt == 1:
                    continue
                raise TransportError(
                    f"the node at {self.base_url} closed the connection ({method} {path}): "
                    f"{_reason(exc)}"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if isinstance(exc, TimeoutError):
                    raise TransportError(
                        f"the node at {self.base_url} did not answer {method} {path} within "
                        f"{self._timeout:g} s"
                    ) from None
                raise TransportError(
                    f"cannot reach the node at {self.base_url}: {_reason(exc)}"
                ) from None
            if len(data) > MAX_RESPONSE_SIZE:
                self.close()
                raise BadResponseError(f"{url}: response larger than {MAX_RESPONSE_SIZE} bytes")
            if response.will_close:
                self.close()
            content_type = response.getheader("Content-Type", "").split(";")[0].strip()
            return response.status, content_type, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, path: str, *, accept: str = "application/json") -> bytes:
        status, _, data = self._request("GET", path, accept=accept)
        if status != 200:
            raise _error_for(self.base_url + path, status, data)
        return data

    def _get_json(self, path: str) -> dict[str, Any]:
        return _json_object(self._get(path), self.base_url + path)

    def _get_text(self, path: str, accept: str = "text/plain") -> str:
        data = self._get(path, accept=accept)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadResponseError(f"{self.base_url}{path}: response is not UTF-8") from None

    # ----------------------------------------------------------------------------- API

    def anchor(
        self,
        digests: Sequence[bytes | str],
        *,
        wait: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[AnchorResult]:
        """Anchor SHA-256 digests (32 bytes or 64 hex each); one result per digest, in order.

        With ``wait`` (the default) the call returns once every digest is committed and
        cosigned, and each result carries its receipt (verified when the client has a policy).
        A list longer than ``batch_size`` (at most :data:`MAX_DIGESTS_PER_REQUEST`) is sent in
        several requests, in order; results of earlier requests are not lost if a later one
        fails, since re-anchoring the same digests later returns the same indices.

        Raises:
            MalformedError: a digest is malformed, or ``batch_size`` is out of range.
            UnauthorizedError, ForbiddenError: the token is missing, unknown or revoked.
            BadRequestError: the node refused the request.
            UnavailableError: the node is not ready or overloaded.
            PendingError: with ``wait``, the node gave up waiting before every receipt was
                ready.
            HttpError: any other error status.
            TransportError: the node could not be reached.
            BadResponseError: the answer does not match the request (count, order, fields, a
                missing receipt after waiting).
            VerificationError: with a policy, a receipt does not verify for its digest.
        """
        if not 1 <= batch_size <= MAX_DIGESTS_PER_REQUEST:
            raise MalformedError(f"batch_size must be between 1 and {MAX_DIGESTS_PER_REQUEST}")
        raw = [parse_digest(d) for d in digests]
        results: list[AnchorResult] = []
        for start in range(0, len(raw), batch_size):
            results.extend(self._anchor_batch(raw[start : start + batch_size], wait=wait))
        return results

    def _anchor_batch(self, digests: list[bytes], *, wait: bool) -> list[AnchorResult]:
        path = "/v1/anchors" + ("?wait=true" if wait else "")
        url = self.base_url + path
        body = json.dumps({"digests": [d.hex() for d in digests]}).encode("ascii")
        status, _, data = self._request("POST", path, body=body)
        if status not in (200, 202):
            raise _error_for(url, status, data)
        payload = _json_object(data, url)
        entries = payload.get("anchors")
        if not isinstance(entries, list) or len(entries) != len(digests):
            raise BadResponseError(f"{url}: expected {len(digests)} entries under 'anchors'")
        results = [
            _parse_anchor(entry, digest, f"{url}: anchors[{i}]")
            for i, (entry, digest) in enumerate(zip(entries, digests, strict=True))
        ]
        if wait:
            if payload.get("timed_out") is True or status == 202:
                waiting = sum(1 for r in results if r.receipt is None)
                raise PendingError(
                    f"{url}: the node stopped waiting with {waiting} of {len(results)} digests "
                    "not yet anchored; anchor them again later (they keep their indices)"
                )
            for i, result in enumerate(results):
                if result.status != "anchored" or result.receipt is None:
                    raise BadResponseError(
                        f"{url}: anchors[{i}] is {result.status!r} without a receipt after wait"
                    )
                self._check_receipt(result.receipt, result.digest)
        return results

    def proof(self, digest: bytes | str, *, latest: bool = False) -> str:
        """The receipt (c2sp.org/tlog-proof text) of an anchored digest: against the first
        cosigned checkpoint that holds it, or (``latest``) against the node's latest, carrying
        the first as an earliest bridge.

        Raises:
            MalformedError: the digest is malformed.
            PendingError: the digest is anchored but not yet committed and cosigned (202).
            HttpNotFoundError: the node does not know the digest.
            HttpError: any other error status.
            TransportError: the node could not be reached.
            BadResponseError: the receipt is not UTF-8 or too large.
            VerificationError: with a policy, the receipt does not verify for the digest.
        """
        raw = parse_digest(digest)
        path = f"/v1/proofs/{quote(raw.hex())}" + ("?against=latest" if latest else "")
        url = self.base_url + path
        status, _, data = self._request("GET", path, accept="text/plain")
        if status == 202:
            raise PendingError(f"{raw.hex()} is anchored but not yet committed; retry shortly")
        if status != 200:
            raise _error_for(url, status, data)
        if len(data) > MAX_RECEIPT_SIZE:
            raise BadResponseError(f"{url}: receipt larger than {MAX_RECEIPT_SIZE} bytes")
        try:
            receipt = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadResponseError(f"{url}: receipt is not UTF-8") from None
        self._check_receipt(receipt, raw)
        return receipt

    def _check_receipt(self, receipt: str, digest: bytes) -> None:
        if self._policy is not None:
            verify_receipt(receipt, self._policy, digest)

    def checkpoint(self) -> str:
        """The latest cosigned checkpoint (signed note text).

        Raises:
            HttpError: an error status (404 before the first commit).
            TransportError, BadResponseError: as :meth:`proof`.
        """
        return self._get_text("/v1/checkpoint")

    def policy(self) -> str:
        """The node's trust policy text. Compare it with the one derived from the genesis you
        checked out of band before trusting it: a node's word alone proves nothing.

        Raises:
            HttpError, TransportError, BadResponseError: as :meth:`checkpoint`.
        """
        return self._get_text("/v1/policy")

    def status(self) -> dict[str, Any]:
        """The node's status object (``GET /v1/status``: height, round, tree size, ready, ...).

        Raises:
            HttpError, TransportError: as :meth:`checkpoint`.
            BadResponseError: the body is not a JSON object.
        """
        return self._get_json("/v1/status")

    def ready(self) -> bool:
        """Whether the node is caught up and in consensus (``/readyz``: 200 yes, 503 no).

        Raises:
            HttpError: any status but 200 and 503.
            TransportError: the node could not be reached.
        """
        status, _, data = self._request("GET", "/readyz")
        if status == 200:
            return True
        if status == 503:
            return False
        raise _error_for(self.base_url + "/readyz", status, data)

    def metrics(self) -> str:
        """The Prometheus text exposition of ``/metrics``.

        Raises:
            HttpError, TransportError, BadResponseError: as :meth:`checkpoint`.
        """
        return self._get_text("/metrics", accept="text/plain")


def _reason(exc: BaseException) -> str:
    """An OS or HTTP error as a short phrase: "connection refused", "name not known"."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"its TLS certificate is not trusted ({exc.verify_message or exc.reason}); "
                f"give its CA with --cacert or ${CACERT_ENV}")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def tls_context(cacert: str | os.PathLike[str] | None) -> ssl.SSLContext | None:
    """The TLS context of a client that trusts the CA bundle ``cacert`` (PEM) for https nodes,
    host names checked; ``None`` for ``None`` (the system's trust store is used).

    Raises:
        ConfigError: the file is unreadable or holds no certificate.
    """
    if cacert is None:
        return None
    try:
        return ssl.create_default_context(cafile=os.fspath(cacert))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(f"cannot use CA bundle {os.fspath(cacert)}: {reason}") from None


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The bearer token held in a file: its one line, surrounding whitespace stripped.

    Raises:
        ConfigError: the file is unreadable, larger than 4 KiB, not UTF-8, empty, or holds
            more than one line.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise ConfigError(f"token file {path} is larger than {MAX_TOKEN_FILE} bytes")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file {path} is not UTF-8 text") from None
    if not token or "\n" in token or "\r" in token:
        raise ConfigError(f"token file {path} must hold exactly one line, the token")
    return token


def resolve_token(
    token_file: str | None,
    *,
    token_env: str = TOKEN_ENV,
    file_env: str = TOKEN_FILE_ENV,
    option: str = "--token-file",
    environ: Mapping[str, str] | None = None,
) -> str:
    """The bearer token: from ``token_file`` if given, else from the file named by
    ``$file_env``, else the value of ``$token_env``. Never from a command-line argument: that
    would show the secret in ``ps`` and in the shell history.

    Raises:
        ConfigError: none of the three is set, or the file does not hold a token.
    """
    env = os.environ if environ is None else environ
    if token_file:
        return read_token_file(token_file)
    if env.get(file_env):
        return read_token_file(env[file_env])
    token = env.get(token_env, "").strip()
    if token:
        return token
    raise ConfigError(f"a token is needed: {option} FILE, or ${file_env}, or ${token_env}")


def resolve_node(url: str | None) -> str:
    """The node's base URL given by ``--node`` or ``$LEDGER_NODE`` (click passes either here).

    Raises:
        ConfigError: neither is set.
    """
    if not url:
        raise ConfigError(f"which node? give --node URL or set {NODE_ENV}=URL")
    return url


def _json_object(data: bytes, url: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadResponseError(f"{url}: response is not JSON") from None
    if not isinstance(value, dict):
        raise BadResponseError(f"{url}: response is not a JSON object")
    return value


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)[ \t]+(\S+)(?:[ \t]+-?[0-9]+)?")


def parse_metrics(text: str) -> Iterator[tuple[str, float]]:
    """The ``(sample name with labels, value)`` pairs of a Prometheus text exposition, skipping
    comments and lines that do not parse (enough for a status summary, not a full parser)."""
    for line in text.splitlines():
        match = _SAMPLE.fullmatch(line.strip())
        if match is None:
            continue
        try:
            yield match.group(1), float(match.group(2))
        except ValueError:
            continue
