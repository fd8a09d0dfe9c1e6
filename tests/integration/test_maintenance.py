"""Beat maintenance against the real MariaDB: archive, optimize, utilization, idempotency cleanup,
the lease that keeps two runs of a job apart, and the schedule itself."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text

from docnum.shared import maintenance, metrics
from docnum.shared.clock import FixedClock, to_db
from docnum.shared.db import make_engine, transaction
from docnum.shared.models import AuditArchiveRow, AuditRow, Counter, RequestRecord
from docnum.shared.routing import MAINTENANCE_QUEUE
from docnum.workers import maintenance as beat
from tests.conftest import wait_for

NOW = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)
CLOCK = FixedClock(NOW)


def audit(created_at: datetime, n: int) -> dict:
    return dict(operation="GENERATE", actor=f"user{n}", client_ip="10.0.0.1", user_agent="t",
                request_id=f"req-{n}", counter_key="LCBP3|ORIGINATOR=คคง.|Y2025",
                document_number=f"คคง.-สคฉ.3-{n:04d}-2568", before={"last_sequence": n - 1},
                after={"last_sequence": n, "note": "ภาษาไทย"}, lock_wait_ms=n,
                duration_ms=2 * n, retry_count=n % 3, fallback_used="DB_ONLY" if n % 2 else "NONE",
                success=bool(n % 5), error_code=None if n % 5 else "SEQUENCE_EXHAUSTED",
                created_at=to_db(created_at))


def rows(session, model) -> dict[int, dict]:
    columns = [c.name for c in model.__table__.columns]
    return {r.id: {c: getattr(r, c) for c in columns}
            for r in session.scalars(select(model).order_by(model.id))}


def insert_audit(engine, times: list[datetime]) -> None:
    with transaction(engine) as session:
        session.execute(insert(AuditRow), [audit(t, i + 1) for i, t in enumerate(times)])


def test_archive_moves_rows_older_than_two_years_keeping_ids(engine):
    cutoff = NOW - timedelta(days=730)
    old = [cutoff - timedelta(days=d) for d in (400, 30, 1)] + [cutoff - timedelta(microseconds=1)]
    young = [cutoff, cutoff + timedelta(seconds=1), NOW - timedelta(days=1)]
    insert_audit(engine, old + young)
    with transaction(engine) as session:
        before = rows(session, AuditRow)
    result = maintenance.archive_audit(engine, CLOCK, batch_size=3)
    assert result["archived"] == 4 and result["batches"] == 2 and result["more"] is False
    with transaction(engine) as session:
        live, archived = rows(session, AuditRow), rows(session, AuditArchiveRow)
    old_ids = sorted(before)[:4]
    assert sorted(archived) == old_ids
    assert all(archived[i] == before[i] for i in old_ids), "archived rows must be identical"
    assert sorted(live) == sorted(before)[4:]
    # Nothing is left to move; the next run is a no-op.
    assert maintenance.archive_audit(engine, CLOCK)["archived"] == 0


def test_archive_finishes_a_row_copied_by_an_earlier_interrupted_run(engine):
    old = NOW - timedelta(days=800)
    insert_audit(engine, [old, old])
    with transaction(engine) as session:
        first = session.scalars(select(AuditRow).order_by(AuditRow.id)).first()
        session.execute(insert(AuditArchiveRow).values(
            **{c.name: getattr(first, c.name) for c in AuditRow.__table__.columns}))
    assert maintenance.archive_audit(engine, CLOCK)["archived"] == 2
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditRow)) == 0
        assert session.scalar(select(func.count()).select_from(AuditArchiveRow)) == 2


def test_archive_failure_rolls_back_the_batch_and_deletes_nothing_uncopied(engine):
    insert_audit(engine, [NOW - timedelta(days=900)] * 5)
    with transaction(engine) as session:
        ids = sorted(rows(session, AuditRow))
    poisoned = ids[3]  # in the second batch of two
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_archive"))
        conn.execute(text(
            "CREATE TRIGGER test_refuse_archive BEFORE INSERT ON audit_log_archive FOR EACH ROW "
            f"BEGIN IF NEW.id = {poisoned} THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'archive refused'; END IF; END"))
    try:
        with pytest.raises(Exception, match="archive refused"):
            maintenance.archive_audit(engine, CLOCK, batch_size=2)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS test_refuse_archive"))
    with transaction(engine) as session:
        live, archived = rows(session, AuditRow), rows(session, AuditArchiveRow)
    assert sorted(archived) == ids[:2], "the first batch committed"
    assert sorted(live) == ids[2:], "the failed batch kept every row it could not copy"
    assert maintenance.archive_audit(engine, CLOCK, batch_size=2)["archived"] == 3


def test_optimize_tables_on_mariadb_and_noop_on_sqlite(engine, tmp_path):
    result = maintenance.optimize_tables(engine)
    assert result["ok"] is True
    assert set(result["tables"]) == {"counters", "audit_log"}
    assert all(any(m.startswith("status: OK") for m in messages)
               for messages in result["tables"].values()), result
    sqlite = make_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert maintenance.optimize_tables(sqlite) == {"skipped": "sqlite"}
    sqlite.dispose()


def test_cleanup_idempotency_deletes_only_expired_records(engine):
    def record(n: int, expires: datetime) -> dict:
        return dict(request_id=f"r{n}", client="alice", fingerprint="f", mode="generate",
                    counter_key="K", submitted_at=to_db(expires - timedelta(days=1)),
                    expires_at=to_db(expires))

    expired = [record(n, NOW - timedelta(seconds=n + 1)) for n in range(7)]
    alive = [record(100 + n, NOW + timedelta(hours=n + 1)) for n in range(3)]
    with transaction(engine) as session:
        session.execute(insert(RequestRecord), expired + alive)
    assert maintenance.cleanup_idempotency(engine, CLOCK, batch_size=3) == {"deleted": 7,
                                                                            "remaining": 3}
    with transaction(engine) as session:
        left = set(session.scalars(select(RequestRecord.request_id)))
    assert left == {"r100", "r101", "r102"}


def test_refresh_utilization_task_runs_under_its_lease(settings, engine,
                                                       celery_session_app):
    today = datetime.now(UTC)
    with transaction(engine) as session:
        session.execute(insert(Counter).values(
            counter_key=f"P2|ORIGINATOR=A|Y{today.year}", project="P2", last_sequence=99,
            capacity=99, updated_at=to_db(today)))
    task = celery_session_app.tasks["docnum.maintenance.refresh_utilization"]
    assert task() == {"counters": 1, "above_90": 1, "max": 1.0}
    assert metrics.sequence_utilization.values() == {f"P2|ORIGINATOR=A|Y{today.year}": 1.0}


def test_two_concurrent_runs_of_a_job_never_both_run(settings):
    running = threading.Event()
    release = threading.Event()
    ran: list[str] = []

    def slow_work() -> dict:
        ran.append("first")
        running.set()
        assert release.wait(20)
        return {"done": True}

    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.update(
        first=beat.run_locked(settings, "archive_audit", slow_work)))
    first.start()
    wait_for(running.is_set, message="the first run to start")
    # While the first run holds the lease, any other run of the same job is skipped...
    second = beat.run_locked(settings, "archive_audit", lambda: ran.append("second"))
    assert second == {"skipped": True}
    # ... but another job is not blocked by it.
    assert beat.run_locked(settings, "optimize_tables", lambda: "other") == "other"
    release.set()
    first.join(20)
    assert results["first"] == {"done": True} and ran == ["first"]
    # Released: the next run goes ahead.
    assert beat.run_locked(settings, "archive_audit", lambda: "third") == "third"


def _burst(settings, job: str, attempts: int = 6) -> tuple[list[int], list[object]]:
    """``attempts`` threads call run_locked at the same instant; the one that gets in holds the
    lease until all the others have tried."""
    barrier = threading.Barrier(attempts)
    done = threading.Semaphore(0)
    ran: list[int] = []
    outcomes: list[object] = []

    def attempt(n: int) -> None:
        barrier.wait(10)

        def work() -> str:
            ran.append(n)
            for _ in range(attempts - 1):  # hold the lease while the others try
                done.acquire(timeout=5)
            return "ran"

        try:
            outcomes.append(beat.run_locked(settings, job, work))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            if not ran or ran[0] != n:
                done.release()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return ran, outcomes


def test_a_burst_of_runs_executes_exactly_one(settings):

    for _ in range(3):
        ran, outcomes = _burst(settings, "cleanup_idempotency")
        assert len(ran) == 1
        losers = [o for o in outcomes if o != "ran"]
        assert len(losers) == 5
        assert all(o == {"skipped": True} for o in losers), losers


def test_a_losing_run_is_skipped_quietly(settings):
    for _ in range(3):
        _, outcomes = _burst(settings, "cleanup_idempotency")
        assert all(o in ("ran", {"skipped": True}) for o in outcomes), outcomes


def test_an_expired_lease_is_taken_over(settings, engine):
    """A run that died without releasing (worker SIGKILLed) blocks the job only until its lease
    expires."""
    assert beat.acquire_lease(engine, "optimize_tables", 60, FixedClock(NOW))
    assert not beat.acquire_lease(engine, "optimize_tables", 60,
                                  FixedClock(NOW + timedelta(seconds=59)))
    assert beat.acquire_lease(engine, "optimize_tables", 60,
                              FixedClock(NOW + timedelta(seconds=61)))


def test_beat_schedule_routes_everything_to_the_maintenance_queue(celery_session_app):
    from celery.schedules import schedule as interval

    entries = beat.beat_schedule()
    assert set(entries) == {"expire_reservations", "archive_audit", "optimize_tables",
                            "refresh_utilization", "cleanup_idempotency", "checkpoint"}
    for name, entry in entries.items():
        assert entry["options"]["queue"] == MAINTENANCE_QUEUE, name
        assert entry["task"] in celery_session_app.tasks, name
        assert 0 < entry["options"]["expires"] <= beat.JOBS[name].lease_s
    every = entries["expire_reservations"]["schedule"]
    seconds = (every if isinstance(every, (int, float))
               else interval(every).run_every.total_seconds())
    assert seconds <= 30
    assert celery_session_app.conf.beat_schedule == entries
    # The crontab jobs run at night, weekly for OPTIMIZE.
    optimize = entries["optimize_tables"]["schedule"]
    assert optimize.day_of_week == {0} and optimize.hour == {4}


def test_nightly_jobs_run_at_night_in_the_deployments_time_zone(celery_session_app, settings):
    """Crontab times are read in DOCNUM_TIMEZONE (Asia/Bangkok): 03:30 and Sunday 04:00 there,
    not 10:30 and 11:00 (office hours) as they would be in UTC."""
    from copy import copy
    from zoneinfo import ZoneInfo

    assert settings.timezone == "Asia/Bangkok"
    assert celery_session_app.conf.timezone == settings.timezone
    zone = ZoneInfo(settings.timezone)
    entries = beat.beat_schedule()
    start = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
    for name, (hour, minute, weekday) in {"archive_audit": (3, 30, None),
                                          "optimize_tables": (4, 0, 6)}.items():
        schedule = copy(entries[name]["schedule"])
        schedule.app = celery_session_app
        runs = set()
        for step in range(0, 14 * 24, 5):  # every 5 hours for two weeks
            now = start + timedelta(hours=step)
            schedule.nowfun = lambda now=now: now
            due = (now + schedule.remaining_estimate(now)).astimezone(zone)
            runs.add((due.hour, due.minute, due.weekday() if weekday is not None else None))
        assert runs == {(hour, minute, weekday)}, (name, runs)
        assert not 8 <= hour < 18
