"""Maintenance work run by beat on the maintenance queue (operations guide §5.3).

Each function is plain work against the database, called by the Celery tasks of
``workers/maintenance.py`` under a lease (so two runs of one job never overlap) and tested by
calling it directly. Each returns a small dict of counts, which the task logs.
"""
from __future__ import annotations

import logging
import time
from datetime import date, timedelta

from sqlalchemy import and_, delete, exists, func, insert, or_, select, text
from sqlalchemy.engine import Engine

from docnum.shared import metrics
from docnum.shared.clock import Clock, SystemClock, iso, to_db
from docnum.shared.db import transaction
from docnum.shared.models import AuditArchiveRow, AuditRow, Counter, RequestRecord

log = logging.getLogger(__name__)

#: Audit rows older than this move to ``audit_log_archive`` (docs/reference.md#the-ledger: kept
#: >= 7 years in total).
ARCHIVE_AFTER = timedelta(days=730)
ARCHIVE_BATCH = 1000
#: Stop a run well inside its 3600 s lease; the next night continues where it stopped.
ARCHIVE_TIME_BUDGET_S = 3000.0
CLEANUP_BATCH = 5000
#: Counters exported as ``docnum_sequence_utilization``: the fullest ones of current periods.
UTILIZATION_LIMIT = 1000
UTILIZATION_WARN = 0.90
#: The tables of the guide's weekly OPTIMIZE (§5.3): the hot counter rows and the audit trail.
OPTIMIZE_TABLES = ("counters", "audit_log")


def archive_audit(engine: Engine, clock: Clock, *, batch_size: int = ARCHIVE_BATCH,
                  time_budget_s: float = ARCHIVE_TIME_BUDGET_S) -> dict:
    """Move audit rows created more than two years ago to ``audit_log_archive``, keeping ids.

    One transaction per batch: copy the batch (``INSERT … SELECT``), then delete from
    ``audit_log`` exactly the ids of the batch that are now in the archive. A row is therefore
    deleted only in the same transaction that copied it (or after an earlier copy), never
    otherwise; a failed batch rolls back whole and leaves both tables as they were.
    """
    cutoff = to_db(clock.now() - ARCHIVE_AFTER)
    columns = [c.name for c in AuditRow.__table__.columns]
    source = AuditRow.__table__
    archive = AuditArchiveRow.__table__
    moved = batches = 0
    deadline = time.monotonic() + time_budget_s
    more = False
    while True:
        if time.monotonic() > deadline:
            more = True
            break
        with transaction(engine) as session:
            ids = list(session.scalars(
                select(source.c.id).where(source.c.created_at < cutoff)
                .order_by(source.c.id).limit(batch_size)))
            if not ids:
                break
            already = exists().where(archive.c.id == source.c.id)
            session.execute(insert(archive).from_select(
                columns, select(*[source.c[name] for name in columns])
                .where(source.c.id.in_(ids), ~already)))
            deleted = session.execute(
                delete(source).where(source.c.id.in_(ids), already)).rowcount
            if deleted != len(ids):
                # Cannot happen unless the archive refused rows silently: keep everything.
                raise RuntimeError(f"archive_audit: copied {deleted} of {len(ids)} rows; "
                                   "batch rolled back")
        moved += deleted
        batches += 1
    if moved:
        log.info("archive_audit: moved %d audit rows older than %s in %d batches",
                 moved, cutoff, batches)
    return {"archived": moved, "batches": batches, "cutoff": iso(cutoff), "more": more}


def optimize_tables(engine: Engine) -> dict:
    """``OPTIMIZE TABLE counters, audit_log`` on MariaDB (InnoDB: an online rebuild + analyze).

    A no-op on SQLite, where the embedded default has nothing worth rebuilding.
    """
    if engine.dialect.name not in ("mysql", "mariadb"):
        return {"skipped": engine.dialect.name}
    results: dict[str, list[str]] = {}
    started = time.monotonic()
    # OPTIMIZE commits implicitly; run it outside any ORM transaction.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(text(f"OPTIMIZE TABLE {', '.join(OPTIMIZE_TABLES)}")).all()
    for table, _op, msg_type, msg_text in rows:
        results.setdefault(table.split(".")[-1], []).append(f"{msg_type}: {msg_text}")
    failed = {t: m for t, m in results.items() if any(x.startswith("error") for x in m)}
    if failed:
        log.error("optimize_tables: %s", failed)
    return {"tables": results, "seconds": round(time.monotonic() - started, 3),
            "ok": not failed}


def current_periods(today: date) -> list[str]:
    """Counter-key period suffixes that are current on ``today`` in some time zone.

    A day either side covers every zone (the configured one may differ from UTC), and both
    ``FY{year}`` and ``FY{year+1}`` may be current depending on a config's start month. Keys of
    periods that ended are left out: they only grow again through back-dated documents.
    """
    periods = {"ALL"}
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        periods |= {f"Y{day.year}", f"M{day.year}-{day.month:02d}", f"FY{day.year}",
                    f"FY{day.year + 1}"}
    return sorted(periods)


def utilization(engine: Engine, clock: Clock | None = None,
                limit: int = UTILIZATION_LIMIT) -> dict[str, float]:
    """{counter_key: last_sequence / capacity} for the ``limit`` fullest current counters."""
    today = (clock or SystemClock()).now().date()
    ratio = (Counter.last_sequence * 1.0 / Counter.capacity)
    suffixes = or_(*[Counter.counter_key.like(f"%|{p}") for p in current_periods(today)])
    with transaction(engine) as session:
        rows = session.execute(
            select(Counter.counter_key, Counter.last_sequence, Counter.capacity)
            .where(Counter.capacity > 0, suffixes)
            .order_by(ratio.desc(), Counter.counter_key).limit(limit)).all()
    return {key: min(max(last / capacity, 0.0), 1.0) for key, last, capacity in rows}


def refresh_utilization(engine: Engine, clock: Clock | None = None,
                        limit: int = UTILIZATION_LIMIT) -> dict:
    """Replace the ``docnum_sequence_utilization`` series with the counters table's current state.

    Logs every counter above 90 %, so a deployment without Prometheus still hears about it.
    """
    values = utilization(engine, clock, limit)
    metrics.sequence_utilization.publish(values)
    high = {k: v for k, v in values.items() if v > UTILIZATION_WARN}
    for key, value in sorted(high.items(), key=lambda kv: -kv[1])[:20]:
        log.warning("counter %s is %.1f%% full: widen {SEQ:n} or plan a new period", key,
                    value * 100)
    return {"counters": len(values), "above_90": len(high),
            "max": round(max(values.values()), 4) if values else 0.0}


def cleanup_idempotency(engine: Engine, clock: Clock, *, batch_size: int = CLEANUP_BATCH) -> dict:
    """Delete expired rows of ``request_registry`` (the embedded default's request store).

    Production keeps these records in Redis with a TTL, so there this finds nothing to do.
    Rows are deleted in batches by primary key, so a large backlog never holds long locks.
    """
    now = to_db(clock.now())
    deleted = 0
    while True:
        with transaction(engine) as session:
            ids = list(session.scalars(
                select(RequestRecord.request_id).where(RequestRecord.expires_at < now)
                .limit(batch_size)))
            if not ids:
                break
            deleted += session.execute(delete(RequestRecord).where(
                and_(RequestRecord.request_id.in_(ids), RequestRecord.expires_at < now))).rowcount
        if len(ids) < batch_size:
            break
    with transaction(engine) as session:
        remaining = session.scalar(select(func.count()).select_from(RequestRecord))
    return {"deleted": deleted, "remaining": remaining}
