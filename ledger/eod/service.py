"""``ledger eod serve``: an HTTP service over :mod:`ledger.eod` for EOD backends and citizens.

Thin by design: it adds transport, authentication and queries, and no workflow rules of its
own. Every step goes through :func:`ledger.eod.steps.run_step` and so through the same
:class:`~ledger.eod.office.Office` code as the CLI: the rules check it, the ledger anchors it,
the store keeps it. Several offices share one service (a shared-services centre keeps its
units' and clients' offices apart): each has its own data dir, ledger client, API clients,
webhooks and mail; every route names the office, and a client of one office is answered about
another exactly as about an office that does not exist.

Routes (``/openapi.json`` is the OpenAPI 3.1 description, :mod:`ledger.eod.openapi`):

* ``POST /v1/offices/{office}/steps/{step}``: a workflow step (body: :mod:`ledger.eod.steps`);
* ``GET /v1/offices/{office}/cases``: matters by status, unit, officer, deadline;
  ``GET .../case?ref=``: one matter's course; ``GET .../trail?ref=``: its audit trail;
* ``GET .../deadlines``, ``GET .../registers/{invoices|contracts}`` (JSON or CSV);
* ``POST .../import``: a batch of historical matters (admin clients);
* ``GET .../admin/deadletters``, ``POST .../admin/deadletters/replay``, ``GET .../admin/mail``;
* public: ``POST /v1/offices/{office}/status`` (JSON) and ``GET|POST /status/{office}`` (a
  page): the citizen's lookup by register number and access code, rate limited per client
  address; ``GET /metrics`` (Prometheus), ``GET /healthz``.

Authentication: ``Authorization: Bearer <token>`` (the service keeps only each token's
SHA-256) or, with TLS and ``client_ca``, a client certificate (by its SHA-256 fingerprint).
A client belongs to one office and may act as the positions it lists (``"*"``: any); only an
``admin`` client imports and manages dead letters. Errors are ``{"error": {"code", "message"}}``
with 400 (malformed), 401, 403, 404, 409 (a refused step), 413, 429, 503 (the ledger is
unreachable: nothing was stored).

Steps run on a thread pool (``workers``), one :class:`Office` with its own store connection
and ledger client per thread and office; writes serialise per case (ledger.eod.office).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import ssl
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ledger.eod.anchor import Anchorer, ClientAnchorer
from ledger.eod.deadlines import office_terms, watch
from ledger.eod.importer import import_matters
from ledger.eod.notify import MailConfig, Mailer, mail_rows, queue_deadlines, queue_for_event
from ledger.eod.office import Office, SharedCaches
from ledger.eod.proofs import ReceiptVerifier
from ledger.eod.registers import REGISTERS, register_csv, register_rows
from ledger.eod.rules import WorkflowError
from ledger.eod.status import NOT_FOUND, RateLimiter, lookup
from ledger.eod.steps import STEPS, run_step
from ledger.eod.store import OfficeStore
from ledger.eod.trail import describe
from ledger.eod.webhooks import Dispatcher, WebhookSink
from ledger.errors import (
    ConfigError,
    LedgerError,
    MalformedError,
    NotFoundError,
    VerificationError,
)

__all__ = [
    "Client",
    "OfficeConfig",
    "ServiceConfig",
    "build_app",
    "load_config",
    "token_digest",
]

MAX_BODY: Final = 32 * 1024 * 1024
_MAX_QUERY_ROWS: Final = 1000
_DEADLINE_SCAN: Final = 60.0


def token_digest(token: str) -> bytes:
    """What the service keeps of an API token."""
    return hashlib.sha256(token.strip().encode("utf-8")).digest()


@dataclass(frozen=True, kw_only=True)
class Client:
    """An API client: its office, the positions it may act as, whether it is an admin."""

    name: str
    office: str
    positions: frozenset[str]
    admin: bool = False
    token_sha256: bytes | None = None
    cert_sha256: bytes | None = None

    def may_act_as(self, position: str) -> bool:
        return "*" in self.positions or position in self.positions


AnchorerFactory = Callable[[], tuple[Anchorer, Callable[[], None]]]


@dataclass(kw_only=True)
class OfficeConfig:
    """One office of the service."""

    id: str
    data_dir: Path
    anchorer: AnchorerFactory | None = None
    clients: list[Client] = field(default_factory=list)
    webhooks: list[WebhookSink] = field(default_factory=list)
    mail: MailConfig | None = None
    clock: Callable[[], int] = field(default=lambda: int(time.time()))


@dataclass(kw_only=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8470
    workers: int = 16
    offices: list[OfficeConfig] = field(default_factory=list)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    status_rate: float = 0.2
    status_burst: float = 10.0

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (client certificates optional, checked against
        ``client_ca``), or ``None`` for plain HTTP.

        Raises:
            ConfigError: unreadable certificate files.
        """
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
            if self.client_ca is not None:
                context.load_verify_locations(cafile=self.client_ca)
                context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the service's TLS files: {exc}") from None
        return context


