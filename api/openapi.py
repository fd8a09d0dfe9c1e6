"""The OpenAPI 3 document of every route (docs/reference.md#http-api), built once from small tables."""
from __future__ import annotations

from functools import lru_cache

BASE = "/api/v1/document-numbering"

CODE = {"type": "string", "minLength": 1, "maxLength": 30}
NULLABLE_CODE = {"type": ["string", "null"], "minLength": 1, "maxLength": 30}

SCHEMAS: dict = {
    "Problem": {
        "type": "object", "required": ["type", "title", "status", "code"],
        "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "properties": {"field": {"type": "string"},
                                                 "message": {"type": "string"}}}},
        },
    },
    "NumberingContext": {
        "type": "object", "required": ["project", "correspondence_type"],
        "description": "An optional member that is null counts as absent.",
        "properties": {
            "project": CODE, "correspondence_type": CODE, "originator": NULLABLE_CODE,
            "recipient": NULLABLE_CODE, "sub_type": NULLABLE_CODE, "rfa_type": NULLABLE_CODE,
            "discipline": NULLABLE_CODE, "revision": NULLABLE_CODE,
            "document_date": {"type": ["string", "null"], "format": "date"},
            "document_ref": {"type": ["string", "null"], "maxLength": 255},
        },
    },
    "IssuedNumber": {
        "type": "object",
        "required": ["document_number", "sequence", "state", "source", "counter_key",
                     "issued_at", "request_id"],
        "properties": {
            "document_number": {"type": "string"},
            "sequence": {"type": ["integer", "null"]},
            "state": {"type": "string",
                      "enum": ["RESERVED", "CONFIRMED", "CANCELLED", "EXPIRED", "VOID"]},
            "source": {"type": "string",
                       "enum": ["GENERATE", "RESERVE", "MANUAL", "IMPORT", "REPLACE"]},
            "counter_key": {"type": ["string", "null"]},
            "config_id": {"type": ["integer", "null"]},
            "config_version": {"type": ["integer", "null"]},
            "document_date": {"type": ["string", "null"]},
            "issued_at": {"type": "string"}, "request_id": {"type": "string"},
            "document_ref": {"type": "string"},
            "reservation": {"type": "object", "properties": {
                "token": {"type": "string"}, "expires_at": {"type": "string"}}},
            "row_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$",
                         "description": "the row's hash on its counter's ledger chain "
                                        "(docs/verification.md); keep it as a receipt"},
        },
    },
    "Queued": {
        "type": "object", "required": ["request_id", "status", "status_url"],
        "properties": {"request_id": {"type": "string"}, "status": {"type": "string"},
                       "status_url": {"type": "string"}},
    },
    "RequestStatus": {
        "type": "object", "required": ["request_id", "status"],
        "properties": {
            "request_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
            "result": {"$ref": "#/components/schemas/IssuedNumber"},
            "error": {"type": "object"},
        },
    },
    "Page": {
        "type": "object", "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {"type": "object"}},
                       "next_cursor": {"type": ["string", "null"]}},
    },
    "Config": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "project": {"type": "string"},
            "correspondence_type": {"type": ["string", "null"]},
            "template": {"type": "string"},
            "reset": {"type": "string", "enum": ["YEARLY", "MONTHLY", "FISCAL_YEARLY", "NONE"]},
            "fiscal_year_start_month": {"type": "integer"},
            "sequence_start": {"type": "integer"},
            "counter_scope": {"type": ["array", "null"], "items": {"type": "string"}},
            "version": {"type": "integer"}, "active": {"type": "boolean"},
        },
    },
    "ConfigCreate": {
        "type": "object", "required": ["project", "template", "reset"],
        "properties": {
            "project": CODE, "correspondence_type": NULLABLE_CODE,
            "template": {"type": "string", "maxLength": 100},
            "reset": {"type": "string", "enum": ["YEARLY", "MONTHLY", "FISCAL_YEARLY", "NONE"]},
            "fiscal_year_start_month": {"type": "integer", "minimum": 1, "maximum": 12},
            "sequence_start": {"type": "integer", "minimum": 0},
            "counter_scope": {"type": ["array", "null"], "items": {"type": "string"}},
            "active": {"type": "boolean"},
        },
    },
    "ConfigUpdate": {
        "type": "object", "required": ["change_reason"],
        "properties": {
            "template": {"type": "string", "maxLength": 100},
            "reset": {"type": "string", "enum": ["YEARLY", "MONTHLY", "FISCAL_YEARLY", "NONE"]},
            "fiscal_year_start_month": {"type": "integer", "minimum": 1, "maximum": 12},
            "sequence_start": {"type": "integer", "minimum": 0},
            "counter_scope": {"type": ["array", "null"], "items": {"type": "string"}},
            "active": {"type": "boolean"},
            "change_reason": {"type": "string", "minLength": 10},
        },
    },
    "CatalogEntry": {
        "type": "object", "required": ["kind", "code", "name", "active"],
        "properties": {"kind": {"type": "string"}, "code": {"type": "string"},
                       "name": {"type": "string", "maxLength": 255},
                       "active": {"type": "boolean"}},
    },
    "CatalogEntryWrite": {
        "type": "object", "required": ["name"],
        "description": "The kind and the code are the path's; the same members in the body "
                       "are ignored.",
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 255},
                       "active": {"type": "boolean", "default": True}},
    },
    "Readiness": {
        "type": "object",
        "properties": {"database": {"type": "string"}, "broker": {"type": "string"},
                       "result_backend": {"type": "string"},
                       "mode": {"type": "string", "enum": ["queue", "db-fallback"]}},
    },
}

