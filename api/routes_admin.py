"""Administration routes: void and replace, manual override, bulk import, two-person counter
reset, and the read side (audit, counters, gaps). Views parse and answer; the work is in
``shared.lifecycle``, ``shared.override``, ``shared.bulk_import``, ``shared.resets`` and
``shared.reports``. A refused privileged write is on the audit trail (``api/refusals.py``).
"""
from __future__ import annotations

import json as jsonlib

from flask import Blueprint, Response, request

from docnum.api.contract import JSON_BODY, PARAMETERS, SIGNED_IN, Answers, contract
from docnum.api.http import json_response, page, request_actor, services
from docnum.api.problems import problem_response
from docnum.api.refusals import audits_refusals
from docnum.api.security import requires
from docnum.shared import bulk_import as importer
from docnum.shared import lifecycle, override, reports, resets
from docnum.shared.auth import SUPER_ADMIN
from docnum.shared.db import transaction
from docnum.shared.schemas import (
    AuditPage,
    AuditQuery,
    CounterListQuery,
    CounterPage,
    GapPage,
    GapQuery,
    ImportForm,
    ImportQuery,
    ImportReport,
    IssuedNumber,
    ManualOverride,
    ResetCounter,
    ResetListQuery,
    ResetRequest,
    ResetRequestPage,
    VoidAndReplace,
    VoidResult,
)

bp = Blueprint("admin", __name__)

# A bulk-import file may be larger than the 1 MiB every JSON body is held to: 10,000 rows of
# Thai codes are about 1.1 MB as CSV.
MAX_IMPORT_BYTES = 32 * 1024 * 1024
LIST = (*SIGNED_IN, *PARAMETERS)


@bp.before_request
def _import_limit() -> None:
    if request.endpoint == "admin.bulk_import":
        request.max_content_length = MAX_IMPORT_BYTES  # before the form is read


# --------------------------------------------------------------------------- writes

@bp.post("/admin/void-and-replace")
@audits_refusals("VOID")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(VoidResult, "VOID, and the replacement if asked"),
                                problems=(*SIGNED_IN, *JSON_BODY, 404, 409)),
                   operation_id="voidAndReplace", tags=["admin"])
def void_and_replace(json: VoidAndReplace) -> Response:
    """Void a confirmed number, optionally issuing its replacement (both or neither)."""
    svc = services()
    result = lifecycle.void_and_replace(svc.engine, json, request_actor(), svc.clock,
                                        svc.settings.timezone)
    return json_response(result)


@bp.post("/admin/manual-override")
@audits_refusals("MANUAL_OVERRIDE")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_201=(IssuedNumber, "Registered, CONFIRMED, source MANUAL"),
                                problems=(*SIGNED_IN, *JSON_BODY, 409)),
                   operation_id="manualOverride", tags=["admin"])
def manual_override(json: ManualOverride) -> Response:
    """Register a legacy or corrected number (source MANUAL)."""
    svc = services()
    number = override.manual_override(svc.engine, json, request_actor(), svc.clock,
                                      svc.settings.timezone)
    return json_response(number, 201)


@bp.post("/admin/bulk-import")
@audits_refusals("IMPORT")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(ImportReport, "The report; a real run imported "
                                                        "every good row"),
                                problems=(*SIGNED_IN, *JSON_BODY)),
                   operation_id="bulkImport", tags=["admin"])
def bulk_import(query: ImportQuery, form: ImportForm) -> Response:
    """Bulk import of legacy numbers (CSV or XLSX).

    All-or-nothing: a real run with any bad row answers 422 VALIDATION_FAILED whose problem
    document carries the report and imports nothing. Rows already imported with identical
    content are skipped (already_imported).
    """
    svc = services()
    report = importer.bulk_import(svc.engine, form.file.filename or "upload.csv",
                                  form.file.read(), request_actor(), svc.clock,
                                  dry_run=query.dry_run)
    return json_response(report.to_dict())


@bp.post("/configs/<id:config_id>/reset-counter")
@audits_refusals("RESET_REQUEST")
@requires(role=SUPER_ADMIN)
@contract.validate(resp=Answers(HTTP_202=(ResetRequest, "Waiting for two other SUPER_ADMINs"),
                                problems=(*SIGNED_IN, *JSON_BODY, 404, 409)),
                   operation_id="requestCounterReset", tags=["admin"])
