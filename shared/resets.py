"""Two-person counter reset (docs/reference.md#counter-reset-two-person-approval).

A SUPER_ADMIN files a request to set a counter's ``last_sequence``; two other SUPER_ADMINs
approve it, and the second approval executes it in the same transaction. A counter never goes
below its floor, the highest sequence ever issued on its key (whatever that number's state), so
no number is issued twice; the floor is checked when the request is filed and again, under the
counter's row lock, when it executes. Every step writes an audit row.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared.audit import Actor, write_audit
from docnum.shared.clock import Clock, iso, to_db
from docnum.shared.configs import get_config
from docnum.shared.db import run_in_transaction
from docnum.shared.errors import DocnumError, validation_failed
from docnum.shared.models import Counter, IssuedNumber, ResetApproval, ResetRequest
from docnum.shared.reports import config_shapes, key_belongs_to
from docnum.shared.schemas import ResetCounter, as_model

APPROVALS_NEEDED = 2


def _reset_dict(row: ResetRequest, approvals: list[ResetApproval]) -> dict:
    return {"reset_request_id": row.id, "status": row.status, "config_id": row.config_id,
            "counter_key": row.counter_key, "new_last_sequence": int(row.new_last_sequence),
            "reason": row.reason, "requested_by": row.requested_by,
            "requested_at": iso(row.requested_at), "executed_at": iso(row.executed_at),
            "approvals": [{"approver": a.approver, "approved_at": iso(a.approved_at)}
                          for a in sorted(approvals, key=lambda a: a.id)]}


def counter_floor(session: Session, counter_key: str, *, locking: bool = False) -> int:
    """The highest sequence ever issued on the key, whatever its state (0 when none): the
    lowest ``last_sequence`` a reset may set, since every sequence at or below it is taken."""
    stmt = (select(IssuedNumber.sequence).where(IssuedNumber.counter_key == counter_key)
            .order_by(IssuedNumber.sequence.desc()).limit(1))
    if locking:  # read the newest committed row, not this transaction's snapshot
        stmt = stmt.with_for_update(read=True)
    top = session.scalar(stmt)
    return int(top) if top is not None else 0


def _floor_error(counter_key: str, new_last: int, floor: int) -> DocnumError:
    return DocnumError("COUNTER_FLOOR",
                       f"new_last_sequence {new_last} is below {floor}, the highest sequence "
                       f"already issued on {counter_key}; numbers are never reused",
                       extra={"floor": floor})


def request_reset(engine: Engine, config_id: int, body: ResetCounter | Mapping[str, Any],
                  actor: Actor, clock: Clock) -> dict:
    request = as_model(ResetCounter, body)
    key, new_last, reason = request.counter_key, request.new_last_sequence, request.reason

    def work(session: Session) -> dict:
        config = get_config(session, config_id)
        if not key_belongs_to(key, config_shapes(session, config)):
            raise validation_failed("counter_key", f"{key} is not a counter of config "
                                                   f"{config_id} ({config.template})")
        counter = session.scalar(select(Counter).where(Counter.counter_key == key))
        if counter is None:
            raise validation_failed("counter_key", f"no counter {key} has been used yet")
        if new_last > counter.capacity:
            raise validation_failed("new_last_sequence",
                                    f"exceeds the counter's capacity {counter.capacity}")
        floor = counter_floor(session, key)
        if new_last < floor:
            raise _floor_error(key, new_last, floor)
        pending = session.scalar(select(ResetRequest.id).where(
            ResetRequest.counter_key == key, ResetRequest.status == "PENDING_APPROVAL"))
        if pending is not None:
            raise DocnumError("CONFLICT", f"reset request {pending} for {key} is still waiting "
                                          "for approval")
        now = clock.now()
        row = ResetRequest(config_id=config_id, counter_key=key, new_last_sequence=new_last,
                           reason=reason, status="PENDING_APPROVAL", requested_by=actor.sub,
                           requested_at=to_db(now))
        session.add(row)
        session.flush()
        write_audit(session, "RESET_REQUEST", actor, now, counter_key=key,
                    before={"last_sequence": int(counter.last_sequence), "floor": floor},
                    after={"reset_request_id": row.id, "new_last_sequence": new_last,
                           "reason": reason, "status": row.status})
        return _reset_dict(row, [])

    return run_in_transaction(engine, work)


def approve_reset(engine: Engine, reset_id: int, actor: Actor,
                  clock: Clock) -> tuple[dict, DocnumError | None]:
    """Record an approval; the second distinct approver (never the requester) executes it.

    Execution re-checks the floor under the counter's row lock. When the floor has risen past
    the target meanwhile, the request ends FAILED (committed, audited) and the error is
    returned for the caller to raise: 409 COUNTER_FLOOR.
    """
    def work(session: Session) -> tuple[dict, DocnumError | None]:
        row = session.scalar(select(ResetRequest).where(ResetRequest.id == reset_id)
                             .with_for_update())
        if row is None:
            raise DocnumError("NOT_FOUND", f"no reset request {reset_id}")
        if row.status != "PENDING_APPROVAL":
            raise DocnumError("INVALID_STATE", f"reset request {reset_id} is {row.status}")
        if row.requested_by == actor.sub:
            raise DocnumError("SELF_APPROVAL", "the requester cannot approve their own reset; "
                                               "two other SUPER_ADMINs must")
        approvals = list(session.scalars(select(ResetApproval).where(
            ResetApproval.reset_request_id == reset_id)))
        if any(a.approver == actor.sub for a in approvals):
            raise DocnumError("ALREADY_APPROVED", f"{actor.sub} already approved reset request "
                                                  f"{reset_id}; another SUPER_ADMIN must")
        now = clock.now()
        approval = ResetApproval(reset_request_id=reset_id, approver=actor.sub,
                                 approved_at=to_db(now))
        session.add(approval)
        session.flush()
        approvals.append(approval)
        write_audit(session, "RESET_APPROVE", actor, now, counter_key=row.counter_key,
                    before={"status": row.status, "approvals": len(approvals) - 1},
                    after={"reset_request_id": reset_id, "approvals": len(approvals)})
        error = None
        if len(approvals) >= APPROVALS_NEEDED:
            error = _execute(session, row, approvals, actor, now)
        return _reset_dict(row, approvals), error

    return run_in_transaction(engine, work)


def _execute(session: Session, row: ResetRequest, approvals: list[ResetApproval], actor: Actor,
             now: datetime) -> DocnumError | None:
    key = row.counter_key
    last = session.scalar(select(Counter.last_sequence).where(Counter.counter_key == key)
                          .with_for_update())
    floor = counter_floor(session, key, locking=True)
    new_last = int(row.new_last_sequence)
    approvers = [a.approver for a in approvals]
    error = None
    if last is None:
        error = DocnumError("NOT_FOUND", f"counter {key} no longer exists")
    elif new_last < floor:
        error = _floor_error(key, new_last, floor)
    row.executed_at = to_db(now)
    if error is not None:
        row.status = "FAILED"
        write_audit(session, "RESET_EXECUTE", actor, now, counter_key=key,
                    before={"last_sequence": last, "floor": floor},
                    after={"reset_request_id": row.id, "status": "FAILED",
                           "new_last_sequence": new_last, "approvers": approvers},
                    success=False, error_code=error.code)
        return error
    session.execute(update(Counter).where(Counter.counter_key == key)
                    .values(last_sequence=new_last, updated_at=to_db(now)))
    row.status = "EXECUTED"
    write_audit(session, "RESET_EXECUTE", actor, now, counter_key=key,
                before={"last_sequence": int(last), "floor": floor},
                after={"last_sequence": new_last, "reset_request_id": row.id,
                       "status": "EXECUTED", "requested_by": row.requested_by,
                       "approvers": approvers, "reason": row.reason})
    return None


def list_resets(session: Session, status: str | None, after_id: int | None,
                limit: int) -> list[dict]:
    stmt = select(ResetRequest)
    if status is not None:
        stmt = stmt.where(ResetRequest.status == status)
    if after_id is not None:
        stmt = stmt.where(ResetRequest.id > after_id)
    rows = list(session.scalars(stmt.order_by(ResetRequest.id).limit(limit)))
    approvals: dict[int, list[ResetApproval]] = {}
    if rows:
        for a in session.scalars(select(ResetApproval).where(
                ResetApproval.reset_request_id.in_([r.id for r in rows]))):
            approvals.setdefault(a.reset_request_id, []).append(a)
    return [_reset_dict(r, approvals.get(r.id, [])) for r in rows]


def get_reset(session: Session, reset_id: int) -> dict:
    row = session.get(ResetRequest, reset_id)
    if row is None:
        raise DocnumError("NOT_FOUND", f"no reset request {reset_id}")
    approvals = list(session.scalars(select(ResetApproval).where(
        ResetApproval.reset_request_id == reset_id)))
    return _reset_dict(row, approvals)


__all__ = ["approve_reset", "counter_floor", "get_reset", "list_resets", "request_reset"]
