"""The OpenAPI 3.1 document of a node's HTTP API (package-private; served at ``/openapi.json``).

Kept apart from the handlers (:mod:`ledger.node.api`) so that they stay short; the tests
check that every route the node serves is described here and that every path described here is
served.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
#: Sizes and heights the node parses (signed 64-bit); a larger number is a 400.
_MAX_SIZE = 2**63 - 1


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _shared() -> dict[str, Any]:
    """Schemas and responses several paths share."""
    digest_param = {
        "name": "digest", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "description": "SHA-256 of the document, 64 hex digits.",
    }
    anchor_item = {
        "type": "object",
        "required": ["digest", "status"],
        "properties": {
            "digest": {"type": "string", "description": "lowercase hex"},
            "status": {
                "type": "string", "enum": ["pending", "committed", "anchored"],
                "description": "pending: in the mempool; committed: in a block, its checkpoint "
                "is being cosigned; anchored: covered by a cosigned checkpoint, receipt ready",
            },
            "index": {"type": ["integer", "null"],
                      "description": "leaf index once committed, else null"},
            "receipt": {"type": ["string", "null"],
                        "description": "c2sp.org/tlog-proof@v1 text; present only with "
                        "?wait=true, null if the wait timed out before it was anchored"},
        },
    }
    anchors_response = {
        "type": "object",
        "required": ["anchors"],
        "properties": {
            "anchors": {"type": "array", "items": anchor_item},
            "tree_size": {"type": "integer"},
            "timed_out": {"type": "boolean",
                          "description": "?wait=true gave up before every digest was anchored"},
        },
    }
    common_errors = {
        "400": _error("Malformed request (codes: malformed_json, invalid_request, invalid_hex, "
                      "invalid_length, too_many_digests, invalid_parameter)"),
        "404": _error("Unknown route or resource (code: not_found)"),
    }
    return {"digest_param": digest_param, "anchor_item": anchor_item,
            "anchors_response": anchors_response, "common_errors": common_errors}


def _client_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The client routes."""
    return {
        "/v1/anchors": {"post": {
            "summary": f"Anchor 1 to {max_digests} document digests",
            "security": [{"bearer": []}],
            "parameters": [{
                "name": "wait", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                "description": "wait until every digest is committed and cosigned",
            }],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["digests"], "additionalProperties": False,
                "properties": {"digests": {
                    "type": "array", "minItems": 1, "maxItems": max_digests,
                    "items": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                }},
            }}}},
            "responses": {
                "200": _json("Every digest is anchored (with ?wait=true: with receipts)",
                             s["anchors_response"]),
                "202": _json("Accepted; some digests are not anchored yet (a 202 is "
                             "not a durability promise: poll /v1/proofs until 200)",
                             s["anchors_response"]),
                **s["common_errors"],
                "401": _error("Missing or unknown bearer token (code: unauthorized)"),
                "403": _error("Revoked token (code: forbidden)"),
                "413": _error("Body too large (code: body_too_large)"),
                "503": _error("Mempool full (code: overloaded) or the node is halted "
                              "or stopping (code: unavailable)"),
            },
        }},
        "/v1/proofs/{digest}": {"get": {
            "summary": "The receipt of a digest: against the first cosigned checkpoint whose "
                       "tree holds it (the earliest time bound), or the latest on request",
            "parameters": [s["digest_param"], {
                "name": "against", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["first", "latest"], "default": "first"},
                "description": "first: the earliest checkpoint (the same on every node); "
                               "latest: the latest, carrying the first as an earliest bridge",
            }],
            "responses": {
                "200": {
                    "description": "tlog-proof text, or JSON with Accept: application/json",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/json": {"schema": {
                            "type": "object",
                            "properties": {
                                "digest": {"type": "string"}, "index": {"type": "integer"},
                                "tree_size": {"type": "integer"},
                                "receipt": {"type": "string"},
                            },
                        }},
                    },
                },
                "202": _json("Known but not yet covered by a cosigned checkpoint",
                             s["anchor_item"]),
                **s["common_errors"],
            },
        }},
    }