def reset_counter(config_id: int, json: ResetCounter) -> Response:
    """Request a counter reset (needs two other SUPER_ADMINs' approval)."""
    svc = services()
    result = resets.request_reset(svc.engine, config_id, json, request_actor(), svc.clock)
    return json_response(result, 202)


@bp.post("/reset-requests/<id:reset_id>/approve")
@audits_refusals("RESET_APPROVE")
@requires(role=SUPER_ADMIN)
@contract.validate(resp=Answers(HTTP_200=(ResetRequest, "Approved; EXECUTED at the second "
                                                        "approval"),
                                problems=(*SIGNED_IN, 404, 409)),
                   operation_id="approveResetRequest", tags=["admin"])
def approve_reset(reset_id: int) -> Response:
    """Approve a counter reset; the second distinct approval executes it.

    409 COUNTER_FLOOR when the floor rose past the target meanwhile: the request is then
    FAILED.
    """
    svc = services()
    result, error = resets.approve_reset(svc.engine, reset_id, request_actor(), svc.clock)
    if error is not None:
        # The approval stands and the execution failed: committed as FAILED and audited as
        # RESET_EXECUTE before answering, so answered here rather than raised as a refusal.
        return problem_response(error, request)
    return json_response(result)


@bp.get("/reset-requests")
@requires(role=SUPER_ADMIN)
@contract.validate(resp=Answers(HTTP_200=(ResetRequestPage, "Reset requests in id order"),
                                problems=LIST),
                   operation_id="listResetRequests", tags=["admin"])
def list_reset_requests(query: ResetListQuery) -> Response:
    """List counter reset requests."""
    with transaction(services().read_engine) as session:
        items = resets.list_resets(session, query.status, query.after_id(),
                                   query.limit + 1)
    return json_response(page(items, query.limit, key=lambda r: r["reset_request_id"]))


@bp.get("/reset-requests/<id:reset_id>")
@requires(role=SUPER_ADMIN)
@contract.validate(resp=Answers(HTTP_200=ResetRequest, problems=(*SIGNED_IN, 404)),
                   operation_id="getResetRequest", tags=["admin"])
def get_reset_request(reset_id: int) -> Response:
    """Get a counter reset request."""
    with transaction(services().read_engine) as session:
        return json_response(resets.get_reset(session, reset_id))


# --------------------------------------------------------------------------- reads

@bp.get("/audit")
@requires("system.view_logs")
@contract.validate(resp=Answers(HTTP_200=(AuditPage, "Newest first (archive included)"),
                                problems=LIST),
                   operation_id="listAudit", tags=["admin"])
def audit(query: AuditQuery) -> Response:
    """Audit trail, newest first (archive included)."""
    with transaction(services().read_engine) as session:
        items = reports.query_audit(session, query, query.after_id(), query.limit + 1)
    return json_response(page(items, query.limit, key=lambda r: r["id"]))


@bp.get("/counters")
@requires("system.manage_settings")
@contract.validate(resp=Answers(HTTP_200=(CounterPage, "Counters in key order"),
                                problems=LIST),
                   operation_id="listCounters", tags=["admin"])
def counters(query: CounterListQuery) -> Response:
    """Counters with capacity and utilization.

    correspondence_type keeps the counters its numbering config draws from (needs project).
    """
    with transaction(services().read_engine) as session:
        items = reports.list_counters(
            session, project=query.project, correspondence_type=query.correspondence_type,
            after_key=query.cursor, limit=query.limit + 1)
    return json_response(page(items, query.limit, key=lambda c: c["counter_key"]))


@bp.get("/reports/gaps")
@requires("system.view_logs")
@contract.validate(resp=Answers(HTTP_200=(GapPage, "In (counter, sequence) order"),
                                problems=LIST),
                   operation_id="gapsReport", tags=["admin"])
def gaps(query: GapQuery) -> Response:
    """Every sequence of the counters that is not CONFIRMED (or never issued)."""
    with transaction(services().read_engine) as session:
        items = reports.gaps_report(
            session, project=query.project, correspondence_type=query.correspondence_type,
            period=query.period, counter_key=query.counter_key, after=query.after(),
            limit=query.limit + 1)
    return json_response(page(items, query.limit, key=lambda g: jsonlib.dumps(
        [g["counter_key"], g["sequence"]], ensure_ascii=False)))
