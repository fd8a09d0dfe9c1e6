"""Number lifecycle after issue: confirm, cancel, expire, void and replace
(docs/reference.md#the-ledger).

States: ``RESERVED`` → ``CONFIRMED`` | ``CANCELLED`` | ``EXPIRED``; ``CONFIRMED`` → ``VOID``.
Nothing else. Every transition runs in one transaction that first locks the ledger row
(``SELECT … FOR UPDATE`` by a unique key or the primary key, so only that record is locked),
re-reads its state under the lock, changes it and writes one audit row. Confirm, cancel and the
expiry sweeper racing on one reservation therefore serialise on the row: the first to commit
decides, the others see the new state and answer accordingly (same 200 for an idempotent
repeat, 409/410 otherwise). No transition ever deletes a row or frees a sequence: numbers of
cancelled, expired and void rows stay in the ledger and are never issued again.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import chain_store, issuing, metrics
from docnum.shared.allocation import allocate_in_session
from docnum.shared.audit import SYSTEM, Actor, write_audit
from docnum.shared.clock import Clock, from_db, iso, to_db
from docnum.shared.configs import ConfigView
from docnum.shared.context import NumberingContext
from docnum.shared.db import run_in_transaction, transaction
from docnum.shared.errors import DocnumError, validation_failed
from docnum.shared.ledger import issued_number, one_by_number
from docnum.shared.models import IssuedNumber
from docnum.shared.schemas import VoidAndReplace, as_model

log = logging.getLogger(__name__)

MAX_REASON = 1000
EXPIRE_BATCH = 500


def _lock_by_token(session: Session, token: str) -> IssuedNumber:
    # reservation_token is unique: the locking read takes a record lock on that row only.
    row = session.scalar(select(IssuedNumber).where(IssuedNumber.reservation_token == token)
                         .with_for_update())
    if row is None:
        raise DocnumError("NOT_FOUND", "no reservation with this token")
    return row


def _overdue(row: IssuedNumber, now: datetime) -> bool:
    expires = from_db(row.reservation_expires_at)
    return expires is not None and expires <= now


def _expired(row: IssuedNumber) -> DocnumError:
    return DocnumError("RESERVATION_EXPIRED",
                       f"the reservation of {row.document_number} expired at "
                       f"{iso(row.reservation_expires_at)}; reserve a new number")


def _transition(row: IssuedNumber, state: str, actor: Actor, now: datetime,
                reason: str | None) -> dict:
    before = {"state": row.state}
    row.state = state
    row.state_reason = reason
    row.state_changed_by = actor.sub
    row.state_changed_at = to_db(now)
    return before


# --------------------------------------------------------------------------- confirm / cancel

def confirm(engine: Engine, token: str, document_ref: str | None, actor: Actor,
            clock: Clock) -> dict:
    """RESERVED → CONFIRMED. Confirming a confirmed reservation again answers the same number.

    ``token`` and ``document_ref`` are a validated ``schemas.Confirm``'s."""

    def work(session: Session) -> dict:
        row = _lock_by_token(session, token)
        now = clock.now()
        if row.state == "CONFIRMED":
            if document_ref is not None and row.document_ref not in (None, document_ref):
                raise DocnumError("CONFLICT", f"{row.document_number} was already confirmed "
                                              f"with document_ref {row.document_ref!r}")
            return issued_number(row)
        if row.state == "EXPIRED" or (row.state == "RESERVED" and _overdue(row, now)):
            raise _expired(row)
        if row.state != "RESERVED":
            raise DocnumError("INVALID_STATE", f"{row.document_number} is {row.state}; only a "
                                               "RESERVED number can be confirmed")
        before = _transition(row, "CONFIRMED", actor, now, None)
        if document_ref is not None:
            before["document_ref"] = row.document_ref
            row.document_ref = document_ref
        session.flush()
        write_audit(session, "CONFIRM", actor, now, counter_key=row.counter_key,
                    document_number=row.document_number, before=before,
                    after={"state": "CONFIRMED", "document_ref": row.document_ref})
        return issued_number(row)

    return run_in_transaction(engine, work)