ERROR_STATUSES = ("400", "401", "403", "404", "409", "410", "413", "415", "422", "429", "503")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems() -> dict:
    return {code: {"description": "problem",
                   "content": {"application/problem+json": {"schema": _ref("Problem")}}}
            for code in ERROR_STATUSES}


def _op(summary: str, responses: dict, *, body: dict | None = None, params: list | None = None,
        perm: str | None = None, idempotent_key: bool = False, auth: bool = True,
        example: dict | None = None) -> dict:
    op: dict = {"summary": summary, "responses": {**responses, **(_problems() if auth else {})}}
    if perm:
        op["x-permission"] = perm
    parameters = list(params or [])
    if idempotent_key:
        parameters.append({"name": "Idempotency-Key", "in": "header", "required": True,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255}})
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        media: dict = {"schema": body}
        if example is not None:
            media["example"] = example
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    if not auth:
        op["security"] = []
    return op


def _path_param(name: str, schema: dict | None = None, example: object = None) -> dict:
    param = {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}
    if example is not None:
        param["example"] = example
    return param


def _query(name: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False,
            "schema": schema or {"type": "string"}}


def _filter(name: str, schema: dict) -> dict:
    """A filter whose empty value means "not given" (as every filter of these routes)."""
    return {**_query(name, {"anyOf": [schema, {"type": "string", "maxLength": 0}]}),
            "description": "empty: not given"}


PAGING = [_query("cursor"), _query("limit", {"type": "integer", "minimum": 1, "maximum": 500})]
KIND = {"type": "string", "enum": ["project", "organization", "correspondence_type", "sub_type",
                                   "rfa_type", "discipline"]}  # another kind: 404
TIMEOUT = _query("timeout", {"type": "number", "minimum": 0, "maximum": 30})
ISSUE_BODY = {"allOf": [_ref("NumberingContext"), {"type": "object", "properties": {
    "mode": {"type": "string", "enum": ["generate", "reserve"]}}}]}
# Examples (also what schemathesis's examples phase sends first, tests/integration/
# test_schema_fuzz.py): the reference's letter from คคง. to สคฉ.3.
CONTEXT_EXAMPLE = {"project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
                   "recipient": "สคฉ.3", "document_date": "2025-06-15"}
NUMBER_EXAMPLE = "คคง.-สคฉ.3-0001-2568"
COUNTER_KEY_EXAMPLE = "LCBP3|ORIGINATOR=คคง.|RECIPIENT=สคฉ.3|Y2025"


