"""Issuing: POST /requests, GET /requests/{id}, POST /generate, /reserve, /preview, numbers."""
from __future__ import annotations

import time

from flask import Blueprint, Response, g, request, url_for
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from docnum.api.contract import (
    ISSUING,
    JSON_BODY,
    SIGNED_IN,
    Answers,
    contract,
    sent_body,
)
from docnum.api.frontdoor import Answer
from docnum.api.http import json_response, request_actor, services
from docnum.api.ratelimit import IssuingRateLimits
from docnum.api.security import current_principal, requires
from docnum.shared import metrics
from docnum.shared.db import is_unreachable, transaction
from docnum.shared.errors import DocnumError
from docnum.shared.lookup import number_details
from docnum.shared.preview import preview_numbers
from docnum.shared.schemas import (
    IdempotencyHeaders,
    IssuedNumber,
    IssueRequest,
    LookupQuery,
    NumberDetails,
    NumberingContextBody,
    Preview,
    PreviewRequest,
    Queued,
    RequestStatus,
    WaitQuery,
)

bp = Blueprint("issuing", __name__)

LOCATION = ["Location"]
QUEUED_HEADERS = ["Location", "Retry-After"]


def _accept(route: str, mode: str, body: NumberingContextBody, key: str, *,
            expect_answer: bool = False) -> Answer:
    """Hand a validated request to the front door (queue, join, DB-only)."""
    actor = request_actor()
    ctx = body.to_context()
    g.issuing_started = time.perf_counter()
    g.issuing_ctx = ctx
    try:
        # The fingerprint covers the body as sent (every member, known or not): a retry with
        # the same key must send the same bytes' worth of JSON.
        return services().frontdoor.accept(
            client=current_principal().sub, idempotency_key=key, route=route, mode=mode,
            body=sent_body(), ctx=ctx, client_ip=actor.client_ip,
            user_agent=actor.user_agent, expect_answer=expect_answer,
            admission=IssuingRateLimits.admission())
    except DocnumError as exc:
        if exc.status >= 500:
            _observe_unserved(exc.code)
        raise
    except (DBAPIError, PoolTimeoutError) as exc:
        unreachable = isinstance(exc, PoolTimeoutError) or is_unreachable(exc)
        _observe_unserved("SERVICE_BUSY" if unreachable else "INTERNAL_ERROR")
        raise


def _observe_unserved(code: str) -> None:
    """``docnum_generation_duration_ms`` for a request the API itself answers with a 5xx
    (refused before it was queued, or its wait ended while the database was down): no worker
    observes these, and the availability objective counts them (docs/operations.md#slo)."""
    ctx = g.issuing_ctx
    elapsed_ms = (time.perf_counter() - g.issuing_started) * 1000
    metrics.generation_duration.labels(ctx.project, ctx.correspondence_type or "",
                                       code.lower()).observe(elapsed_ms)


_STATUS_PREFIX: dict[str, str] = {}  # per mount point (SCRIPT_NAME)


def _status_url(request_id: str) -> str:
    # url_for once per mount point, then concatenation: its routing work showed in the hot
    # path's profile, and request ids are UUIDs (nothing to quote).
    prefix = _STATUS_PREFIX.get(request.script_root)
    if prefix is None:
        prefix = url_for("issuing.get_request", request_id="-")[:-1]
        _STATUS_PREFIX[request.script_root] = prefix
    return prefix + request_id


def _queued(answer: Answer) -> Response:
    url = _status_url(answer.request_id)
    return json_response({"request_id": answer.request_id, "status": "queued",
                          "status_url": url}, 202, {"Location": url, "Retry-After": "1"})


def _request_object(answer: Answer) -> dict:
    out: dict = {"request_id": answer.request_id, "status": answer.status}
    if answer.number is not None:
        out["result"] = answer.number
    if answer.error is not None:
        out["error"] = {"code": answer.error.code, "title": answer.error.title(),
                        "status": answer.error.status, "detail": answer.error.detail}
    return out


@bp.post("/requests")
@requires("correspondence.create")
@contract.validate(
    resp=Answers(HTTP_202=(Queued, "Queued: poll Location"),
                 HTTP_200=(RequestStatus, "Finished already: a repeat of a finished request, "
                                          "or served at once on the DB-only path"),
                 headers={200: LOCATION, 202: QUEUED_HEADERS},
                 problems=(*SIGNED_IN, *JSON_BODY, 429)),
    operation_id="submitRequest", tags=["issuing"])
