"""The node's one route table: every path, who may call it, its largest body, and which
listener serves it.

The middleware (:mod:`ledger.node.middleware`) applies the access rule and the body limit of
each route and turns every error into the one error model; docs/api.md documents the routes
and ``/openapi.json`` (:mod:`ledger.node.openapi`) describes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ledger.node import admin_api, api, tiles_api, verify_page, witness_api
from ledger.node.middleware import ADMIN, ANY_CLIENT, BODY_TIMEOUT_KEY, PUBLIC, Route, middleware
from ledger.replica.wire import MAX_ENVELOPE_BYTES
from ledger.replica.witness import MAX_ADD_CHECKPOINT_BYTES, WITNESS_PATH

if TYPE_CHECKING:
    from ledger.node.server import Node

__all__ = ["ROUTES", "build_app"]

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/anchors", api.post_anchors, ANY_CLIENT, api.MAX_ANCHOR_BODY_BYTES),
    Route("GET", "/v1/proofs/{digest}", api.get_proof),
    Route("GET", "/v1/checkpoint", api.get_checkpoint, peer=True),
    Route("GET", "/v1/checkpoints/{size}", api.get_checkpoint_of, peer=True),
    Route("GET", "/v1/consistency", api.get_consistency),
    Route("GET", "/v1/blocks/{height}", api.get_block, peer=True),
    Route("GET", "/v1/policy", api.get_policy),
    Route("GET", "/v1/evidence", api.get_evidence),
    Route("GET", "/v1/status", api.get_status, peer=True),
    Route("GET", "/healthz", api.healthz, peer=True),
    Route("GET", "/readyz", api.readyz, peer=True),
    Route("GET", "/metrics", api.metrics),
    Route("GET", "/openapi.json", api.openapi),
    Route("POST", "/peer/v1/messages", api.post_peer_messages, PUBLIC, MAX_ENVELOPE_BYTES,
          peer=True, peer_only=True),
    Route("GET", "/peer/v1/stream", api.peer_stream, PUBLIC, peer=True, peer_only=True),
    Route("POST", WITNESS_PATH, witness_api.add_checkpoint, PUBLIC, MAX_ADD_CHECKPOINT_BYTES),
    Route("POST", admin_api.ADMIN_CHANGES_PATH, admin_api.post_change, ADMIN,
          admin_api.MAX_ADMIN_BODY),
    Route("GET", admin_api.POLICY_CHAIN_PATH, admin_api.get_policy_chain),
    # c2sp.org/tlog-tiles, with the node's URL as the log's prefix (ledger.node.tiles_api).
    # Served to peers too: a node repairs a damaged tile from them (ledger.node.repair).
    Route("GET", "/checkpoint", tiles_api.get_checkpoint, peer=True),
    Route("GET", "/tile/entries/{index:.+}", tiles_api.get_entries, peer=True),
    Route("GET", "/tile/{level}/{index:.+}", tiles_api.get_tile, peer=True),
)
"""``peer=True``: served on the peer listener too (``peer_listen_port``): the envelope route and
what catch-up and repairs fetch. ``peer_only``: not served on the public listener when peers
have their own."""


def build_app(node: Node) -> web.Application:
    """The aiohttp application of ``node``: every route of :data:`ROUTES` and the
    verification page."""
    by_handler = {route.handler: route for route in ROUTES}
    app = web.Application(middlewares=[middleware(node, by_handler)],
                          client_max_size=MAX_ENVELOPE_BYTES)
    app[api.NODE_KEY] = node
    app[BODY_TIMEOUT_KEY] = node.config.limits.body_timeout_ms / 1000
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    verify_page.add_verify_routes(app)  # the offline verification page (static, strict CSP)
    return app
