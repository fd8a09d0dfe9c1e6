"""Two-phase issue: POST /confirm and POST /cancel a reservation
(docs/reference.md#post-confirm)."""
from __future__ import annotations

from flask import Blueprint, Response

from docnum.api.contract import JSON_BODY, SIGNED_IN, Answers, contract
from docnum.api.http import json_response, request_actor, services
from docnum.api.security import requires
from docnum.shared import lifecycle
from docnum.shared.schemas import Cancel, Confirm, IssuedNumber

bp = Blueprint("lifecycle", __name__)

# 404: no reservation with the token; 409: not RESERVED (or confirmed with another
# document_ref); 410: the reservation expired.
TOKEN_PROBLEMS = (*SIGNED_IN, *JSON_BODY, 404, 409, 410)


@bp.post("/confirm")
@requires("correspondence.create")
@contract.validate(resp=Answers(HTTP_200=(IssuedNumber, "CONFIRMED (again: the same answer)"),
                                problems=TOKEN_PROBLEMS),
                   operation_id="confirm", tags=["lifecycle"])
def confirm(json: Confirm) -> Response:
    """Confirm a reservation (idempotent)."""
    svc = services()
    number = lifecycle.confirm(svc.engine, json.token, json.document_ref, request_actor(),
                               svc.clock)
    return json_response(number)


@bp.post("/cancel")
@requires("correspondence.create")
@contract.validate(resp=Answers(HTTP_200=(IssuedNumber, "CANCELLED (again: the same answer)"),
                                problems=TOKEN_PROBLEMS),
                   operation_id="cancel", tags=["lifecycle"])
def cancel(json: Cancel) -> Response:
    """Cancel a reservation; the number stays in the ledger and is never reused."""
    svc = services()
    number = lifecycle.cancel(svc.engine, json.token, json.reason, request_actor(), svc.clock)
    return json_response(number)
