"""Fault injection under load: the database stops, Redis stops, a shard queue gets a
second consumer by mistake. (A SIGKILLed shard worker: test_worker_kill.py and
test_up_supervision.py.)

Everything that is stopped is PRIVATE to the test (``MariaDBServer``, ``RedisServer`` of
tests/e2e/service.py); the API and the workers are real ``docnum`` subprocesses. Each test
prints what it measured (``-s``); docs/reliability.md's failure matrix copies those figures.
"""
from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from docnum.shared.auth import mint_token
from docnum.shared.routing import all_shard_queues
from docnum.shared.settings import load_settings
from tests.conftest import ALL_PERMS, BASE, letter
from tests.e2e.service import (
    MariaDBServer,
    Process,
    RedisServer,
    Service,
    check_ledger,
    docnum_env,
    prepare_database,
    wait_until,
)

pytestmark = pytest.mark.e2e

KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]


def _headers(env: dict[str, str], key: str | None = None, sub: str = "loader") -> dict:
    token = mint_token(load_settings(env), sub, ALL_PERMS, [], 900)
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key or uuid.uuid4().hex}


@dataclass
class Attempt:
    key: str
    sent: float          # time.monotonic() when sent
    elapsed: float
    status: int
    code: str | None = None
    retry_after: str | None = None
    number: str | None = None
    request_id: str | None = None


# ------------------------------------------------------------------------------ database


