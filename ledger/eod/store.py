"""The office's own store: events, receipts, certificates, counters and keys, under a data dir.

Nothing here ever goes to the ledger; the ledger only sees digests. Layout::

    DATA/office.db        SQLite (stdlib): the tables below; the office record (id, name, time
                          zone, signed), the acceptance paths and the JRWA dictionary in ``meta``
    DATA/keys/ca.key      the office CA signing key (mode 0600)
    DATA/keys/<pos>.key   each position's signing key (mode 0600)
    DATA/trust-policy     the ledger's trust policy, pinned when the office was set up

``backup`` takes a consistent copy (the SQLite online backup, with the write lock held so no
key or event is added meanwhile); ``restore`` puts one into an empty data dir.

In a deployment each position's key lives with its holder (a token, the EOD system's key
store); keeping them under the data dir is the single-machine arrangement of this client.

Why SQLite: one file, transactions, and ``BEGIN IMMEDIATE`` serialises writers across processes.
Writes serialise per case, not per office: a step reads its chain, takes the write lock only
to draw its register number and check its rules, anchors with no lock held, then commits in a
second short transaction that checks the chain's head is still the one it built on
(:meth:`chain_length`); a step that lost that race is built again on the new head
(ledger.eod.office). One slow anchoring call never stalls the other clerks.

Besides the trail itself the store keeps what the office's queries read without folding
chains, each row written in the same transaction as the event it follows from: ``matters``
(one row per chain: status, unit, officer, deadline, category), ``milestones`` (the proven
date of each stage the citizen's status lookup shows), ``access`` (the SHA-256 of each
registration's access code), ``documents`` (attachments by kind, for the registers),
``pauses`` (periods that do not count towards a deadline, KPA art. 35 § 5), ``outbox``
(every committed event, in order, for webhooks and notifications), their ``cursors`` and
``deadletters``, the ``mail`` queue, and the progress of bulk ``imports``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ledger.eod import canonical
from ledger.eod.events import SignedEvent
from ledger.eod.pki import PositionCertificate, SigningIdentity
from ledger.eod.records import OfficeRecord
from ledger.errors import ConfigError, CorruptionError, NotFoundError, StorageError

__all__ = ["CA_KEY", "DB_FILE", "POLICY_FILE", "STORE_FORMAT", "OfficeStore"]

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
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER NOT NULL, root TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (size, root));
CREATE TABLE IF NOT EXISTS heads (chain TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS matters (
    chain TEXT PRIMARY KEY, register TEXT, case_sign TEXT, item_kind TEXT, kind TEXT, unit TEXT,
    officer TEXT, assignee TEXT, status TEXT NOT NULL, started TEXT NOT NULL, deadline TEXT,
    category TEXT, closed_before INTEGER, events INTEGER NOT NULL, last_time INTEGER NOT NULL,
    sender_ref TEXT, channel TEXT);
CREATE INDEX IF NOT EXISTS matters_status ON matters (status);
CREATE INDEX IF NOT EXISTS matters_unit ON matters (unit, status);
CREATE INDEX IF NOT EXISTS matters_officer ON matters (officer, status);
CREATE TABLE IF NOT EXISTS milestones (
    chain TEXT NOT NULL, stage TEXT NOT NULL, bound INTEGER NOT NULL, PRIMARY KEY (chain, stage));
CREATE TABLE IF NOT EXISTS access (
    register TEXT PRIMARY KEY, chain TEXT NOT NULL, code_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    chain TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, digest TEXT NOT NULL,
    time INTEGER NOT NULL, PRIMARY KEY (chain, seq));
CREATE INDEX IF NOT EXISTS documents_kind ON documents (kind, time);
CREATE TABLE IF NOT EXISTS pauses (
    chain TEXT NOT NULL, start TEXT NOT NULL, until TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (chain, start));
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chain TEXT NOT NULL, seq INTEGER NOT NULL,
    body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deadletters (
    sink TEXT NOT NULL, outbox INTEGER NOT NULL, attempts INTEGER NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (sink, outbox));
CREATE TABLE IF NOT EXISTS mail (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, rcpt TEXT NOT NULL,
    subject TEXT NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    error TEXT, next_try INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL, done INTEGER NOT NULL);
"""
STORE_FORMAT: Final = "ledger-eod-store/v2"


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD: Final = threading.Lock()