# -------------------------------------------------------------------------- config file


def _read_secret(base: Path, value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: a file name is required")
    path = base / value
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"{what}: {path} is empty")
    return text


def _hex(value: object, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value).replace(":", ""))
    except ValueError:
        raise ConfigError(f"{what}: not a SHA-256 in hex") from None
    if len(raw) != 32:
        raise ConfigError(f"{what}: not a SHA-256 in hex")
    return raw


def _node_anchorer(node: str, token: str | None, cacert: str | None) -> AnchorerFactory:
    def make() -> tuple[Anchorer, Callable[[], None]]:
        from ledger.client import LedgerClient, tls_context

        client = LedgerClient(node, token=token, ssl_context=tls_context(cacert), timeout=60)
        return ClientAnchorer(client), client.close

    return make


def load_config(path: Path) -> ServiceConfig:
    """Read the service's TOML config (docs/eod.md, "The service"); file names in it are
    relative to the config's directory.

    Raises:
        ConfigError: unreadable, not TOML, or a value of the wrong kind (named).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    base = path.parent
    listen = str(data.get("listen", "127.0.0.1:8470"))
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise ConfigError(f"{path}: listen must be HOST:PORT, not {listen!r}")
    config = ServiceConfig(host=host, port=int(port_text),
                           workers=int(data.get("workers", 16)))
    tls = data.get("tls")
    if isinstance(tls, dict):
        config.tls_cert = base / str(tls["cert"])
        config.tls_key = base / str(tls["key"])
        if "client_ca" in tls:
            config.client_ca = base / str(tls["client_ca"])
    status = data.get("status", {})
    if isinstance(status, dict):
        config.status_rate = float(status.get("rate", config.status_rate))
        config.status_burst = float(status.get("burst", config.status_burst))
    offices = data.get("office")
    if not isinstance(offices, list) or not offices:
        raise ConfigError(f"{path}: no [[office]]")
    for raw in offices:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise ConfigError(f"{path}: each [[office]] needs its id")
        office_id = raw["id"]
        where = f"{path}: office {office_id}"
        node = raw.get("node")
        token = _read_secret(base, raw["token_file"], f"{where} token_file") if raw.get(
            "token_file") else None
        cacert = str(base / raw["cacert"]) if raw.get("cacert") else None
        clients = []
        for i, c in enumerate(raw.get("client", [])):
            positions = c.get("positions", [])
            if not isinstance(positions, list) or not all(isinstance(p, str) for p in positions):
                raise ConfigError(f"{where} client {i}: positions must be a list of names")
            token_sha = None
            if c.get("token_file"):
                token_sha = token_digest(_read_secret(base, c["token_file"],
                                                      f"{where} client {i}"))
            elif c.get("token_sha256"):
                token_sha = _hex(c["token_sha256"], f"{where} client {i} token_sha256")
            cert_sha = _hex(c["cert_sha256"], f"{where} client {i}") if c.get(
                "cert_sha256") else None
            if token_sha is None and cert_sha is None:
                raise ConfigError(f"{where} client {i}: give token_file, token_sha256 or "
                                  "cert_sha256")
            clients.append(Client(name=str(c.get("name", f"client-{i}")), office=office_id,
                                  positions=frozenset(positions), admin=bool(c.get("admin")),
                                  token_sha256=token_sha, cert_sha256=cert_sha))
        hooks = []
        for i, w in enumerate(raw.get("webhook", [])):
            hooks.append(WebhookSink(
                name=str(w.get("name", f"hook-{i}")),
                url=str(w["url"]),
                secret=_read_secret(base, w.get("secret_file"), f"{where} webhook {i}").encode(),
                attempts=int(w.get("attempts", 14)),
                base_delay=float(w.get("base_delay", 1.0)),
                max_delay=float(w.get("max_delay", 900.0)),
            ))
        mail = None
        m = raw.get("mail")
        if isinstance(m, dict):
            smtp = str(m.get("smtp", "127.0.0.1:25"))
            mhost, _, mport = smtp.rpartition(":")
            mail = MailConfig(host=mhost, port=int(mport), sender=str(m["sender"]),
                              addresses=dict(m.get("to", {})), soon=int(m.get("soon", 3)),
                              attempts=int(m.get("attempts", 8)),
                              base_delay=float(m.get("base_delay", 2.0)))
        config.offices.append(OfficeConfig(
            id=office_id,
            data_dir=base / str(raw.get("data_dir", office_id)),
            anchorer=_node_anchorer(str(node), token, cacert) if node else None,
            clients=clients,
            webhooks=hooks,
            mail=mail,
        ))
    return config


# ----------------------------------------------------------------------------- tenants


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.steps = Counter("ledger_eod_steps", "Workflow steps by office, step and outcome",
                             ["office", "step", "outcome"], registry=self.registry)
        self.step_seconds = Histogram(
            "ledger_eod_step_seconds", "Time to record a workflow step", ["office"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry)
        self.overdue = Gauge("ledger_eod_deadlines_overdue", "Open matters past their deadline",
                             ["office", "unit"], registry=self.registry)
        self.due_soon = Gauge("ledger_eod_deadlines_due_soon",
                              "Open matters due within 7 days", ["office", "unit"],
                              registry=self.registry)
        self.webhooks = Counter("ledger_eod_webhook_deliveries",
                                "Webhook delivery tries by receiver and outcome",
                                ["office", "sink", "outcome"], registry=self.registry)
        self.dead = Gauge("ledger_eod_webhook_dead_letters", "Events in a dead-letter list",
                          ["office", "sink"], registry=self.registry)
        self.mail = Counter("ledger_eod_mail", "Mail sending tries by outcome",
                            ["office", "outcome"], registry=self.registry)
        self.lookups = Counter("ledger_eod_status_lookups",
                               "Citizen status lookups by outcome", ["office", "outcome"],
                               registry=self.registry)


class _Tenant:
    """One office in the service: per-thread offices, its background loops."""

    def __init__(
        self, config: OfficeConfig, metrics: _Metrics, *, status_rate: float, status_burst: float
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._local = threading.local()
        self._closers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        store = OfficeStore.open(config.data_dir)
        if store.office != config.id:
            store.close()
            raise ConfigError(
                f"{config.data_dir} holds office {store.office!r}, not {config.id!r}"
            )
        self.background = ThreadPoolExecutor(1, thread_name_prefix=f"eod-{config.id}")
        self.bg_store = store
        self.bg_office = Office(store, None, clock=config.clock)
        self.shared = SharedCaches(verifier=ReceiptVerifier(self.bg_office.policy))
        self.calendar = self.bg_office.calendar
        self.dispatcher = Dispatcher(
            store, config.id, config.webhooks, self.background,
            count=lambda sink, outcome: metrics.webhooks.labels(config.id, sink, outcome).inc(),
        )
        self.mailer = (
            Mailer(store, config.mail, self.background,
                   count=lambda outcome: metrics.mail.labels(config.id, outcome).inc())
            if config.mail is not None
            else None
        )
        self.limiter = RateLimiter(rate=status_rate, burst=status_burst)
        self._tasks: list[asyncio.Task[None]] = []

    def office(self) -> Office:
        """This thread's office (its own store connection and ledger client)."""
        found: Office | None = getattr(self._local, "office", None)
        if found is not None:
            return found
        anchorer: Anchorer | None = None
        if self.config.anchorer is not None:
            anchorer, closer = self.config.anchorer()
            with self._lock:
                self._closers.append(closer)
        store = OfficeStore.open(self.config.data_dir)
        office = Office(store, anchorer, clock=self.config.clock, shared=self.shared)
        mail = self.config.mail
        if mail is not None:
            office.committed.append(
                lambda chain, event, state: queue_for_event(office, mail, chain, event, state)
            )
        self._local.office = office
        with self._lock:
            self._closers.append(store.close)
        return office

    def wake(self) -> None:
        self.dispatcher.wake()
        if self.mailer is not None:
            self.mailer.wake()

    def refresh_metrics(self) -> None:
        found = watch(self.bg_store, self.calendar, office_terms(self.bg_store),
                      now=self.config.clock(), soon=7)
        counts: dict[tuple[str, str], int] = {}
        units = {str(r[0]) for r in self.bg_store.query(
            "SELECT DISTINCT unit FROM matters WHERE unit IS NOT NULL")}
        for unit in units:
            counts[(unit, "overdue")] = counts[(unit, "due-soon")] = 0
        for d in found:
            key = (d.unit or "-", d.state)
            counts[key] = counts.get(key, 0) + 1
        for (unit, state), n in counts.items():
            gauge = self.metrics.overdue if state == "overdue" else self.metrics.due_soon
            gauge.labels(self.config.id, unit).set(n)
        for sink in self.dispatcher.sinks:
            dead = self.bg_store.query("SELECT count(*) FROM deadletters WHERE sink = ?", sink)
            self.metrics.dead.labels(self.config.id, sink).set(int(dead[0][0]))

    async def _scan(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            mail = self.config.mail
            if mail is not None:
                await loop.run_in_executor(
                    self.background,
                    partial(queue_deadlines, self.bg_office, mail, now=self.config.clock()),
                )
                self.wake()
            await asyncio.sleep(_DEADLINE_SCAN)

    async def start(self) -> None:
        await self.dispatcher.start()
        if self.mailer is not None:
            await self.mailer.start()
            self._tasks.append(asyncio.create_task(self._scan()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.dispatcher.stop()
        if self.mailer is not None:
            await self.mailer.stop()
        self.background.shutdown(wait=True)

    def close(self) -> None:
        with self._lock:
            closers, self._closers = self._closers, []
        for closer in closers:
            with contextlib.suppress(Exception):
                closer()
        self.bg_store.close()


# ---------------------------------------------------------------------------- the app

_STATE: Final = web.AppKey("eod_service", object)

def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _ledger_error(exc: LedgerError) -> web.Response:
    if isinstance(exc, WorkflowError):
        return _error(409, exc.code, exc.diagnostics())
    if isinstance(exc, MalformedError):
        return _error(400, "malformed", exc.diagnostics())
    if isinstance(exc, NotFoundError):
        return _error(404, "not_found", exc.diagnostics())
    if isinstance(exc, VerificationError):
        return _error(502, exc.code, exc.diagnostics())
    # The ledger unreachable, a storage error: nothing was stored; the client may repeat.
    return _error(503, exc.code, exc.diagnostics())


class _Service:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = _Metrics()
        self.tenants: dict[str, _Tenant] = {}
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="eod-step")
        self.tokens: dict[bytes, Client] = {}
        self.certs: dict[bytes, Client] = {}
        for office in config.offices:
            if office.id in self.tenants:
                raise ConfigError(f"office {office.id} is configured twice")
            self.tenants[office.id] = _Tenant(office, self.metrics,
                                              status_rate=config.status_rate,
                                              status_burst=config.status_burst)
            for client in office.clients:
                if client.token_sha256 is not None:
                    if client.token_sha256 in self.tokens:
                        raise ConfigError("two clients share one token")
                    self.tokens[client.token_sha256] = client
                if client.cert_sha256 is not None:
                    self.certs[client.cert_sha256] = client

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    def client(self, request: web.Request) -> Client | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.tokens.get(token_digest(header[len("Bearer "):]))
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                return self.certs.get(hashlib.sha256(der).digest())
        return None

    def tenant_for(self, request: web.Request, *, admin: bool = False) -> tuple[_Tenant, Client]:
        client = self.client(request)
        if client is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": {"code": "unauthorized",
                                           "message": "a valid API token or client "
                                                      "certificate is required"}}),
                content_type="application/json",
            )
        office = request.match_info["office"]
        tenant = self.tenants.get(office)
        if tenant is None or client.office != office:
            # Another office's name gets the answer of an office that does not exist.
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "not_found",
                                           "message": f"no office {office!r}"}}),
                content_type="application/json",
            )
        if admin and not client.admin:
            raise web.HTTPForbidden(
                text=json.dumps({"error": {"code": "forbidden",
                                           "message": "an admin client is required"}}),
                content_type="application/json",
            )
        return tenant, client


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise MalformedError(f"the body is larger than {MAX_BODY} bytes")
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise MalformedError("the body is not JSON") from None