@pytest.mark.skipif(not MariaDBServer.available(), reason="needs mariadbd")
def test_database_stops_for_5s_under_sync_load(tmp_path):
    """Only 201 or 503 SERVICE_BUSY + Retry-After, never 500, never longer than the timeout;
    clients that retry with the same Idempotency-Key each get exactly one number."""
    timeout, threads, outage_s = 5, 8, 5.0
    with MariaDBServer() as db, RedisServer(tmp_path / "redis") as redis_server:
        db.execute("CREATE DATABASE docnum CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = db.url("docnum")
        prepare_database(url)
        env = docnum_env(url, redis_server.url(0), redis_server.url(1), tmp_path / "var")
        attempts: list[Attempt] = []
        lock = threading.Lock()
        stop_load = threading.Event()

        with Service(env, tmp_path / "logs", workers=["0,1,2,3"]) as svc:
            def client(n: int) -> None:
                session = requests.Session()
                while not stop_load.is_set():
                    key, body = uuid.uuid4().hex, letter(recipient=KEYS[n % 3])
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:  # retry this key until it has a number
                        sent = time.monotonic()
                        try:
                            response = session.post(
                                f"{svc.url}{BASE}/generate?timeout={timeout}", json=body,
                                headers=_headers(env, key), timeout=timeout + 15)
                        except requests.RequestException as exc:  # a hang or a reset
                            attempt = Attempt(key, sent, time.monotonic() - sent, 0, repr(exc))
                        else:
                            try:
                                data = response.json()
                            except ValueError:  # not JSON at all: recorded as it came
                                data = {"code": response.text[:200]}
                            attempt = Attempt(key, sent, time.monotonic() - sent,
                                              response.status_code, data.get("code"),
                                              response.headers.get("Retry-After"),
                                              data.get("document_number"),
                                              data.get("request_id"))
                        with lock:
                            attempts.append(attempt)
                        if attempt.status == 201:
                            break
                        time.sleep(0.5)  # a client would wait Retry-After; denser figures here

            with ThreadPoolExecutor(threads) as pool:
                clients = [pool.submit(client, n) for n in range(threads)]
                time.sleep(3)
                stopping = time.monotonic()
                db.stop()
                stopped = time.monotonic()
                time.sleep(outage_s)
                db.start()
                back = time.monotonic()
                wait_until(lambda: any(a.status == 201 and a.sent + a.elapsed > back
                                       for a in list(attempts)), 40, "issuing to resume")
                time.sleep(4)
                stop_load.set()
                for future in clients:
                    future.result()  # a client's own failure fails the test
            ready = requests.get(f"{svc.url}/readyz", timeout=5).json()
            assert ready["database"] == "ok"
        engine = create_engine(url)
        try:
            issued = {a.key: a for a in attempts if a.status == 201}
            sequences = check_ledger(engine, {a.request_id for a in issued.values()})
        finally:
            engine.dispose()

    statuses = Counter(a.status for a in attempts)
    odd = [f"{a.status} {a.code} sent {a.sent - stopping:+.2f}s from the stop (back at "
           f"{back - stopping:.2f}s), answered after {a.elapsed:.2f}s"
           for a in attempts if a.status not in (201, 503)]
    assert set(statuses) <= {201, 503}, (statuses, odd[:5])
    busy = [a for a in attempts if a.status == 503]
    assert busy, "the outage never produced a 503: the front door's probe was not exercised"
    assert all(a.code == "SERVICE_BUSY" and a.retry_after and int(a.retry_after) > 0
               for a in busy)
    worst = max(a.elapsed for a in attempts)
    assert worst <= timeout + 3, f"an answer took {worst:.1f}s (timeout {timeout}s)"
    first_busy = min(a.sent + a.elapsed for a in busy) - stopping
    resumed = min(a.sent + a.elapsed for a in attempts
                  if a.status == 201 and a.sent + a.elapsed > back) - back
    fresh = min(a.sent + a.elapsed for a in attempts
                if a.status == 201 and a.sent > back) - back
    assert resumed <= 30 and fresh <= 30
    unresolved = {a.key for a in attempts} - set(issued)
    assert not unresolved, f"{len(unresolved)} clients never got their number"
    retried = sum(1 for k in issued if sum(a.key == k for a in attempts) > 1)
    per_key = {k.split("|")[2]: len(v) for k, v in sequences.items()}
    print(f"\nDB stop took {stopped - stopping:.1f}s, down {outage_s:.0f}s, restart "
          f"{back - stopped - outage_s:.1f}s: {len(attempts)} answers {dict(statuses)}; first "
          f"503 {first_busy:.2f}s after the stop began; slowest answer {worst:.2f}s (timeout "
          f"{timeout}s); issuing resumed {resumed:.2f}s after the database was back (first "
          f"request sent after it: {fresh:.2f}s); {retried} clients retried with the same "
          f"key; {len(issued)} numbers {per_key}, contiguous, none twice")


# ------------------------------------------------------------------------------ Redis


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-persistence"])
def test_redis_stops_under_async_load(database_url, seed, engine, tmp_path,
                                      appendonly):
    """New requests go through the DB-only path while Redis is down. Requests that were queued
    (accepted, 202, not yet served) at that moment:

    - with AOF (as deployed), survive the restart and are served without the client doing
      anything;
    - without persistence, are gone with the queue (``GET /requests/{id}`` is 404: the service
      has no trace of them); a client that retries with the same Idempotency-Key gets exactly
      one number.
    """
    seed()
    worker = "worker[0,1,2,3]"
    with RedisServer(tmp_path / "redis", appendonly=appendonly) as redis_server:
        env = docnum_env(database_url, redis_server.url(0), redis_server.url(1),
                         tmp_path / "var")
        with Service(env, tmp_path / "logs", workers=["0,1,2,3"]) as svc:
            session = requests.Session()

            def submit(key: str, recipient: str) -> tuple[requests.Response, float]:
                started = time.monotonic()
                response = session.post(f"{svc.url}{BASE}/requests", timeout=30,
                                        json=letter(recipient=recipient),
                                        headers=_headers(env, key))
                return response, time.monotonic() - started

            warm, _ = submit(uuid.uuid4().hex, KEYS[0])
            assert warm.status_code == 202, warm.text
            wait_until(lambda: session.get(f"{svc.url}{warm.headers['Location']}", timeout=5,
                                           headers=_headers(env)).json()["status"] == "succeeded",
                       20, "the warm-up request")

            # A backlog: the worker is stopped, so accepted requests wait in their queues.
            svc.stop(worker)
            accepted: dict[str, tuple[str, str]] = {}   # key -> (recipient, request id)
            for i in range(30):
                key = uuid.uuid4().hex
                response, _ = submit(key, KEYS[i % 3])
                assert response.status_code == 202, response.text
                accepted[key] = (KEYS[i % 3], response.json()["request_id"])

            # Redis goes away under a steady stream of new requests.
            during: list[tuple[float, int, str, float]] = []   # sent, status, key, latency
            stop_load = threading.Event()

            def load() -> None:
                n = 0
                while not stop_load.is_set():
                    key, recipient = uuid.uuid4().hex, KEYS[n % 3]
                    sent = time.monotonic()
                    response, latency = submit(key, recipient)
                    during.append((sent, response.status_code, key, latency))
                    if response.status_code == 202:
                        accepted[key] = (recipient, response.json()["request_id"])
                    n += 1
                    time.sleep(0.05)

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            time.sleep(1)
            stopping = time.monotonic()
            queued_at_stop = set(accepted)  # accepted, never served (the worker is stopped)
            redis_server.stop()
            down_at = time.monotonic()
            time.sleep(3)
            redis_server.start()
            back = time.monotonic()
            wait_until(lambda: requests.get(f"{svc.url}/readyz", timeout=5).json()["mode"]
                       == "queue", 30, "the API to return to the queue")
            queue_mode_s = time.monotonic() - back
            svc.start(worker)
            time.sleep(1)
            stop_load.set()
            loader.join(30)

            outage = [d for d in during if stopping <= d[0] <= back]
            assert outage, "no request was sent while Redis was down"
            assert {d[1] for d in during} <= {200, 202}, Counter(d[1] for d in during)
            assert all(d[1] == 200 for d in outage if d[0] >= down_at), \
                "a request accepted while Redis was down must be served at once (DB-only)"
            db_only = [d[2] for d in during if d[1] == 200]
            first_db_only = min(d[0] + d[3] for d in during if d[1] == 200) - stopping
            worst_outage = max(d[3] for d in outage)
            first_queued = min(d[0] + d[3] for d in during if d[1] == 202 and d[0] > back) - back

            def status(key: str) -> requests.Response:
                rid = accepted[key][1]
                return session.get(f"{svc.url}{BASE}/requests/{rid}", timeout=5,
                                   headers=_headers(env))

            backlog = list(accepted)
            if appendonly:
                # Nothing to do for the client: the queue survived; the worker serves it.
                wait_until(lambda: all(status(k).json()["status"] == "succeeded"
                                       for k in backlog), 40, "the surviving backlog")
                served_s = time.monotonic() - back
            else:
                # Requests accepted before the outage and not yet served are unknown now.
                lost = [k for k in backlog if status(k).status_code == 404]
                assert set(lost) >= queued_at_stop, "a request queued at the stop survived?"
                # Their clients retry with the same key (twice at once, for good measure).
                retried = [k for k in lost for _ in range(2)]
                with ThreadPoolExecutor(16) as pool:
                    retries = list(pool.map(lambda k: submit(k, accepted[k][0])[0], retried))
                assert {r.status_code for r in retries} <= {200, 202}, \
                    Counter(r.status_code for r in retries)
                assert all(r.json()["request_id"] == accepted[k][1]
                           for r, k in zip(retries, retried, strict=True))
                wait_until(lambda: all(status(k).json()["status"] == "succeeded"
                                       for k in backlog), 40, "the retried backlog")
                served_s = time.monotonic() - back
            # Any later retry returns the same number.
            again = {k: submit(k, accepted[k][0])[0] for k in backlog[:5]}
            assert all(r.status_code == 200 and r.json()["status"] == "succeeded"
                       for r in again.values())

    with engine.connect() as conn:
        fallback = dict(conn.execute(text(
            "SELECT request_id, fallback_used FROM audit_log WHERE operation = 'GENERATE' "
            "AND success")).all())
    expected = {rid for _r, rid in accepted.values()} | {
        _request_id(env, k) for k in db_only} | {warm.json()["request_id"]}
    check_ledger(engine, expected)
    assert all(fallback[_request_id(env, k)] == "DB_ONLY" for k in db_only)
    fate = "survived (no client action)" if appendonly else \
        f"were lost ({len(lost)} polls answered 404) and retried by their clients with the " \
        f"same keys"
    print(f"\nRedis ({'AOF' if appendonly else 'no persistence'}) down 3s under async load: "
          f"{len(db_only)} requests served DB-only (first {first_db_only:.2f}s after the stop "
          f"began, slowest {worst_outage:.2f}s); readyz queue {queue_mode_s:.2f}s and first "
          f"202 {first_queued:.2f}s after Redis was back; the {len(queued_at_stop)} requests "
          f"queued at the stop {fate}; all {len(backlog)} accepted requests served "
          f"{served_s:.1f}s after Redis was back (worker restarted with it); one number each")


def _request_id(env: dict[str, str], key: str) -> str:
    from docnum.shared.issuing import request_id_for

    return request_id_for("loader", key)


# ------------------------------------------------------------------------------ consumers


def test_two_consumers_on_one_shard_queue_issue_no_duplicate(database_url, seed, engine,
                                                             tmp_path):
    """A second consumer on the same shard queues (started with ``celery worker`` directly,
    which skips docnum's shard-ownership lock: the misconfiguration the lock exists to catch).
    Both serve the same counters concurrently; the counter row lock keeps every number unique
    and every counter contiguous."""
    seed()
    requests_n = 600
    with RedisServer(tmp_path / "redis") as redis_server:
        env = docnum_env(database_url, redis_server.url(0), redis_server.url(1),
                         tmp_path / "var")
        svc = Service(env, tmp_path / "logs", workers=["0,1,2,3"])
        queues = ",".join(all_shard_queues(int(env["DOCNUM_QUEUE_SHARDS"])))
        celery = str(Path(sys.executable).with_name("celery"))
        rogue = Process("rogue", [celery, "-A", "docnum.workers.celery_app", "worker", "-Q", queues,
                                  "-P", "solo", "-c", "1", "-n", "rogue@%h", "--without-mingle",
                                  "--without-gossip", "-l", "warning"],
                        ready=svc._celery_ready, node="rogue")
        svc.processes[rogue.name] = rogue
        with svc:
            session = requests.Session()
            session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

            def submit(i: int) -> str:
                response = session.post(f"{svc.url}{BASE}/requests", timeout=30,
                                        json=letter(recipient=KEYS[i % 3]),
                                        headers=_headers(env))
                assert response.status_code == 202, response.text
                return response.json()["request_id"]

            started = time.monotonic()
            with ThreadPoolExecutor(32) as pool:
                request_ids = list(pool.map(submit, range(requests_n)))

            def served() -> int:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT COUNT(*) FROM document_numbers")).scalar()

            wait_until(lambda: served() >= requests_n, 60, "every request to be served")
            elapsed = time.monotonic() - started
            stats = svc._control.control.inspect(timeout=2).stats() or {}
            tasks = {node.split("@")[0]: (info.get("total") or {}).get("docnum.allocate", 0)
                     for node, info in stats.items()}
    assert tasks.get("rogue", 0) > 0 and tasks.get("shard0-1-2-3", 0) > 0, \
        f"both consumers must have served messages: {tasks}"
    check_ledger(engine, set(request_ids))
    with engine.connect() as conn:
        lock_wait = conn.execute(text("SELECT MAX(lock_wait_ms), SUM(retry_count) FROM "
                                      "audit_log WHERE operation = 'GENERATE'")).one()
    print(f"\ntwo consumers on every shard queue: {requests_n} requests on {len(KEYS)} keys "
          f"served in {elapsed:.1f}s, messages per consumer {tasks}, max lock wait "
          f"{lock_wait[0]} ms, transaction retries {lock_wait[1]}; no duplicate, no gap")
