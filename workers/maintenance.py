"""Periodic maintenance on the maintenance queue, scheduled by Celery beat.

Every job runs under a named lease in the database (``maintenance_locks``), so a slow run and
the next tick — or two beats started by mistake — cannot do the same work twice at once.
The work itself lives in ``shared/`` and is tested there by calling it directly.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab
from sqlalchemy import or_, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.exc import DBAPIError

from docnum.shared.clock import Clock, SystemClock, to_db
from docnum.shared.db import get_engine, is_retryable, transaction
from docnum.shared.models import MaintenanceLock
from docnum.shared.routing import MAINTENANCE_QUEUE
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

# job name -> (task name, schedule, lease seconds)
SCHEDULE: dict[str, tuple[str, object, int]] = {
    "expire_reservations": ("docnum.maintenance.expire_reservations", 15.0, 60),
    "archive_audit": ("docnum.maintenance.archive_audit", crontab(minute=30, hour=3), 3600),
    "optimize_tables": ("docnum.maintenance.optimize_tables",
                        crontab(minute=0, hour=4, day_of_week=0), 3600),
    "refresh_utilization": ("docnum.maintenance.refresh_utilization", 60.0, 120),
    "cleanup_idempotency": ("docnum.maintenance.cleanup_idempotency",
                            crontab(minute=15), 600),
    # Signs the chain heads (shared/checkpoints.py): a number is provable offline from the
    # first checkpoint after its issue, so at most this long after it.
    "checkpoint": ("docnum.maintenance.checkpoint", 600.0, 600),
}


def beat_schedule() -> dict:
    out = {}
    for job, (task, schedule, lease) in SCHEDULE.items():
        # expires: a tick that waited longer than its lease is dropped, not run late.
        out[job] = {"task": task, "schedule": schedule,
                    "options": {"queue": MAINTENANCE_QUEUE, "expires": lease}}
    return out


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire_lease(engine, name: str, seconds: int, clock: Clock) -> bool:
    """Take the named lease if it is free or expired; True when this process holds it."""
    now = clock.now()
    holder = _holder()
    # The row is created in a transaction of its own: INSERT IGNORE of an existing row takes a
    # shared lock, and two runs each holding one and asking for the exclusive lock of the
    # UPDATE would deadlock. The UPDATE alone is a plain compare-and-set.
    with transaction(engine) as session:
        dialect = session.get_bind().dialect.name
        values = dict(name=name, holder=None, expires_at=None)
        insert = mysql.insert(MaintenanceLock).values(**values).prefix_with("IGNORE") \
            if dialect in ("mysql", "mariadb") else \
            sqlite.insert(MaintenanceLock).values(**values).on_conflict_do_nothing()
        session.execute(insert)
    try:
        with transaction(engine) as session:
            taken = session.execute(
                update(MaintenanceLock)
                .where(MaintenanceLock.name == name,
                       or_(MaintenanceLock.expires_at.is_(None),
                           MaintenanceLock.expires_at < to_db(now)))
                .values(holder=holder, expires_at=to_db(now + timedelta(seconds=seconds))))
            return taken.rowcount == 1
    except DBAPIError as exc:
        if is_retryable(exc):  # lost a race for the lease: the other run has it
            return False
        raise


def release_lease(engine, name: str) -> None:
    with transaction(engine) as session:
        session.execute(update(MaintenanceLock)
                        .where(MaintenanceLock.name == name,
                               MaintenanceLock.holder == _holder())
                        .values(holder=None, expires_at=None))


def run_locked(settings: Settings, job: str, work: Callable[[], object],
               clock: Clock | None = None) -> object:
    """Run ``work`` if this job's lease is free; otherwise skip (another run is in progress)."""
    engine = get_engine(settings.database_url)
    lease = SCHEDULE[job][2]
    if not acquire_lease(engine, job, lease, clock or SystemClock()):
        log.info("%s: another run holds the lease; skipped", job)
        return {"skipped": True}
    try:
        return work()
    finally:
        release_lease(engine, job)


def register(celery: Celery) -> None:
    from docnum.shared import checkpoints, lifecycle, maintenance

    # shared=False on every task below: Celery's default (shared=True) also hands each task to
    # every app finalized later in the process, and the first registration of a name wins, so a
    # second app (a test's, a control client's) could run these with the FIRST app's settings.
    def settings() -> Settings:
        return celery.conf.docnum_settings

    def engine():
        return get_engine(settings().database_url)

    @celery.task(name=SCHEDULE["expire_reservations"][0], ignore_result=True, shared=False)
    def expire_reservations() -> object:
        return run_locked(settings(), "expire_reservations",
                          lambda: lifecycle.expire_overdue(engine(), SystemClock()))

    @celery.task(name=SCHEDULE["archive_audit"][0], ignore_result=True, shared=False)
    def archive_audit() -> object:
        return run_locked(settings(), "archive_audit",
                          lambda: maintenance.archive_audit(engine(), SystemClock()))

    @celery.task(name=SCHEDULE["optimize_tables"][0], ignore_result=True, shared=False)
    def optimize_tables() -> object:
        return run_locked(settings(), "optimize_tables",
                          lambda: maintenance.optimize_tables(engine()))

    @celery.task(name=SCHEDULE["refresh_utilization"][0], ignore_result=True, shared=False)
    def refresh_utilization() -> object:
        return run_locked(settings(), "refresh_utilization",
                          lambda: maintenance.refresh_utilization(engine()))

    @celery.task(name=SCHEDULE["cleanup_idempotency"][0], ignore_result=True, shared=False)
    def cleanup_idempotency() -> object:
        return run_locked(settings(), "cleanup_idempotency",
                          lambda: maintenance.cleanup_idempotency(engine(), SystemClock()))

    @celery.task(name=SCHEDULE["checkpoint"][0], ignore_result=True, shared=False)
    def checkpoint() -> object:
        return run_locked(settings(), "checkpoint", lambda: checkpoints.run_checkpoint(
            engine(), settings(), SystemClock()))
