"""Two-phase issue: POST /confirm and POST /cancel a reservation (docs/reference.md#post-confirm)."""
from __future__ import annotations

from flask import Blueprint

from docnum.api.http import json_body, json_response, request_actor, services
from docnum.api.security import requires
from docnum.shared import lifecycle

bp = Blueprint("lifecycle", __name__)


@bp.post("/confirm")
@requires("correspondence.create")
def confirm():
    body = json_body()
    svc = services()
    number = lifecycle.confirm(svc.engine, body.get("token"), body.get("document_ref"),
                               request_actor(), svc.clock)
    return json_response(number)


@bp.post("/cancel")
@requires("correspondence.create")
def cancel():
    body = json_body()
    svc = services()
    number = lifecycle.cancel(svc.engine, body.get("token"), body.get("reason"),
                              request_actor(), svc.clock)
    return json_response(number)