def _service(request: web.Request) -> _Service:
    service = request.app[_STATE]
    assert isinstance(service, _Service)
    return service


def _forbidden(message: str) -> web.Response:
    return _error(403, "forbidden", message)


async def step_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, client = service.tenant_for(request)
    step = request.match_info["step"]
    office_id = tenant.config.id
    started = time.perf_counter()
    try:
        if step not in STEPS:
            raise NotFoundError(f"no workflow step {step!r}")
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise MalformedError("the body must be a JSON object")
        actor = body.get("as")
        if not isinstance(actor, str) or not client.may_act_as(actor):
            service.metrics.steps.labels(office_id, step, "forbidden").inc()
            return _forbidden(f"client {client.name!r} may not act as {actor!r}")
        result = await service.run(lambda: run_step(tenant.office(), step, body))
    except LedgerError as exc:
        service.metrics.steps.labels(office_id, step, exc.code).inc()
        return _ledger_error(exc)
    service.metrics.steps.labels(office_id, step, "stored").inc()
    service.metrics.step_seconds.labels(office_id).observe(time.perf_counter() - started)
    tenant.wake()
    return web.json_response(result, status=201)


def _int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise MalformedError(f"query parameter {key!r} must be an integer {low}-{high}")
    return int(text)


_CASE_COLUMNS: Final = ("register", "case", "kind", "unit", "officer", "assignee", "status",
                        "started", "deadline", "category", "events")


