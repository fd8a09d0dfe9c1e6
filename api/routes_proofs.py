"""Proofs: a number's receipt, the signed checkpoints, consistency between two of them, and the
public key that checks them (docs/verification.md). Views parse and answer; the work is in
``shared.proofs`` and ``shared.checkpoints``."""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from docnum.api.http import int_cursor, json_response, page, page_params, services
from docnum.api.security import requires
from docnum.shared import checkpoints, proofs
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError, validation_failed
from docnum.shared.ledger import by_number
from docnum.shared.lookup import number_details

bp = Blueprint("proofs", __name__)

PROOF_SUFFIX = "/proof"
_PUBLIC_KEYS: dict[Path, Ed25519PublicKey] = {}  # per key file: read (and parsed) once


def public_key() -> Ed25519PublicKey | None:
    """The public half of this deployment's signing key, None when it has none."""
    settings = services().settings
    path = settings.signing_key_file
    if path is None:
        return None
    if path not in _PUBLIC_KEYS:
        try:
            _PUBLIC_KEYS[path] = checkpoints.load_signing_key(settings).public_key()
        except checkpoints.SigningKeyMissing:
            return None  # asked again next time: the key may be installed meanwhile
    return _PUBLIC_KEYS[path]


@bp.get(f"/numbers/<path:document_number>{PROOF_SUFFIX}")
@requires("correspondence.read")
def number_proof(document_number: str) -> ResponseReturnValue:
    """The receipt of a number. Numbers may contain ``/``: when ``{n}/proof`` is itself an
    issued number, this path keeps meaning that number's details, as it always has; its
    prefix's receipt is then at ``/proofs?document_number=``."""
    project = request.args.get("project")
    with transaction(services().read_engine) as session:
        literal = document_number + PROOF_SUFFIX
        if any(project in (None, r.project) for r in by_number(session, literal)):
            return json_response(number_details(session, literal, project))
        row = proofs.find_row(session, document_number, project)
        receipt = proofs.number_proof(session, row, public_key())
    return json_response(receipt)


@bp.get("/proofs")
@requires("correspondence.read")
def number_proof_by_query() -> ResponseReturnValue:
    """The same receipt, for any number text (no path ambiguity)."""
    number = request.args.get("document_number")
    if not number or len(number) > 64:
        raise validation_failed("document_number", "is required")
    with transaction(services().read_engine) as session:
        row = proofs.find_row(session, number, request.args.get("project"))
        receipt = proofs.number_proof(session, row, public_key())
    return json_response(receipt)


@bp.get("/checkpoints")
@requires("correspondence.read")
def list_checkpoints() -> ResponseReturnValue:
    cursor, limit = page_params()
    with transaction(services().read_engine) as session:
        items = checkpoints.list_checkpoints(session, int_cursor(cursor), limit + 1)
    return json_response(page(items, limit, key=lambda c: c["checkpoint"]))


@bp.get("/checkpoints/latest")
@requires("correspondence.read")
def latest_checkpoint() -> ResponseReturnValue:
    with transaction(services().read_engine) as session:
        row = checkpoints.latest(session)
        if row is None:
            raise DocnumError("NOT_FOUND", "no checkpoint has been signed yet")
        return json_response(checkpoints.checkpoint_dict(row))


@bp.get("/checkpoints/<int:checkpoint_id>")
@requires("correspondence.read")
def get_checkpoint(checkpoint_id: int) -> ResponseReturnValue:
    with transaction(services().read_engine) as session:
        return json_response(checkpoints.checkpoint_dict(checkpoints.get(session, checkpoint_id)))


def _checkpoint_arg(name: str) -> int:
    raw = request.args.get(name, "")
    if not raw.isdigit() or len(raw) > 18:
        raise validation_failed(name, "must be a checkpoint number")
    return int(raw)


@bp.get("/checkpoints/consistency")
@requires("correspondence.read")
def consistency() -> ResponseReturnValue:
    """RFC 9162 §2.1.4: the proof that checkpoint ``second`` extends checkpoint ``first``."""
    first, second = _checkpoint_arg("first"), _checkpoint_arg("second")
    with transaction(services().read_engine) as session:
        return json_response(checkpoints.consistency(session, first, second))


@bp.get("/checkpoints/public-key")
def get_public_key() -> ResponseReturnValue:
    """Public, like the checkpoints it checks: anyone holding a receipt needs it."""
    key = public_key()
    if key is None:
        raise DocnumError("NOT_FOUND", "this deployment has no signing key "
                                       "(DOCNUM_SIGNING_KEY_FILE)")
    return json_response(checkpoints.public_key_document(key))
