"""Explaining a number: its ledger row, what became of it, and every audit row that names it."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from docnum.shared.clock import iso
from docnum.shared.ledger import audit_dict, issued_number, one_by_number
from docnum.shared.models import AuditArchiveRow, AuditRow


def number_details(session: Session, document_number: str, project: str | None = None) -> dict:
    row = one_by_number(session, document_number, project)
    out = issued_number(row)
    out["project"] = row.project
    out["issued_by"] = row.issued_by
    if row.state == "VOID":
        out["void"] = {"reason": row.state_reason, "by": row.state_changed_by,
                       "at": iso(row.state_changed_at)}
    elif row.state in ("CANCELLED", "EXPIRED") and row.state_reason:
        out["state_reason"] = row.state_reason
    if row.replaced_by:
        out["replaced_by"] = row.replaced_by
    if row.replaces:
        out["replaces"] = row.replaces
    out["history"] = audit_history(session, document_number)
    return out


def audit_history(session: Session, document_number: str) -> list[dict]:
    """Audit rows naming the number, archive included, oldest first."""
    live = select(AuditRow).where(AuditRow.document_number == document_number)
    archived = select(AuditArchiveRow).where(AuditArchiveRow.document_number == document_number)
    rows = list(session.scalars(archived)) + list(session.scalars(live))
    rows.sort(key=lambda r: (r.created_at, r.id))
    return [audit_dict(r) for r in rows if r.success]


__all__ = ["audit_history", "number_details"]