def _paths() -> dict:
    issued = _json(_ref("IssuedNumber"), "issued")
    queued = _json(_ref("Queued"), "queued; poll status_url")
    page = _json(_ref("Page"))
    return {
        f"{BASE}/requests": {"post": _op(
            "Submit an issuing request", {"202": queued, "200": _json(_ref("RequestStatus"))},
            body=ISSUE_BODY, perm="correspondence.create", idempotent_key=True,
            example={**CONTEXT_EXAMPLE, "mode": "generate"})},
        f"{BASE}/requests/{{request_id}}": {"get": _op(
            "Status of a request", {"200": _json(_ref("RequestStatus"))},
            params=[_path_param("request_id")], perm="correspondence.read")},
        f"{BASE}/generate": {"post": _op(
            "Issue a number and wait for it", {"201": issued, "202": queued},
            body=_ref("NumberingContext"), params=[TIMEOUT], perm="correspondence.create",
            idempotent_key=True, example=CONTEXT_EXAMPLE)},
        f"{BASE}/reserve": {"post": _op(
            "Reserve a number", {"201": issued, "202": queued}, body=_ref("NumberingContext"),
            params=[TIMEOUT], perm="correspondence.create", idempotent_key=True,
            example=CONTEXT_EXAMPLE)},
        f"{BASE}/preview": {"post": _op(
            "Preview the next number without consuming it", {"200": _json({"type": "object"})},
            body={"allOf": [_ref("NumberingContext"), {"type": "object", "properties": {
                "template": {"type": "string"}}}]}, perm="correspondence.read",
            example=CONTEXT_EXAMPLE)},
        f"{BASE}/numbers/{{document_number}}": {"get": _op(
            "Explain an issued number", {"200": _json({"type": "object"})},
            params=[_path_param("document_number", example=NUMBER_EXAMPLE), _query("project")],
            perm="correspondence.read")},
        f"{BASE}/catalog/{{kind}}": {"get": _op(
            "List catalog entries", {"200": page},
            params=[_path_param("kind", KIND, example="organization"), *PAGING],
            perm="correspondence.read")},
        f"{BASE}/catalog/{{kind}}/{{code}}": {
            "get": _op("Get a catalog entry", {"200": _json(_ref("CatalogEntry"))},
                       params=[_path_param("kind", KIND, example="organization"),
                               _path_param("code", example="คคง.")],
                       perm="correspondence.read"),
            "put": _op("Create or update a catalog entry",
                       {"200": _json(_ref("CatalogEntry")), "201": _json(_ref("CatalogEntry"))},
                       params=[_path_param("kind", KIND, example="organization"),
                               _path_param("code", example="TEAM-C")],
                       body=_ref("CatalogEntryWrite"), perm="system.manage_settings",
                       example={"name": "Team C", "active": True})},
        f"{BASE}/configs": {
            "post": _op("Create a numbering config", {"201": _json(_ref("Config"))},
                        body=_ref("ConfigCreate"), perm="system.manage_settings",
                        example={"project": "P2", "correspondence_type": "RFI",
                                 "template": "{PROJECT}-{CORR_TYPE}-{SEQ:4}-{YEAR:B.E.}",
                                 "reset": "YEARLY"}),
            "get": _op("List numbering configs", {"200": page},
                       params=[_query("project"), *PAGING], perm="system.manage_settings")},
        f"{BASE}/configs/{{config_id}}": {
            "get": _op("Get a config", {"200": _json(_ref("Config"))},
                       params=[_path_param("config_id")], perm="system.manage_settings"),
            "put": _op("Change a config (version + 1)", {"200": _json(_ref("Config"))},
                       params=[_path_param("config_id")], body=_ref("ConfigUpdate"),
                       perm="system.manage_settings",
                       example={"template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:5}-{YEAR:B.E.}",
                                "change_reason": "five digits from the 2026 policy"})},
        f"{BASE}/configs/{{config_id}}/history": {"get": _op(
            "Versions of a config", {"200": page}, params=[_path_param("config_id"), *PAGING],
            perm="system.manage_settings")},
        "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"})}, auth=False)},
        "/readyz": {"get": _op("Readiness", {"200": _json(_ref("Readiness")),
                                             "503": _json(_ref("Readiness"))}, auth=False)},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {
            "description": "Prometheus text", "content": {"text/plain": {"schema": {
                "type": "string"}}}}}, auth=False)},
        f"{BASE}/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})},
                                            auth=False)},
    }