def cancel(engine: Engine, token: str, reason: str, actor: Actor, clock: Clock) -> dict:
    """RESERVED → CANCELLED with a reason; the number stays in the ledger, never reused.

    ``token`` and ``reason`` are a validated ``schemas.Cancel``'s."""

    def work(session: Session) -> dict:
        row = _lock_by_token(session, token)
        now = clock.now()
        if row.state == "CANCELLED":
            return issued_number(row)  # idempotent: the first cancellation's reason stays
        if row.state == "EXPIRED" or (row.state == "RESERVED" and _overdue(row, now)):
            raise _expired(row)
        if row.state != "RESERVED":
            raise DocnumError("INVALID_STATE", f"{row.document_number} is {row.state}; only a "
                                               "RESERVED number can be cancelled (a confirmed "
                                               "one can be voided by an administrator)")
        before = _transition(row, "CANCELLED", actor, now, reason)
        session.flush()
        write_audit(session, "CANCEL", actor, now, counter_key=row.counter_key,
                    document_number=row.document_number, before=before,
                    after={"state": "CANCELLED", "reason": reason})
        return issued_number(row)

    return run_in_transaction(engine, work)


# --------------------------------------------------------------------------- expiry sweeper

def expire_overdue(engine: Engine, clock: Clock, *, batch: int = EXPIRE_BATCH) -> dict:
    """Mark RESERVED numbers past their expiry EXPIRED (one audit row each, actor system).

    Works in batches of ``batch`` rows, one transaction each: candidate ids come from a plain
    read, then those rows are locked by primary key and re-checked under the lock, so a
    reservation confirmed or cancelled meanwhile is left alone.
    """
    total = 0
    while True:
        now = clock.now()
        count = run_in_transaction(engine, partial(_expire_batch, now=now, batch=batch))
        total += count
        if count < batch:
            break
    if total:
        metrics.reservations_expired.inc(total)
        log.info("expired %d overdue reservations", total)
    return {"expired": total}


def _expire_batch(session: Session, now: datetime, batch: int) -> int:
    ids = list(session.scalars(
        select(IssuedNumber.id).where(IssuedNumber.state == "RESERVED",
                                      IssuedNumber.reservation_expires_at <= to_db(now))
        .order_by(IssuedNumber.id).limit(batch)))
    if not ids:
        return 0
    rows = [r for r in session.scalars(select(IssuedNumber).where(IssuedNumber.id.in_(ids))
                                       .order_by(IssuedNumber.id).with_for_update())
            if r.state == "RESERVED" and _overdue(r, now)]
    if not rows:
        return 0
    now_db = to_db(now)
    session.execute(update(IssuedNumber)
                    .where(IssuedNumber.id.in_([r.id for r in rows]),
                           IssuedNumber.state == "RESERVED")
                    .values(state="EXPIRED", state_changed_by=SYSTEM.sub, state_changed_at=now_db,
                            state_reason="reservation expired unconfirmed"),
                    execution_options={"synchronize_session": False})
    chain_store.append(session, audit=[dict(
        operation="EXPIRE", actor=SYSTEM.sub, client_ip=None, user_agent=None,
        request_id=r.request_id, counter_key=r.counter_key, document_number=r.document_number,
        before={"state": "RESERVED", "expires_at": iso(r.reservation_expires_at)},
        after={"state": "EXPIRED"}, lock_wait_ms=None, duration_ms=None, retry_count=0,
        fallback_used="NONE", success=True, error_code=None, created_at=now_db)
        for r in rows])
    return len(rows)


# --------------------------------------------------------------------------- void and replace

@dataclass
class _VoidPlan:
    project: str
    number: str
    replace: bool
    reason: str
    ctx: NumberingContext | None = None
    config: ConfigView | None = None
    counter_key: str | None = None
    day: date | None = None


def void_and_replace(engine: Engine, body: VoidAndReplace | Mapping[str, Any], actor: Actor,
                     clock: Clock, timezone: str) -> dict:
    """Void a CONFIRMED number and, when asked, issue its replacement in the same transaction.

    The replacement is numbered by the allocator inside the void's transaction, on the counter
    of the original context (same codes, same document date or the day it was issued, so the
    same period) or of ``context`` when one is given. Either both happen or neither does.
    """
    request = as_model(VoidAndReplace, body)
    context = request.context.to_context() if request.context is not None else None
    plan = _plan_void(engine, request.document_number, request.project, request.replace,
                      request.reason, context, clock, timezone)
    return run_in_transaction(engine, lambda session: _void(session, plan, actor, clock))


