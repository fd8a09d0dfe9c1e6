"""Manual override (docs/reference.md#post-adminmanual-override): register a legacy or corrected
number as CONFIRMED, source MANUAL.

The number is checked for shape, codes and config first (the console's preview,
``override_plan``, runs the same checks). Then one transaction locks the counter the number
fits (when it fits the template), refuses a number or sequence already in the ledger, raises
the counter to the number's sequence when that is ahead, and writes the ledger and audit rows:
all or nothing.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from docnum.shared import chain_store
from docnum.shared.allocation import lock_counter
from docnum.shared.audit import Actor, write_audit
from docnum.shared.catalog import check_context_codes
from docnum.shared.clock import Clock, to_db
from docnum.shared.configs import ConfigView, resolve_config
from docnum.shared.context import NumberingContext
from docnum.shared.db import run_in_transaction, transaction
from docnum.shared.errors import DocnumError
from docnum.shared.ledger import issued_number
from docnum.shared.ledger_entry import fit_number, ledger_row
from docnum.shared.models import Counter, IssuedNumber
from docnum.shared.schemas import ManualOverride, as_model


@dataclass
class _OverrideRequest:
    """A manual override checked for shape, codes and config (nothing written yet)."""

    ctx: NumberingContext
    number: str
    reason: str
    config: ConfigView
    fit: tuple[str, int] | None  # (counter key, sequence) when the number fits the template


def _check_override(session: Session,
                    body: ManualOverride | Mapping[str, Any]) -> _OverrideRequest:
    """The checks that need no lock: shape and reason (the ``ManualOverride`` model's rules),
    codes, config and the template fit."""
    request = as_model(ManualOverride, body)
    ctx = request.to_context()
    check_context_codes(session, ctx)
    config = resolve_config(session, ctx.project, ctx.correspondence_type)
    return _OverrideRequest(ctx, request.document_number, request.reason, config,
                            fit_number(config, ctx, request.document_number))


def _refuse_duplicate(session: Session, project: str, number: str,
                     fit: tuple[str, int] | None) -> None:
    """409 DUPLICATE_NUMBER when the number is in the project's ledger, or when another number
    holds its (counter key, sequence)."""
    taken = session.scalar(select(IssuedNumber.state).where(
        IssuedNumber.project == project, IssuedNumber.document_number == number))
    if taken is not None:
        raise DocnumError("DUPLICATE_NUMBER", f"{number} is already in the ledger of "
                                              f"{project} ({taken})")
    if fit is None:
        return
    holder = session.scalar(select(IssuedNumber.document_number).where(
        IssuedNumber.counter_key == fit[0], IssuedNumber.sequence == fit[1]))
    if holder is not None:
        raise DocnumError("DUPLICATE_NUMBER", f"sequence {fit[1]} of {fit[0]} is already "
                                              f"held by {holder}")


def override_plan(session: Session, body: ManualOverride | Mapping[str, Any]) -> dict[str, Any]:
    """What ``manual_override`` of ``body`` would do, checked as it checks but without locking or
    writing: the context, whether the number fits the resolved template, and the counter it
    would raise. The console shows this before the user confirms."""
    checked = _check_override(session, body)
    fit = checked.fit
    _refuse_duplicate(session, checked.ctx.project, checked.number, fit)
    plan = {"document_number": checked.number, "reason": checked.reason,
            "context": checked.ctx.to_dict(), "config_id": checked.config.id,
            "template": checked.config.template, "fits": fit is not None,
            "counter_key": None, "sequence": None, "last_sequence": None}
    if fit is not None:
        plan["counter_key"], plan["sequence"] = fit
        plan["last_sequence"] = session.scalar(select(Counter.last_sequence).where(
            Counter.counter_key == fit[0]))
    return plan


def manual_override(engine: Engine, body: ManualOverride | Mapping[str, Any], actor: Actor,
                    clock: Clock, timezone: str) -> dict[str, Any]:
    """Register a legacy or corrected number as CONFIRMED, source MANUAL."""
    with transaction(engine) as session:
        checked = _check_override(session, body)
    ctx, number, reason, config, fit = (checked.ctx, checked.number, checked.reason,
                                        checked.config, checked.fit)

    def work(session: Session) -> dict[str, Any]:
        now = clock.now()
        now_db = to_db(now)
        last = None
        if fit:  # lock first: the checks below then see everything committed on this counter
            last = lock_counter(session, fit[0], ctx.project, config.sequence_start,
                                config.parsed.capacity, now_db)
        _refuse_duplicate(session, ctx.project, number, fit)
        raised = None
        if fit and fit[1] > last:
            session.execute(update(Counter).where(Counter.counter_key == fit[0])
                            .values(last_sequence=fit[1], updated_at=now_db))
            raised = {"from": last, "to": fit[1]}
        row = ledger_row(number=number, ctx=ctx, config=config, fit=fit, state="CONFIRMED",
                         source="MANUAL", request_id=str(uuid.uuid4()), actor=actor.sub,
                         now_db=now_db, reason=reason)
        chain_store.append(session, ledger=[row])
        after = {"state": "CONFIRMED", "source": "MANUAL", "reason": reason,
                 "context": ctx.to_dict(), "sequence": fit[1] if fit else None,
                 "fits_template": bool(fit), "config_version": config.version,
                 "last_sequence": max(last, fit[1]) if fit else None}
        if raised:
            after["counter_raise"] = raised
        write_audit(session, "MANUAL_OVERRIDE", actor, now, counter_key=row["counter_key"],
                    document_number=number,
                    before={"last_sequence": last} if fit else None, after=after)
        return issued_number(IssuedNumber(**row))

    return run_in_transaction(engine, work)


__all__ = ["manual_override", "override_plan"]