ADMIN_SCHEMAS: dict = {
    "Confirm": {
        "type": "object", "required": ["token"],
        "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 64},
                       "document_ref": {"type": "string", "maxLength": 255}},
    },
    "Cancel": {
        "type": "object", "required": ["token", "reason"],
        "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 64},
                       "reason": {"type": "string", "minLength": 1, "maxLength": 1000}},
    },
    "VoidAndReplace": {
        "type": "object", "required": ["document_number", "reason"],
        "properties": {
            "document_number": {"type": "string", "maxLength": 64},
            "project": {"type": "string", "description": "only when the number exists in "
                                                          "several projects"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1000},
            "replace": {"type": "boolean", "default": False},
            "context": _ref("NumberingContext"),
        },
    },
    "VoidResult": {
        "type": "object", "required": ["voided"],
        "properties": {"voided": _ref("IssuedNumber"), "replacement": _ref("IssuedNumber")},
    },
    "ManualOverride": {"allOf": [_ref("NumberingContext"), {
        "type": "object", "required": ["document_number", "reason"],
        "properties": {"document_number": {"type": "string", "minLength": 1, "maxLength": 50},
                       "reason": {"type": "string", "minLength": 10, "maxLength": 1000}}}]},
    "ImportReport": {
        "type": "object",
        "required": ["rows", "imported", "already_imported", "errors", "counter_raises"],
        "properties": {
            "rows": {"type": "integer"}, "imported": {"type": "integer"},
            "already_imported": {"type": "integer"}, "dry_run": {"type": "boolean"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "row": {"type": "integer"}, "code": {"type": "string"},
                "message": {"type": "string"}, "field": {"type": "string"}}}},
            "counter_raises": {"type": "array", "items": {"type": "object", "properties": {
                "counter_key": {"type": "string"}, "from": {"type": "integer"},
                "to": {"type": "integer"}}}},
        },
    },
    "ResetCounter": {
        "type": "object", "required": ["counter_key", "new_last_sequence", "reason"],
        "properties": {"counter_key": {"type": "string", "maxLength": 300},
                       "new_last_sequence": {"type": "integer", "minimum": 0},
                       "reason": {"type": "string", "minLength": 20, "maxLength": 1000}},
    },
    "ResetRequest": {
        "type": "object", "required": ["reset_request_id", "status", "approvals"],
        "properties": {
            "reset_request_id": {"type": "integer"},
            "status": {"type": "string", "enum": ["PENDING_APPROVAL", "EXECUTED", "FAILED"]},
            "config_id": {"type": "integer"}, "counter_key": {"type": "string"},
            "new_last_sequence": {"type": "integer"}, "reason": {"type": "string"},
            "requested_by": {"type": "string"}, "requested_at": {"type": "string"},
            "executed_at": {"type": ["string", "null"]},
            "approvals": {"type": "array", "items": {"type": "object", "properties": {
                "approver": {"type": "string"}, "approved_at": {"type": "string"}}}},
        },
    },
    "AuditRow": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "operation": {"type": "string"},
            "actor": {"type": ["string", "null"]}, "client_ip": {"type": ["string", "null"]},
            "user_agent": {"type": ["string", "null"]}, "request_id": {"type": ["string", "null"]},
            "counter_key": {"type": ["string", "null"]},
            "document_number": {"type": ["string", "null"]},
            "before": {"type": ["object", "null"]}, "after": {"type": ["object", "null"]},
            "lock_wait_ms": {"type": ["integer", "null"]},
            "duration_ms": {"type": ["integer", "null"]}, "retry_count": {"type": "integer"},
            "fallback_used": {"type": "string", "enum": ["NONE", "DB_ONLY"]},
            "success": {"type": "boolean"}, "error_code": {"type": ["string", "null"]},
            "created_at": {"type": "string"},
        },
    },
    "CounterRow": {
        "type": "object", "required": ["counter_key", "last_sequence", "capacity", "utilization"],
        "properties": {"counter_key": {"type": "string"}, "project": {"type": "string"},
                       "last_sequence": {"type": "integer"}, "capacity": {"type": "integer"},
                       "utilization": {"type": "number", "minimum": 0, "maximum": 1},
                       "updated_at": {"type": "string"}},
    },
    "Gap": {
        "type": "object", "required": ["counter_key", "sequence", "state", "reason"],
        "properties": {
            "counter_key": {"type": "string"}, "sequence": {"type": "integer"},
            "document_number": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["RESERVED", "CANCELLED", "EXPIRED", "VOID",
                                                 "MISSING"]},
            "reason": {"type": "string"},
        },
    },
}


def _page_of(schema: str) -> dict:
    return _json({"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": _ref(schema)},
        "next_cursor": {"type": ["string", "null"]}}})