def _tree_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The tree routes."""
    return {
        "/v1/checkpoint": {"get": {
            "summary": "The latest checkpoint cosigned by a quorum (signed note text)",
            "responses": {"200": _text("c2sp.org/tlog-checkpoint signed note"),
                          "404": _error("No checkpoint yet")},
        }},
        "/v1/checkpoints/{size}": {"get": {
            "summary": "The stored checkpoint of one tree size (signed note text, with every "
                       "cosignature this node holds for it)",
            "parameters": [{"name": "size", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0,
                                       "maximum": _MAX_SIZE}}],
            "responses": {"200": _text("c2sp.org/tlog-checkpoint signed note"),
                          **s["common_errors"]},
        }},
        "/v1/consistency": {"get": {
            "summary": "RFC 9162 consistency proof between two tree sizes",
            "parameters": [
                {"name": "from", "in": "query", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_SIZE},
                 "description": "the older tree size; from <= to, else 400"},
                {"name": "to", "in": "query", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_SIZE},
                 "description": "the newer tree size; beyond the log: 404"},
            ],
            "responses": {
                "200": _json("The proof (base64 hashes)", {
                    "type": "object",
                    "properties": {"from": {"type": "integer"}, "to": {"type": "integer"},
                                   "proof": {"type": "array",
                                             "items": {"type": "string"}}},
                }),
                **s["common_errors"],
            },
        }},
        "/v1/blocks/{height}": {"get": {
            "summary": "A committed block and its commit certificate",
            "parameters": [{"name": "height", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 1,
                                       "maximum": _MAX_SIZE}}],
            "responses": {
                "200": _json("block and certificate (canonical msgpack, base64)", {
                    "type": "object",
                    "properties": {
                        "height": {"type": "integer"}, "hash": {"type": "string"},
                        "prev_hash": {"type": "string"}, "time": {"type": "integer"},
                        "proposer": {"type": "string"},
                        "tree_size": {"type": "integer"},
                        "tree_root": {"type": "string"},
                        "digest_count": {"type": "integer"},
                        "block": {"type": "string", "contentEncoding": "base64"},
                        "certificate": {"type": "string", "contentEncoding": "base64"},
                    },
                }),
                **s["common_errors"],
            },
        }},
    }


def _trust_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The trust routes: policy, policy chain, evidence."""
    return {
        "/v1/evidence": {"get": {
            "summary": "Equivocation evidence this node holds (two conflicting signed votes of "
                       "one validator), kept across restarts",
            "responses": {"200": _json("evidence items, oldest first", {
                "type": "object",
                "properties": {
                    "count": {"type": "integer"}, "not_stored": {"type": "integer"},
                    "evidence": {"type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "height": {"type": "integer"}, "round": {"type": "integer"},
                            "type": {"type": "string", "enum": ["prevote", "precommit"]},
                            "validator": {"type": "string"},
                            "name": {"type": ["string", "null"]},
                            "block_hashes": {"type": "array",
                                             "items": {"type": ["string", "null"]}},
                            "evidence": {"type": "string", "contentEncoding": "base64"},
                        },
                    }},
                },
            })},
        }},
        "/v1/policy": {"get": {
            "summary": "The genesis trust policy (c2sp.org/tlog-policy): verifies receipts "
                       "until the first validator-set change; after one, use "
                       "/v1/policy-chain",
            "responses": {"200": _text("tlog-policy text")},
        }},
        "/v1/policy-chain": {"get": {
            "summary": "The policy chain (ledger-policy-chain/v1): the genesis validators "
                       "and every validator-set change in force, for verifying receipts "
                       "offline across changes (ledger verify --policy-chain)",
            "responses": {"200": _text("policy chain text")},
        }},
    }


