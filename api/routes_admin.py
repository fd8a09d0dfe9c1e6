"""Administration routes: void and replace, manual override, bulk import, two-person counter
reset, and the read side (audit, counters, gaps). Views parse and answer; the work is in
``shared.lifecycle``, ``shared.override``, ``shared.bulk_import``, ``shared.resets`` and
``shared.reports``.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from docnum.api.http import (
    int_cursor,
    json_body,
    json_response,
    page,
    page_params,
    request_actor,
    services,
)
from docnum.api.problems import problem_response
from docnum.api.refusals import audits_refusals
from docnum.api.security import requires
from docnum.shared import bulk_import as importer
from docnum.shared import lifecycle, override, reports, resets
from docnum.shared.auth import SUPER_ADMIN
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, validation_failed

bp = Blueprint("admin", __name__)

# A bulk-import file may be larger than the 1 MiB every JSON body is held to: 10,000 rows of
# Thai codes are about 1.1 MB as CSV.
MAX_IMPORT_BYTES = 32 * 1024 * 1024


def _id(raw: str, what: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise DocnumError("NOT_FOUND", f"no {what} {raw}")
    return int(raw)


def _flag(name: str) -> bool:
    raw = request.args.get(name, "false").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("", "0", "false", "no"):
        return False
    raise validation_failed(name, "must be true or false")


# --------------------------------------------------------------------------- writes

@bp.post("/admin/void-and-replace")
@audits_refusals("VOID")
@requires("system.manage_settings")
def void_and_replace() -> ResponseReturnValue:
    body = json_body()
    svc = services()
    result = lifecycle.void_and_replace(svc.engine, body, request_actor(), svc.clock,
                                        svc.settings.timezone)
    return json_response(result)


@bp.post("/admin/manual-override")
@audits_refusals("MANUAL_OVERRIDE")
@requires("system.manage_settings")
def manual_override() -> ResponseReturnValue:
    body = json_body()
    svc = services()
    number = override.manual_override(svc.engine, body, request_actor(), svc.clock,
                                      svc.settings.timezone)
    return json_response(number, 201)


@bp.post("/admin/bulk-import")
@audits_refusals("IMPORT")
@requires("system.manage_settings")
def bulk_import() -> ResponseReturnValue:
    request.max_content_length = MAX_IMPORT_BYTES
    if request.mimetype != "multipart/form-data":
        raise DocnumError("UNSUPPORTED_MEDIA_TYPE",
                          "send multipart/form-data with the CSV or XLSX file in field 'file'")
    try:
        upload = request.files.get("file")
    except RequestEntityTooLarge:
        raise DocnumError("PAYLOAD_TOO_LARGE", f"an import file may be at most "
                                               f"{MAX_IMPORT_BYTES} bytes; split it") from None
    if upload is None:
        raise validation_failed("file", "is required: a CSV or XLSX file")
    dry_run = _flag("dry_run")
    svc = services()
    report = importer.bulk_import(svc.engine, upload.filename or "upload.csv", upload.read(),
                                  request_actor(), svc.clock, dry_run=dry_run)
    return json_response(report.to_dict())


@bp.post("/configs/<config_id>/reset-counter")
@audits_refusals("RESET_REQUEST")
@requires(role=SUPER_ADMIN)
def reset_counter(config_id: str) -> ResponseReturnValue:
    body = json_body()
    svc = services()
    result = resets.request_reset(svc.engine, _id(config_id, "config"), body, request_actor(),
                                  svc.clock)
    return json_response(result, 202)


@bp.post("/reset-requests/<reset_id>/approve")
@audits_refusals("RESET_APPROVE")
@requires(role=SUPER_ADMIN)
def approve_reset(reset_id: str) -> ResponseReturnValue:
    svc = services()
    result, error = resets.approve_reset(svc.engine, _id(reset_id, "reset request"),
                                         request_actor(), svc.clock)
    if error is not None:
        # The approval stands and the execution failed: committed as FAILED and audited as
        # RESET_EXECUTE before answering, so answered here rather than raised as a refusal.
        return problem_response(error, request)
    return json_response(result)


@bp.get("/reset-requests")
@requires(role=SUPER_ADMIN)
def list_reset_requests() -> Response:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        items = resets.list_resets(session, request.args.get("status") or None,
                                   int_cursor(cursor), limit + 1)
    return json_response(page(items, limit, key=lambda r: r["reset_request_id"]))


@bp.get("/reset-requests/<reset_id>")
@requires(role=SUPER_ADMIN)
def get_reset_request(reset_id: str) -> Response:
    with transaction(services().read_engine) as session:
        return json_response(resets.get_reset(session, _id(reset_id, "reset request")))


# --------------------------------------------------------------------------- reads

@bp.get("/audit")
@requires("system.view_logs")
def audit() -> Response:
    cursor, limit = page_params()
    filters = reports.audit_filter(request.args)
    with transaction(services().read_engine) as session:
        items = reports.query_audit(session, filters, int_cursor(cursor), limit + 1)
    return json_response(page(items, limit, key=lambda r: r["id"]))


@bp.get("/counters")
@requires("system.manage_settings")
def counters() -> Response:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        items = reports.list_counters(
            session, project=request.args.get("project") or None,
            correspondence_type=request.args.get("correspondence_type") or None,
            after_key=cursor, limit=limit + 1)
    return json_response(page(items, limit, key=lambda c: c["counter_key"]))


@bp.get("/reports/gaps")
@requires("system.view_logs")
def gaps() -> Response:
    cursor, limit = page_params()
    after = None
    if cursor is not None:
        try:
            key, sequence = json.loads(cursor)
            if not isinstance(key, str) or not isinstance(sequence, int):
                raise ValueError
        except (ValueError, TypeError):
            raise validation_failed("cursor", "is not a cursor this service issued") from None
        after = (key, sequence)
    with transaction(services().read_engine) as session:
        items = reports.gaps_report(
            session, project=request.args.get("project") or None,
            correspondence_type=request.args.get("correspondence_type") or None,
            period=request.args.get("period") or None,
            counter_key=request.args.get("counter_key") or None, after=after,
            limit=limit + 1)
    return json_response(page(items, limit, key=lambda g: json.dumps(
        [g["counter_key"], g["sequence"]], ensure_ascii=False)))
