"""Issuing: POST /requests, GET /requests/{id}, POST /generate, /reserve, /preview, numbers."""
from __future__ import annotations

import re
import time

from flask import Blueprint, g, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from docnum.api.frontdoor import Answer
from docnum.api.http import json_body, json_response, request_actor, services
from docnum.api.ratelimit import IssuingRateLimits
from docnum.api.security import current_principal, requires
from docnum.shared import issuing, metrics
from docnum.shared.db import is_unreachable, transaction
from docnum.shared.errors import DocnumError, validation_failed
from docnum.shared.lookup import number_details
from docnum.shared.preview import preview_numbers

bp = Blueprint("issuing", __name__)

MAX_TIMEOUT_S = 30.0
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", re.ASCII)
DEFAULT_TIMEOUT_S = 5.0


def _timeout() -> float:
    raw = request.args.get("timeout")
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    # A plain ASCII number (JSON's grammar, no sign): float() alone would also take "1_0",
    # "١" (Arabic-Indic one), " 5 " or "infinity".
    if len(raw) > 32 or not _DECIMAL.fullmatch(raw):
        raise validation_failed("timeout", "must be a number of seconds 0-30")
    try:
        value = float(raw)
    except ValueError:
        raise validation_failed("timeout", "must be a number of seconds 0-30") from None
    if not 0 <= value <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise validation_failed("timeout", "must be a number of seconds 0-30")
    return value


def _accept(route: str, mode: str | None = None, *, expect_answer: bool = False) -> Answer:
    """Validate the request's shape, then hand it to the front door (queue, join, DB-only)."""
    g.issuing_started = time.perf_counter()
    principal = current_principal()
    key = issuing.check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = json_body()
    if mode is None:
        mode = body.get("mode", "generate")
        if mode not in issuing.MODES:
            raise validation_failed("mode", "must be generate or reserve")
    ctx = issuing.parse_context(body)
    g.issuing_ctx = ctx
    actor = request_actor()
    try:
        return services().frontdoor.accept(
            client=principal.sub, idempotency_key=key, route=route, mode=mode, body=body,
            ctx=ctx, client_ip=actor.client_ip, user_agent=actor.user_agent,
            expect_answer=expect_answer, admission=IssuingRateLimits.admission())
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


def _queued(answer: Answer):
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
def submit_request():
    answer = _accept("requests")
    if answer.status == "queued":
        return _queued(answer)
    # Finished already: a duplicate of a finished request, or served on the DB-only path.
    return json_response(_request_object(answer), 200, {"Location": _status_url(
        answer.request_id)})


@bp.get("/requests/<request_id>")
@requires("correspondence.read")
def get_request(request_id: str):
    if len(request_id) > 64:
        raise DocnumError("NOT_FOUND", "no such request")
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


def _issue_and_wait(route: str, mode: str) -> ResponseReturnValue:
    timeout = _timeout()
    answer = _accept(route, mode, expect_answer=timeout > 0)
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


@bp.post("/generate")
@requires("correspondence.create")
def generate():
    return _issue_and_wait("generate", "generate")


@bp.post("/reserve")
@requires("correspondence.create")
def reserve():
    return _issue_and_wait("reserve", "reserve")


@bp.post("/preview")
@requires("correspondence.read")
def preview():
    body = json_body()
    ctx = issuing.parse_context(body)
    svc = services()
    with transaction(svc.read_engine) as session:
        result = preview_numbers(session, ctx, body, now=svc.clock.now(),
                                 timezone=svc.settings.timezone)
    sequence, number = result.numbers[0]
    return json_response({"document_number": number, "sequence": sequence,
                          "counter_key": result.counter_key,
                          "config_version": result.config_version})


@bp.get("/numbers/<path:document_number>")
@requires("correspondence.read")
def get_number(document_number: str):
    svc = services()
    with transaction(svc.read_engine) as session:
        details = number_details(session, document_number, request.args.get("project"))
    return json_response(details)