def _write_lock(root: Path) -> threading.Lock:
    key = str(root.resolve())
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(key)
        if lock is None:
            lock = _WRITE_LOCKS[key] = threading.Lock()
        return lock


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
        #: The running numbers drawn since the caller last cleared it: (counter, value).
        self.drawn: list[tuple[str, int]] = []
        self._savepoints = 0

    # ------------------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        record: OfficeRecord,
        ca: SigningIdentity,
        policy_text: str,
        paths_text: str,
        jrwa_text: str,
    ) -> OfficeStore:
        """Set up a new data dir for the office ``record`` names (signed by ``ca``).

        Raises:
            ConfigError: it already holds an office, or cannot be written.
        """
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
                [
                    ("office", record.office),
                    ("name", record.name),
                    ("zone", record.zone),
                    ("record", canonical.encode(record.to_json()).decode("utf-8")),
                    ("paths", paths_text),
                    ("jrwa", jrwa_text),
                    ("format", STORE_FORMAT),
                ],
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
        store = cls._connect(root)
        try:
            found = store.meta("format")
        except CorruptionError:
            found = "none"
        if found != STORE_FORMAT:
            store.close()
            raise ConfigError(f"{root} holds an office store of format {found}, not {STORE_FORMAT}")
        return store

    @classmethod
    def _connect(cls, root: Path) -> OfficeStore:
        try:
            conn = sqlite3.connect(
                root / DB_FILE, isolation_level=None, timeout=30.0, check_same_thread=False
            )
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
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing. Inside another one it
        is a savepoint: its own writes are undone if it fails, the outer one goes on."""
        if self._conn.in_transaction:
            self._savepoints += 1
            name = f"sp{self._savepoints}"
            self._conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._savepoints -= 1
            self._conn.execute(f"RELEASE {name}")
            return
        # Threads of one process queue on a lock (woken at once when it is free); SQLite's
        # own busy wait (which sleeps in growing steps) only serialises between processes.
        with _write_lock(self.root):
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
        with self.transaction():
            if self._one("SELECT 1 FROM certificates WHERE position = ?", cert.position):
                raise ConfigError(f"position {cert.position!r} exists already")
            # Under the write lock, so a backup never holds a certificate without its key.
            _write_private(self.root / KEYS_DIR / f"{cert.position}.key", identity.to_text())
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
        self.drawn.append((counter, value))
        return value

    def release_number(self, counter: str, value: int) -> None:
        """Give back a number drawn for a step that was not stored, if no later one was drawn
        since (a register never skips a number for a failed anchoring call)."""
        with self.transaction():
            row = self._one("SELECT value FROM counters WHERE name = ?", counter)
            if row is not None and int(str(row[0])) == value:
                self._exec("UPDATE counters SET value = ? WHERE name = ?", value - 1, counter)

    def chain_length(self, chain: str) -> int:
        """How many events the chain holds now (its head's seq + 1; 0 for a new chain)."""
        row = self._one("SELECT count(*) FROM events WHERE chain = ?", chain)
        return 0 if row is None else int(str(row[0]))

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a read-only query over the store's tables (the office's queries).

        Raises:
            StorageError: the query failed.
        """
        try:
            return list(self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"office store: {exc}") from None

    def execute(self, sql: str, *args: object) -> int:
        """Run one write statement (call inside :meth:`transaction`); returns the rowcount or,
        for an insert, the new row id.

        Raises:
            StorageError: the write was refused.
        """
        try:
            cursor = self._conn.execute(sql, args)
        except sqlite3.IntegrityError as exc:
            raise StorageError(f"office store refused a write: {exc}") from None
        except sqlite3.Error as exc:
            raise StorageError(f"office store: {exc}") from None
        if sql.lstrip().upper().startswith("INSERT"):
            return int(cursor.lastrowid or 0)
        return int(cursor.rowcount)

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

    def add_checkpoint(self, size: int, root: bytes, note: str) -> None:
        """Keep a cosigned checkpoint an event names (the trail carries it to the auditor)."""
        self._exec(
            "INSERT INTO checkpoints (size, root, note) VALUES (?, ?, ?) "
            "ON CONFLICT(size, root) DO NOTHING",
            size,
            root.hex(),
            note,
        )

    def checkpoint(self, size: int, root: bytes) -> str | None:
        row = self._one(
            "SELECT note FROM checkpoints WHERE size = ? AND root = ?", size, root.hex()
        )
        return None if row is None else str(row[0])

    def head(self, chain: str) -> bytes | None:
        """The latest signed trail head of a chain (canonical JSON with its receipt)."""
        row = self._one("SELECT body FROM heads WHERE chain = ?", chain)
        return None if row is None else _bytes(row[0])

    def set_head(self, chain: str, body: bytes) -> None:
        self._exec(
            "INSERT INTO heads (chain, body) VALUES (?, ?) "
            "ON CONFLICT(chain) DO UPDATE SET body = excluded.body",
            chain,
            body,
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

    # ----------------------------------------------------------------- backup and restore

    def backup(self, dest: Path) -> None:
        """A consistent copy of the data dir into ``dest``, which must not exist yet.

        The write lock is held throughout (no step, key or head is added meanwhile); the
        database is copied with SQLite's online backup, the keys and the policy as files.

        Raises:
            ConfigError: ``dest`` exists or cannot be written.
            StorageError: the copy failed (``dest`` is then removed).
        """
        if dest.exists():
            raise ConfigError(f"{dest} exists; a backup is never written over anything")
        try:
            dest.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create {dest}: {exc.strerror}") from None
        try:
            # The write lock is taken on a second connection: SQLite's backup reads through
            # this one, which must not be inside a transaction itself.
            lock = sqlite3.connect(self.root / DB_FILE, isolation_level=None, timeout=30.0)
            try:
                lock.execute("BEGIN IMMEDIATE")
                (dest / KEYS_DIR).mkdir(mode=0o700)
                for key in sorted((self.root / KEYS_DIR).glob("*.key")):
                    _write_private(dest / KEYS_DIR / key.name, key.read_text(encoding="utf-8"))
                _write_private(dest / POLICY_FILE, self.policy_text())
                target = sqlite3.connect(dest / DB_FILE)
                try:
                    self._conn.backup(target)
                finally:
                    target.close()
            finally:
                lock.close()
        except sqlite3.Error as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise StorageError(f"cannot back up the office store: {exc}") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    @classmethod
    def restore(cls, backup: Path, root: Path) -> OfficeStore:
        """Put the backup at ``backup`` into ``root``, which must hold no office store, and open
        it. The backup is checked first (SQLite integrity, the store format, the CA key).

        Raises:
            ConfigError: ``root`` holds a store, or ``backup`` is not a backup.
            StorageError: the copy failed.
        """
        if (root / DB_FILE).exists():
            raise ConfigError(f"{root} already holds an office store; restore into an empty dir")
        if not (backup / DB_FILE).is_file() or not (backup / KEYS_DIR / CA_KEY).is_file():
            raise ConfigError(f"{backup} is not an office store backup")
        try:
            probe = sqlite3.connect(f"file:{backup / DB_FILE}?mode=ro", uri=True)
            try:
                ok = probe.execute("PRAGMA integrity_check").fetchone()
            finally:
                probe.close()
        except sqlite3.Error as exc:
            raise ConfigError(f"{backup / DB_FILE} is not a readable office store: {exc}") from None
        if ok is None or ok[0] != "ok":
            raise ConfigError(f"{backup / DB_FILE} fails SQLite's integrity check")
        try:
            (root / KEYS_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
            for key in sorted((backup / KEYS_DIR).glob("*.key")):
                _write_private(root / KEYS_DIR / key.name, key.read_text(encoding="utf-8"))
            _write_private(root / POLICY_FILE, (backup / POLICY_FILE).read_text(encoding="utf-8"))
            source = sqlite3.connect(f"file:{backup / DB_FILE}?mode=ro", uri=True)
            target = sqlite3.connect(root / DB_FILE)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot restore into {root}: {exc}") from None
        return cls.open(root)


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    raise CorruptionError("office store holds a record that is not bytes")
