"""Proofs: a number's receipt, the signed checkpoints, consistency between two of them, and the
public key that checks them (docs/verification.md). Views parse and answer; the work is in
``shared.proofs`` and ``shared.checkpoints``."""
from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flask import Blueprint, Response

from docnum.api.contract import PARAMETERS, PUBLIC, SIGNED_IN, Answers, contract
from docnum.api.http import json_response, page, services
from docnum.api.security import requires
from docnum.shared import checkpoints, proofs
from docnum.shared.db import transaction
from docnum.shared.errors import DocnumError
from docnum.shared.ledger import by_number
from docnum.shared.lookup import number_details
from docnum.shared.schemas import (
    Checkpoint,
    CheckpointPage,
    Consistency,
    ConsistencyQuery,
    IdPage,
    LookupQuery,
    ProofQuery,
    PublicKey,
    Receipt,
)

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


@bp.get(f"/numbers/<number:document_number>{PROOF_SUFFIX}")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Receipt, "The receipt (or, when '{n}/proof' is itself "
                                                   "an issued number, that number's details)"),
                                problems=(*SIGNED_IN, 404, 409)),
                   operation_id="getNumberProof", tags=["proofs"])
def number_proof(document_number: str, query: LookupQuery) -> Response:
    """The receipt of a number: its chain to a signed checkpoint (docs/verification.md).

    Numbers may contain ``/``: when ``{n}/proof`` is itself an issued number, this path keeps
    meaning that number's details, as it always has; its prefix's receipt is then at
    ``/proofs?document_number=``.
    """
    with transaction(services().read_engine) as session:
        literal = document_number + PROOF_SUFFIX
        if any(query.project in (None, r.project) for r in by_number(session, literal)):
            return json_response(number_details(session, literal, query.project))
        row = proofs.find_row(session, document_number, query.project)
        receipt = proofs.number_proof(session, row, public_key())
    return json_response(receipt)


@bp.get("/proofs")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Receipt, "The receipt"),
                                problems=(*SIGNED_IN, *PARAMETERS, 404, 409)),
                   operation_id="getProof", tags=["proofs"])
def number_proof_by_query(query: ProofQuery) -> Response:
    """The same receipt, for any number text (no path ambiguity)."""
    with transaction(services().read_engine) as session:
        row = proofs.find_row(session, query.document_number, query.project)
        receipt = proofs.number_proof(session, row, public_key())
    return json_response(receipt)


@bp.get("/checkpoints")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(CheckpointPage, "Signed checkpoints, oldest first"),
                                problems=(*SIGNED_IN, *PARAMETERS)),
                   operation_id="listCheckpoints", tags=["proofs"])
def list_checkpoints(query: IdPage) -> Response:
    """Signed checkpoints, oldest first."""
    with transaction(services().read_engine) as session:
        items = checkpoints.list_checkpoints(session, query.after_id(), query.limit + 1)
    return json_response(page(items, query.limit, key=lambda c: c["checkpoint"]))


@bp.get("/checkpoints/latest")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Checkpoint, "The latest signed checkpoint"),
                                problems=(*SIGNED_IN, 404)),
                   operation_id="getLatestCheckpoint", tags=["proofs"])
def latest_checkpoint() -> Response:
    """The latest signed checkpoint."""
    with transaction(services().read_engine) as session:
        row = checkpoints.latest(session)
        if row is None:
            raise DocnumError("NOT_FOUND", "no checkpoint has been signed yet")
        return json_response(checkpoints.checkpoint_dict(row))


@bp.get("/checkpoints/<id:checkpoint_id>")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Checkpoint, "One signed checkpoint"),
                                problems=(*SIGNED_IN, 404)),
                   operation_id="getCheckpoint", tags=["proofs"])
def get_checkpoint(checkpoint_id: int) -> Response:
    """One signed checkpoint."""
    with transaction(services().read_engine) as session:
        return json_response(checkpoints.checkpoint_dict(checkpoints.get(session, checkpoint_id)))


@bp.get("/checkpoints/consistency")
@requires("correspondence.read")
@contract.validate(resp=Answers(HTTP_200=(Consistency, "Checkpoint second extends first"),
                                problems=(*SIGNED_IN, *PARAMETERS, 404, 409)),
                   operation_id="getCheckpointConsistency", tags=["proofs"])
def consistency(query: ConsistencyQuery) -> Response:
    """RFC 9162 §2.1.4: the proof that checkpoint ``second`` extends checkpoint ``first``."""
    with transaction(services().read_engine) as session:
        return json_response(checkpoints.consistency(session, query.first, query.second))


@bp.get("/checkpoints/public-key")
@contract.validate(resp=Answers(HTTP_200=(PublicKey, "The Ed25519 public key"),
                                problems=(404,)),
                   security=PUBLIC, operation_id="getPublicKey", tags=["proofs"])
def get_public_key() -> Response:
    """The key that checks the checkpoints: public, like the checkpoints it checks (anyone
    holding a receipt needs it)."""
    key = public_key()
    if key is None:
        raise DocnumError("NOT_FOUND", "this deployment has no signing key "
                                       "(DOCNUM_SIGNING_KEY_FILE)")
    return json_response(checkpoints.public_key_document(key))
