"""The operators' routes: validator-set changes (admin token) and the policy chain.

``POST /v1/admin/validator-changes`` takes ``{"change": "<base64 of the canonical change>"}``
from a client whose token has the ``admin`` role, checks that a quorum of the newest validator
set approved it, queues it for a block and gossips it (202; 400 for bytes that do not parse,
422 for a change that is not approved or cannot take effect any more). ``GET
/v1/policy-chain`` serves the ``ledger-policy-chain/v1`` file auditors verify receipts across
changes with. docs/reconfiguration.md has the procedure.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ledger.consensus.reconfig import MAX_CHANGE_BYTES, ValidatorSetChange, decode_change
from ledger.errors import MalformedError, VerificationError
from ledger.inputs import parse_base64, parse_json_object
from ledger.node.api import node_of, replica_of
from ledger.node.middleware import ApiError, read_body

__all__ = ["ADMIN_CHANGES_PATH", "MAX_ADMIN_BODY", "POLICY_CHAIN_PATH", "parse_change_body"]

ADMIN_CHANGES_PATH: Final = "/v1/admin/validator-changes"
POLICY_CHAIN_PATH: Final = "/v1/policy-chain"
#: A JSON body holds the base64 of at most MAX_CHANGE_BYTES, plus a little.
MAX_ADMIN_BODY: Final = MAX_CHANGE_BYTES * 4 // 3 + 1024


def parse_change_body(body: bytes) -> ValidatorSetChange:
    """The change of a ``{"change": "<base64 of the canonical bytes>"}`` body.

    Raises:
        MalformedError: not that JSON, not base64, or bytes :func:`decode_change` refuses
            (a :class:`~ledger.errors.ProtocolError`).
    """
    obj = parse_json_object(body)
    if set(obj) != {"change"} or not isinstance(obj.get("change"), str):
        raise MalformedError('the body must be {"change": "<base64>"}')
    raw = parse_base64(obj["change"], what="change", max_bytes=MAX_CHANGE_BYTES)
    return decode_change(raw)


async def post_change(request: web.Request) -> web.Response:
    """``POST /v1/admin/validator-changes`` (module docstring)."""
    node = node_of(request)
    body = await read_body(request, MAX_ADMIN_BODY)
    if node.halted is not None:
        raise ApiError(503, "unavailable", f"the node is not running: {node.halted}")
    replica = replica_of(request)
    change = parse_change_body(body)
    try:
        added, actions = replica.submit_change(change, node.now())
    except VerificationError as exc:
        raise ApiError(422, "invalid_change", exc.diagnostics()) from None
    node.perform(actions)
    return web.json_response(
        {"change_id": change.change_id.hex(), "effective_height": change.effective_height,
         "status": "pending", "new": added},
        status=202,
    )


async def get_policy_chain(request: web.Request) -> web.Response:
    """``GET /v1/policy-chain``."""
    chain = replica_of(request).driver.validators.policy_chain()
    return web.Response(text=chain.format(), content_type="text/plain")
