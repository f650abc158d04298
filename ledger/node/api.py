"""The public HTTP API of a node (docs/api.md; the OpenAPI document is :mod:`ledger.node.openapi`).

Handlers parse the request, ask the node (and through it the replica) and format the answer;
authorization, body limits and errors are the middleware's (:mod:`ledger.node.middleware`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from ledger.consensus.messages import decode_block
from ledger.errors import LedgerError, NotFoundError, VerificationError
from ledger.inputs import (
    parse_decimal,
    parse_flag,
    parse_hex,
    parse_json_object,
    single_query_value,
)
from ledger.merkle.hashing import HASH_SIZE
from ledger.node.metrics import CONTENT_TYPE_LATEST
from ledger.node.middleware import ApiError, read_body
from ledger.node.openapi import openapi_document
from ledger.replica import AnchorStatus, Replica
from ledger.replica.wire import MAX_ENVELOPE_BYTES, UnknownSenderError

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = [
    "MAX_ANCHOR_BODY_BYTES",
    "MAX_DIGESTS_PER_REQUEST",
    "NODE_KEY",
]

#: ``POST /v1/anchors`` takes 1 to this many digests.
MAX_DIGESTS_PER_REQUEST: Final = 10_000
#: 10,000 quoted hex digests with separators are ~680 KB; a larger anchor body is refused.
MAX_ANCHOR_BODY_BYTES: Final = 1024 * 1024

NODE_KEY: Final = web.AppKey("node", object)


def node_of(request: web.Request) -> Node:
    """The node serving ``request``."""
    return request.app[NODE_KEY]  # type: ignore[return-value]


def replica_of(request: web.Request) -> Replica:
    """The running replica of the node serving ``request``.

    Raises:
        ApiError: 503 while the node is starting.
    """
    replica = node_of(request).replica
    if replica is None:
        raise ApiError(503, "unavailable", "the node is starting")
    return replica


def parse_digest(text: object) -> bytes:
    """A digest given as 64 hex digits (:func:`ledger.inputs.parse_hex`).

    Raises:
        InputError: 400 ``invalid_request``, ``invalid_hex`` or ``invalid_length``.
    """
    return parse_hex(text, what="digest", size=HASH_SIZE)


def _query(request: web.Request, name: str) -> str | None:
    return single_query_value(request.query.getall(name, []), what=name)


def _flag(request: web.Request, name: str) -> bool:
    return parse_flag(_query(request, name), what=name)


def _int_param(request: web.Request, name: str) -> int:
    value = _query(request, name)
    if value is None:
        raise ApiError(400, "invalid_parameter", f"query parameter {name!r} is required")
    return parse_decimal(value, what=name)


def _digests_of(body: bytes) -> list[bytes]:
    obj = parse_json_object(body)
    if set(obj) != {"digests"}:
        raise ApiError(400, "invalid_request", 'the body must be {"digests": [...]}')
    raw = obj["digests"]
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "invalid_request", "digests must be a non-empty list")
    if len(raw) > MAX_DIGESTS_PER_REQUEST:
        raise ApiError(400, "too_many_digests",
                       f"at most {MAX_DIGESTS_PER_REQUEST} digests per request, got {len(raw)}")
    return [parse_digest(d) for d in raw]


async def post_anchors(request: web.Request) -> web.Response:
    """``POST /v1/anchors[?wait=true]``."""
    node = node_of(request)
    wait = _flag(request, "wait")
    digests = _digests_of(await read_body(request, MAX_ANCHOR_BODY_BYTES))
    if node.care.disk_full is not None:
        raise ApiError(503, "disk_full", f"this node cannot write: {node.care.disk_full}; "
                       "it writes again by itself once space is freed; send to another node")
    if node.halted is not None:
        raise ApiError(503, "unavailable", f"the node is not running: {node.halted}")
    if node.draining:
        raise ApiError(503, "unavailable", "the node is shutting down; send to another node")
    replica_of(request)
    statuses, done = await node.anchor(digests, wait=wait)
    return _anchor_response(node, statuses, done=done, wait=wait)


def _anchor_response(node: Node, statuses: Sequence[AnchorStatus], *, done: bool,
                     wait: bool) -> web.Response:
    result: dict[str, Any] = {"anchors": [s.to_json(with_receipt=wait) for s in statuses]}
    if wait and not done:
        result["timed_out"] = True
    replica = node.replica
    checkpoint = None if replica is None else replica.checkpoint
    result["tree_size"] = 0 if checkpoint is None else checkpoint[0]
    return web.json_response(result, status=200 if done else 202)


async def get_proof(request: web.Request) -> web.Response:
    """``GET /v1/proofs/{digest}[?against=latest]``: the receipt (text, or JSON with
    ``Accept``), against the first checkpoint that holds the digest (the earliest time bound)
    or, on request, the latest."""
    replica = replica_of(request)
    against = request.query.get("against", "first")
    if against not in ("first", "latest"):
        raise ApiError(400, "invalid_parameter", "against must be first or latest")
    digest = parse_digest(request.match_info["digest"])
    try:
        status, size = replica.proof(digest, latest=against == "latest")
    except NotFoundError:
        # Before telling a client "never anchored": the index's filters read from the disk
        # again (ledger.node.repair); a damaged one is then bypassed, and asked again.
        recheck = getattr(replica.store, "index_of_rechecked", None)
        if recheck is None or recheck(digest) is None:
            raise
        status, size = replica.proof(digest, latest=against == "latest")
    if status.receipt is None:
        return web.json_response(status.to_json(with_receipt=False), status=202)
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({**status.to_json(with_receipt=True), "tree_size": size})
    return web.Response(text=status.receipt, content_type="text/plain")


async def get_checkpoint_of(request: web.Request) -> web.Response:
    """``GET /v1/checkpoints/{size}``: the stored quorum checkpoint of one tree size."""
    replica = replica_of(request)
    text = request.match_info["size"]
    if not text.isdigit() or len(text) > 19 or (len(text) > 1 and text[0] == "0"):
        raise ApiError(400, "invalid_parameter", "size must be a non-negative integer")
    note = replica.store.checkpoint(int(text))
    if note is None:
        raise NotFoundError(f"no cosigned checkpoint of tree size {int(text)} is stored here")
    return web.Response(body=note, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def get_checkpoint(request: web.Request) -> web.Response:
    """``GET /v1/checkpoint``: the latest quorum checkpoint note."""
    checkpoint = replica_of(request).checkpoint
    if checkpoint is None:
        raise NotFoundError("no checkpoint has been cosigned yet")
    return web.Response(text=checkpoint[1], content_type="text/plain")


async def get_consistency(request: web.Request) -> web.Response:
    """``GET /v1/consistency?from=M&to=N``."""
    replica = replica_of(request)
    first, second = _int_param(request, "from"), _int_param(request, "to")
    if first < 1 or first > second:
        raise ApiError(400, "invalid_parameter", "need 1 <= from <= to")
    proof = replica.store.consistency_proof(first, second)
    return web.json_response({
        "from": first, "to": second,
        "proof": [base64.b64encode(h).decode("ascii") for h in proof],
    })


async def get_block(request: web.Request) -> web.Response:
    """``GET /v1/blocks/{height}``: a block and its certificate."""
    replica = replica_of(request)
    height = parse_decimal(request.match_info["height"], what="height")
    record = replica.block_record(height)
    if record is None:
        raise NotFoundError(f"no block at height {height}")
    block = decode_block(record.block)
    return web.json_response({
        "height": block.height,
        "hash": block.hash.hex(),
        "prev_hash": block.prev_hash.hex(),
        "time": block.time,
        "proposer": block.proposer.hex(),
        "tree_size": block.tree_size,
        "tree_root": base64.b64encode(block.tree_root).decode("ascii"),
        "digest_count": len(block.digests),
        "block": base64.b64encode(record.block).decode("ascii"),
        "certificate": base64.b64encode(record.certificate).decode("ascii"),
    })


async def get_evidence(request: web.Request) -> web.Response:
    """``GET /v1/evidence``: the equivocation evidence this node holds."""
    replica = replica_of(request)
    items = replica.evidence()
    return web.json_response({"evidence": items, "count": len(items),
                              "not_stored": replica.driver.evidence.dropped})


async def get_policy(request: web.Request) -> web.Response:
    """``GET /v1/policy``: the genesis trust policy."""
    return web.Response(text=node_of(request).config.genesis.trust_policy(),
                        content_type="text/plain")


async def get_status(request: web.Request) -> web.Response:
    """``GET /v1/status``: the replica's state, why it halted (``halted``), and the store's
    (``storage``: ``ok``, ``repairing``, ``disk_full`` or ``damaged``, with the reason, the
    bytes free and the scrub's progress)."""
    node = node_of(request)
    replica = replica_of(request)
    status = replica.status(node.now())
    status["halted"] = node.halted
    status["storage"] = node.care.state()
    return web.json_response(status)


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: the process runs and has not halted."""
    node = node_of(request)
    if node.halted is not None or node.replica is None:
        return web.json_response({"status": "failed", "reason": node.halted or "starting"},
                                 status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: caught up, signing, and hearing from a quorum."""
    node = node_of(request)
    replica = node.replica
    reasons = ["not started"] if replica is None else replica.readiness(node.now())
    if node.halted == "stopped":
        reasons.insert(0, "halted: stopped")
    if reasons:
        return web.json_response({"ready": False, "reasons": reasons}, status=503)
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` (Prometheus)."""
    return web.Response(body=node_of(request).metrics.exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``."""
    return web.json_response(openapi_document(origin=node_of(request).config.genesis.origin,
                                              max_digests=MAX_DIGESTS_PER_REQUEST))


async def post_peer_messages(request: web.Request) -> web.Response:
    """``POST /peer/v1/messages``: one signed envelope from another validator (its signature
    is the authentication: a bad one answers 403)."""
    node = node_of(request)
    data = await read_body(request, MAX_ENVELOPE_BYTES)
    if node.replica is None or node.halted is not None:
        raise ApiError(503, "unavailable", "the node is not running")
    try:
        node.receive_envelope(data)
    except UnknownSenderError:
        raise
    except VerificationError as exc:
        raise ApiError(403, exc.code, exc.diagnostics()) from None
    return web.Response(status=204)


#: Seconds between pings on an idle peer stream; one unanswered closes it.
STREAM_HEARTBEAT_SECONDS: Final = 10.0


async def peer_stream(request: web.Request) -> web.StreamResponse:
    """``GET /peer/v1/stream``: a websocket whose every binary frame is one signed envelope
    from another validator, handled as ``POST /peer/v1/messages`` handles its body, without an
    answer per frame. A frame that is not a valid envelope of a validator closes the stream
    (code 1008, the reason in the close frame); a node that is not running closes it with 1013
    (try again later)."""
    node = node_of(request)
    if node.replica is None or node.halted is not None:
        raise ApiError(503, "unavailable", "the node is not running")
    ws = web.WebSocketResponse(max_msg_size=MAX_ENVELOPE_BYTES, compress=False,
                               heartbeat=STREAM_HEARTBEAT_SECONDS)
    await ws.prepare(request)
    async for message in ws:
        if node.replica is None or node.halted is not None:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"the node is not running")
            break
        if message.type is not WSMsgType.BINARY:
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames only")
            break
        try:
            node.receive_envelope(message.data)
        except LedgerError as exc:
            node.faults.note("peer_refused", "peer stream from %s closed: %s",
                             request.remote or "?", exc.diagnostics())
            await ws.close(code=WSCloseCode.POLICY_VIOLATION,
                           message=exc.diagnostics()[:120].encode())
            break
    return ws