def _admin_paths() -> dict:
    """Lifecycle and administration routes (issue 3)."""
    issued = _json(_ref("IssuedNumber"))
    reset = _json(_ref("ResetRequest"))
    import_op = _op("Bulk import of legacy numbers (CSV or XLSX)", {
        "200": _json(_ref("ImportReport"), "the report; a real run imported every good row")},
        params=[_query("dry_run", {"type": "boolean", "default": False})],
        perm="system.manage_settings")
    import_op["requestBody"] = {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "CSV (UTF-8) or XLSX; columns document_number, project, "
                                    "correspondence_type, originator, recipient, sub_type, "
                                    "rfa_type, discipline, document_date, state (optional "
                                    "revision, document_ref)"}}}}}}
    import_op["description"] = ("All-or-nothing: a real run with any bad row answers 422 "
                                "VALIDATION_FAILED whose problem document carries the report "
                                "and imports nothing. Rows already imported with identical "
                                "content are skipped (already_imported).")
    return {
        f"{BASE}/confirm": {"post": _op(
            "Confirm a reservation (idempotent)", {"200": issued}, body=_ref("Confirm"),
            perm="correspondence.create",
            example={"token": "3f1c2a9e8b7d4c6a", "document_ref": "DMS-2025-000123"})},
        f"{BASE}/cancel": {"post": _op(
            "Cancel a reservation (the number is never reused)", {"200": issued},
            body=_ref("Cancel"), perm="correspondence.create",
            example={"token": "3f1c2a9e8b7d4c6a", "reason": "the letter was not sent"})},
        f"{BASE}/admin/void-and-replace": {"post": _op(
            "Void a confirmed number, optionally issuing its replacement",
            {"200": _json(_ref("VoidResult"))}, body=_ref("VoidAndReplace"),
            perm="system.manage_settings",
            example={"document_number": NUMBER_EXAMPLE, "reason": "issued for the wrong "
                     "recipient", "replace": True, "context": CONTEXT_EXAMPLE})},
        f"{BASE}/admin/manual-override": {"post": _op(
            "Register a legacy or corrected number (source MANUAL)", {"201": issued},
            body=_ref("ManualOverride"), perm="system.manage_settings",
            example={**CONTEXT_EXAMPLE, "document_number": "คคง.-สคฉ.3-0900-2568",
                     "reason": "legacy number from the paper register"})},
        f"{BASE}/admin/bulk-import": {"post": import_op},
        f"{BASE}/configs/{{config_id}}/reset-counter": {"post": _op(
            "Request a counter reset (needs two other SUPER_ADMINs' approval)",
            {"202": reset}, params=[_path_param("config_id")], body=_ref("ResetCounter"),
            perm="SUPER_ADMIN",
            example={"counter_key": COUNTER_KEY_EXAMPLE, "new_last_sequence": 10,
                     "reason": "numbers 11-40 were issued by a test run by mistake"})},
        f"{BASE}/reset-requests": {"get": _op(
            "List counter reset requests", {"200": _page_of("ResetRequest")},
            params=[_filter("status", {"type": "string", "enum": [
                "PENDING_APPROVAL", "EXECUTED", "FAILED"]}), *PAGING], perm="SUPER_ADMIN")},
        f"{BASE}/reset-requests/{{reset_id}}": {"get": _op(
            "Get a counter reset request", {"200": reset}, params=[_path_param("reset_id")],
            perm="SUPER_ADMIN")},
        f"{BASE}/reset-requests/{{reset_id}}/approve": {"post": _op(
            "Approve a counter reset; the second distinct approval executes it", {"200": reset},
            params=[_path_param("reset_id")], perm="SUPER_ADMIN")},
        f"{BASE}/audit": {"get": _op(
            "Audit trail, newest first (archive included)", {"200": _page_of("AuditRow")},
            params=[_query("document_number"), _query("operation"), _query("actor"),
                    _query("counter_key"), _query("request_id"),
                    _filter("success", {"type": "boolean"}),
                    _filter("from", {"type": "string", "format": "date-time"}),
                    _filter("to", {"type": "string", "format": "date-time"}), *PAGING],
            perm="system.view_logs")},
        f"{BASE}/counters": {"get": _op(
            "Counters with capacity and utilization", {"200": _page_of("CounterRow")},
            params=[_query("project"), _query("correspondence_type"), *PAGING],
            perm="system.manage_settings")},
        f"{BASE}/reports/gaps": {"get": _op(
            "Every sequence of the counters that is not CONFIRMED (or never issued)",
            {"200": _page_of("Gap")},
            params=[_query("project"), _query("correspondence_type"),
                    _filter("period", {"type": "string", "pattern":
                                       "^(Y\\d{4}|M\\d{4}-\\d{2}|FY\\d{4}|ALL)$"}),
                    _query("counter_key"), *PAGING],
            perm="system.view_logs")},
    }


HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
PROOF_SCHEMAS: dict = {
    "Checkpoint": {
        "type": "object",
        "required": ["checkpoint", "tree_size", "root_hash", "created_at", "key_id", "note",
                     "signature"],
        "description": "Ed25519 signature over the canonical JSON of the other members "
                       "(docs/verification.md#checkpoints)",
        "properties": {"checkpoint": {"type": "integer"}, "tree_size": {"type": "integer"},
                       "root_hash": HEX64, "created_at": {"type": "string"},
                       "key_id": {"type": "string"}, "note": {"type": "object"},
                       "signature": {"type": "string", "pattern": "^[0-9a-f]{128}$"}},
    },
    "PublicKey": {
        "type": "object", "required": ["algorithm", "key_id", "public_key", "pem"],
        "properties": {"algorithm": {"type": "string", "enum": ["Ed25519"]},
                       "key_id": {"type": "string"}, "public_key": HEX64,
                       "pem": {"type": "string"}},
    },
    "Consistency": {
        "type": "object", "required": ["first", "second", "proof"],
        "properties": {"first": _ref("Checkpoint"), "second": _ref("Checkpoint"),
                       "proof": {"type": "array", "items": HEX64}},
    },
    "Receipt": {
        "type": "object", "required": ["document_number"],
        "description": "format docnum-receipt/1 (docs/verification.md#receipts); status "
                       "pending until a checkpoint covers the row",
        "properties": {
            "format": {"type": "string"}, "document_number": {"type": "string"},
            "project": {"type": "string"}, "row_hash": HEX64,
            "status": {"type": "string", "enum": ["checkpointed", "pending"]},
            "chain": {"type": "object", "properties": {
                "chain": {"type": "string"}, "counter_key": {"type": ["string", "null"]},
                "position": {"type": "integer"}, "previous_hash": HEX64,
                "entries": {"type": "array", "items": {"type": "string"}}}},
            "leaf": {"type": "object"}, "inclusion_proof": {"type": "array", "items": HEX64},
            "checkpoint": _ref("Checkpoint"), "public_key": _ref("PublicKey"),
        },
    },
}


def _proof_paths() -> dict:
    """Receipts, checkpoints and the public key (docs/verification.md)."""
    checkpoint = _json(_ref("Checkpoint"))
    checkpoint_number = {"type": "integer", "minimum": 1}
    return {
        f"{BASE}/numbers/{{document_number}}/proof": {"get": _op(
            "Receipt of an issued number: its chain to a signed checkpoint",
            {"200": _json(_ref("Receipt"))},
            params=[_path_param("document_number", example=NUMBER_EXAMPLE), _query("project")],
            perm="correspondence.read")},
        f"{BASE}/proofs": {"get": _op(
            "Receipt of an issued number given in the query (any number text)",
            {"200": _json(_ref("Receipt"))},
            params=[{**_query("document_number"), "required": True}, _query("project")],
            perm="correspondence.read")},
        f"{BASE}/checkpoints": {"get": _op(
            "Signed checkpoints, oldest first", {"200": _page_of("Checkpoint")},
            params=PAGING, perm="correspondence.read")},
        f"{BASE}/checkpoints/latest": {"get": _op(
            "The latest signed checkpoint", {"200": checkpoint}, perm="correspondence.read")},
        f"{BASE}/checkpoints/{{checkpoint_id}}": {"get": _op(
            "One signed checkpoint", {"200": checkpoint},
            params=[_path_param("checkpoint_id", checkpoint_number, example=1)],
            perm="correspondence.read")},
        f"{BASE}/checkpoints/consistency": {"get": _op(
            "RFC 9162 consistency proof: checkpoint second extends checkpoint first",
            {"200": _json(_ref("Consistency"))},
            params=[{**_query("first", checkpoint_number), "required": True},
                    {**_query("second", checkpoint_number), "required": True}],
            perm="correspondence.read")},
        f"{BASE}/checkpoints/public-key": {"get": _op(
            "The Ed25519 public key that signs the checkpoints",
            {"200": _json(_ref("PublicKey")), "404": _problems()["404"]}, auth=False)},
    }


EXTRA_PATHS: dict = {}  # later route groups add their entries here


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "docnum — document numbering", "version": "1.0.0"},
        "components": {
            "schemas": {**SCHEMAS, **ADMIN_SCHEMAS, **PROOF_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
        "paths": {**_paths(), **_admin_paths(), **_proof_paths(), **EXTRA_PATHS},
    }
