"""The OpenAPI 3.1 description of ``ledger eod serve`` (served at ``/openapi.json``).

One operation per workflow step, each with its body's exact fields (unknown fields are refused
by the service too), the queries, the admin routes and the citizen's lookup. Request schemas
say what is well-formed; whether a step is allowed (its order, the actor's role, the case's
state) is the rules' to decide, and such a refusal is a documented 409.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["document"]

_TEXT: Final = {"type": "string", "minLength": 1, "maxLength": 500, "pattern": r"\S"}
_HEX: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_DATE: Final = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
_ERROR: Final = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

#: Each step's fields beyond ``as`` (and ``ref``, ``at``): (schema, required).
_STEP_FIELDS: Final[dict[str, dict[str, tuple[dict[str, Any], bool]]]] = {
    "register": {
        "document": (_HEX, False),
        "eform": ({"type": "string", "contentEncoding": "base64"}, False),
        "channel": (_TEXT, True),
        "direction": ({"enum": ["incoming", "outgoing", "internal"]}, False),
        "kind": ({"enum": ["letter", "invoice"]}, False),
        "attachments": ({"type": "integer", "minimum": 0, "maximum": 10000}, False),
        "sender_ref": (_TEXT, False),
        "case": (_TEXT, False),
    },
    "assign": {"to": (_TEXT, True), "method": (_TEXT, False), "deadline": (_DATE, False)},
    "open-case": {
        "unit": (_TEXT, True),
        "class": (_TEXT, True),
        "kind": (_TEXT, False),
        "category": (_TEXT, False),
        "category_reason": (_TEXT, False),
        "sign": (_TEXT, False),
    },
    "attach": {"document": (_HEX, True), "kind": (_TEXT, True)},
    "submit": {"document": (_HEX, True)},
    "accept": {
        "step": ({"enum": ["substantive", "formal", "coding", "countersign", "approve"]}, False),
        "level": ({"type": "integer", "minimum": 0, "maximum": 9}, False),
        "accounts": (_TEXT, False),
        "note": (_TEXT, False),
        "document": (_HEX, False),
    },
    "reject": {"reason": (_TEXT, True)},
    "sign": {"document": (_HEX, True)},
    "dispatch": {"channel": (_TEXT, True), "document": (_HEX, False)},
    "record-receipt": {"document": (_HEX, True), "kind": ({"enum": ["UPP", "UPO", "UPD"]}, True)},
    "deliver": {"deemed": ({"type": "boolean"}, False), "notice": (_DATE, False),
                "date": (_DATE, False)},
    "close": {},
    "reopen": {"reason": (_TEXT, True)},
    "archive": {},
    "destroy": {"consent": (_TEXT, True)},
}
_NO_REF: Final = {"register", "open-case"}


def _responses(ok: int, schema: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(ok): {"description": "OK", "content": {"application/json": {"schema": schema}}}
    }
    meaning = {400: "Malformed request", 401: "No valid token or certificate",
               403: "Not allowed for this client", 404: "Unknown office, matter or position",
               409: "Refused by the workflow rules; nothing was stored",
               429: "Rate limited", 502: "A receipt from the ledger does not verify",
               503: "The ledger or the store is unavailable; nothing was stored"}
    for code in codes:
        out[str(code)] = {"description": meaning[code],
                          "content": {"application/json": {"schema": _ERROR}}}
    return out


def _step(step: str) -> dict[str, Any]:
    fields = _STEP_FIELDS[step]
    properties: dict[str, Any] = {"as": _TEXT, "at": {"type": "string", "maxLength": 40}}
    required = ["as"]
    if step == "register":
        pass
    elif step in _NO_REF:
        properties["ref"] = _TEXT
    else:
        properties["ref"] = _TEXT
        required.append("ref")
    for name, (schema, needed) in fields.items():
        properties[name] = schema
        if needed:
            required.append(name)
    result = {
        "type": "object",
        "properties": {"event": _HEX, "seq": {"type": "integer"},
                       "case": {"type": ["string", "null"]}, "type": {"type": "string"}},
        "required": ["event", "seq", "case", "type"],
    }
    return {
        "post": {
            "operationId": f"step_{step.replace('-', '_')}",
            "summary": f"Workflow step: {step}",
            "security": [{"token": []}],
            "parameters": [{"$ref": "#/components/parameters/office"}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {
                    "type": "object", "properties": properties, "required": required,
                    "additionalProperties": False}}},
            },
            "responses": _responses(201, result, 400, 401, 403, 404, 409, 502, 503),
        }
    }


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def document(offices: list[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a service holding ``offices``."""
    base = "/v1/offices/{office}"
    office = [{"$ref": "#/components/parameters/office"}]
    obj = {"type": "object"}
    paths: dict[str, Any] = {f"{base}/steps/{step}": _step(step) for step in _STEP_FIELDS}
    get = {"security": [{"token": []}], "parameters": office}
    paths[f"{base}/cases"] = {"get": {
        **get, "operationId": "cases", "summary": "Matters by status, unit, officer, deadline",
        "parameters": [*office, _query("status", _TEXT), _query("unit", _TEXT),
                       _query("officer", _TEXT), _query("deadline_before", _DATE),
                       _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                       _query("offset", {"type": "integer", "minimum": 0})],
        "responses": _responses(200, obj, 400, 401, 404)}}
    ref = {"name": "ref", "in": "query", "required": True, "schema": _TEXT}
    paths[f"{base}/case"] = {"get": {
        **get, "operationId": "case", "summary": "One matter's course, with proven times",
        "parameters": [*office, ref], "responses": _responses(200, obj, 400, 401, 404, 502)}}
    paths[f"{base}/trail"] = {"get": {
        **get, "operationId": "trail", "summary": "The matter's audit trail bundle",
        "parameters": [*office, ref],
        "responses": _responses(200, obj, 400, 401, 404, 502, 503)}}
    paths[f"{base}/deadlines"] = {"get": {
        **get, "operationId": "deadlines", "summary": "Overdue and due-soon matters",
        "parameters": [*office, _query("unit", _TEXT), _query("officer", _TEXT),
                       _query("soon", {"type": "integer", "minimum": 0, "maximum": 365}),
                       _query("all", {"enum": ["true", "false"]})],
        "responses": _responses(200, obj, 400, 401, 404)}}
    paths[f"{base}/registers/{{which}}"] = {"get": {
        **get, "operationId": "register", "summary": "The invoice or contract register",
        "parameters": [*office,
                       {"name": "which", "in": "path", "required": True,
                        "schema": {"enum": ["invoices", "contracts"]}},
                       _query("unit", _TEXT), _query("since", _DATE), _query("until", _DATE),
                       _query("stage", _TEXT), _query("format", {"enum": ["json", "csv"]})],
        "responses": {**_responses(200, obj, 400, 401, 404),
                      "200": {"description": "OK", "content": {
                          "application/json": {"schema": obj},
                          "text/csv": {"schema": {"type": "string"}}}}}}}
    paths[f"{base}/import"] = {"post": {
        **get, "operationId": "import", "summary": "A batch of historical matters (admin)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 10000,
                                     "items": {"type": "object"}}}}}}},
        "responses": _responses(201, obj, 400, 401, 403, 404, 409, 502, 503)}}
    paths[f"{base}/admin/deadletters"] = {"get": {
        **get, "operationId": "deadletters", "summary": "Webhook dead letters (admin)",
        "parameters": [*office, _query("sink", _TEXT)],
        "responses": _responses(200, obj, 401, 403, 404)}}
    paths[f"{base}/admin/deadletters/replay"] = {"post": {
        **get, "operationId": "replay", "summary": "Send a receiver's dead letters again",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["sink"], "properties": {"sink": _TEXT}}}}},
        "responses": _responses(200, obj, 400, 401, 403, 404)}}
    paths[f"{base}/admin/mail"] = {"get": {
        **get, "operationId": "mail", "summary": "The mail queue (admin)",
        "parameters": [*office, _query("status", {"enum": ["queued", "sent", "failed"]})],
        "responses": _responses(200, obj, 401, 403, 404)}}
    lookup_body = {"type": "object", "required": ["register", "code"],
                   "properties": {"register": {"type": "string", "maxLength": 64},
                                  "code": {"type": "string", "maxLength": 64}}}
    paths[f"{base}/status"] = {"post": {
        "operationId": "status", "summary": "The citizen's status lookup (public)",
        "parameters": office, "security": [],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": lookup_body}}},
        "responses": _responses(200, obj, 404, 429)}}
    page = {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
    paths["/status/{office}"] = {
        "get": {"operationId": "status_page", "summary": "The status page", "security": [],
                "parameters": office, "responses": {"200": page, "404": page}},
        "post": {"operationId": "status_page_lookup", "summary": "A lookup from the page",
                 "security": [], "parameters": office,
                 "requestBody": {"required": True, "content": {
                     "application/x-www-form-urlencoded": {"schema": lookup_body}}},
                 "responses": {"200": page, "404": page, "429": page}},
    }
    paths["/metrics"] = {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                                 "security": [], "responses": {"200": {
                                     "description": "Metrics", "content": {
                                         "text/plain": {"schema": {"type": "string"}}}}}}}
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness",
                                 "security": [], "responses": {"200": {
                                     "description": "OK", "content": {
                                         "application/json": {"schema": obj}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ledger eod serve", "version": "1"},
        "paths": paths,
        "components": {
            "parameters": {"office": {"name": "office", "in": "path", "required": True,
                                      "schema": {"enum": offices or ["-"]}}},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
    }
