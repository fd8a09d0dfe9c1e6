"""Refused privileged attempts on the audit trail: the one place they are recorded.

A privileged write (an admin route of the API, a console action) declares the audit operation
it attempts: ``@audits_refusals("RESET_APPROVE")`` above ``@requires`` on the view, or
``with refusal_audited("CONFIG_UPDATE"):`` around the service call in a console view that shows
its errors on the page instead of raising them. When the attempt is refused — no permission,
a rule of the two-person reset, a counter floor, an invalid template, a stale version — one
audit row is written with that operation, ``success = false`` and the problem code, by
``shared.audit.write_refusal`` (docs/lifecycle.md#refused-attempts). The operation names stay
those of docs/reference.md#audit-trail.

Recorded: refusals the actor can be named for (authenticated: not 401) and that are about the
attempt itself (403, 404, 409, 410, 422). Not recorded: malformed transport (400, 413, 415),
rate limits (429), server failures (5xx: the attempt was not judged), safe methods (a read is
not an attempt), and refusals of issuing requests (the allocator audits those as GENERATE or
RESERVE; plain validation errors of issuing requests are metrics, not audit rows).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps

from flask import g, request
from sqlalchemy import select

from docnum.api.http import request_actor, services
from docnum.shared.audit import OPERATIONS, write_refusal
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.models import ResetRequest

RECORDED_STATUSES = frozenset({403, 404, 409, 410, 422})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What of the request goes into the row: enough to see what was attempted, never a whole file.
MAX_FIELDS = 20
MAX_TEXT = 300
NOT_RECORDED = frozenset({"csrf_token"})


def audits_refusals(operation: str) -> Callable:
    """Decorate a privileged write view (above ``@requires``): its refusals are audited."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown audit operation {operation!r}")

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: object, **kwargs: object) -> object:
            with refusal_audited(operation):
                return view(*args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def refusal_audited(operation: str) -> Iterator[None]:
    """Record a ``DocnumError`` raised inside as a refused ``operation``, then re-raise it."""
    try:
        yield
    except DocnumError as error:
        record_refusal(operation, error)
        raise


def record_refusal(operation: str, error: DocnumError) -> bool:
    """Write the refusal's audit row if it is one to record; at most one per HTTP request."""
    if error.status not in RECORDED_STATUSES or request.method in SAFE_METHODS:
        return False
    if g.get("refusal_recorded"):
        return False
    try:
        actor = request_actor()
    except DocnumError:  # nobody authenticated: nothing to attribute
        return False
    g.refusal_recorded = True
    fields = _input()
    svc = services()
    attempt = {"route": f"{request.method} {request.path}", "detail": _text(error.detail)}
    if fields:
        attempt["input"] = fields
    if error.errors:
        attempt["errors"] = [e.as_dict() for e in error.errors[:MAX_FIELDS]]
    try:
        counter_key = _counter_key(fields)
    except Exception:  # the lookup is a courtesy; the refusal is recorded without it
        counter_key = None
    return write_refusal(svc.engine, operation, actor, svc.clock.now(), error.code,
                         counter_key=counter_key,
                         document_number=_str(fields.get("document_number")),
                         attempt=attempt)


def _text(value: str) -> str:
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _input() -> dict:
    """The attempt's fields: the JSON body or the form (a file by its name only), short."""
    source: dict = {}
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            source = body
    elif request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        source = dict(request.form.items())
        source.update({name: f"file {upload.filename!r}"
                       for name, upload in request.files.items()})
    source.update({f"query.{k}": v for k, v in request.args.items()})
    out: dict = {}
    for key, value in list(source.items())[:MAX_FIELDS]:
        if key in NOT_RECORDED:
            continue
        if not isinstance(value, str | int | float | bool) and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        out[str(key)[:64]] = _text(value) if isinstance(value, str) else value
    return out


def _counter_key(fields: dict) -> str | None:
    """The counter the attempt was about: named in the input, or by the reset request."""
    key = _str(fields.get("counter_key"))
    if key is not None:
        return key[:300]
    reset_id = str((request.view_args or {}).get("reset_id", ""))
    if not reset_id.isdigit() or len(reset_id) > 18:
        return None
    with transaction(services().engine) as session:
        return session.scalar(select(ResetRequest.counter_key)
                              .where(ResetRequest.id == int(reset_id)))