def _plan_void(engine: Engine, number: str, project: str | None, replace: bool, reason: str,
               context: NumberingContext | None, clock: Clock, timezone: str) -> _VoidPlan:
    """Read-only preparation: which row, and where the replacement goes (codes, config, key)."""
    with transaction(engine) as session:
        row = one_by_number(session, number, project, choose="add project")
        _check_voidable(row)  # checked again under the row lock
        plan = _VoidPlan(row.project, number, replace, reason)
        if not replace:
            return plan
        if context is not None:
            ctx = context
            if ctx.project != row.project:
                raise validation_failed("project", f"the replacement context must stay in "
                                                   f"{row.project}, the project of {number}")
            period_now = clock.now()
        else:
            ctx = _context_of(row)
            # Without a document date the original was numbered in the period of the day it
            # was issued; the replacement goes to that same period, hence the same counter.
            period_now = from_db(row.issued_at)
        plan.ctx = ctx
        plan.config, plan.counter_key, plan.day = issuing.prepare(
            session, ctx, now=period_now, timezone=timezone)
        return plan


def _context_of(row: IssuedNumber) -> NumberingContext:
    """The context the original number was issued for."""
    return NumberingContext(project=row.project, correspondence_type=row.correspondence_type,
                            originator=row.originator, recipient=row.recipient,
                            sub_type=row.sub_type, rfa_type=row.rfa_type,
                            discipline=row.discipline, revision=row.revision,
                            document_date=row.document_date, document_ref=row.document_ref)


def _check_voidable(row: IssuedNumber) -> None:
    if row.state == "CONFIRMED":
        return
    detail = f"{row.document_number} is {row.state}; only a CONFIRMED number can be voided"
    if row.state == "VOID":
        detail = f"{row.document_number} is already VOID"
        if row.replaced_by:
            detail += f" (replaced by {row.replaced_by})"
    raise DocnumError("INVALID_STATE", detail)


def _void(session: Session, plan: _VoidPlan, actor: Actor, clock: Clock) -> dict:
    row = session.scalar(select(IssuedNumber).where(IssuedNumber.project == plan.project,
                                                    IssuedNumber.document_number == plan.number)
                         .with_for_update())
    if row is None:
        raise DocnumError("NOT_FOUND", f"{plan.number} was never issued")
    _check_voidable(row)
    now = clock.now()
    replacement = None
    if plan.replace:
        assert plan.ctx is not None and plan.config is not None and plan.counter_key
        request = issuing.build_request(
            request_id=str(uuid.uuid4()), mode="generate", ctx=plan.ctx, config=plan.config,
            counter_key=plan.counter_key, day=plan.day, actor=actor.sub, now=now,
            client_ip=actor.client_ip, user_agent=actor.user_agent)
        request.extra.update(source="REPLACE", replaces=row.document_number,
                             audit_request_id=actor.request_id)
        outcome = allocate_in_session(session, {plan.counter_key: [request]},
                                      clock=clock)[plan.counter_key][0]
        if outcome.error is not None:
            raise outcome.error  # rolls back the void too: nothing half-written
        replacement = outcome.number
        replacement["replaces"] = row.document_number
    before = _transition(row, "VOID", actor, now, plan.reason)
    if replacement is not None:
        row.replaced_by = replacement["document_number"]
    session.flush()
    write_audit(session, "VOID", actor, now, counter_key=row.counter_key,
                document_number=row.document_number, before=before,
                after={"state": "VOID", "reason": plan.reason, "replaced_by": row.replaced_by})
    voided = issued_number(row)
    voided["void"] = {"reason": row.state_reason, "by": row.state_changed_by,
                      "at": iso(row.state_changed_at)}
    if row.replaced_by:
        voided["replaced_by"] = row.replaced_by
    out = {"voided": voided}
    if replacement is not None:
        out["replacement"] = replacement
    return out


__all__ = ["cancel", "confirm", "expire_overdue", "void_and_replace"]
