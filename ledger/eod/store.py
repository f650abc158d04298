"""The office's own store: events, receipts, certificates, counters and keys, under a data dir.

Nothing here ever goes to the ledger; the ledger only sees digests. Layout::

    DATA/office.db        SQLite (stdlib): the tables below
    DATA/keys/ca.key      the office CA signing key (mode 0600)
    DATA/keys/<pos>.key   each position's signing key (mode 0600)
    DATA/trust-policy     the ledger's trust policy, pinned when the office was set up

In a deployment each position's key lives with its holder (a token, the EOD system's key
store); keeping them under the data dir is the single-machine arrangement of this client.

Why SQLite: one file, transactions, and ``BEGIN IMMEDIATE`` serialises writers across processes.
The office holds the write lock from reading a chain's head until the new event is stored, so
two clerks acting on one case at the same moment cannot fork its chain; the anchoring call
happens inside that window (a few seconds at most with ``wait=true``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from ledger.eod import canonical
from ledger.eod.events import SignedEvent
from ledger.eod.pki import PositionCertificate, SigningIdentity, check_identifier
from ledger.errors import ConfigError, CorruptionError, NotFoundError, StorageError

__all__ = ["CA_KEY", "DB_FILE", "POLICY_FILE", "OfficeStore"]

DB_FILE: Final = "office.db"
POLICY_FILE: Final = "trust-policy"
KEYS_DIR: Final = "keys"
CA_KEY: Final = "ca.key"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (position TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    sign TEXT PRIMARY KEY, list_key TEXT NOT NULL UNIQUE, chain TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs (ref TEXT PRIMARY KEY, chain TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    chain TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL UNIQUE, body BLOB NOT NULL,
    PRIMARY KEY (chain, seq));
CREATE TABLE IF NOT EXISTS receipts (digest TEXT PRIMARY KEY, receipt TEXT NOT NULL);
"""


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never wider), failing if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:
        raise ConfigError(f"{path} already exists") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


