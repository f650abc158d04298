"""The office: every workflow step as one library call, checked, signed, anchored and stored.

Each step follows the same path (:meth:`Office._record`). Writes serialise per case, not per
office: the store's write lock is never held across a call to the ledger.

1. load the chain (the item's or the case's events) and fold it through the rules, each event
   with its proven time (its seen checkpoint and its receipt, both re-verified; the verified
   intervals are cached by event hash, receipts never change);
2. ask the ledger for its latest cosigned checkpoint and verify it against the pinned policy:
   the event will name it (``seen``), which proves it was made after it;
3. read the office clock once: a reading more than :data:`~ledger.eod.timing.MAX_CLOCK_SKEW`
   before the checkpoint's proven time is refused (a slow clock, or a backdated step);
4. in one short store transaction, draw the register number the step needs (if any), build
   the canonical record and **check it with** :func:`ledger.eod.rules.apply`: a refused step
   raises :class:`~ledger.eod.rules.WorkflowError` here, the transaction is rolled back and
   nothing is signed or anchored;
5. with no lock held, sign it with the position's key, anchor the event hash (and the document
   digest, the first time it is seen) and verify each receipt against the pinned policy;
6. check the clock reading against the receipt's time bound: more than the tolerance ahead (a
   fast clock) is refused;
7. in a second short transaction, check that the chain's head is still the one the step was
   built on, then store the event, the receipts, the checkpoint, the new references, the query
   index (ledger.eod.index) and the outbox row (webhooks, notifications), and commit. A step
   that lost the race to another step on the same case is built again on the new head (up to
   :data:`RACE_RETRIES` times); within one process, steps on one case also wait for each other
   (a striped lock by chain) so that a lost race is the exception between processes.

If anchoring fails, nothing is stored and a register number drawn for the step is given back
when no later one was drawn meanwhile; the step can simply be repeated (it gets a new time and
thus a new hash; an anchored but unused hash proves nothing and harms nothing).

The clock is injected (``clock``), so tests replay a case with fixed times or a fast office PC.
``declared`` is a time the user states the act happened (``ledger eod --at`` against a node):
it is recorded next to the proven one, flagged in the trail when outside the proven interval,
and no rule counts from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from ledger.eod import canonical
from ledger.eod.anchor import Anchorer
from ledger.eod.calendar import OfficeCalendar, parse_date
from ledger.eod.casesign import CaseSign, format_case_sign, parse_case_sign
from ledger.eod.eforms import EformOutcome, check_anchors, verify_eform
from ledger.eod.events import EventRecord, Seen, SignedEvent
from ledger.eod.index import index_event
from ledger.eod.jrwa import JrwaDictionary
from ledger.eod.model import DIRECTIONS, REGISTER_PREFIX, EventType, Role, parse_category
from ledger.eod.paths import COST_STEPS, PathBook, path_json
from ledger.eod.pki import PositionCertificate, SigningIdentity, check_identifier, issue_certificate
from ledger.eod.proofs import ReceiptVerifier
from ledger.eod.records import OfficeRecord, TrailHead
from ledger.eod.rules import CaseState, Facts, WorkflowError, apply, fold
from ledger.eod.store import OfficeStore
from ledger.eod.timing import MAX_CLOCK_SKEW, ProvenTime, VerifiedCheckpoint, verify_checkpoint
from ledger.eod.trail import OFFICIAL_RECEIPT_FORMAT, TRAIL_FORMAT
from ledger.errors import (
    ConfigError,
    LedgerError,
    MalformedError,
    NotFoundError,
    VerificationError,
)
from ledger.policy import Policy, parse_policy

__all__ = [
    "RACE_RETRIES",
    "ClockRefused",
    "Office",
    "Recorded",
    "SharedCaches",
    "access_digest",
]

#: How often a step that lost the race for its case's head is built again.
RACE_RETRIES: Final = 5
#: How long offices sharing caches reuse the latest checkpoint one of them read (seconds).
SEEN_REUSE: Final = 1.0
_LOCK_STRIPES: Final = 256
_CHAIN_LOCKS: Final = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
_PROVEN_CACHE: Final = 100_000
#: The access code of a registration: 20 characters of Crockford's base32 alphabet (100 bits),
#: printed in four groups; unguessable, and never stored (only its digest is).
_CODE_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CODE_GROUPS: Final = 4
_CODE_GROUP: Final = 5


def new_access_code() -> str:
    """A fresh random access code, e.g. ``7KQ2M-XR4D9-0PWTC-HB61F``."""
    chars = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_GROUPS * _CODE_GROUP))
    return "-".join(chars[i : i + _CODE_GROUP] for i in range(0, len(chars), _CODE_GROUP))


def normalise_access_code(code: str) -> str:
    """The code as issued, from what a person typed (case, spaces, dashes and the look-alike
    letters O, I, L of Crockford's alphabet forgiven); any string is accepted: a code that is
    not one simply matches nothing."""
    cleaned = code.strip().upper().replace(" ", "").replace("-", "")
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    return "-".join(cleaned[i : i + _CODE_GROUP] for i in range(0, len(cleaned), _CODE_GROUP))


def access_digest(office: str, register: str, code: str) -> bytes:
    """What the store keeps of an access code: SHA-256 over the office, the register number and
    the normalised code (domain-separated, so a leaked store gives no usable code)."""
    text = f"ledger-eod-access/v1\n{office}\n{register}\n{normalise_access_code(code)}"
    return hashlib.sha256(text.encode("utf-8")).digest()


class _ProvenCache:
    """Verified proven intervals by event hash (receipts never change), bounded, thread-safe."""

    def __init__(self, size: int = _PROVEN_CACHE) -> None:
        self._items: OrderedDict[bytes, ProvenTime] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: bytes) -> ProvenTime | None:
        with self._lock:
            return self._items.get(key)

    def __setitem__(self, key: bytes, value: ProvenTime) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclasses.dataclass
class SharedCaches:
    """What the offices of one store in one process may share (one per thread otherwise
    re-verifies what another already did): verified receipts' checkpoints and proven times."""

    verifier: ReceiptVerifier
    proven: _ProvenCache = dataclasses.field(default_factory=_ProvenCache)
    #: The latest checkpoint one of them read from the ledger, and when (monotonic seconds):
    #: reused for :data:`SEEN_REUSE` seconds. An event naming it is still proven to come after
    #: it; the bound is at most that much earlier than a fresh read would give.
    seen: tuple[float, VerifiedCheckpoint] | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass
class _Batch:
    """Steps staged by :meth:`Office.batch`, not yet anchored."""

    seen: VerifiedCheckpoint | None
    chains: dict[str, tuple[list[SignedEvent], CaseState]] = dataclasses.field(
        default_factory=dict
    )
    stored: dict[str, int] = dataclasses.field(default_factory=dict)
    staged: list[tuple[str, SignedEvent, CaseState]] = dataclasses.field(default_factory=list)
    documents: dict[bytes, None] = dataclasses.field(default_factory=dict)
    refs: dict[str, str] = dataclasses.field(default_factory=dict)


class _LostRace(Exception):
    """Another step was stored on the case between reading its head and committing."""


def _chain_lock(root: object, chain: str | None) -> threading.Lock | None:
    if chain is None:
        return None
    digest = hashlib.sha256(f"{root}\n{chain}".encode()).digest()
    return _CHAIN_LOCKS[digest[0]]

_CASE_COUNTER: Final = "case/{unit}/{cls}/{year}"
_Prepared = tuple[Mapping[str, Any], bytes | None, str | None]


class ClockRefused(WorkflowError):
    """The office clock is too far outside the time the ledger proves; nothing was stored."""

    code = "clock_refused"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recorded:
    """The outcome of one step: the stored event, its receipt, and the chain's new state."""

    event: SignedEvent
    receipt: str
    state: CaseState


class Office:
    """One office's EOD client over its :class:`OfficeStore` and an :class:`Anchorer`.

    One instance per thread (its store connection is its own); ``chain_locks=False`` leaves
    steps on one case to the commit-time head check alone, as between processes.
    """

    def __init__(
        self,
        store: OfficeStore,
        anchorer: Anchorer | None,
        *,
        clock: Callable[[], int],
        declared: int | None = None,
        chain_locks: bool = True,
        shared: SharedCaches | None = None,
    ) -> None:
        self.store = store
        self._chain_locks = chain_locks
        self._batch: _Batch | None = None
        self._anchorer = anchorer
        self._clock = clock
        self._declared = declared
        self._policy: Policy | None = None
        self._shared = shared
        self._verifier: ReceiptVerifier | None = shared.verifier if shared else None
        self._checkpoints: dict[tuple[int, bytes], VerifiedCheckpoint] = {}
        self._proven: _ProvenCache = shared.proven if shared else _ProvenCache()
        self._positions: dict[str, PositionCertificate] = {}
        #: Called with (chain, event, state) inside the commit of every stored step.
        self.committed: list[Callable[[str, SignedEvent, CaseState], None]] = []
        self.record = OfficeRecord.from_json(canonical.loads(store.meta("record")))
        self.calendar = OfficeCalendar(self.record.zone)
        self.paths = PathBook.from_toml(store.meta("paths"))
        self.jrwa = JrwaDictionary.from_toml(store.meta("jrwa"))

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            self._policy = parse_policy(self.store.policy_text())
        return self._policy

    @property
    def verifier(self) -> ReceiptVerifier:
        """Receipts verified under the pinned policy, each checkpoint note once."""
        if self._verifier is None:
            self._verifier = ReceiptVerifier(self.policy)
        return self._verifier

    def positions(self) -> dict[str, PositionCertificate]:
        """The office's certified positions (read again when the store holds more)."""
        count = int(self.store.query("SELECT count(*) FROM certificates")[0][0])
        if count != len(self._positions):
            self._positions = {c.position: c for c in self.store.certificates()}
        return self._positions

    @contextlib.contextmanager
    def declaring(self, declared: int | None) -> Iterator[None]:
        """Steps inside record ``declared`` as their declared time (``--at``)."""
        before, self._declared = self._declared, declared
        try:
            yield
        finally:
            self._declared = before

    def verify_eform(self, xml: bytes) -> EformOutcome:
        """Verify a signed e-form against the office's trust anchors (:mod:`ledger.eod.eforms`).

        Raises:
            ConfigError: no trust anchors are configured.
        """
        rows = self.store.query("SELECT value FROM meta WHERE key = 'eform_anchors'")
        return verify_eform(xml, str(rows[0][0]) if rows else None)

    def set_eform_anchors(self, pem: str) -> int:
        """Configure the CAs whose certificates e-form signatures must chain to; returns how
        many certificates the PEM text holds.

        Raises:
            ConfigError: the text holds no certificate.
        """
        count = check_anchors(pem)
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO meta (key, value) VALUES ('eform_anchors', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                pem,
            )
        return count

    def now(self) -> int:
        """The office clock's reading (POSIX seconds)."""
        return self._clock()

    def _certificate(self, position: str) -> PositionCertificate:
        cert = self.positions().get(position)
        return cert if cert is not None else self.store.certificate(position)

    # ----------------------------------------------------------------------- positions

    def issue_position(
        self, *, position: str, unit: str, title: str, roles: Iterable[Role]
    ) -> PositionCertificate:
        """``eod keys issue``: a new key for a position, certified by the office CA.

        Raises:
            MalformedError: bad identifier, empty unit or title, no roles.
            ConfigError: the position exists.
        """
        check_identifier(position, what="position id")
        if position == "ca":
            raise MalformedError("'ca' is reserved for the office CA key")
        identity = SigningIdentity.generate(position)
        cert = issue_certificate(
            ca=self.store.identity("ca"),
            office=self.store.office,
            position=position,
            unit=unit,
            title=title,
            roles=roles,
            public_key=identity.key.public_key,
            issued=self._clock(),
        )
        self.store.add_position(cert, identity)
        return cert

    # ------------------------------------------------------------------- proven times

    def _checkpoint(self, note: str) -> VerifiedCheckpoint:
        verified = verify_checkpoint(note, self.policy)
        self._checkpoints[(verified.size, verified.root)] = verified
        return verified

    def proven(self, event: SignedEvent) -> ProvenTime:
        """An event's proven interval from its stored seen checkpoint and receipt.

        Raises:
            NotFoundError: the store lacks the checkpoint or the receipt.
            VerificationError: either fails the pinned policy.
        """
        known = self._proven.get(event.hash)
        if known is not None:
            return known
        seen = event.record.seen
        after: int | None = None
        if seen is not None:
            cached = self._checkpoints.get((seen.size, seen.root))
            if cached is None:
                note = self.store.checkpoint(seen.size, seen.root)
                if note is None:
                    raise NotFoundError(f"event {event.record.seq}: its seen checkpoint is missing")
                cached = self._checkpoint(note)
            after = cached.time
        receipt = self.store.receipt(event.hash)
        if receipt is None:
            raise NotFoundError(f"event {event.record.seq} has no stored receipt")
        before = self.verifier.verify(receipt, event.hash).time_bound
        proven = ProvenTime(after=after, before=before)
        self._proven[event.hash] = proven
        return proven

    def _facts(self, event: SignedEvent, proven: ProvenTime) -> Facts:
        positions = self.positions()
        return Facts(
            cert=self._certificate(event.record.position),
            calendar=self.calendar,
            positions=positions,
            proven=proven,
        )

    def _fold(self, events: list[SignedEvent]) -> CaseState:
        return fold([(e, self._facts(e, self.proven(e))) for e in events])

    def chain(self, ref: str) -> tuple[str, list[SignedEvent], CaseState]:
        """A chain's id, events and folded state, by register number or case sign.

        Raises:
            NotFoundError: unknown reference.
            WorkflowError: the stored chain breaks a rule (a damaged store).
        """
        chain = self.store.chain_of(ref)
        events = self.store.events(chain)
        return chain, events, self._fold(events)

    # ------------------------------------------------------------------ the common path

    def _need_anchorer(self) -> Anchorer:
        if self._anchorer is None:
            raise ConfigError("no ledger configured: give --node URL or --ground DIR")
        return self._anchorer

    def _seen(self, anchorer: Anchorer) -> VerifiedCheckpoint | None:
        shared = self._shared
        if shared is not None:
            with shared.lock:
                fresh = shared.seen
                if fresh is not None and time.monotonic() - fresh[0] < SEEN_REUSE:
                    return fresh[1]
        note = anchorer.checkpoint()
        seen = None if note is None else self._checkpoint(note)
        if shared is not None and seen is not None:
            with shared.lock:
                shared.seen = (time.monotonic(), seen)
        return seen

    def _check_after(self, now: int, seen: VerifiedCheckpoint | None) -> None:
        if seen is not None and now < seen.time - MAX_CLOCK_SKEW:
            fmt = self.calendar.format_time
            raise ClockRefused(
                f"the office clock reads {fmt(now)}, more than {MAX_CLOCK_SKEW // 60} minutes "
                f"before the ledger's latest checkpoint ({fmt(seen.time)}): the clock is slow or "
                "the time is backdated; nothing was stored (a past time is declared with --at)"
            )

    def _check_before(self, now: int, bound: int) -> None:
        if now > bound + MAX_CLOCK_SKEW:
            fmt = self.calendar.format_time
            ahead = (now - bound) // 60
            raise ClockRefused(
                f"the office clock reads {fmt(now)}, {ahead} minutes ahead of the ledger's time "
                f"{fmt(bound)} (tolerance {MAX_CLOCK_SKEW // 60} minutes): set the clock right and "
                "repeat the step; nothing was stored"
            )
        if self._declared is not None and self._declared > bound + MAX_CLOCK_SKEW:
            raise ClockRefused(
                f"the declared time {self.calendar.format_time(self._declared)} lies after the "
                "ledger's time: a step cannot be declared in the future; nothing was stored"
            )

    def _record(
        self,
        chain: str | None,
        *,
        kind: EventType,
        actor: str,
        document: bytes | None = None,
        data: Mapping[str, Any] | None = None,
        new_refs: Iterable[str] = (),
        prepare: Callable[[CaseState, int], _Prepared] | None = None,
        on_commit: Callable[[str, SignedEvent], None] | None = None,
    ) -> Recorded:
        anchorer = self._need_anchorer()
        if self._batch is not None:
            return self._stage(
                self._batch,
                chain,
                kind=kind,
                actor=actor,
                document=document,
                data=data,
                new_refs=new_refs,
                prepare=prepare,
            )
        lock = _chain_lock(self.store.root, chain) if self._chain_locks else None
        for _ in range(RACE_RETRIES):
            if lock is not None:
                lock.acquire()
            try:
                return self._attempt(
                    anchorer,
                    chain,
                    kind=kind,
                    actor=actor,
                    document=document,
                    data=data,
                    new_refs=new_refs,
                    prepare=prepare,
                    on_commit=on_commit,
                )
            except _LostRace:
                continue
            finally:
                if lock is not None:
                    lock.release()
        raise WorkflowError(
            f"the case changed {RACE_RETRIES} times while this step was being anchored "
            "(others are working on it); nothing was stored, repeat the step"
        )

    def _attempt(
        self,
        anchorer: Anchorer,
        chain: str | None,
        *,
        kind: EventType,
        actor: str,
        document: bytes | None,
        data: Mapping[str, Any] | None,
        new_refs: Iterable[str],
        prepare: Callable[[CaseState, int], _Prepared] | None,
        on_commit: Callable[[str, SignedEvent], None] | None,
    ) -> Recorded:
        cert = self._certificate(actor)
        if chain is None:
            state, events = CaseState(), []
        else:
            events = self.store.events(chain)
            state = self._fold(events)
        seen = self._seen(anchorer)
        now = self._clock()
        self._check_after(now, seen)
        self.store.drawn = []
        with self.store.transaction():  # short: the register number and the rules
            case = state.case
            if prepare is not None:
                data, document, case = prepare(state, now)
            record = EventRecord(
                office=self.store.office,
                seq=state.seq,
                prev=state.head,
                type=kind,
                case=case,
                document=document,
                position=actor,
                time=now,
                data=dict(data or {}),
                seen=None if seen is None else Seen(size=seen.size, root=seen.root),
                declared=self._declared,
            )
            event = record.sign(self.store.identity(actor).key)
            facts = dataclasses.replace(
                self._facts(event, ProvenTime(after=None if seen is None else seen.time)),
                cert=cert,
            )
            new_state = apply(state, event, facts)  # refuses before anything is anchored
            need_document = document is not None and self.store.receipt(document) is None
        drawn, self.store.drawn = self.store.drawn, []
        stored = False
        try:
            digests = [event.hash]
            if need_document:
                assert document is not None
                digests.append(document)
            receipts = anchorer.anchor(digests)  # no lock held
            if len(receipts) != len(digests):
                raise MalformedError("the ledger returned the wrong number of receipts")
            verified = [
                self.verifier.verify(r, d) for d, r in zip(digests, receipts, strict=True)
            ]
            self._check_before(now, verified[0].time_bound)
            chain_id = chain if chain is not None else event.hash.hex()
            with self.store.transaction():
                if chain is not None and self.store.chain_length(chain) != state.seq:
                    raise _LostRace
                for digest, receipt in zip(digests, receipts, strict=True):
                    self.store.add_receipt(digest, receipt)
                if seen is not None:
                    self.store.add_checkpoint(seen.size, seen.root, seen.note)
                self.store.add_event(chain_id, event)
                for ref in new_refs:
                    self.store.add_ref(ref, chain_id)
                if kind is EventType.CASE_OPENED and record.case is not None:
                    sign = parse_case_sign(record.case)
                    self.store.add_case(sign.original, _list_key(sign), chain_id)
                    self.store.add_ref(sign.original, chain_id)
                self._after_store(
                    chain_id,
                    event,
                    new_state,
                    bound=verified[0].time_bound,
                    started=events[0].record.time if events else now,
                )
                if on_commit is not None:
                    on_commit(chain_id, event)
                for hook in self.committed:
                    hook(chain_id, event, new_state)
            stored = True
            self._proven[event.hash] = ProvenTime(
                after=None if seen is None else seen.time, before=verified[0].time_bound
            )
            return Recorded(event=event, receipt=receipts[0], state=new_state)
        finally:
            if not stored:
                for counter, value in reversed(drawn):
                    self.store.release_number(counter, value)

    def _after_store(
        self, chain: str, event: SignedEvent, state: CaseState, *, bound: int, started: int
    ) -> None:
        """The query index and the outbox row of a stored event (inside its transaction)."""
        units = {p: c.unit for p, c in self.positions().items()}
        index_event(
            self.store,
            chain,
            event,
            state,
            bound=bound,
            started=self.calendar.date_of(started).isoformat(),
            unit_of=units,
        )
        self.store.execute(
            "INSERT INTO outbox (chain, seq, body) VALUES (?, ?, ?)",
            chain,
            event.record.seq,
            event.encode(),
        )

    def _chain(self, ref: str) -> str:
        if self._batch is not None:
            found = self._batch.refs.get(ref.strip())
            if found is not None:
                return found
        return self.store.chain_of(ref)

    # ---------------------------------------------------------------------- batches

    @contextlib.contextmanager
    def batch(self, *, on_commit: Callable[[], None] | None = None) -> Iterator[None]:
        """Steps inside are checked and signed as usual, then anchored together and stored in
        one transaction when the block ends (the bulk import of historical items):

        * while staging, the store's write lock is held (register numbers are drawn and every
          rule is checked, against the chains as the batch leaves them), but nothing is
          anchored; every step names the checkpoint seen when the batch began;
        * at the end, with no lock held, the hashes of every event, every new document and a
          signed head per touched chain are anchored in one call (the client splits it into
          requests) and every receipt is verified;
        * then one transaction checks that no other step was stored meanwhile on a chain the
          batch extends, and stores everything, with ``on_commit`` (e.g. the import's progress).

        If anything fails, nothing of the batch is stored (numbers drawn for it are given back
        when no later one was drawn) and the error propagates.

        Raises:
            LedgerError: a refused step (named), the ledger, or a lost race (repeat the batch).
        """
        if self._batch is not None:
            raise ConfigError("batches do not nest")
        anchorer = self._need_anchorer()
        seen = self._seen(anchorer)
        self._check_after(self._clock(), seen)
        batch = _Batch(seen=seen)
        self.store.drawn = []
        self._batch = batch
        try:
            with self.store.transaction():
                yield
        except BaseException:
            self._batch = None
            self._release(self.store.drawn)
            raise
        self._batch = None
        drawn, self.store.drawn = self.store.drawn, []
        try:
            self._flush(anchorer, batch, on_commit)
        except BaseException:
            self._release(drawn)
            raise

    def _release(self, drawn: list[tuple[str, int]]) -> None:
        for counter, value in reversed(drawn):
            self.store.release_number(counter, value)

    def _stage(
        self,
        batch: _Batch,
        chain: str | None,
        *,
        kind: EventType,
        actor: str,
        document: bytes | None,
        data: Mapping[str, Any] | None,
        new_refs: Iterable[str],
        prepare: Callable[[CaseState, int], _Prepared] | None,
    ) -> Recorded:
        cert = self._certificate(actor)
        if chain is None:
            events: list[SignedEvent] = []
            state = CaseState()
        elif chain in batch.chains:
            events, state = batch.chains[chain]
        else:
            events = self.store.events(chain)
            state = self._fold(events)
            batch.stored[chain] = len(events)
        seen = batch.seen
        now = self._clock()
        with self.store.transaction():  # a savepoint: a refused step leaves no number drawn
            case = state.case
            if prepare is not None:
                data, document, case = prepare(state, now)
            record = EventRecord(
                office=self.store.office,
                seq=state.seq,
                prev=state.head,
                type=kind,
                case=case,
                document=document,
                position=actor,
                time=now,
                data=dict(data or {}),
                seen=None if seen is None else Seen(size=seen.size, root=seen.root),
                declared=self._declared,
            )
            event = record.sign(self.store.identity(actor).key)
            facts = dataclasses.replace(
                self._facts(event, ProvenTime(after=None if seen is None else seen.time)),
                cert=cert,
            )
            new_state = apply(state, event, facts)
        chain_id = chain if chain is not None else event.hash.hex()
        batch.chains[chain_id] = ([*events, event], new_state)
        batch.staged.append((chain_id, event, new_state))
        if (
            document is not None
            and document not in batch.documents
            and self.store.receipt(document) is None
        ):
            batch.documents[document] = None
        for ref in new_refs:
            batch.refs[ref] = chain_id
        if kind is EventType.CASE_OPENED and record.case is not None:
            batch.refs[record.case] = chain_id
        return Recorded(event=event, receipt="", state=new_state)

    def _flush(
        self, anchorer: Anchorer, batch: _Batch, on_commit: Callable[[], None] | None
    ) -> None:
        if not batch.staged:
            if on_commit is not None:
                with self.store.transaction():
                    on_commit()
            return
        now = self._clock()
        ca = self.store.identity("ca").key
        heads: dict[str, dict[str, Any]] = {}
        for chain_id, (events, _) in batch.chains.items():
            heads[chain_id] = TrailHead.sign(
                office=self.store.office,
                chain=events[0].hash,
                case=next((e.record.case for e in reversed(events) if e.record.case), None),
                count=len(events),
                last=events[-1].hash,
                time=now,
                ca=ca,
            ).to_json()
        head_hashes = {c: TrailHead.from_json(h).hash for c, h in heads.items()}
        digests = [e.hash for _, e, _ in batch.staged]
        digests += list(batch.documents)
        digests += list(head_hashes.values())
        receipts = anchorer.anchor(digests)  # no lock held
        if len(receipts) != len(digests):
            raise MalformedError("the ledger returned the wrong number of receipts")
        bounds = {}
        for digest, receipt in zip(digests, receipts, strict=True):
            bounds[digest] = self.verifier.verify(receipt, digest).time_bound
        for _, event, _ in batch.staged:
            self._check_before(event.record.time, bounds[event.hash])
        by_digest = dict(zip(digests, receipts, strict=True))
        units = {p: c.unit for p, c in self.positions().items()}
        with self.store.transaction():
            for chain_id, length in batch.stored.items():
                if self.store.chain_length(chain_id) != length:
                    raise WorkflowError(
                        f"another step was stored on {chain_id[:16]} while the batch was being "
                        "anchored; nothing of the batch was stored, repeat it"
                    )
            if batch.seen is not None:
                self.store.add_checkpoint(batch.seen.size, batch.seen.root, batch.seen.note)
            for digest, receipt in by_digest.items():
                self.store.add_receipt(digest, receipt)
            first_time: dict[str, int] = {}
            for chain_id, event, state in batch.staged:
                self.store.add_event(chain_id, event)
                if event.record.seq == 0:
                    first_time[chain_id] = event.record.time
                if event.record.type is EventType.CASE_OPENED and event.record.case is not None:
                    sign = parse_case_sign(event.record.case)
                    self.store.add_case(sign.original, _list_key(sign), chain_id)
                started = first_time.get(chain_id)
                if started is None:
                    started = self.store.events(chain_id)[0].record.time
                    first_time[chain_id] = started
                index_event(
                    self.store,
                    chain_id,
                    event,
                    state,
                    bound=bounds[event.hash],
                    started=self.calendar.date_of(started).isoformat(),
                    unit_of=units,
                )
                self.store.execute(
                    "INSERT INTO outbox (chain, seq, body) VALUES (?, ?, ?)",
                    chain_id,
                    event.record.seq,
                    event.encode(),
                )
                for hook in self.committed:
                    hook(chain_id, event, state)
            for ref, chain_id in batch.refs.items():
                self.store.add_ref(ref, chain_id)
            for chain_id, head in heads.items():
                entry = {**head, "receipt": by_digest[head_hashes[chain_id]]}
                self.store.set_head(chain_id, canonical.encode(entry))
            if on_commit is not None:
                on_commit()

    # --------------------------------------------------------------------------- steps

    def register(
        self,
        document: bytes,
        *,
        actor: str,
        direction: str = "incoming",
        channel: str,
        kind: str = "letter",
        attachments: int = 0,
        sender_ref: str | None = None,
        case: str | None = None,
        eform: Mapping[str, Any] | None = None,
    ) -> tuple[str, Recorded, dict[str, Any]]:
        """Rejestracja przesyłki: register an item; returns its register number, the step and
        the official receipt (a JSON object for the sender, see docs/eod.md). The number runs
        per year of the office's calendar (RPW/1/2025 from 1 January, 00:00 local).

        ``case``: register the item straight into an open case. ``eform``: the outcome of
        the XAdES verification of a signed e-form (:meth:`verify_eform`), recorded in the event.
        """
        if direction not in DIRECTIONS:
            raise MalformedError(f"direction must be one of {', '.join(DIRECTIONS)}")
        chain = self._chain(case) if case is not None else None
        numbers: list[str] = []

        def prepare(state: CaseState, now: int) -> _Prepared:
            year = self.calendar.year_of(now)
            prefix = REGISTER_PREFIX[direction]
            register = f"{prefix}/{self.store.next_number(f'{prefix}/{year}')}/{year}"
            numbers[:] = [register]
            data: dict[str, Any] = {
                "direction": direction,
                "register": register,
                "channel": channel,
                "kind": kind,
                "attachments": attachments,
            }
            if sender_ref:
                data["sender_ref"] = sender_ref
            if eform is not None:
                data["eform"] = dict(eform)
            return data, document, state.case

        code = new_access_code()

        def keep_code(chain_id: str, event: SignedEvent) -> None:
            register = str(event.record.data["register"])
            self.store.execute(
                "INSERT INTO access (register, chain, code_hash) VALUES (?, ?, ?)",
                register,
                chain_id,
                access_digest(self.store.office, register, code),
            )

        recorded = self._record(
            chain,
            kind=EventType.REGISTERED,
            actor=actor,
            prepare=prepare,
            new_refs=numbers,
            on_commit=keep_code,
        )
        register = numbers[-1]
        if not recorded.receipt:  # staged in a batch: an imported item has no receipt to hand
            return register, recorded, {}
        receipt = self._official_receipt(register, recorded)
        receipt["status_lookup"] = {"register": register, "access_code": code}
        return register, recorded, receipt

    def assign(
        self,
        ref: str,
        *,
        actor: str,
        to: str,
        method: str | None = None,
        deadline: str | None = None,
    ) -> Recorded:
        """Dekretacja: name the position responsible, with method and deadline (optional), at
        any level; a lower level may not change the method nor extend a deadline set above.

        Raises:
            MalformedError: ``deadline`` is not a calendar date.
            NotFoundError: ``to`` is not a position of the office.
        """
        data: dict[str, Any] = {"to": to}
        if method is not None:
            data["method"] = method
        if deadline is not None:
            parse_date(deadline, what="deadline")
            data["deadline"] = deadline
        self.store.certificate(to)
        return self._record(self._chain(ref), kind=EventType.ASSIGNED, actor=actor, data=data)

    def open_case(
        self,
        ref: str | None,
        *,
        actor: str,
        unit: str,
        jrwa_class: str,
        kind: str = "letter",
        category: str | None = None,
        category_reason: str | None = None,
        sign: str | None = None,
    ) -> tuple[str, Recorded]:
        """Założenie sprawy: open a case (from item ``ref`` or new) in a class of the office's
        JRWA, give it its case sign and its acceptance path.

        The category is the class's, unless ``category`` overrides it with a
        ``category_reason``. Without ``sign`` the next number of the unit's yearly case list
        for the class is used (the year of the office's calendar); with it, an existing sign (a
        case carried over from paper) is parsed and must be free.

        Raises:
            NotFoundError: the class is not in the JRWA, or no path for the kind and unit.
            MalformedError: an invalid category, or an override without a reason.
        """
        listed = self.jrwa.lookup(jrwa_class)
        chosen_category = listed.category
        if category is not None:
            chosen_category = parse_category(category)
        if chosen_category != listed.category and not category_reason:
            raise MalformedError(
                f"category {chosen_category.text} differs from JRWA class {listed.symbol} "
                f"({listed.title}): {listed.category.text}; give --category-reason"
            )
        if chosen_category == listed.category and category_reason:
            raise MalformedError(
                f"category {chosen_category.text} is the class's own; a reason is only for a "
                "different one"
            )
        if sign is not None:
            parsed = parse_case_sign(sign)
            if parsed.jrwa_class != jrwa_class or parsed.unit != unit:
                raise MalformedError(
                    f"case sign {parsed.original} is not of unit {unit} and class {jrwa_class}"
                )
        path = self.paths.resolve(kind, unit)
        chain = self._chain(ref) if ref is not None else None
        signs: list[CaseSign] = []

        def prepare(state: CaseState, now: int) -> _Prepared:
            if sign is not None:
                chosen = parse_case_sign(sign)
            else:
                year = self.calendar.year_of(now)
                while True:
                    number = self.store.next_number(
                        _CASE_COUNTER.format(unit=unit, cls=jrwa_class, year=year)
                    )
                    chosen = format_case_sign(
                        unit=unit, jrwa_class=jrwa_class, number=number, year=year
                    )
                    if self.store.case_taken(_list_key(chosen)) is None:
                        break
            taken = self.store.case_taken(_list_key(chosen))
            if taken is not None:
                raise WorkflowError(
                    f"case sign {chosen.original} collides with the existing case {taken} "
                    "(same unit, class, year and number)"
                )
            signs[:] = [chosen]
            data: dict[str, Any] = {
                "category": chosen_category.text,
                "jrwa": listed.to_json(),
                "kind": kind,
                "path": path_json(path.steps),
            }
            if category_reason:
                data["category_reason"] = category_reason
            return data, None, chosen.original

        recorded = self._record(chain, kind=EventType.CASE_OPENED, actor=actor, prepare=prepare)
        return signs[-1].original, recorded

    def attach(self, ref: str, document: bytes, *, actor: str, kind: str) -> Recorded:
        """Dołączenie: attach a document (contract, order, ...) to a case by its digest."""
        return self._record(
            self._chain(ref),
            kind=EventType.ATTACHED,
            actor=actor,
            document=document,
            data={"kind": kind},
        )

    def submit(self, ref: str, document: bytes, *, actor: str) -> Recorded:
        """Projekt do akceptacji: submit a draft for the levels of the case's acceptance path."""
        return self._record(
            self._chain(ref), kind=EventType.SUBMITTED, actor=actor, document=document
        )

    def accept(self, ref: str, *, actor: str, level: int | None = None) -> Recorded:
        """Akceptacja: accept the pending draft at ``level`` (default: the next level)."""

        def prepare(state: CaseState, now: int) -> _Prepared:
            chosen = level if level is not None else state.accepted + 1
            return {"level": chosen}, state.draft, state.case

        return self._record(self._chain(ref), kind=EventType.ACCEPTED, actor=actor, prepare=prepare)

    def reject(self, ref: str, *, actor: str, reason: str) -> Recorded:
        """Odrzucenie: return the pending draft with a reason."""

        def prepare(state: CaseState, now: int) -> _Prepared:
            return {"reason": reason}, state.draft, state.case

        return self._record(self._chain(ref), kind=EventType.REJECTED, actor=actor, prepare=prepare)

    def sign(self, ref: str, document: bytes, *, actor: str) -> Recorded:
        """Podpis: sign the accepted draft; ``document`` is the signed file's digest."""

        def prepare(state: CaseState, now: int) -> _Prepared:
            if state.draft is None:
                raise WorkflowError("signature (podpis) before acceptance: no draft was submitted")
            return {"draft": state.draft.hex()}, document, state.case

        return self._record(self._chain(ref), kind=EventType.SIGNED, actor=actor, prepare=prepare)

    def cost_step(
        self,
        ref: str,
        step: EventType,
        *,
        actor: str,
        accounts: str | None = None,
        note: str | None = None,
        document: bytes | None = None,
    ) -> Recorded:
        """One step of the case's cost-document path, on the case's invoice (or ``document``
        for a cost case opened without a registered invoice)."""
        if step not in COST_STEPS:
            raise MalformedError(f"{step.value} is not a step of a cost-document path")

        def prepare(state: CaseState, now: int) -> _Prepared:
            data: dict[str, Any] = {}
            if step is EventType.ACCOUNT_CODING:
                if accounts is None:
                    raise WorkflowError("account coding (dekretacja księgowa) needs --accounts")
                data["accounts"] = accounts
            elif note is not None:
                data["note"] = note
            return data, document or state.invoice, state.case

        return self._record(self._chain(ref), kind=step, actor=actor, prepare=prepare)

    def dispatch(
        self, ref: str, *, actor: str, channel: str, document: bytes | None = None
    ) -> tuple[str, Recorded]:
        """Wysyłka: dispatch the signed document (default: the last one signed)."""
        numbers: list[str] = []

        def prepare(state: CaseState, now: int) -> _Prepared:
            year = self.calendar.year_of(now)
            prefix = REGISTER_PREFIX["outgoing"]
            register = f"{prefix}/{self.store.next_number(f'{prefix}/{year}')}/{year}"
            numbers[:] = [register]
            chosen = document or (state.signed[-1] if state.signed else None)
            if chosen is None:
                raise WorkflowError("dispatch (wysyłka) of a document that was not signed (podpis)")
            return {"channel": channel, "register": register}, chosen, state.case

        recorded = self._record(
            self._chain(ref),
            kind=EventType.DISPATCHED,
            actor=actor,
            prepare=prepare,
            new_refs=numbers,
        )
        return numbers[-1], recorded

    def record_receipt(self, ref: str, document: bytes, *, actor: str, kind: str) -> Recorded:
        """Record an official receipt (UPP, UPO or UPD) by the digest of its signed XML."""
        return self._record(
            self._chain(ref),
            kind=EventType.RECEIPT_RECORDED,
            actor=actor,
            document=document,
            data={"kind": kind},
        )

    def deliver(
        self,
        ref: str,
        *,
        actor: str,
        deemed: bool = False,
        notice: str | None = None,
        on: str | None = None,
    ) -> Recorded:
        """Doręczenie: delivered (on the date ``on``, default today), or deemed delivered with
        the lapse of the 14th day after the first notice (``notice``, a date).

        Raises:
            MalformedError: a deemed delivery without its notice date, or a bad date.
        """
        data: dict[str, Any] = {"deemed": deemed}
        if deemed:
            if notice is None:
                raise MalformedError("a deemed delivery needs the date of the first notice")
            if on is not None:
                raise MalformedError("a deemed delivery's date follows from its notice")
            parse_date(notice, what="notice")
            data["notice"] = notice
        else:
            if notice is not None:
                raise MalformedError("a notice date belongs to a deemed delivery (--deemed)")
            if on is not None:
                parse_date(on, what="delivery date")
                data["date"] = on
        return self._record(self._chain(ref), kind=EventType.DELIVERED, actor=actor, data=data)

    def close(self, ref: str, *, actor: str) -> Recorded:
        """Zakończenie sprawy."""
        return self._record(self._chain(ref), kind=EventType.CLOSED, actor=actor)

    def reopen(self, ref: str, *, actor: str, reason: str) -> Recorded:
        """Wznowienie sprawy: reopen a closed case (not yet archived), with the reason."""
        return self._record(
            self._chain(ref), kind=EventType.REOPENED, actor=actor, data={"reason": reason}
        )

    def archive(self, ref: str, *, actor: str) -> Recorded:
        """Przekazanie do archiwum zakładowego."""
        return self._record(self._chain(ref), kind=EventType.ARCHIVED, actor=actor)

    def transfer(self, ref: str, handover: bytes, *, actor: str, archive: str) -> Recorded:
        """Przekazanie do archiwum państwowego: the case leaves with the handover list whose
        digest is ``handover`` (see :mod:`ledger.eod.transfer`)."""
        return self._record(
            self._chain(ref),
            kind=EventType.TRANSFERRED,
            actor=actor,
            document=handover,
            data={"archive": archive},
        )

    def destroy(self, ref: str, *, actor: str, consent: str) -> Recorded:
        """Brakowanie: record the lawful destruction (never a deletion of the trail)."""
        return self._record(
            self._chain(ref), kind=EventType.DESTROYED, actor=actor, data={"consent": consent}
        )

    # ---------------------------------------------------------------- receipts, trails

    def _official_receipt(self, register: str, recorded: Recorded) -> dict[str, Any]:
        record = recorded.event.record
        assert record.document is not None
        document_receipt = self.store.receipt(record.document)
        cert = self.store.certificate(record.position)
        return {
            "format": OFFICIAL_RECEIPT_FORMAT,
            "office": self.record.to_json(),
            "register": register,
            "case": record.case,
            "document": record.document.hex(),
            "event": recorded.event.to_json(),
            "event_receipt": recorded.receipt,
            "document_receipt": document_receipt,
            "certificates": [cert.to_json()],
            "policy": self.store.policy_text(),
        }

    def head(self, ref: str) -> dict[str, Any]:
        """The chain's signed, anchored head (count and last hash), refreshed when the chain
        has grown since the last one: ``{"head": ..., "signature": ..., "receipt": ...}``.

        Raises:
            ConfigError: the head must be refreshed and no ledger is configured.
            ClockRefused: the office clock is off (nothing is stored).
        """
        chain, events, _ = self.chain(ref)
        return self._head(chain, events)

    def _head(self, chain: str, events: list[SignedEvent]) -> dict[str, Any]:
        stored = self.store.head(chain)
        if stored is not None:
            entry = canonical.loads(stored)
            current = TrailHead.from_json({k: entry[k] for k in ("head", "signature")})
            if current.count == len(events) and current.last == events[-1].hash:
                return entry
        anchorer = self._need_anchorer()
        now = self._clock()
        self._check_after(now, self._seen(anchorer))
        head = TrailHead.sign(
            office=self.store.office,
            chain=events[0].hash,
            case=next((e.record.case for e in reversed(events) if e.record.case), None),
            count=len(events),
            last=events[-1].hash,
            time=now,
            ca=self.store.identity("ca").key,
        )
        [receipt] = anchorer.anchor([head.hash])  # no lock held
        self._check_before(now, self.verifier.verify(receipt, head.hash).time_bound)
        entry = {**head.to_json(), "receipt": receipt}
        with self.store.transaction():
            # A head for fewer events than the chain now holds is still true (complete as of
            # its time), but a newer stored head is never replaced by it.
            if self.store.chain_length(chain) == len(events):
                self.store.set_head(chain, canonical.encode(entry))
        return entry

    def trail(self, ref: str) -> dict[str, Any]:
        """The self-contained audit-trail bundle of a case (format in :mod:`ledger.eod.trail`),
        ending with a fresh signed head (see :meth:`head`).

        Raises:
            NotFoundError: unknown case, or a receipt or checkpoint missing from the store.
        """
        chain, events, _ = self.chain(ref)
        head = self._head(chain, events)
        named = {e.record.position for e in events}
        named |= {
            str(e.record.data["to"])
            for e in events
            if e.record.type is EventType.ASSIGNED and isinstance(e.record.data.get("to"), str)
        }
        documents = sorted({e.record.document for e in events if e.record.document is not None})
        entries = []
        checkpoints: dict[tuple[int, bytes], str] = {}
        for event in events:
            receipt = self.store.receipt(event.hash)
            if receipt is None:
                raise NotFoundError(f"event {event.record.seq} has no stored receipt")
            entries.append({"event": event.to_json(), "receipt": receipt})
            seen = event.record.seen
            if seen is not None:
                note = self.store.checkpoint(seen.size, seen.root)
                if note is None:
                    raise NotFoundError(f"event {event.record.seq}: its seen checkpoint is missing")
                checkpoints[(seen.size, seen.root)] = note
        doc_entries = []
        for digest in documents:
            receipt = self.store.receipt(digest)
            if receipt is not None:
                doc_entries.append({"digest": digest.hex(), "receipt": receipt})
        case = next((e.record.case for e in reversed(events) if e.record.case), None)
        return {
            "format": TRAIL_FORMAT,
            "office": self.record.to_json(),
            "case": case or ref,
            "policy": self.store.policy_text(),
            "certificates": [self.store.certificate(p).to_json() for p in sorted(named)],
            "checkpoints": [checkpoints[k] for k in sorted(checkpoints)],
            "events": entries,
            "documents": doc_entries,
            "head": head,
        }

    def reindex(self) -> int:
        """Rebuild the query index (ledger.eod.index) of every chain from its trail, e.g. for a
        store written before the index existed; returns the number of chains. Access codes are
        not in the trail and stay as they are.

        Raises:
            LedgerError: a chain that does not check out, named.
        """
        chains = [str(r[0]) for r in self.store.query(
            "SELECT chain FROM events WHERE seq = 0 ORDER BY rowid")]
        units = {p: c.unit for p, c in self.positions().items()}
        with self.store.transaction():
            for table in ("matters", "milestones", "documents"):
                self.store.execute(f"DELETE FROM {table}")
            for chain in chains:
                events = self.store.events(chain)
                started = self.calendar.date_of(events[0].record.time).isoformat()
                state = CaseState()
                for event in events:
                    proven = self.proven(event)
                    try:
                        state = apply(state, event, self._facts(event, proven))
                    except WorkflowError as exc:
                        raise VerificationError(
                            f"chain {chain[:16]}, event {event.record.seq}: {exc.diagnostics()}"
                        ) from None
                    assert proven.before is not None
                    index_event(self.store, chain, event, state, bound=proven.before,
                                started=started, unit_of=units)
        return len(chains)

    def check_all(self) -> tuple[int, int]:
        """Fold every case through the rules with its receipts re-verified (after a restore).

        Returns (cases, events).

        Raises:
            LedgerError: the first case that does not check out, named.
        """
        cases = events = 0
        for sign, chain in self.store.cases():
            try:
                stored = self.store.events(chain)
                self._fold(stored)
            except LedgerError as exc:
                raise VerificationError(f"case {sign}: {exc.diagnostics()}") from None
            cases += 1
            events += len(stored)
        return cases, events


def _list_key(sign: CaseSign) -> str:
    return canonical.encode({"k": list(sign.list_key)}).decode("utf-8")
