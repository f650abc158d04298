"""The configuration of one node (``node.toml``): parsing, validation, writing.

The node config is private to one operator: where to listen, the peers' URLs, the data
directory, the key file, the hashes of the client tokens, batch limits and timeouts. The
genesis it names (shared by every institution) is :mod:`ledger.genesis`.

Node config (TOML)
------------------
::

    [node]
    name = "validator-1"                 # this node's validator name (in the genesis, or
                                         # added later by a validator-set change)
    listen_host = "127.0.0.1"
    listen_port = 7001                   # 0 = any free port (tests)
    public_url = "http://127.0.0.1:7001"
    data_dir = "data/validator-1"        # relative paths are relative to this file's directory
    key_file = "keys/validator-1.key"
    genesis = "genesis.json"
    log_level = "info"                   # debug | info | warning | error
    peer_listen_port = 7011              # optional: a second listener for peer traffic only
    peer_listen_host = "0.0.0.0"         # optional, default listen_host

    [peers]                              # validator name -> base URL; a genesis validator not
    "validator-2" = "http://127.0.0.1:7002"   # listed here is reached at its genesis "url";
                                         # one added by a change must be listed

    [[clients]]                          # bearer tokens allowed to anchor, stored hashed
    name = "eod-backend"
    token_sha256 = "<64 hex digits: SHA-256 of the UTF-8 token>"
    revoked = false                      # optional; a revoked token gets 403
    admin = false                        # optional; may submit validator-set changes

    [batch]                              # optional, defaults shown
    max_batch_digests = 10000
    batch_window_ms = 25
    gossip_window_ms = 5                 # anchors gossiped to a peer leave together, at most
                                         # one envelope of them per window (0: at once)
    max_pending_digests = 0              # clients get 503 while more are pending (0: four
                                         # blocks' worth, at least 20,000)

    [timeouts]                           # optional, defaults shown (milliseconds)
    propose_ms = 3000
    propose_delta_ms = 500
    prevote_ms = 1000
    prevote_delta_ms = 500
    precommit_ms = 1000
    precommit_delta_ms = 500
    commit_ms = 0
    peer_request_ms = 2000
    anchor_wait_ms = 30000

    [limits]                             # optional, defaults shown: what one node accepts
    max_connections = 4096               # open connections on the API listener at most
    max_connections_per_address = 64     # of them from one client address (proxies exempt)
    max_requests_per_address = 64        # requests in progress from one client address
    peer_max_connections = 256           # open connections on the peer listener at most
    header_timeout_ms = 10000            # a request head must arrive within this
    body_timeout_ms = 30000              # a request body must arrive within this
    idle_timeout_ms = 15000              # a connection with no request is closed after this
    listen_backlog = 1024                # the kernel's queue of connections not accepted yet
    trusted_proxies = []                 # addresses/networks whose X-Forwarded-For is believed

    [storage]                            # optional, defaults shown
    scrub_units_per_second = 1000        # background re-verification of the whole store
                                         # (tiles, index chunks, blocks, checkpoints...);
                                         # 0 turns the scrub off

    [tls]                                # optional: the node serves HTTPS and verifies peers
    cert_file = "tls/validator-1.crt"    # PEM: certificate (chain); also the client certificate
    key_file = "tls/validator-1.key"     #   it presents to its peers
    ca_file = "tls/ca.crt"               # CA bundle peers' certificates must chain to
                                         #   (default: the system's trust store)
    require_peer_certificate = true      # /peer/ only over a client certificate from ca_file

    [tls.pins]                           # optional: validator name -> SHA-256 (hex) of the DER
    "validator-2" = ["<64 hex digits>"]  #   of its certificate; several while it is rotated

    [[witnesses]]                        # optional: outside C2SP tlog-witnesses this node
    name = "audit"                       #   pushes every new checkpoint to (docs/witness.md);
    url = "https://witness.example/"     #   a label for metrics and logs; the submission
    vkey = "audit.example/w1+1a2b3c4d+BL..."  # prefix; its verifier key (type 0x04)
    timeout_ms = 5000                    # optional: one add-checkpoint request at most

Unknown tables or keys are errors, not silently ignored: a misspelt ``max_batch_digest`` must not
leave the default in force unnoticed. Every error is a :class:`~ledger.errors.ConfigError` that
names the file and the field.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from ledger.consensus.core import TimeoutConfig
from ledger.crypto import check_key_name
from ledger.errors import ConfigError, MalformedError
from ledger.genesis import (
    Genesis,
    check_url,
    load_genesis,
    read_small_file,
)

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_GOSSIP_WINDOW_MS",
    "DEFAULT_MAX_BATCH_DIGESTS",
    "LOCAL_TIMEOUTS",
    "BatchLimits",
    "ClientToken",
    "Limits",
    "NodeConfig",
    "Peer",
    "StorageSettings",
    "Timeouts",
    "TlsSettings",
    "WitnessEndpoint",
    "format_node_config",
    "hash_token",
    "load_node_config",
    "parse_node_config",
    "write_text_atomic",
]

DEFAULT_MAX_BATCH_DIGESTS: Final = 10_000
DEFAULT_BATCH_WINDOW_MS: Final = 25
DEFAULT_GOSSIP_WINDOW_MS: Final = 5

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")


# ------------------------------------------------------------------------------ helpers


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically with ``mode`` (:func:`ledger.fileio.write_atomic`).

    Raises:
        ConfigError: the file cannot be written.
    """
    from ledger.fileio import FileWriteError, write_atomic

    try:
        write_atomic(path, text, mode=mode)
    except FileWriteError as exc:
        raise ConfigError(exc.diagnostics()) from None