async def cases_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request)
    try:
        limit = _int_param(request, "limit", 100, 1, _MAX_QUERY_ROWS)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        sql = ("SELECT register, case_sign, kind, unit, officer, assignee, status, started, "
               "deadline, category, events FROM matters WHERE 1 = 1")
        args: list[object] = []
        for key, column in (("status", "status"), ("unit", "unit"), ("officer", "officer")):
            if key in request.query:
                sql += f" AND {column} = ?"
                args.append(request.query[key])
        if "deadline_before" in request.query:
            from ledger.eod.calendar import parse_date

            day = parse_date(request.query["deadline_before"], what="deadline_before")
            sql += " AND deadline IS NOT NULL AND deadline < ?"
            args.append(day.isoformat())
        sql += " ORDER BY started, chain LIMIT ? OFFSET ?"
        args += [limit, offset]
        rows = await service.run(lambda: tenant.office().store.query(sql, *args))
    except LedgerError as exc:
        return _ledger_error(exc)
    return web.json_response(
        {"cases": [dict(zip(_CASE_COLUMNS, row, strict=True)) for row in rows],
         "offset": offset, "limit": limit}
    )


def _course(office: Office, ref: str) -> dict[str, Any]:
    _, events, state = office.chain(ref)
    fmt = office.calendar.format_time
    course = []
    for event in events:
        proven = office.proven(event)
        record = event.record
        course.append({
            "seq": record.seq,
            "type": record.type.value,
            "position": record.position,
            "time": fmt(record.time),
            "proven_after": None if proven.after is None else fmt(proven.after),
            "proven_before": None if proven.before is None else fmt(proven.before),
            "what": describe(event, office.calendar),
            "hash": event.hash.hex(),
        })
    rows = office.store.query(
        "SELECT status, unit, officer, deadline FROM matters WHERE chain = ?",
        office.store.chain_of(ref),
    )
    status, unit, officer, deadline = rows[0] if rows else (None, None, None, None)
    return {"ref": ref, "case": state.case, "items": list(state.items), "status": status,
            "unit": unit, "officer": officer, "deadline": deadline, "events": course}


