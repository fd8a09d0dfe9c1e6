"""SPEC §6 failure behaviour: Redis down (DB-only path and recovery) and database down (503).

Redis is a PRIVATE redis-server started by the test (the machine's Redis is never touched);
the API runs in-process (Flask test client) and the worker is a real `docnum worker` process.
"""
from __future__ import annotations

import time
import uuid
from typing import NoReturn

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select

from docnum.api.app import create_app
from docnum.shared.auth import mint_token
from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, IssuedNumber
from tests.conftest import ALL_PERMS, BASE, letter, make_settings, wait_for
from tests.e2e.service import (
    MariaDBServer,
    RedisServer,
    Service,
    docnum_env,
    free_port,
    prepare_database,
)


def headers(settings, **extra: str) -> dict:
    token = mint_token(settings, "alice", ALL_PERMS, [], 600)
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex, **extra}


def metric(client, name: str) -> float | None:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def fallback_of(engine, request_id: str) -> str:
    with transaction(engine) as session:
        return session.scalar(select(AuditRow.fallback_used).where(
            AuditRow.request_id == request_id, AuditRow.operation == "GENERATE"))


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def test_redis_down_serves_db_only_and_recovers_by_itself(database_url, seed, engine, tmp_path,
                                                           redis_server,
                                                           record_property):
    seed()
    redis = redis_server
    settings = make_settings(database_url, redis.url(0), redis.url(1), tmp_path / "var")
    env = docnum_env(database_url, redis.url(0), redis.url(1), tmp_path / "var")
    with Service(env, tmp_path / "logs", api=False, workers=["0,1,2,3"]) as worker:
        client = create_app(settings).test_client()

        def generate(timeout: int = 10):
            started = time.monotonic()
            response = client.post(f"{BASE}/generate?timeout={timeout}", json=letter(),
                                   headers=headers(settings))
            return response, time.monotonic() - started

        # Queue mode: the worker process serves it.
        first, _ = generate()
        assert first.status_code == 201, first.get_data(as_text=True)
        assert fallback_of(engine, first.json["request_id"]) == "NONE"

        # Redis goes away: the very next request is served through the database, at once.
        redis.stop()
        down, detect_s = generate()
        assert down.status_code == 201, down.get_data(as_text=True)
        assert fallback_of(engine, down.json["request_id"]) == "DB_ONLY"
        assert detect_s < 2.0, f"fallback took {detect_s:.2f}s"
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json == {"database": "ok", "broker": "down", "result_backend": "down",
                              "mode": "db-fallback"}
        assert metric(client, "docnum_redis_connection_status") == 0
        again, again_s = generate()
        assert again.status_code == 201 and again_s < 2.0
        assert fallback_of(engine, again.json["request_id"]) == "DB_ONLY"

        # Redis is back (empty, as after a restart without persistence): no process restarts.
        redis.start()
        restarted = time.monotonic()
        wait_for(lambda: client.get("/readyz").json["mode"] == "queue", timeout=60,
                 interval=0.25, message="readyz to say queue")
        ready_s = time.monotonic() - restarted
        back, _ = generate(timeout=30)
        assert back.status_code == 201, back.get_data(as_text=True)
        assert fallback_of(engine, back.json["request_id"]) == "NONE", "served by the queue"
        queue_s = time.monotonic() - restarted
        assert queue_s < 60
        assert metric(client, "docnum_redis_connection_status") == 1
        assert worker.processes["worker[0,1,2,3]"].running

        # No gap, no duplicate: 1, 2 (DB-only), 3 (DB-only), 4 (queue).
        numbers = [r.json["sequence"] for r in (first, down, again, back)]
        assert numbers == [1, 2, 3, 4]
        with transaction(engine) as session:
            assert list(session.scalars(select(IssuedNumber.sequence)
                                        .order_by(IssuedNumber.sequence))) == [1, 2, 3, 4]
        record_property("fallback_detection_s", round(detect_s, 3))
        record_property("readyz_queue_after_restart_s", round(ready_s, 3))
        record_property("first_queue_number_after_restart_s", round(queue_s, 3))
        print(f"\nfallback detection {detect_s:.3f}s, readyz queue after {ready_s:.3f}s, "
              f"first queued number after {queue_s:.3f}s")


