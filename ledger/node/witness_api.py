"""The C2SP tlog-witness ``add-checkpoint`` endpoint over HTTP, both sides.

The statement a witness checks and signs is :class:`ledger.replica.witness.Witness` (pure);
here are its transports: ``POST /add-checkpoint`` on every node (the validator as a witness of
its own log, :meth:`ledger.replica.Replica.witness`), :func:`witness_app` (a standalone witness
service an outside institution runs) and :func:`submit_checkpoint` (the log's side: ask a
witness to cosign). The answers and their statuses are those of c2sp.org/tlog-witness (the
module docstring of :mod:`ledger.replica.witness` has the table).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web

from ledger.checkpoint import parse_checkpoint_body, parse_decimal
from ledger.errors import VerificationError
from ledger.node.api import node_of
from ledger.node.middleware import read_body
from ledger.note import Signature, Verifier, parse_note
from ledger.replica.witness import (
    MAX_ADD_CHECKPOINT_BYTES,
    SIZE_CONTENT_TYPE,
    WITNESS_PATH,
    Witness,
    WitnessRefusal,
    add_cosignatures,
    format_add_checkpoint,
)

__all__ = ["add_checkpoint", "submit_checkpoint", "witness_app"]


def _json_refusal(status: int, code: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


async def _read_capped(request: web.Request) -> bytes | None:
    if request.content_length is not None and request.content_length > MAX_ADD_CHECKPOINT_BYTES:
        return None
    data = await request.content.read(MAX_ADD_CHECKPOINT_BYTES + 1)
    return None if len(data) > MAX_ADD_CHECKPOINT_BYTES else data


def _answer(witness: Witness, data: bytes, now: int) -> web.Response:
    try:
        line = witness.add_checkpoint(data, now=now)
    except WitnessRefusal as exc:
        if exc.status == 409:
            return web.Response(status=409, text=f"{exc.size}\n",
                                headers={"Content-Type": SIZE_CONTENT_TYPE})
        return _json_refusal(exc.status, exc.code, exc.diagnostics())
    return web.Response(text=line, content_type="text/plain")


def _handler(get: Callable[[], tuple[Witness, int] | None],
             read: Callable[[web.Request], Awaitable[bytes | None]] = _read_capped,
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        data = await read(request)
        if data is None:
            return _json_refusal(413, "body_too_large",
                                 f"body exceeds {MAX_ADD_CHECKPOINT_BYTES} bytes")
        found = get()
        if found is None:
            return _json_refusal(503, "unavailable", "the node is not running")
        return _answer(found[0], data, found[1])

    return handle


async def add_checkpoint(request: web.Request) -> web.StreamResponse:
    """``POST /add-checkpoint`` on a node: the validator witnesses its own log."""
    node = node_of(request)

    def get() -> tuple[Witness, int] | None:
        replica = node.replica
        if replica is None or node.halted is not None:
            return None
        return replica.witness(), node.now()

    async def read(request: web.Request) -> bytes:
        # The node's one body reader: its size cap, body timeout and client-gone handling.
        return await read_body(request, MAX_ADD_CHECKPOINT_BYTES)

    return await _handler(get, read)(request)


def witness_app(witness: Witness) -> web.Application:
    """A standalone witness service (an outside institution's): ``POST /add-checkpoint``,
    cosigning with the system clock."""
    app = web.Application(client_max_size=MAX_ADD_CHECKPOINT_BYTES)
    app.router.add_post(WITNESS_PATH,
                        _handler(lambda: (witness, int(time.time() * 1000))))
    return app


async def submit_checkpoint(
    session: aiohttp.ClientSession,
    url: str,
    *,
    note: str,
    old_size: int,
    proof: Callable[[int, int], Sequence[bytes]],
    witness: Verifier,
) -> tuple[int, Signature]:
    """Ask the witness at ``url`` (its submission prefix) to cosign checkpoint ``note``.

    ``old_size`` is the size this log believes the witness holds (0 if unknown); ``proof(m,
    n)`` returns the consistency proof from size ``m`` to ``n``. On a 409 the request is
    repeated once from the size the witness reports. Returns the size the witness now holds and
    its verified cosignature of ``note``.

    Raises:
        VerificationError: the witness refused (any status but 200), or its answer holds no
            valid cosignature by ``witness``.
        aiohttp.ClientError, TimeoutError: the witness is unreachable.
    """
    checkpoint = parse_checkpoint_body(parse_note(note).text)
    for _ in range(2):
        steps = [] if old_size in (0, checkpoint.size) else proof(old_size, checkpoint.size)
        body = format_add_checkpoint(old_size=old_size, proof=steps, note=note)
        async with session.post(url.rstrip("/") + WITNESS_PATH, data=body) as response:
            text = (await response.content.read(MAX_ADD_CHECKPOINT_BYTES)).decode(
                "utf-8", "replace")
            if response.status == 409 and response.content_type == SIZE_CONTENT_TYPE:
                known = parse_decimal(text.rstrip("\n"), what="witness size")
                if known == old_size or known > checkpoint.size:
                    raise VerificationError(f"witness holds size {known}: a conflict")
                old_size = known
                continue
            if response.status != 200:
                raise VerificationError(f"witness refused with {response.status}: {text[:200]}")
        merged = add_cosignatures(note, text, [witness])
        own = [s for s in parse_note(merged).signatures
               if (s.name, s.key_id) == (witness.name, witness.key_id)]
        return checkpoint.size, own[0]
    raise VerificationError("witness kept answering 409")
