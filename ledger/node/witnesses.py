"""Outside witnesses, pushed to: each new quorum checkpoint goes to every ``[[witnesses]]`` entry.

The node is the *log* side of c2sp.org/tlog-witness. For each configured witness one task runs
beside the replica (never inside it): it waits for a stored quorum checkpoint larger than the
one the witness last cosigned, takes the **latest** one (never a queue of every size, so an
outage of an hour costs one request when the witness returns, not one per block) and sends::

    POST <url>/add-checkpoint

    old <the size the witness holds, 0 if none>
    <base64 hash>...              RFC 6962 consistency proof old -> new, from our store
    <empty line>
    <the checkpoint note, verbatim>

and acts on the answer (c2sp.org/tlog-witness, "add-checkpoint"):

=========================  ==================================================================
200                        cosignature lines: the one by the configured key is verified and
                           added to the stored note of that size
                           (:meth:`ledger.replica.checkpoints.CheckpointBook.add_outside`), so
                           ``GET /v1/checkpoints/{size}``, ``/checkpoint`` and every receipt
                           cut against it carry it
409, a size in the body    the witness holds another size: send again from it (the witness
                           state is shared by every node that pushes to it, so this is the
                           normal answer to a race). A size above ours: wait for our tree to
                           get there. The size we just sent as ``old``: the witness holds
                           *another tree head at that size*: a **conflict**
422 after a resync         the consistency proof from the size the witness reported does not
                           verify for it: it holds another tree at that size, a **conflict**
anything else, a timeout   a failure: retry after an exponential backoff (per witness,
                           :data:`BACKOFF_START_S` doubling up to :data:`BACKOFF_CAP_S`)
=========================  ==================================================================

A conflict is evidence that someone showed the witness a different history of this log (a
split view, or a forged checkpoint signed with a validator's log key): it counts in
``ledger_witness_conflicts_total`` and is logged once (one line, until the witness cosigns
again), and the witness is retried at the backoff cap.

**Never in the way.** Anchoring, receipts and consensus do not wait for any witness: the tasks
only read the replica's latest checkpoint and the store's consistency proofs, and write one
note when a cosignature arrives. A witness that is down, slow (every request is bounded by its
``timeout_ms``) or refusing costs its own task's time, nothing else. A receipt handed out
before the witness answered lacks its cosignature; ``GET /v1/proofs/{digest}`` returns the note
as stored, so fetched again it carries the cosignature once the witness gave it. After an
outage the witness cosigns the latest checkpoint only (it cannot cosign older sizes once it
holds a newer one): receipts of the sizes in between carry its cosignature only when cut
against a later checkpoint (``?against=latest``); docs/witness.md says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ledger.checkpoint import parse_decimal
from ledger.config import WitnessEndpoint
from ledger.errors import LedgerError, MalformedError, VerificationError
from ledger.note import Signature, Verifier, parse_note
from ledger.replica.witness import (
    MAX_ADD_CHECKPOINT_BYTES,
    SIZE_CONTENT_TYPE,
    WITNESS_PATH,
    format_add_checkpoint,
)

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = [
    "BACKOFF_CAP_S",
    "BACKOFF_START_S",
    "POLL_S",
    "WitnessCollector",
    "WitnessPusher",
    "WitnessState",
    "cosignature_in_answer",
]

log = logging.getLogger("ledger.witnesses")

#: How often a task looks for a newer stored checkpoint (seconds).
POLL_S: Final = 0.1
#: The first retry after a failure waits this long; each further failure doubles it ...
BACKOFF_START_S: Final = 0.5
#: ... up to this (also the retry interval of a witness in conflict).
BACKOFF_CAP_S: Final = 60.0
#: 409 answers followed in one round before it counts as a failure (racing nodes).
_MAX_RESYNCS: Final = 3


@dataclass
class WitnessState:
    """What the node knows of one outside witness (the metrics read it)."""

    endpoint: WitnessEndpoint
    verifier: Verifier
    #: The size the witness holds, as it reported or as we made it (``None``: not known yet).
    known: int | None = None
    #: The largest size it cosigned for us, and when (monotonic seconds).
    cosigned_size: int = 0
    cosigned_at: float | None = None
    requests: int = 0
    failures: int = 0
    conflicts: int = 0
    #: Failures since the last success (the backoff doubles with each).
    consecutive: int = 0
    #: The wait before the next attempt after a failure (0 while healthy).
    backoff: float = 0.0
    in_conflict: bool = False


class _Conflict(LedgerError):
    """The witness holds another tree head than ours at a size (a split view)."""


class _Failure(LedgerError):
    """The witness refused, answered nonsense, or could not be reached."""


class WitnessPusher:
    """The push tasks of one node (module docstring). ``start()`` in the node's event loop
    after the replica started; ``await stop()`` before the store closes."""

    def __init__(self, node: Node, endpoints: Sequence[WitnessEndpoint], *,
                 backoff_start: float = BACKOFF_START_S,
                 backoff_cap: float = BACKOFF_CAP_S) -> None:
        self._node = node
        self.states = [WitnessState(endpoint=e, verifier=Verifier.from_vkey(e.vkey))
                       for e in endpoints]
        self._backoff_start = backoff_start
        self._backoff_cap = backoff_cap
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start one task per witness (none without witnesses)."""
        if not self.states:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.ensure_future(self._run(state)) for state in self.states]

    async def stop(self) -> None:
        """Cancel the tasks (a request in flight is abandoned) and close the session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one witness's loop ---------------------------------------------------------------------

    def _latest(self) -> tuple[int, str] | None:
        replica = self._node.replica
        if replica is None or self._node.halted is not None:
            return None
        return replica.checkpoint

    async def _run(self, state: WitnessState) -> None:
        while True:
            latest = self._latest()
            # Work when a stored checkpoint is newer than what the witness cosigned, and not
            # below what it holds (it cannot cosign a smaller tree than its own).
            if latest is None or latest[0] <= state.cosigned_size \
                    or (state.known is not None and latest[0] < state.known):
                await asyncio.sleep(POLL_S)
                continue
            size, note = latest
            if self._holds(state, note):  # cosigned before a restart of this node
                state.cosigned_size = size
                continue
            state.requests += 1
            try:
                await self._push(state, size, note)
            except _Conflict as exc:
                self._conflict(state, exc.diagnostics())
            except _Failure as exc:
                self._failure(state, exc.diagnostics())
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._failure(state, f"unreachable: {type(exc).__name__}: {exc}")
            except (MalformedError, VerificationError) as exc:
                self._failure(state, f"bad answer: {exc.diagnostics()}")
            except LedgerError as exc:  # the store failed under us: try again later
                self._failure(state, f"cannot push: {exc.diagnostics()}")
            except Exception:  # a bug must not end the task: the witness would be dropped
                log.exception("witness %s: push failed", state.endpoint.name)
                self._failure(state, "internal error (logged above)")
            else:
                continue
            await asyncio.sleep(state.backoff)

    async def _push(self, state: WitnessState, size: int, note: str) -> None:
        """One round for checkpoint ``size``: the request, and again after a 409.

        Raises:
            _Conflict, _Failure, aiohttp.ClientError, TimeoutError, MalformedError,
            VerificationError: see :meth:`_run`.
        """
        session = self._session
        assert session is not None
        endpoint = state.endpoint
        resynced = False
        for _ in range(_MAX_RESYNCS):
            old = state.known or 0
            if old > size:
                return  # another node moved the witness past our latest: wait for ours
            store = self._node.store
            if store is None:
                return
            steps = [] if old in (0, size) else store.consistency_proof(old, size)
            body = format_add_checkpoint(old_size=old, proof=steps, note=note)
            async with session.post(
                    endpoint.url + WITNESS_PATH, data=body,
                    timeout=aiohttp.ClientTimeout(total=endpoint.timeout_ms / 1000),
                    headers={"Content-Type": "text/plain; charset=utf-8"}) as response:
                raw = await response.content.read(MAX_ADD_CHECKPOINT_BYTES)
                status, kind = response.status, response.content_type
            text = raw.decode("utf-8", "replace")
            if status == 200:
                self._cosigned(state, size, note, text)
                return
            if status == 409 and kind == SIZE_CONTENT_TYPE:
                held = parse_decimal(text.rstrip("\n"), what="witness size")
                if held == old and (resynced or old == size):
                    raise _Conflict(f"it holds another tree head at size {held} than this "
                                    "ledger's")
                state.known, resynced = held, True
                continue
            if status == 422 and resynced:
                raise _Conflict(f"the consistency proof from size {old}, the size it reported, "
                                "does not verify for it: it holds another tree at that size")
            raise _Failure(f"refused with {status}: {text[:200].strip()}")
        raise _Failure(f"kept answering 409 ({_MAX_RESYNCS} times)")

    @staticmethod
    def _holds(state: WitnessState, note: str) -> bool:
        ident = (state.verifier.name, state.verifier.key_id)
        return any((s.name, s.key_id) == ident for s in parse_note(note).signatures)

    def _cosigned(self, state: WitnessState, size: int, note: str, text: str) -> None:
        """Add the configured key's cosignature in a 200 answer to the stored note.

        Raises:
            MalformedError, VerificationError: as :func:`cosignature_in_answer`.
        """
        ours = cosignature_in_answer(note, text, state.verifier)
        replica = self._node.replica
        if replica is not None and self._node.halted is None:
            replica.driver.checkpoints.add_outside(size, [ours], [state.verifier])
        if state.in_conflict or state.consecutive:
            log.info("witness %s: cosigned tree size %d again", state.endpoint.name, size)
        state.known = state.cosigned_size = size
        state.cosigned_at = time.monotonic()
        state.consecutive, state.backoff, state.in_conflict = 0, 0.0, False

    def _failure(self, state: WitnessState, why: str) -> None:
        state.failures += 1
        state.consecutive += 1
        before = state.backoff
        state.backoff = min(self._backoff_cap,
                            self._backoff_start * 2 ** min(state.consecutive - 1, 32))
        state.known = None  # ask again: the witness may have been reset or moved on
        # One line per outage (its first failure), and one when the backoff reaches its cap.
        if state.consecutive == 1 or (state.backoff == self._backoff_cap
                                      and before < self._backoff_cap):
            log.warning("witness %s (%s): %s; retrying with backoff (now %.1f s)",
                        state.endpoint.name, state.endpoint.url, why, state.backoff)

    def _conflict(self, state: WitnessState, why: str) -> None:
        state.conflicts += 1
        state.consecutive += 1
        state.backoff = self._backoff_cap
        state.known = None
        if not state.in_conflict:
            state.in_conflict = True
            log.error("witness %s (%s) reports a conflict: %s (a split view of this log? "
                      "see docs/witness.md)", state.endpoint.name, state.endpoint.url, why)


def cosignature_in_answer(note: str, answer: str, witness: Verifier) -> Signature:
    """The cosignature of checkpoint ``note`` by ``witness`` in the body of a 200 answer to
    ``add-checkpoint`` (signature lines), verified. Lines by other keys are ignored ("The
    client MUST ignore any cosignatures from unknown keys", c2sp.org/tlog-witness).

    Raises:
        MalformedError: ``note`` or a line of ``answer`` does not parse.
        VerificationError: no line is by ``witness``, or its signature does not verify.
    """
    body = parse_note(note).text.encode("utf-8")
    ident = (witness.name, witness.key_id)
    for line in answer.split("\n"):
        if not line:
            continue
        signature = Signature.parse_line(line)
        if (signature.name, signature.key_id) == ident:
            witness.verify(body, signature)
            return signature
    raise VerificationError(f"its answer holds no cosignature by the configured key "
                            f"{witness.name}+{witness.key_id.hex()}")


class WitnessCollector:
    """The per-witness metrics, read at scrape time (docs/api.md, "Metrics")."""

    def __init__(self, pusher: WitnessPusher, node: Node) -> None:
        self._pusher = pusher
        self._node = node

    def collect(self) -> Iterable[Any]:
        states = self._pusher.states
        latest = self._pusher._latest()
        latest_size = 0 if latest is None else latest[0]
        now = time.monotonic()
        labels = ["witness"]
        cosigned = GaugeMetricFamily(
            "ledger_witness_cosigned_size",
            "Largest tree size the outside witness cosigned for this node.", labels=labels)
        lag = GaugeMetricFamily(
            "ledger_witness_lag_leaves",
            "Leaves between this node's latest checkpoint and the last one the witness "
            "cosigned.", labels=labels)
        age = GaugeMetricFamily(
            "ledger_witness_last_cosigned_seconds",
            "Seconds since the witness last cosigned (-1: not since the start).", labels=labels)
        requests = CounterMetricFamily(
            "ledger_witness_requests", "add-checkpoint rounds sent to the witness.",
            labels=labels)
        failures = CounterMetricFamily(
            "ledger_witness_failures",
            "Failed add-checkpoint rounds (down, timed out, refused, a bad cosignature).",
            labels=labels)
        conflicts = CounterMetricFamily(
            "ledger_witness_conflicts",
            "Conflicts the witness reported: it holds another tree head of this log (alert).",
            labels=labels)
        backoff = GaugeMetricFamily(
            "ledger_witness_backoff_seconds",
            "Current wait before the next attempt (0 while the witness is healthy).",
            labels=labels)
        for s in states:
            name = [s.endpoint.name]
            cosigned.add_metric(name, s.cosigned_size)
            lag.add_metric(name, max(0, latest_size - s.cosigned_size))
            age.add_metric(name, -1 if s.cosigned_at is None else now - s.cosigned_at)
            requests.add_metric(name, s.requests)
            failures.add_metric(name, s.failures)
            conflicts.add_metric(name, s.conflicts)
            backoff.add_metric(name, s.backoff)
        yield from (cosigned, lag, age, requests, failures, conflicts, backoff)