def _admin_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The admin routes."""
    return {
        "/v1/admin/validator-changes": {"post": {
            "summary": "Submit a validator-set change approved by a quorum of the current "
                       "validators (operators: an admin bearer token); the node gossips it "
                       "and a proposer includes it in a block",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["change"],
                "properties": {"change": {
                    "type": "string", "contentEncoding": "base64",
                    "description": "canonical msgpack bytes of the change, with approvals",
                }},
            }}}},
            "responses": {
                "202": _json("Pending (new: false if it was pending already)", {
                    "type": "object",
                    "properties": {"change_id": {"type": "string"},
                                   "effective_height": {"type": "integer"},
                                   "status": {"type": "string"},
                                   "new": {"type": "boolean"}},
                }),
                "400": _error("Malformed body or change (codes: malformed, protocol)"),
                "401": _error("Missing or unknown bearer token (code: unauthorized)"),
                "403": _error("Revoked or non-admin token (code: forbidden)"),
                "413": _error("Body too large (code: body_too_large)"),
                "422": _error("Not approved by a quorum of the current validators, another "
                              "chain or set, or the effective height is too close "
                              "(code: invalid_change)"),
                "503": _error("The node is not running (code: unavailable)"),
            },
        }},
    }


def _ops_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The ops routes."""
    return {
        "/v1/status": {"get": {
            "summary": "Height, round, tree size, peers and readiness of this node",
            "responses": {"200": _json("status", {"type": "object"})},
        }},
        "/healthz": {"get": {"summary": "Liveness", "responses": {
            "200": _json("alive", {"type": "object"}),
            "503": _json("stopped or failed", {"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness: caught up and in consensus",
                            "responses": {
                                "200": _json("ready", {"type": "object"}),
                                "503": _json("not ready, with reasons",
                                             {"type": "object"})}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": _text("Prometheus text format")}}},
        "/verify": {"get": {"summary": "Redirect to the verification page",
                            "responses": {"308": {"description": "to /verify/"}}}},
        "/verify/": {"get": {
            "summary": "Offline receipt verification page (runs in the browser; the "
                       "document never leaves it)",
            "responses": {"200": {"description": "HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        "/verify/{name}": {"get": {
            "summary": "Assets of the verification page (verify.js, verify.css, verify.svg)",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the asset"},
                          "404": {"description": "no such asset"}},
        }},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": _json("OpenAPI",
                                                             {"type": "object"})}}},
    }


def _peers_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The peers routes."""
    return {
        "/add-checkpoint": {"post": {
            "summary": "c2sp.org/tlog-witness add-checkpoint: this validator cosigns a "
                       "checkpoint of its own log that its store has committed",
            "requestBody": {"required": True, "content": {"text/plain": {"schema": {
                "type": "string",
                "description": "'old <size>', 0 to 63 base64 consistency proof lines, "
                               "an empty line, then the signed checkpoint note",
            }}}},
            "responses": {
                "200": _text("One cosignature line (type 0x04) by this validator's "
                             "cosigner key"),
                "400": _error("Malformed body, or old size above the checkpoint size"),
                "403": _error("No trusted log signature verifies (code: bad_signature)"),
                "404": _error("Unknown log origin (code: unknown_log)"),
                "409": {"description": "The old size is not the size last cosigned here "
                                       "(or the same size with another root); the body "
                                       "is that size in decimal",
                        "content": {"text/x.tlog.size": {"schema": {"type": "string"}}}},
                "413": _error("Body too large (code: body_too_large)"),
                "422": _error("The consistency proof does not verify, or the checkpoint "
                              "contradicts this validator's tree (codes: bad_proof, "
                              "contradicts_tree)"),
                "503": _error("Not committed here yet (code: not_committed, with "
                              "Retry-After) or the node is not running"),
            },
        }},
        "/peer/v1/messages": {"post": {
            "summary": "Validator-to-validator envelope (signed msgpack); peers only",
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}},
            "responses": {
                "204": {"description": "accepted"},
                "400": _error("Malformed envelope (code: protocol)"),
                "403": _error("Unknown sender or bad signature (codes: unknown_sender, "
                              "verification_failed)"),
                "413": _error("Envelope too large (code: body_too_large)"),
            },
        }},
        "/peer/v1/stream": {"get": {
            "summary": "Validator-to-validator stream: a websocket whose every binary frame is "
                       "one signed envelope, as the body of POST /peer/v1/messages; peers only",
            "responses": {
                "101": {"description": "switching to the websocket protocol; a frame that is "
                                       "not a validator's valid envelope closes it (1008)"},
                "400": _error("Not a websocket upgrade (code: bad_request)"),
                "503": _error("The node is not running (code: unavailable)"),
            },
        }},
    }


#: A tile index in the spec's path elements, 1 to 7 groups (ledger.tiles.core), with an optional
#: partial width 1-255: exactly the spellings the node accepts.
_TILE_INDEX = (r"^((x00[1-9]|x0[1-9][0-9]|x[1-9][0-9]{2})(/x[0-9]{3}){0,5}/)?[0-9]{3}"
               r"(\.p/([1-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5]))?$")


def _tiles_paths(s: dict[str, Any], max_digests: int) -> dict[str, Any]:
    """The c2sp.org/tlog-tiles routes."""
    index = {"name": "index", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": _TILE_INDEX},
             "example": "x001/x234/067.p/5",
             "description": "the tile index in 3-digit groups, all but the last prefixed with x "
                            "(1234067 is x001/x234/067), then .p/<W> for a partial tile of "
                            "width W"}
    cache = {"Cache-Control": {"schema": {"type": "string"}, "required": True,
                               "description": "full: public, max-age=31536000, immutable; "
                                              "partial: public, max-age=60"}}
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    errors = {"400": _error("Not a tile path in the spec's one spelling (code: "
                            "invalid_parameter)"),
              "404": _error("Beyond the tree of the latest checkpoint, or no checkpoint yet "
                            "(code: not_found)")}
    return {
        "/checkpoint": {"get": {
            "summary": "c2sp.org/tlog-tiles: the latest checkpoint cosigned by a quorum "
                       "(signed note text); cacheable for 5 s",
            "responses": {
                "200": {**_text("c2sp.org/tlog-checkpoint signed note"),
                        "headers": {"Cache-Control": {"schema": {"type": "string"},
                                                      "required": True}}},
                "404": _error("No checkpoint yet"),
            },
        }},
        "/tile/{level}/{index}": {"get": {
            "summary": "c2sp.org/tlog-tiles: 256 (or, partial, W) consecutive hashes of the "
                       "tree at level 8 L",
            "parameters": [{"name": "level", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 63}},
                           index],
            "responses": {"200": {"description": "the tile: W * 32 bytes", "content": binary,
                                  "headers": cache},
                          **errors},
        }},
        "/tile/entries/{index}": {"get": {
            "summary": "c2sp.org/tlog-tiles: the entries (32-byte document digests) of a "
                       "level-0 tile, each after its uint16 big-endian length",
            "parameters": [index],
            "responses": {"200": {"description": "the entry bundle: W * 34 bytes",
                                  "content": binary, "headers": cache},
                          **errors},
        }},
    }


def openapi_document(*, origin: str, max_digests: int) -> dict[str, Any]:
    """The OpenAPI description of every route of a node of log ``origin``."""
    shared = _shared()
    paths: dict[str, Any] = {}
    for group in (_client_paths, _tree_paths, _trust_paths, _admin_paths, _ops_paths,
                  _peers_paths, _tiles_paths):
        paths.update(group(shared, max_digests))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ledger node API",
            "version": "1",
            "description": f"Permissioned hash-ledger {origin}: anchors SHA-256 document "
            "digests into an RFC 9162 Merkle log agreed by BFT consensus; receipts are "
            "c2sp.org/tlog-proof files verifiable offline against the trust policy.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"},
                                       "message": {"type": "string"}},
                    }},
                },
            },
        },
        "paths": paths,
    }