def hash_token(token: str) -> str:
    """The SHA-256 (hex) of a client bearer token, as stored in the node config.

    Tokens are random 256-bit strings (``secrets.token_urlsafe(32)``), so a plain hash is enough:
    there is nothing to brute-force that a salt or a slow hash would protect.
    """
    # surrogatepass: a header decoded with surrogate escapes must give a hash, not an exception.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------ node config


@dataclass(frozen=True, kw_only=True)
class Peer:
    """Another validator's node: its validator name and base URL (no trailing slash)."""

    name: str
    url: str


@dataclass(frozen=True, kw_only=True)
class ClientToken:
    """A client allowed to anchor: a label, the SHA-256 (hex) of its token, revoked or not.
    ``admin`` tokens (operators) may also submit validator-set changes
    (``POST /v1/admin/validator-changes``)."""

    name: str
    token_sha256: str
    revoked: bool = False
    admin: bool = False


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    """How the mempool cuts blocks: at most ``max_batch_digests`` digests per block, and a
    proposer waits at most ``batch_window_ms`` for a batch to fill. Anchors a node gossips to a
    peer wait at most ``gossip_window_ms`` after its previous envelope to that peer, so that
    under load they travel in one envelope per window, not one per request (consensus traffic
    never waits). While more than ``max_pending_digests`` anchors are pending (0: four blocks'
    worth, at least 20,000), clients' new anchors are refused with 503 and ``Retry-After``."""

    max_batch_digests: int = DEFAULT_MAX_BATCH_DIGESTS
    batch_window_ms: int = DEFAULT_BATCH_WINDOW_MS
    gossip_window_ms: int = DEFAULT_GOSSIP_WINDOW_MS
    max_pending_digests: int = 0


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Timeouts in milliseconds: the consensus round timeouts (``base + round * delta``, see
    :class:`ledger.consensus.TimeoutConfig`), a peer HTTP request, and the longest an
    ``?wait=true`` anchor request waits for its receipts."""

    propose_ms: int = 3000
    propose_delta_ms: int = 500
    prevote_ms: int = 1000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1000
    precommit_delta_ms: int = 500
    commit_ms: int = 0
    peer_request_ms: int = 2000
    anchor_wait_ms: int = 30_000

    def consensus(self) -> TimeoutConfig:
        """These timeouts as a :class:`ledger.consensus.TimeoutConfig`."""
        return TimeoutConfig(
            propose=self.propose_ms,
            propose_delta=self.propose_delta_ms,
            prevote=self.prevote_ms,
            prevote_delta=self.prevote_delta_ms,
            precommit=self.precommit_ms,
            precommit_delta=self.precommit_delta_ms,
            commit=self.commit_ms,
        )


#: Consensus timeouts for validators on one machine or one LAN (the devnet, the tests, the
#: simulator and the chaos runs): a lost round costs under a second. The defaults of
#: :class:`Timeouts` are for institutions across a WAN (docs/operators.md, "Timeouts").
LOCAL_TIMEOUTS: Final = Timeouts(
    propose_ms=800, propose_delta_ms=200, prevote_ms=400, prevote_delta_ms=200,
    precommit_ms=400, precommit_delta_ms=200,
)


#: ``[limits]`` defaults (docs/operators.md, "Limits and timeouts").
DEFAULT_MAX_CONNECTIONS: Final = 4096
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 64
DEFAULT_MAX_REQUESTS_PER_ADDRESS: Final = 64
DEFAULT_PEER_MAX_CONNECTIONS: Final = 256
DEFAULT_HEADER_TIMEOUT_MS: Final = 10_000
DEFAULT_BODY_TIMEOUT_MS: Final = 30_000
DEFAULT_IDLE_TIMEOUT_MS: Final = 15_000
DEFAULT_LISTEN_BACKLOG: Final = 1024


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one node accepts from the network (``[limits]``; docs/operators.md).

    ``max_connections`` caps the open connections of the API listener (the peer listener has
    ``peer_max_connections``); at the cap a new connection takes the place of the connection
    that has been idle longest (one with no request in progress), or is refused when every
    connection is busy. ``max_connections_per_address`` caps one client address (a trusted
    proxy is exempt: it carries many clients), ``max_requests_per_address`` the requests in
    progress for one client address (behind a trusted proxy, the address its
    ``X-Forwarded-For`` names). A request head must arrive within ``header_timeout_ms`` of its
    first byte (or of the connection's start), its body within ``body_timeout_ms``, and a
    connection without a request in progress is closed after ``idle_timeout_ms``.
    ``trusted_proxies`` holds addresses or networks (``10.0.0.0/8``).
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    max_requests_per_address: int = DEFAULT_MAX_REQUESTS_PER_ADDRESS
    peer_max_connections: int = DEFAULT_PEER_MAX_CONNECTIONS
    header_timeout_ms: int = DEFAULT_HEADER_TIMEOUT_MS
    body_timeout_ms: int = DEFAULT_BODY_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    listen_backlog: int = DEFAULT_LISTEN_BACKLOG
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.trusted_proxies:
            _proxy_network(entry, where="limits.trusted_proxies")

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed."""
        return tuple(_proxy_network(e, where="limits.trusted_proxies")
                     for e in self.trusted_proxies)