def test_async_submit_falls_back_too(database_url, seed, engine, tmp_path,
                                     redis_server):
    """POST /requests with Redis down answers the finished request (200), not a 202 that
    could never be served."""
    seed()
    settings = make_settings(database_url, redis_server.url(0), redis_server.url(1),
                             tmp_path / "var")
    client = create_app(settings).test_client()
    redis_server.stop()
    response = client.post(f"{BASE}/requests", json=letter(), headers=headers(settings))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["status"] == "succeeded"
    assert fallback_of(engine, response.json["request_id"]) == "DB_ONLY"
    polled = client.get(response.headers["Location"], headers=headers(settings))
    assert polled.status_code == 200 and polled.json["status"] == "succeeded"


def _app_on(database_url: str, tmp_path):
    settings = make_settings(database_url, "redis://127.0.0.1:1/0", "redis://127.0.0.1:1/1",
                             tmp_path / "var")
    return settings, create_app(settings).test_client()


def test_database_unreachable_is_503_service_busy_in_thai(tmp_path):
    url = f"mysql+mysqldb://root@127.0.0.1:{free_port()}/docnum?charset=utf8mb4"  # nobody there
    settings, client = _app_on(url, tmp_path)
    started = time.monotonic()
    response = client.post(f"{BASE}/generate", json=letter(),
                           headers=headers(settings, **{"Accept-Language": "th"}))
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0
    assert response.json["code"] == "SERVICE_BUSY"
    assert response.json["title"] == "ระบบกำลังยุ่ง"
    english = client.post(f"{BASE}/generate", json=letter(), headers=headers(settings))
    assert english.status_code == 503 and english.json["title"] == "Service busy"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["database"] == "down"
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    assert client.get("/metrics").status_code == 200  # and still observable


def test_exhausted_connection_pool_is_503_service_busy(database_url, seed, tmp_path,
                                                       monkeypatch):
    """sqlalchemy's pool TimeoutError (every connection busy for pool_timeout) is SERVICE_BUSY."""
    from docnum.shared import db

    seed()
    # An equivalent URL of its own, so that every engine lookup of this app gets the tiny pool.
    url = database_url + "&connect_timeout=4"
    tiny = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    for pre_ping in (True, False):  # the API's engine and the allocation path's
        monkeypatch.setitem(db._engines, db.engine_key(url, pre_ping), tiny)
    settings, client = _app_on(url, tmp_path)
    try:
        with tiny.connect():  # the only connection is busy
            response = client.post(f"{BASE}/generate", json=letter(),
                                   headers=headers(settings, **{"Accept-Language": "th"}))
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["code"] == "SERVICE_BUSY"
        assert response.json["title"] == "ระบบกำลังยุ่ง"
        assert "Retry-After" in response.headers
    finally:
        tiny.dispose()