def _ref(request: web.Request) -> str:
    ref = request.query.get("ref")
    if not ref:
        raise MalformedError("query parameter 'ref' (register number or case sign) is required")
    return ref


async def case_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request)
    try:
        ref = _ref(request)
        result = await service.run(lambda: _course(tenant.office(), ref))
    except LedgerError as exc:
        return _ledger_error(exc)
    return web.json_response(result)


async def trail_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request)
    try:
        ref = _ref(request)
        bundle = await service.run(lambda: tenant.office().trail(ref))
    except LedgerError as exc:
        return _ledger_error(exc)
    return web.json_response(bundle, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def deadlines_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request)
    try:
        soon = _int_param(request, "soon", 7, 0, 365)
        include = request.query.get("all") in ("1", "true")
        unit, officer = request.query.get("unit"), request.query.get("officer")

        def run() -> list[dict[str, Any]]:
            office = tenant.office()
            return [d.to_json() for d in watch(
                office.store, office.calendar, office_terms(office.store), now=office.now(),
                soon=soon, unit=unit, officer=officer, include_ok=include)]

        found = await service.run(run)
    except LedgerError as exc:
        return _ledger_error(exc)
    return web.json_response({"deadlines": found})


async def registers_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request)
    which = request.match_info["which"]
    try:
        if which not in REGISTERS:
            raise NotFoundError(f"no register {which!r}")
        q = request.query

        def run() -> list[dict[str, Any]]:
            office = tenant.office()
            return register_rows(office.store, office.calendar, which, unit=q.get("unit"),
                                 since=q.get("since"), until=q.get("until"),
                                 stage=q.get("stage"))

        rows = await service.run(run)
    except LedgerError as exc:
        return _ledger_error(exc)
    if request.query.get("format") == "csv":
        return web.Response(text=register_csv(rows, which), content_type="text/csv",
                            charset="utf-8")
    return web.json_response({"register": which, "rows": rows})