#: ``[storage]`` default: stored values re-verified per second by the background scrub.
DEFAULT_SCRUB_UNITS_PER_SECOND: Final = 1000


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    """How the node looks after its store (``[storage]``; docs/operators.md, "Damaged store").

    ``scrub_units_per_second``: the background scrub re-verifies this many stored values per
    second (a tile of 16 tree nodes, an index entry against its leaf, a filter block, a block,
    a checkpoint); a full pass over a store of ``n`` anchors is about ``1.1 n`` units plus its
    blocks and checkpoints. ``0`` turns the scrub off (reads still verify every value they
    use).
    """

    scrub_units_per_second: int = DEFAULT_SCRUB_UNITS_PER_SECOND


def _proxy_network(entry: str, *, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {entry!r} is not an IP address or network") from None


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """The node's own TLS (``[tls]``; docs/operators.md, "TLS").

    The node serves HTTPS with ``cert_file``/``key_file`` (PEM; the certificate file may hold
    the chain) and presents the same certificate as its client certificate to its peers.
    Peers' certificates must chain to ``ca_file`` (``None``: the system's trust store) and
    name the host of the peer's URL; ``pins`` further ties a validator to the SHA-256 of its
    certificate's DER (any of the listed ones: two while a certificate is rotated). With
    ``require_peer_certificate``, ``/peer/`` answers 403 on a connection without a client
    certificate that chains to ``ca_file``.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_peer_certificate: bool = True
    pins: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def pins_for(self, name: str) -> tuple[str, ...]:
        """The pinned certificate fingerprints (lowercase hex) of validator ``name``."""
        return dict(self.pins).get(name, ())


#: ``timeout_ms`` of a ``[[witnesses]]`` entry by default: one ``add-checkpoint`` request.
DEFAULT_WITNESS_TIMEOUT_MS: Final = 5000


@dataclass(frozen=True, kw_only=True)
class WitnessEndpoint:
    """An outside C2SP tlog-witness (``[[witnesses]]``; docs/witness.md): ``name`` labels it
    in metrics and logs (the name the trust policy gives it, by convention), ``url`` is its
    submission prefix (``<url>/add-checkpoint``), ``vkey`` its verifier key (type 0x04,
    c2sp.org/tlog-cosignature), ``timeout_ms`` the longest one request may take.

    Raises (on construction):
        ConfigError: ``vkey`` is not a verifier key of type 0x04.
    """

    name: str
    url: str
    vkey: str
    timeout_ms: int = DEFAULT_WITNESS_TIMEOUT_MS

    def __post_init__(self) -> None:
        from ledger.crypto import SIG_TYPE_COSIGNATURE_V1
        from ledger.note import Verifier

        try:
            verifier = Verifier.from_vkey(self.vkey)
        except MalformedError as exc:
            raise ConfigError(f"witness {self.name!r}: vkey: {exc.diagnostics()}") from None
        if verifier.sig_type != SIG_TYPE_COSIGNATURE_V1:
            raise ConfigError(f"witness {self.name!r}: vkey must be a cosignature key "
                              "(type 0x04), as `ledger witness key` prints")


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """One node's configuration (see the module docstring for the TOML file).

    Paths are resolved against the directory of the config file when loaded, and
    :attr:`genesis` is the parsed genesis file. ``peers`` holds every *other* validator of the
    genesis, in genesis order, then the validators added to the set later (by a validator-set
    change), in the order the file lists them. ``name`` need not be in the genesis: the node of
    an institution that joins by a change (``docs/operators.md``, "A new institution joins").
    ``listen_port`` 0 lets the OS pick a free port (tests). ``source`` is the file it was
    loaded from (``None`` when built in code).

    Raises (on construction):
        ConfigError: ``peers`` does not start with exactly the other validators of the genesis,
            names a peer twice, or names this node.
    """

    name: str
    listen_host: str
    listen_port: int
    public_url: str
    data_dir: Path
    key_file: Path
    genesis_file: Path
    genesis: Genesis
    peers: tuple[Peer, ...] = ()
    clients: tuple[ClientToken, ...] = ()
    batch: BatchLimits = field(default_factory=BatchLimits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    log_level: str = "info"
    peer_listen_host: str | None = None
    peer_listen_port: int | None = None
    limits: Limits = field(default_factory=Limits)
    tls: TlsSettings | None = None
    witnesses: tuple[WitnessEndpoint, ...] = ()
    source: Path | None = None
    storage: StorageSettings = field(default_factory=StorageSettings)

    def __post_init__(self) -> None:
        others = [v.name for v in self.genesis.validators if v.name != self.name]
        names = [p.name for p in self.peers]
        if names[:len(others)] != others:
            raise ConfigError(
                f"peers must start with the other validators of the genesis in order: "
                f"{', '.join(others)}")
        if self.name in names or len(set(names)) != len(names):
            raise ConfigError("peers must name each other validator once, and not this node")
        if self.tls is not None:
            unknown = sorted(set(dict(self.tls.pins)) - set(names))
            if unknown:
                raise ConfigError(f"tls.pins: {unknown[0]!r} is not a peer")
        labels = [w.name for w in self.witnesses]
        if len(set(labels)) != len(labels):
            raise ConfigError("witnesses: two entries have the same name")

    def consensus_timeouts(self) -> TimeoutConfig:
        """The consensus timeouts of this node: ``[timeouts]``, with the ``COMMIT`` timeout
        (the pause between heights) at least the batch window, which is how long a proposer
        lets a batch fill."""
        timeouts = self.timeouts.consensus()
        return replace(timeouts, commit=max(timeouts.commit, self.batch.batch_window_ms))

    def peer_urls(self) -> dict[str, str]:
        """Peers as a mapping from validator name to base URL."""
        return {p.name: p.url for p in self.peers}

    def client_for_token(self, token: str) -> ClientToken | None:
        """The client whose token is ``token`` (revoked or not), or ``None`` if unknown.

        The caller answers 401 for ``None`` and 403 for a revoked client. The comparison runs
        over every entry in constant time per entry, so timing does not reveal a prefix match.
        """
        digest = hash_token(token)
        found: ClientToken | None = None
        for client in self.clients:
            if hmac.compare_digest(digest, client.token_sha256):
                found = client
        return found


class _Table:
    """A TOML table being read: typed getters that name the file and field in errors, and a
    check that no unknown key was given."""

    def __init__(self, data: Mapping[str, Any], where: str, table: str) -> None:
        self.data = data
        self.where = where
        self.table = table
        self.used: set[str] = set()

    def field_name(self, key: str) -> str:
        return f"{self.table}.{key}" if self.table else key

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.field_name(key)} {message}")

    def get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is missing")
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def integer(self, key: str, default: int | None, *, low: int, high: int) -> int:
        value = self.get(key)
        if value is None:
            if default is None:
                raise self.fail(key, "is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known setting")


def _subtable(root: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = root.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _parse_peers(raw: Mapping[str, Any], *, name: str, genesis: Genesis,
                 where: str) -> list[Peer]:
    """``[peers]``: every other genesis validator (its URL from here or from the genesis),
    then the validators that joined by a change, as listed (they need a URL here)."""
    explicit: dict[str, str] = {}
    for peer_name, url in raw.items():
        key = f"peers.{_toml_str(peer_name)}"
        if not isinstance(url, str):
            raise ConfigError(f"{where}: {key} must be a URL string")
        if peer_name == name:
            raise ConfigError(f"{where}: {key} is this node itself")
        try:
            check_key_name(peer_name, what="validator name")
        except MalformedError as exc:
            raise ConfigError(f"{where}: {key}: {exc.diagnostics()}") from None
        explicit[peer_name] = check_url(url, where=f"{where}: {key}")
    peers: list[Peer] = []
    for v in genesis.validators:
        if v.name == name:
            continue
        url = explicit.pop(v.name, v.url)
        if url is None:
            raise ConfigError(
                f"{where}: no URL for validator {v.name!r}: add it under [peers] "
                "(the genesis has none)"
            )
        peers.append(Peer(name=v.name, url=url))
    # What is left: validators added by a change (not in the genesis), in the file's order.
    peers += [Peer(name=n, url=u) for n, u in explicit.items()]
    return peers


def parse_node_config(text: str, *, base_dir: Path, source: Path | None = None) -> NodeConfig:
    """Parse node config TOML; relative paths are resolved against ``base_dir``.

    The genesis file named in ``node.genesis`` is read too (:func:`load_genesis`). A validator
    missing from ``[peers]`` is reached at its genesis ``url``; ``[peers]`` overrides it.

    Raises:
        ConfigError: invalid TOML, a missing, unknown, mistyped or out-of-range field, a bad URL,
            a duplicate token, an unreadable or invalid genesis, a node name or peer that is not
            a validator of the genesis, or another validator with no URL.
    """
    where = f"config file {source}" if source is not None else "config"
    try:
        root = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML ({exc})") from None
    unknown = sorted(set(root) - {"node", "peers", "clients", "batch", "timeouts", "limits",
                                  "storage", "tls", "witnesses"})
    if unknown:
        raise ConfigError(f"{where}: unknown table or key {unknown[0]!r}")

    node = _Table(_subtable(root, "node", where), where, "node")
    name = node.string("name")
    try:
        check_key_name(name, what="validator name")
    except MalformedError as exc:
        raise node.fail("name", exc.diagnostics()) from None
    listen_host = node.string("listen_host", "127.0.0.1")
    listen_port = node.integer("listen_port", None, low=0, high=65535)
    public_url = check_url(
        node.string("public_url", f"http://{listen_host}:{listen_port}"),
        where=f"{where}: node.public_url",
    )
    log_level = node.string("log_level", "info")
    if log_level not in _LOG_LEVELS:
        raise node.fail("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    peer_port_raw = node.get("peer_listen_port")
    peer_listen_port = None if peer_port_raw is None else node.integer(
        "peer_listen_port", None, low=0, high=65535)
    peer_host_raw = node.get("peer_listen_host")
    peer_listen_host = None if peer_host_raw is None else node.string("peer_listen_host")
    if peer_listen_host is not None and peer_listen_port is None:
        raise node.fail("peer_listen_host", "needs peer_listen_port")

    def path(key: str) -> Path:
        value = Path(node.string(key))
        return Path(os.path.normpath(value if value.is_absolute() else base_dir / value))

    data_dir, key_file, genesis_file = path("data_dir"), path("key_file"), path("genesis")
    node.done()
    genesis = load_genesis(genesis_file)
    peers = _parse_peers(_subtable(root, "peers", where), name=name, genesis=genesis,
                         where=where)

    clients_raw = root.get("clients", [])
    if not isinstance(clients_raw, list):
        raise ConfigError(f"{where}: clients must be an array of tables ([[clients]])")
    clients: list[ClientToken] = []
    for i, entry in enumerate(clients_raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: clients[{i}] must be a table")
        table = _Table(entry, where, f"clients[{i}]")
        token_hash = table.string("token_sha256")
        if not _HEX64.fullmatch(token_hash):
            raise table.fail("token_sha256", "must be 64 lowercase hex digits (SHA-256)")
        if any(c.token_sha256 == token_hash for c in clients):
            raise table.fail("token_sha256", "duplicates another client's token")
        clients.append(
            ClientToken(
                name=table.string("name", f"client-{i}"),
                token_sha256=token_hash,
                revoked=table.boolean("revoked", False),
                admin=table.boolean("admin", False),
            )
        )
        table.done()

    batch_t = _Table(_subtable(root, "batch", where), where, "batch")
    batch = BatchLimits(
        max_batch_digests=batch_t.integer(
            "max_batch_digests", DEFAULT_MAX_BATCH_DIGESTS, low=1, high=1_000_000
        ),
        batch_window_ms=batch_t.integer(
            "batch_window_ms", DEFAULT_BATCH_WINDOW_MS, low=0, high=60_000
        ),
        gossip_window_ms=batch_t.integer(
            "gossip_window_ms", DEFAULT_GOSSIP_WINDOW_MS, low=0, high=10_000
        ),
        max_pending_digests=batch_t.integer("max_pending_digests", 0, low=0, high=1_000_000),
    )
    batch_t.done()

    t = _Table(_subtable(root, "timeouts", where), where, "timeouts")
    d = Timeouts()
    hour = 3_600_000
    timeouts = Timeouts(
        propose_ms=t.integer("propose_ms", d.propose_ms, low=1, high=hour),
        propose_delta_ms=t.integer("propose_delta_ms", d.propose_delta_ms, low=0, high=hour),
        prevote_ms=t.integer("prevote_ms", d.prevote_ms, low=1, high=hour),
        prevote_delta_ms=t.integer("prevote_delta_ms", d.prevote_delta_ms, low=0, high=hour),
        precommit_ms=t.integer("precommit_ms", d.precommit_ms, low=1, high=hour),
        precommit_delta_ms=t.integer("precommit_delta_ms", d.precommit_delta_ms, low=0, high=hour),
        commit_ms=t.integer("commit_ms", d.commit_ms, low=0, high=hour),
        peer_request_ms=t.integer("peer_request_ms", d.peer_request_ms, low=1, high=hour),
        anchor_wait_ms=t.integer("anchor_wait_ms", d.anchor_wait_ms, low=1, high=hour),
    )
    t.done()

    lt = _Table(_subtable(root, "limits", where), where, "limits")
    dl = Limits()
    limits = Limits(
        max_connections=lt.integer("max_connections", dl.max_connections, low=1,
                                   high=1_000_000),
        max_connections_per_address=lt.integer(
            "max_connections_per_address", dl.max_connections_per_address, low=1,
            high=1_000_000),
        max_requests_per_address=lt.integer(
            "max_requests_per_address", dl.max_requests_per_address, low=1, high=1_000_000),
        peer_max_connections=lt.integer("peer_max_connections", dl.peer_max_connections,
                                        low=1, high=1_000_000),
        header_timeout_ms=lt.integer("header_timeout_ms", dl.header_timeout_ms, low=1,
                                     high=hour),
        body_timeout_ms=lt.integer("body_timeout_ms", dl.body_timeout_ms, low=1, high=hour),
        idle_timeout_ms=lt.integer("idle_timeout_ms", dl.idle_timeout_ms, low=1, high=hour),
        listen_backlog=lt.integer("listen_backlog", dl.listen_backlog, low=1, high=65535),
        trusted_proxies=tuple(
            str(_proxy_network(e, where=f"{where}: limits.trusted_proxies"))
            for e in lt.strings("trusted_proxies")),
    )
    lt.done()

    st = _Table(_subtable(root, "storage", where), where, "storage")
    storage = StorageSettings(scrub_units_per_second=st.integer(
        "scrub_units_per_second", DEFAULT_SCRUB_UNITS_PER_SECOND, low=0, high=10_000_000))
    st.done()

    tls = _parse_tls(root, where, base_dir)
    witnesses = _parse_witnesses(root, where)

    return NodeConfig(
        name=name,
        listen_host=listen_host,
        listen_port=listen_port,
        public_url=public_url,
        data_dir=data_dir,
        key_file=key_file,
        genesis_file=genesis_file,
        genesis=genesis,
        peers=tuple(peers),
        clients=tuple(clients),
        batch=batch,
        timeouts=timeouts,
        log_level=log_level,
        peer_listen_host=peer_listen_host,
        peer_listen_port=peer_listen_port,
        limits=limits,
        tls=tls,
        witnesses=witnesses,
        source=source,
        storage=storage,
    )


def _parse_witnesses(root: Mapping[str, Any], where: str) -> tuple[WitnessEndpoint, ...]:
    raw = root.get("witnesses", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: witnesses must be an array of tables ([[witnesses]])")
    out: list[WitnessEndpoint] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: witnesses[{i}] must be a table")
        table = _Table(entry, where, f"witnesses[{i}]")
        name = table.string("name")
        try:
            check_key_name(name, what="witness name")
        except MalformedError as exc:
            raise table.fail("name", exc.diagnostics()) from None
        if any(w.name == name for w in out):
            raise table.fail("name", "duplicates another witness's name")
        url = check_url(table.string("url"), where=f"{where}: witnesses[{i}].url")
        vkey = table.string("vkey")
        timeout_ms = table.integer("timeout_ms", DEFAULT_WITNESS_TIMEOUT_MS, low=1,
                                   high=600_000)
        table.done()
        try:
            out.append(WitnessEndpoint(name=name, url=url, vkey=vkey, timeout_ms=timeout_ms))
        except ConfigError as exc:
            raise ConfigError(f"{where}: witnesses[{i}]: {exc.diagnostics()}") from None
    return tuple(out)


def _parse_tls(root: Mapping[str, Any], where: str, base_dir: Path) -> TlsSettings | None:
    raw = root.get("tls")
    if raw is None:
        return None
    table = _Table(_subtable(root, "tls", where), where, "tls")

    def path(key: str, required: bool) -> Path | None:
        if table.get(key) is None and not required:
            return None
        value = Path(table.string(key))
        return Path(os.path.normpath(value if value.is_absolute() else base_dir / value))

    cert_file, key_file = path("cert_file", True), path("key_file", True)
    assert cert_file is not None and key_file is not None
    ca_file = path("ca_file", False)
    require = table.boolean("require_peer_certificate", True)
    pins_raw = table.get("pins")
    pins: list[tuple[str, tuple[str, ...]]] = []
    if pins_raw is not None:
        if not isinstance(pins_raw, dict):
            raise table.fail("pins", "must be a table (validator name = [fingerprints])")
        for peer, values in pins_raw.items():
            key = f"tls.pins.{_toml_str(peer)}"
            if isinstance(values, str):
                values = [values]
            if (not isinstance(values, list) or not values
                    or not all(isinstance(v, str) for v in values)):
                raise ConfigError(f"{where}: {key} must be a list of SHA-256 fingerprints")
            prints = tuple(v.replace(":", "").lower() for v in values)
            if not all(_HEX64.fullmatch(v) for v in prints):
                raise ConfigError(f"{where}: {key} must hold SHA-256 fingerprints "
                                  "(64 hex digits, colons allowed)")
            pins.append((peer, prints))
    table.done()
    return TlsSettings(cert_file=cert_file, key_file=key_file, ca_file=ca_file,
                       require_peer_certificate=require, pins=tuple(pins))


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read a node config file; relative paths in it are relative to its directory.

    Raises:
        ConfigError: the file is unreadable, not UTF-8, or as :func:`parse_node_config`.
    """
    target = Path(path)
    data = read_small_file(target, "config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {target}: not UTF-8 text") from None
    return parse_node_config(text, base_dir=target.parent.absolute(), source=target)


# ---- writing TOML
#
# The node config has a fixed, flat shape (strings, integers, booleans, one array of tables), so
# a small writer is safer than a dependency: every string is a TOML basic string with every
# character TOML forbids escaped, and tests read the output back with tomllib.


def _toml_str(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            if 0xD800 <= code <= 0xDFFF:
                raise ConfigError("a config string holds a lone surrogate")
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _path_text(path: Path, relative_to: Path | None) -> str:
    # Relative (with "..") when both live under one directory other than the root, so that
    # a devnet directory can be moved as a whole; absolute otherwise.
    if relative_to is not None and path.is_absolute() and relative_to.is_absolute():
        common = os.path.commonpath([path, relative_to])
        if common != os.path.sep:
            return os.path.relpath(path, relative_to)
    return str(path)


def format_node_config(config: NodeConfig, *, relative_to: Path | None = None) -> str:
    """The TOML text of ``config``; paths under ``relative_to`` are written relative to it (pass
    the directory the file will live in, so that the directory can be moved as a whole).

    Raises:
        ConfigError: a string holds a lone surrogate (not representable in TOML).
    """
    lines = ["# ledger node configuration (see ledger/config.py for every field)", "[node]"]
    node_fields: list[tuple[str, object]] = [
        ("name", config.name),
        ("listen_host", config.listen_host),
        ("listen_port", config.listen_port),
        ("public_url", config.public_url),
        ("data_dir", _path_text(config.data_dir, relative_to)),
        ("key_file", _path_text(config.key_file, relative_to)),
        ("genesis", _path_text(config.genesis_file, relative_to)),
        ("log_level", config.log_level),
    ]
    if config.peer_listen_port is not None:
        node_fields.append(("peer_listen_port", config.peer_listen_port))
    if config.peer_listen_host is not None:
        node_fields.append(("peer_listen_host", config.peer_listen_host))
    lines += [f"{key} = {_toml_value(value)}" for key, value in node_fields]
    lines += ["", "[peers]"]
    lines += [f"{_toml_str(p.name)} = {_toml_str(p.url)}" for p in config.peers]
    for client in config.clients:
        lines += [
            "",
            "[[clients]]",
            f"name = {_toml_str(client.name)}",
            f"token_sha256 = {_toml_str(client.token_sha256)}",
            f"revoked = {_toml_value(client.revoked)}",
            f"admin = {_toml_value(client.admin)}",
        ]
    lines += ["", "[batch]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in vars(config.batch).items()]
    lines += ["", "[timeouts]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in vars(config.timeouts).items()]
    lines += ["", "[limits]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in vars(config.limits).items()]
    lines += ["", "[storage]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in vars(config.storage).items()]
    tls = config.tls
    if tls is not None:
        lines += ["", "[tls]",
                  f"cert_file = {_toml_str(_path_text(tls.cert_file, relative_to))}",
                  f"key_file = {_toml_str(_path_text(tls.key_file, relative_to))}"]
        if tls.ca_file is not None:
            lines.append(f"ca_file = {_toml_str(_path_text(tls.ca_file, relative_to))}")
        lines.append(f"require_peer_certificate = {_toml_value(tls.require_peer_certificate)}")
        if tls.pins:
            lines += ["", "[tls.pins]"]
            lines += [f"{_toml_str(peer)} = {_toml_value(prints)}" for peer, prints in tls.pins]
    for witness in config.witnesses:
        lines += ["", "[[witnesses]]",
                  f"name = {_toml_str(witness.name)}",
                  f"url = {_toml_str(witness.url)}",
                  f"vkey = {_toml_str(witness.vkey)}",
                  f"timeout_ms = {_toml_value(witness.timeout_ms)}"]
    return "\n".join(lines) + "\n"