def submit_request(headers: IdempotencyHeaders, json: IssueRequest) -> Response:
    """Submit an issuing request and poll for its number.

    The answer comes at once: 202 with the status URL, or 200 when the request is finished
    already. A retry with the same Idempotency-Key joins the same request.
    """
    answer = _accept("requests", json.mode, json, headers.idempotency_key)
    if answer.status == "queued":
        return _queued(answer)
    return json_response(_request_object(answer), 200, {"Location": _status_url(
        answer.request_id)})


@bp.get("/requests/<reqid:request_id>")
@requires("correspondence.read")
@contract.validate(
    resp=Answers(HTTP_200=(RequestStatus, "The request's status; Retry-After while queued"),
                 problems=(*SIGNED_IN, 404)),
    operation_id="getRequest", tags=["issuing"])
def get_request(request_id: str) -> Response:
    """Status of a request (its number once it succeeded).

    Another user's request needs system.view_logs.
    """
    found = services().frontdoor.status(request_id)
    if found is None:
        raise DocnumError("NOT_FOUND", f"no request {request_id}")
    answer, owner = found
    principal = current_principal()
    if owner != principal.sub and not principal.has("system.view_logs"):
        raise DocnumError("FORBIDDEN", "this request belongs to another user; reading it needs "
                                       "system.view_logs")
    headers = {"Retry-After": "1"} if answer.status == "queued" else {}
    return json_response(_request_object(answer), 200, headers)


def _issue_and_wait(route: str, query: WaitQuery, headers: IdempotencyHeaders,
                    json: NumberingContextBody) -> Response:
    timeout = query.timeout
    answer = _accept(route, route, json, headers.idempotency_key, expect_answer=timeout > 0)
    if answer.status == "queued":
        answer = services().frontdoor.wait(answer.request_id, timeout, answer.slot) or answer
    if answer.status == "queued":
        # No answer in time. Waiting for a dead database is 503 SERVICE_BUSY (the request
        # stays queued; a retry with the same Idempotency-Key joins it), otherwise 202.
        try:
            services().frontdoor.check_database()
        except DocnumError as exc:
            _observe_unserved(exc.code)
            raise
        return _queued(answer)  # still running: nothing lost, the number stays pollable
    if answer.error is not None:
        raise answer.error
    return json_response(answer.number, 201, {"Location": _status_url(answer.request_id)})


def _issuing_answers(issued: str) -> Answers:
    return Answers(HTTP_201=(IssuedNumber, issued),
                   HTTP_202=(Queued, "Not answered within timeout: poll Location"),
                   headers={201: LOCATION, 202: QUEUED_HEADERS}, problems=ISSUING)


@bp.post("/generate")
@requires("correspondence.create")
@contract.validate(resp=_issuing_answers("Issued (CONFIRMED)"), operation_id="generate",
                   tags=["issuing"])
def generate(query: WaitQuery, headers: IdempotencyHeaders,
             json: NumberingContextBody) -> Response:
    """Issue a number and wait for it.

    The body's members other than the context's (mode, for one) are ignored but count for
    the Idempotency-Key: a retry must send the same body.
    """
    return _issue_and_wait("generate", query, headers, json)


@bp.post("/reserve")
@requires("correspondence.create")
@contract.validate(resp=_issuing_answers("Reserved: confirm or cancel with reservation.token"),
                   operation_id="reserve", tags=["issuing"])
def reserve(query: WaitQuery, headers: IdempotencyHeaders,
            json: NumberingContextBody) -> Response:
    """Reserve a number (two-phase issue: then /confirm or /cancel)."""
    return _issue_and_wait("reserve", query, headers, json)


@bp.post("/preview")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Preview, "The next number of the context's counter"),
                                problems=(*SIGNED_IN, *JSON_BODY, 409)),
                   operation_id="preview", tags=["issuing"])
def preview(json: PreviewRequest) -> Response:
    """Preview the next number without consuming it.

    With ``template`` (and optionally ``reset``, ``counter_scope``) an unsaved template is
    tried on the real counter.
    """
    svc = services()
    with transaction(svc.read_engine) as session:
        result = preview_numbers(session, json.to_context(), json, now=svc.clock.now(),
                                 timezone=svc.settings.timezone)
    sequence, number = result.numbers[0]
    return json_response({"document_number": number, "sequence": sequence,
                          "counter_key": result.counter_key,
                          "config_version": result.config_version})


@bp.get("/numbers/<number:document_number>")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(NumberDetails, "The number, its state and history"),
                                problems=(*SIGNED_IN, 404, 409)),
                   operation_id="getNumber", tags=["issuing"])
def get_number(document_number: str, query: LookupQuery) -> Response:
    """Explain an issued number: its ledger row, what became of it, its audit trail.

    409 CONFLICT when the number exists in several projects and ``project`` is not given.
    """
    svc = services()
    with transaction(svc.read_engine) as session:
        details = number_details(session, document_number, query.project)
    return json_response(details)