async def import_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request, admin=True)
    try:
        body = await _json_body(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= 10_000:
            raise MalformedError("the body is {'items': [1-10000 matters]}")
        results = await service.run(lambda: import_matters(tenant.office(), items))
    except LedgerError as exc:
        return _ledger_error(exc)
    tenant.wake()
    return web.json_response({"imported": len(results), "matters": results}, status=201)


async def deadletters_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request, admin=True)
    rows = await service.run(lambda: tenant.dispatcher.dead_letters(request.query.get("sink")))
    return web.json_response({"deadletters": rows})


async def replay_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request, admin=True)
    try:
        body = await _json_body(request)
        sink = body.get("sink") if isinstance(body, dict) else None
        if not isinstance(sink, str) or sink not in tenant.dispatcher.sinks:
            raise NotFoundError(f"no webhook receiver {sink!r}")
    except LedgerError as exc:
        return _ledger_error(exc)
    delivered, failed = await tenant.dispatcher.replay(sink)
    return web.json_response({"delivered": delivered, "still_dead": failed})


async def mail_handler(request: web.Request) -> web.Response:
    service = _service(request)
    tenant, _ = service.tenant_for(request, admin=True)
    status = request.query.get("status")
    rows = await service.run(lambda: mail_rows(tenant.office().store, status))
    return web.json_response({"mail": rows})


