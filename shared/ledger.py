"""Reading the ledger: the issued-number object of docs/reference.md#http-api, and lookups by
request and number."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from docnum.shared.clock import iso
from docnum.shared.errors import DocnumError
from docnum.shared.models import AuditArchiveRow, AuditRow, IssuedNumber

STATES = ("RESERVED", "CONFIRMED", "CANCELLED", "EXPIRED", "VOID")
SOURCES = ("GENERATE", "RESERVE", "MANUAL", "IMPORT", "REPLACE")


def issued_number(row: IssuedNumber) -> dict:
    """The issued-number object, identical whether it comes from a worker or from the database."""
    out = {
        "document_number": row.document_number,
        "sequence": row.sequence,
        "state": row.state,
        "source": row.source,
        "counter_key": row.counter_key,
        "config_id": row.config_id,
        "config_version": row.config_version,
        "document_date": row.document_date.isoformat() if row.document_date else None,
        "issued_at": iso(row.issued_at),
        "request_id": row.request_id,
        # The receipt anyone can check later (docs/verification.md): the row's place on its
        # hash chain. Rows built before they are chained have none yet.
        "row_hash": row_hash.hex() if (row_hash := getattr(row, "row_hash", None)) else None,
    }
    if row.document_ref:
        out["document_ref"] = row.document_ref
    if row.reservation_token:
        out["reservation"] = {"token": row.reservation_token,
                              "expires_at": iso(row.reservation_expires_at)}
    return out


def by_request_id(session: Session, request_id: str) -> IssuedNumber | None:
    return session.scalar(select(IssuedNumber).where(IssuedNumber.request_id == request_id))


def by_number(session: Session, document_number: str) -> list[IssuedNumber]:
    """A number is unique per project; the same text may exist in two projects."""
    return list(session.scalars(select(IssuedNumber)
                                .where(IssuedNumber.document_number == document_number)
                                .order_by(IssuedNumber.id)))


def one_by_number(session: Session, document_number: str, project: str | None, *,
                  choose: str = "add ?project= to choose") -> IssuedNumber:
    """The row of ``document_number`` in ``project`` (any project when None): ``NOT_FOUND`` when
    there is none, ``CONFLICT`` when several projects hold the number (``choose`` tells the
    caller how to name one)."""
    rows = by_number(session, document_number)
    if project is not None:
        rows = [r for r in rows if r.project == project]
    if not rows:
        raise DocnumError("NOT_FOUND", f"{document_number} was never issued")
    if len(rows) > 1:
        projects = ", ".join(r.project for r in rows)
        raise DocnumError("CONFLICT", f"{document_number} exists in projects {projects}; "
                                      f"{choose}")
    return rows[0]


def failed_request(session: Session, request_id: str) -> AuditRow | None:
    """The audit row of a request that was refused by the allocator (no ledger row exists)."""
    return session.scalar(select(AuditRow).where(AuditRow.request_id == request_id,
                                                 AuditRow.success.is_(False))
                          .order_by(AuditRow.id.desc()).limit(1))


def audit_dict(row: AuditRow | AuditArchiveRow) -> dict:
    return {"id": row.id, "operation": row.operation, "actor": row.actor,
            "client_ip": row.client_ip, "user_agent": row.user_agent,
            "request_id": row.request_id, "counter_key": row.counter_key,
            "document_number": row.document_number, "before": row.before, "after": row.after,
            "lock_wait_ms": row.lock_wait_ms, "duration_ms": row.duration_ms,
            "retry_count": row.retry_count, "fallback_used": row.fallback_used,
            "success": bool(row.success), "error_code": row.error_code,
            "created_at": iso(row.created_at)}
