"""Periodic maintenance on the maintenance queue, scheduled by Celery beat.

Every job runs under a named lease in the database (``maintenance_locks``), so a slow run and
the next tick — or two beats started by mistake — cannot do the same work twice at once.
Each job is declared once, with ``@periodic``: its name, schedule, lease and body sit together,
and beat's schedule and the Celery tasks are derived from that declaration. The work itself
lives in ``shared/`` and is tested there by calling it directly.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab
from sqlalchemy import or_, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from docnum.shared import checkpoints, lifecycle, maintenance
from docnum.shared.clock import Clock, SystemClock, to_db
from docnum.shared.db import get_engine, is_retryable, transaction
from docnum.shared.models import MaintenanceLock
from docnum.shared.routing import MAINTENANCE_QUEUE
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

# Crontab times are in the deployment's time zone (DOCNUM_TIMEZONE, default Asia/Bangkok:
# Celery's ``timezone``), chosen outside office hours and clear of the 02:00 full backup
# (docs/operations.md#4-scheduled-maintenance-beat).
@dataclass(frozen=True)
class Job:
    """A periodic maintenance job: its name, when it runs, how long its lease lasts, its body."""

    name: str
    schedule: float | crontab   # seconds between runs, or a crontab
    lease_s: int                # a tick that waited longer than this is dropped, not run late
    body: Callable[[Engine, Settings], object]

    @property
    def task_name(self) -> str:
        return f"docnum.maintenance.{self.name}"


JOBS: dict[str, Job] = {}


JobBody = Callable[[Engine, Settings], object]


def periodic(schedule: float | crontab, lease_s: int) -> Callable[[JobBody], JobBody]:
    """Declare a maintenance job in one place: beat's schedule, the Celery task and its lease
    all come from this entry."""
    def declare(body: JobBody) -> JobBody:
        JOBS[body.__name__] = Job(body.__name__, schedule, lease_s, body)
        return body
    return declare


@periodic(schedule=15.0, lease_s=60)
def expire_reservations(engine: Engine, _settings: Settings) -> object:
    return lifecycle.expire_overdue(engine, SystemClock())


@periodic(schedule=crontab(minute=30, hour=3), lease_s=3600)
def archive_audit(engine: Engine, _settings: Settings) -> object:
    return maintenance.archive_audit(engine, SystemClock())


@periodic(schedule=crontab(minute=0, hour=4, day_of_week=0), lease_s=3600)
def optimize_tables(engine: Engine, _settings: Settings) -> object:
    return maintenance.optimize_tables(engine)


@periodic(schedule=60.0, lease_s=120)
def refresh_utilization(engine: Engine, _settings: Settings) -> object:
    return maintenance.refresh_utilization(engine)


@periodic(schedule=crontab(minute=15), lease_s=600)
def cleanup_idempotency(engine: Engine, _settings: Settings) -> object:
    return maintenance.cleanup_idempotency(engine, SystemClock())


# Signs the chain heads (shared/checkpoints.py): a number is provable offline from the first
# checkpoint after its issue, so at most this long after it.
@periodic(schedule=600.0, lease_s=600)
def checkpoint(engine: Engine, settings: Settings) -> object:
    return checkpoints.run_checkpoint(engine, settings, SystemClock())


def beat_schedule() -> dict:
    return {job.name: {"task": job.task_name, "schedule": job.schedule,
                       "options": {"queue": MAINTENANCE_QUEUE, "expires": job.lease_s}}
            for job in JOBS.values()}


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def acquire_lease(engine: Engine, name: str, seconds: int, clock: Clock) -> bool:
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


def release_lease(engine: Engine, name: str) -> None:
    with transaction(engine) as session:
        session.execute(update(MaintenanceLock)
                        .where(MaintenanceLock.name == name,
                               MaintenanceLock.holder == _holder())
                        .values(holder=None, expires_at=None))


def run_locked(settings: Settings, job: str, work: Callable[[], object],
               clock: Clock | None = None) -> object:
    """Run ``work`` if this job's lease is free; otherwise skip (another run is in progress)."""
    engine = get_engine(settings.database_url)
    lease = JOBS[job].lease_s
    if not acquire_lease(engine, job, lease, clock or SystemClock()):
        log.info("%s: another run holds the lease; skipped", job)
        return {"skipped": True}
    try:
        return work()
    finally:
        release_lease(engine, job)


def register(celery: Celery) -> None:
    """One Celery task per job, each running the job's body under its lease."""
    # shared=False: Celery's default (shared=True) also hands each task to every app finalized
    # later in the process, and the first registration of a name wins, so a second app (a
    # test's, a control client's) could run these with the FIRST app's settings.
    for job in JOBS.values():
        def run(job: Job = job) -> object:
            settings: Settings = celery.conf.docnum_settings
            engine = get_engine(settings.database_url)
            return run_locked(settings, job.name, lambda: job.body(engine, settings))

        celery.task(name=job.task_name, ignore_result=True, shared=False)(run)