# ---------------------------------------------------------------- the citizen's lookup


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def _lookup(
    request: web.Request, register: object, code: object
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON) of a lookup: 200 with the status, 404 with the one answer for
    every miss, 429 when rate limited; never anything about why it missed."""
    service = _service(request)
    tenant = service.tenants.get(request.match_info["office"])
    miss = {"error": {"code": "not_found", "message": NOT_FOUND}}
    if tenant is None:
        return 404, miss
    office_id = tenant.config.id
    if not tenant.limiter.allow(_client_address(request), time.monotonic()):
        service.metrics.lookups.labels(office_id, "limited").inc()
        return 429, {"error": {"code": "rate_limited",
                               "message": "too many lookups; try again in a minute"}}
    reg = register if isinstance(register, str) else ""
    given = code if isinstance(code, str) else ""

    def run() -> dict[str, Any] | None:
        office = tenant.office()
        try:
            return lookup(office.store, office.calendar, reg, given)
        except NotFoundError:
            return None

    found = await service.run(run)
    if found is None:
        service.metrics.lookups.labels(office_id, "miss").inc()
        return 404, miss
    service.metrics.lookups.labels(office_id, "found").inc()
    return 200, found


async def status_json_handler(request: web.Request) -> web.Response:
    try:
        body = await _json_body(request)
    except LedgerError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    status, result = await _lookup(request, body.get("register"), body.get("code"))
    return web.json_response(result, status=status)


_PAGE: Final = """<!doctype html>
<html lang="pl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Status sprawy / Status of a matter</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}
label{{display:block;margin-top:1em}}input{{font-size:1.1em;width:100%}}
table{{border-collapse:collapse;margin-top:1em}}td,th{{padding:.3em .6em;border-bottom:1px solid
#ccc;text-align:left}}</style></head><body>
<h1>Status sprawy <small>/ Status of a matter</small></h1>
<p>Podaj numer z poświadczenia rejestracji i kod dostępu. / Enter the number from the
registration receipt and the access code.</p>
<form method="post"><label>Numer / Number <input name="register" value="{register}"
required maxlength="64"></label><label>Kod dostępu / Access code <input name="code"
required maxlength="64" autocomplete="off"></label>
<p><button type="submit">Sprawdź / Check</button></p></form>{result}</body></html>
"""
_STAGE_PL: Final = {
    "registered": "zarejestrowana", "assigned": "przydzielona do komórki",
    "in-progress": "w toku", "decided": "załatwiona (decyzja)", "dispatched": "wysłana",
    "delivered": "doręczona", "closed": "zakończona", "archived": "w archiwum zakładowym",
    "transferred": "w archiwum państwowym", "destroyed": "wybrakowana",
}


def _page(register: str, status: int, result: dict[str, Any]) -> web.Response:
    if status == 200:
        rows = "".join(
            f"<tr><td>{html.escape(_STAGE_PL.get(m['stage'], m['stage']))} / "
            f"{html.escape(m['stage'])}</td><td>{html.escape(m['no_later_than'])}</td></tr>"
            for m in result["milestones"]
        )
        unit = f" ({html.escape(str(result['unit']))})" if result.get("unit") else ""
        body = (
            f"<h2>{html.escape(result['register'])}: "
            f"{html.escape(_STAGE_PL.get(result['stage'], result['stage']))}{unit}</h2>"
            "<table><tr><th>Etap / Stage</th><th>Nie później niż / No later than "
            "(dowiedzione przez rejestr / proven by the ledger)</th></tr>" + rows + "</table>"
        )
    else:
        body = f"<p><strong>{html.escape(result['error']['message'])}</strong></p>"
    return web.Response(text=_PAGE.format(register=html.escape(register), result=body),
                        content_type="text/html", charset="utf-8", status=status,
                        headers={"Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; form-action 'self'",
                                 "Cache-Control": "no-store"})


async def status_page_handler(request: web.Request) -> web.Response:
    if request.method == "GET":
        if request.match_info["office"] not in _service(request).tenants:
            return _page("", 404, {"error": {"message": NOT_FOUND}})
        return web.Response(text=_PAGE.format(register="", result=""),
                            content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})
    form = await request.post()
    register, code = form.get("register"), form.get("code")
    status, result = await _lookup(request, register, code)
    return _page(register if isinstance(register, str) else "", status, result)


# --------------------------------------------------------------------- metrics, health


async def metrics_handler(request: web.Request) -> web.Response:
    service = _service(request)
    for tenant in service.tenants.values():
        await asyncio.get_running_loop().run_in_executor(tenant.background,
                                                         tenant.refresh_metrics)
    return web.Response(body=generate_latest(service.metrics.registry),
                        content_type="text/plain", charset="utf-8")


async def health_handler(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "offices": sorted(_service(request).tenants)})


async def openapi_handler(request: web.Request) -> web.Response:
    from ledger.eod.openapi import document

    return web.json_response(document(sorted(_service(request).tenants)))


@web.middleware
async def _errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except LedgerError as exc:
        return _ledger_error(exc)


def build_app(config: ServiceConfig) -> web.Application:
    """The service's aiohttp application (its offices opened, background loops started with
    the app and stopped with it).

    Raises:
        ConfigError: an office's data dir holds no store or another office.
    """
    service = _Service(config)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors_middleware])
    app[_STATE] = service
    base = "/v1/offices/{office}"
    app.router.add_post(base + "/steps/{step}", step_handler)
    app.router.add_get(base + "/cases", cases_handler)
    app.router.add_get(base + "/case", case_handler)
    app.router.add_get(base + "/trail", trail_handler)
    app.router.add_get(base + "/deadlines", deadlines_handler)
    app.router.add_get(base + "/registers/{which}", registers_handler)
    app.router.add_post(base + "/import", import_handler)
    app.router.add_get(base + "/admin/deadletters", deadletters_handler)
    app.router.add_post(base + "/admin/deadletters/replay", replay_handler)
    app.router.add_get(base + "/admin/mail", mail_handler)
    app.router.add_post(base + "/status", status_json_handler)
    app.router.add_get("/status/{office}", status_page_handler)
    app.router.add_post("/status/{office}", status_page_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    app.router.add_get("/openapi.json", openapi_handler)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        for tenant in service.tenants.values():
            await tenant.start()
        yield
        for tenant in service.tenants.values():
            await tenant.stop()
        service.pool.shutdown(wait=True)
        for tenant in service.tenants.values():
            tenant.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def serve(config: ServiceConfig, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the service until SIGINT or SIGTERM.

    Raises:
        ConfigError: as :func:`build_app`, or the address is taken.
    """
    app = build_app(config)
    context = config.ssl_context()
    scheme = "https" if context is not None else "http"
    url = f"{scheme}://{config.host}:{config.port}"
    try:
        web.run_app(app, host=config.host, port=config.port, ssl_context=context,
                    print=(lambda _: ready(url)) if ready is not None else None,
                    access_log=None, handle_signals=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") \
            from None

