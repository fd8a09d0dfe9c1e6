"""Writing audit rows for operations outside the allocator (config, catalog, lifecycle, admin),
and for refused privileged attempts (``write_refusal``).

Each row goes onto the audit chain of its counter key (or the keyless chain) through
``shared/chain_store.py``, so it is hashed like every other row (docs/verification.md).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from docnum.shared import chain_store
from docnum.shared.clock import to_db
from docnum.shared.db import transaction

log = logging.getLogger(__name__)

OPERATIONS = ("GENERATE", "RESERVE", "CONFIRM", "CANCEL", "EXPIRE", "VOID", "REPLACE",
              "MANUAL_OVERRIDE", "IMPORT", "CONFIG_CREATE", "CONFIG_UPDATE", "CATALOG_CHANGE",
              "RESET_REQUEST", "RESET_APPROVE", "RESET_EXECUTE")


@dataclass(frozen=True)
class Actor:
    """Who did it and from where: the audit columns every operation carries."""

    sub: str
    client_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


SYSTEM = Actor("system:maintenance")


def write_audit(session: Session, operation: str, actor: Actor, now: datetime, *,
                counter_key: str | None = None, document_number: str | None = None,
                before: dict | None = None, after: dict | None = None, success: bool = True,
                error_code: str | None = None, duration_ms: int | None = None,
                lock_wait_ms: int | None = None, fallback_used: str = "NONE") -> None:
    if operation not in OPERATIONS:
        raise ValueError(f"unknown audit operation {operation!r}")
    chain_store.append(session, audit=[dict(
        operation=operation, actor=actor.sub, client_ip=actor.client_ip,
        user_agent=(actor.user_agent or "")[:255] or None, request_id=actor.request_id,
        counter_key=counter_key, document_number=document_number, before=before, after=after,
        lock_wait_ms=lock_wait_ms, duration_ms=duration_ms, retry_count=0,
        fallback_used=fallback_used, success=success, error_code=error_code,
        created_at=to_db(now))])


def write_refusal(engine: Engine, operation: str, actor: Actor, now: datetime, error_code: str,
                  *, counter_key: str | None = None, document_number: str | None = None,
                  attempt: dict | None = None) -> bool:
    """Record a refused privileged attempt: the operation it attempted, ``success = false``
    and the problem code, in a transaction of its own (the attempt's own transaction rolled
    back). ``after`` holds ``{"attempt": …}``: what was asked and why it was refused
    (docs/lifecycle.md#refused-attempts).

    Best effort: a database that cannot take the row (it may be the reason for the refusal)
    leaves a log line, never a second error. Returns whether the row was written.
    """
    try:
        try:
            with transaction(engine) as session:
                write_audit(session, operation, actor, now, counter_key=counter_key,
                            document_number=document_number, after={"attempt": attempt or {}},
                            success=False, error_code=error_code)
        except chain_store.MissingCounter:
            # The attempt named a counter that does not exist (often why it was refused): the
            # row goes on the chain without a counter, the key it named kept in the attempt.
            with transaction(engine) as session:
                write_audit(session, operation, actor, now, document_number=document_number,
                            after={"attempt": {**(attempt or {}), "counter_key": counter_key}},
                            success=False, error_code=error_code)
        return True
    except SQLAlchemyError as exc:
        log.warning("refused %s by %s (%s) not audited: %s", operation, actor.sub, error_code,
                    type(exc).__name__)
        return False