@pytest.mark.skipif(not MariaDBServer.available(), reason="needs mariadbd")
def test_database_outage_is_503_then_numbering_continues(tmp_path, redis_server,
                                                          record_property):
    """A real database going away under a running service (pooled connections included) and
    coming back: 503 SERVICE_BUSY while it is gone, nothing half-written, the next number
    follows on. /readyz saw the database down, so the front door's probe refuses the request
    before queueing it (at once); a request queued before anyone noticed is answered 503 when
    its wait ends (tests/e2e/test_fault_injection.py), and the worker holds it for up to
    DB_OUTAGE_PATIENCE_S (a failover may be that short)."""
    from docnum.shared.allocation import DB_OUTAGE_PATIENCE_S

    with MariaDBServer() as server:
        server.execute("CREATE DATABASE docnum CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = server.url("docnum")
        prepare_database(url)
        settings = make_settings(url, redis_server.url(0), redis_server.url(1),
                                 tmp_path / "var")
        env = docnum_env(url, redis_server.url(0), redis_server.url(1), tmp_path / "var")
        with Service(env, tmp_path / "logs", api=False, workers=["0,1,2,3"]):
            client = create_app(settings).test_client()

            def generate():
                return client.post(f"{BASE}/generate?timeout=30", json=letter(),
                                   headers=headers(settings, **{"Accept-Language": "th"}))

            assert generate().json["sequence"] == 1
            server.stop()
            assert client.get("/readyz").status_code == 503
            started = time.monotonic()
            busy = generate()
            busy_s = time.monotonic() - started
            assert busy.status_code == 503, busy.get_data(as_text=True)
            assert busy.json["code"] == "SERVICE_BUSY" and busy.json["title"] == "ระบบกำลังยุ่ง"
            assert int(busy.headers["Retry-After"]) > 0
            assert busy_s < DB_OUTAGE_PATIENCE_S + 8

            server.start()
            wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30,
                     message="readyz after the database came back")
            back = generate()
            assert back.status_code == 201, back.get_data(as_text=True)
            assert back.json["sequence"] == 2
        record_property("db_down_503_after_s", round(busy_s, 3))
        print(f"\n503 SERVICE_BUSY after {busy_s:.2f}s with the database down")
        # Nothing half-written: two numbers, two successful GENERATE audit rows, counter at 2.
        assert server.execute("SELECT sequence FROM document_numbers ORDER BY sequence",
                              "docnum") == [(1,), (2,)]
        assert server.execute("SELECT COUNT(*) FROM audit_log WHERE operation = 'GENERATE' "
                              "AND success", "docnum") == [(2,)]
        assert server.execute("SELECT last_sequence FROM counters", "docnum") == [(2,)]


def test_a_retry_queues_again_a_request_the_worker_gave_up_on(client, auth, seed, settings,
                                                              engine, monkeypatch):
    """The worker fails a request with SERVICE_BUSY after DB_OUTAGE_PATIENCE_S (a database
    outage longer than that). That failure is the outage's, not the request's: a retry with
    the same Idempotency-Key queues it again, and it gets exactly one number, whether the
    worker's answer is still in the result backend or only its audit row remains."""
    import redis as redis_lib

    from docnum.shared import allocation
    from docnum.shared.db import service_busy

    seed()

    def database_down(*_args: object, **_kwargs: object) -> NoReturn:
        raise service_busy()

    keys = {"result kept": "gave-up-1", "result lost": "gave-up-2"}
    monkeypatch.setattr(allocation, "DB_OUTAGE_PATIENCE_S", 0.0)
    monkeypatch.setattr(allocation, "allocate_many", database_down)
    for key in keys.values():
        response = client.post(f"{BASE}/generate?timeout=10", json=letter(),
                               headers=auth(key=key))
        assert response.status_code == 503, response.json
        assert response.json["code"] == "SERVICE_BUSY" and "Retry-After" in response.headers
    monkeypatch.undo()  # the database is back

    from docnum.shared.issuing import request_id_for

    backend = redis_lib.Redis.from_url(settings.result_backend)
    ids = {name: request_id_for("alice", key) for name, key in keys.items()}
    with transaction(engine) as session:
        failed = set(session.scalars(select(AuditRow.request_id).where(
            AuditRow.error_code == "SERVICE_BUSY", AuditRow.success.is_(False))))
    assert failed == set(ids.values()), "each give-up leaves a failed audit row"
    assert all(backend.exists(f"celery-task-meta-{rid}") for rid in ids.values())
    backend.delete(f"celery-task-meta-{ids['result lost']}")  # e.g. Redis restarted
    numbers = set()
    for key in keys.values():
        again = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(key=key))
        assert again.status_code == 201, again.json
        numbers.add(again.json["document_number"])
        same = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(key=key))
        assert same.status_code == 201 and same.json["document_number"] == \
            again.json["document_number"]
    assert len(numbers) == 2
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 2