class OfficeStore:
    """The SQLite store of one office (see the module docstring)."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self._conn = conn

    # ------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls, root: Path, *, office: str, name: str, ca: SigningIdentity, policy_text: str
    ) -> OfficeStore:
        """Set up a new data dir.

        Raises:
            ConfigError: it already holds an office, or cannot be written.
        """
        check_identifier(office, what="office id")
        if (root / DB_FILE).exists():
            raise ConfigError(f"{root} already holds an office store")
        try:
            (root / KEYS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create {root / KEYS_DIR}: {exc.strerror}") from None
        _write_private(root / KEYS_DIR / CA_KEY, ca.to_text())
        _write_private(root / POLICY_FILE, policy_text)
        store = cls._connect(root)
        with store.transaction():
            store._conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("office", office), ("name", name), ("format", "ledger-eod-store/v1")],
            )
        return store

    @classmethod
    def open(cls, root: Path) -> OfficeStore:
        """Open an existing data dir.

        Raises:
            ConfigError: no office store there.
        """
        if not (root / DB_FILE).is_file():
            raise ConfigError(f"{root} holds no office store; run 'ledger eod init' first")
        return cls._connect(root)

    @classmethod
    def _connect(cls, root: Path) -> OfficeStore:
        try:
            conn = sqlite3.connect(root / DB_FILE, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {root / DB_FILE}: {exc}") from None
        return cls(root, conn)

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot lock the office store: {exc}") from None
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot commit to the office store: {exc}") from None

    def _one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        try:
            row: tuple[object, ...] | None = self._conn.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"office store: {exc}") from None
        return row

    def _exec(self, sql: str, *args: object) -> None:
        try:
            self._conn.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"office store refused a write: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageError(f"office store: {exc}") from None

    # ----------------------------------------------------------------------- office data

    def meta(self, key: str) -> str:
        row = self._one("SELECT value FROM meta WHERE key = ?", key)
        if row is None:
            raise CorruptionError(f"office store lacks its {key!r}")
        return str(row[0])

    @property
    def office(self) -> str:
        return self.meta("office")

    def policy_text(self) -> str:
        try:
            return (self.root / POLICY_FILE).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {self.root / POLICY_FILE}: {exc.strerror}") from None

    def identity(self, name: str) -> SigningIdentity:
        """The CA (``ca``) or a position's signing key.

        Raises:
            NotFoundError: no key file for it.
        """
        path = self.root / KEYS_DIR / (CA_KEY if name == "ca" else f"{name}.key")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFoundError(f"no signing key for {name!r} in {path.parent}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        return SigningIdentity.from_text(text)

    def add_position(self, cert: PositionCertificate, identity: SigningIdentity) -> None:
        """Store a new position's certificate and key.

        Raises:
            ConfigError: the position exists already.
        """
        if self._one("SELECT 1 FROM certificates WHERE position = ?", cert.position):
            raise ConfigError(f"position {cert.position!r} exists already")
        _write_private(self.root / KEYS_DIR / f"{cert.position}.key", identity.to_text())
        with self.transaction():
            self._exec(
                "INSERT INTO certificates (position, body) VALUES (?, ?)",
                cert.position,
                canonical.encode(cert.to_json()),
            )

    def certificate(self, position: str) -> PositionCertificate:
        row = self._one("SELECT body FROM certificates WHERE position = ?", position)
        if row is None:
            raise NotFoundError(f"unknown position {position!r}; issue it with 'eod keys issue'")
        return PositionCertificate.from_json(canonical.decode(_bytes(row[0])))

    def certificates(self) -> list[PositionCertificate]:
        rows = self._conn.execute("SELECT body FROM certificates ORDER BY position").fetchall()
        return [PositionCertificate.from_json(canonical.decode(_bytes(r[0]))) for r in rows]

    # ------------------------------------------------------------------ numbers and refs

    def next_number(self, counter: str) -> int:
        """Increment and return a running number (call inside a transaction)."""
        row = self._one("SELECT value FROM counters WHERE name = ?", counter)
        value = (int(str(row[0])) if row else 0) + 1
        self._exec(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            counter,
            value,
        )
        return value

    def chain_of(self, ref: str) -> str:
        """The chain id of a register number or a case sign.

        Raises:
            NotFoundError: unknown reference.
        """
        row = self._one("SELECT chain FROM refs WHERE ref = ?", ref.strip())
        if row is None:
            raise NotFoundError(f"no item or case {ref!r} in this office")
        return str(row[0])

    def add_ref(self, ref: str, chain: str) -> None:
        if self._one("SELECT 1 FROM refs WHERE ref = ?", ref):
            raise StorageError(f"{ref!r} is already in use")
        self._exec("INSERT INTO refs (ref, chain) VALUES (?, ?)", ref, chain)

    def case_taken(self, list_key: str) -> str | None:
        row = self._one("SELECT sign FROM cases WHERE list_key = ?", list_key)
        return None if row is None else str(row[0])

    def add_case(self, sign: str, list_key: str, chain: str) -> None:
        self._exec(
            "INSERT INTO cases (sign, list_key, chain) VALUES (?, ?, ?)", sign, list_key, chain
        )

    def cases(self) -> list[tuple[str, str]]:
        rows = self._conn.execute("SELECT sign, chain FROM cases ORDER BY sign").fetchall()
        return [(str(s), str(c)) for s, c in rows]

    # --------------------------------------------------------------- events and receipts

    def events(self, chain: str) -> list[SignedEvent]:
        rows = self._conn.execute(
            "SELECT seq, body FROM events WHERE chain = ? ORDER BY seq", (chain,)
        ).fetchall()
        events: list[SignedEvent] = []
        for expected, (seq, body) in enumerate(rows):
            if seq != expected:
                raise CorruptionError(f"chain {chain} lacks event {expected}")
            events.append(SignedEvent.decode(_bytes(body)))
        return events

    def add_event(self, chain: str, event: SignedEvent) -> None:
        self._exec(
            "INSERT INTO events (chain, seq, hash, body) VALUES (?, ?, ?, ?)",
            chain,
            event.record.seq,
            event.hash.hex(),
            event.encode(),
        )

    def receipt(self, digest: bytes) -> str | None:
        row = self._one("SELECT receipt FROM receipts WHERE digest = ?", digest.hex())
        return None if row is None else str(row[0])

    def add_receipt(self, digest: bytes, receipt: str) -> None:
        self._exec(
            "INSERT INTO receipts (digest, receipt) VALUES (?, ?) ON CONFLICT(digest) DO NOTHING",
            digest.hex(),
            receipt,
        )


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise CorruptionError("office store holds a record that is not bytes")
