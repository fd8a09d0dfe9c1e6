"""``docnum up`` supervises its children.

1. SIGKILL the shard worker while it serves a burst of async requests, then SIGKILL the API's
   gunicorn master: ``docnum up`` restarts each (same shard-ownership slot, so the replacement
   takes over at once), every accepted request is served exactly once, and issuing continues.
2. A child that keeps crashing (the API pointed at a port another process listens on) makes
   ``docnum up`` give up, stop the others and exit non-zero.

Redis is a private ``redis-server`` (tests/e2e/service.py); the database is the session's.
The measured times are printed (``-s``) and copied into docs/reliability.md.
"""
from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis as redis_lib
import requests
from sqlalchemy import func, select

from docnum.shared.auth import mint_token
from docnum.shared.db import transaction
from docnum.shared.models import IssuedNumber
from docnum.shared.settings import load_settings
from tests.conftest import ALL_PERMS, BASE, letter
from tests.e2e.service import (
    RedisServer,
    Up,
    docnum_env,
    free_port,
    pid_alive,
    wait_until,
)

pytestmark = pytest.mark.e2e

KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]
BURST = 300


def _processing(broker: redis_lib.Redis, shards: int) -> int:
    """Messages taken by shard workers and not yet acknowledged (workers/shard_queues.py)."""
    from docnum.shared.routing import all_shard_queues
    from docnum.workers.shard_queues import processing_key

    return sum(broker.llen(processing_key(q)) for q in all_shard_queues(shards))


def _ledger(engine) -> list:
    with transaction(engine) as session:
        return session.execute(select(IssuedNumber.counter_key, IssuedNumber.sequence,
                                      IssuedNumber.request_id)).all()


def _count(engine) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(IssuedNumber))


def test_up_restarts_a_killed_worker_and_api(database_url, seed, engine, tmp_path):
    seed()
    port = free_port()
    with RedisServer(tmp_path / "redis") as redis_server:
        env = docnum_env(database_url, redis_server.url(0), redis_server.url(1),
                         tmp_path / "var", DOCNUM_HOST="127.0.0.1", DOCNUM_PORT=str(port),
                         DOCNUM_API_WORKERS="1", DOCNUM_LOG_LEVEL="warning")
        settings = load_settings(env)
        url = f"http://127.0.0.1:{port}"
        token = mint_token(settings, "supervised", ALL_PERMS, [], 600)
        auth = {"Authorization": f"Bearer {token}"}
        up = Up(env, tmp_path / "up.log", "--worker-processes", "1")
        worker = "worker[0,1,2,3]"
        from docnum.workers.celery_app import make_celery

        control = make_celery(settings)
        try:
            def worker_ready() -> bool:
                replies = control.control.ping(timeout=1.0) or []
                return any(n.startswith("shard0-1-2-3@") for r in replies for n in r)

            wait_until(lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200,
                       60, "docnum up's API", on_timeout=up.log)
            wait_until(worker_ready, 60, "the shard worker", on_timeout=up.log)

            def generate(**overrides: object) -> requests.Response:
                return requests.post(f"{url}{BASE}/generate?timeout=20", json=letter(**overrides),
                                     headers=dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}),
                                     timeout=30)

            first = generate()
            assert first.status_code == 201, first.text

            # A burst of async requests; strike while the worker holds delivered messages.
            def submit(i: int) -> str:
                response = requests.post(
                    f"{url}{BASE}/requests", json=letter(recipient=KEYS[i % 3]), timeout=30,
                    headers=dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}))
                assert response.status_code in (200, 202), response.text
                return response.json()["request_id"]

            broker = redis_lib.Redis.from_url(redis_server.url(0))
            old_pid = up.pids(worker)[-1]
            with ThreadPoolExecutor(16) as pool:
                futures = [pool.submit(submit, i) for i in range(BURST)]
                # Freeze it (SIGSTOP) while it holds a taken, unacknowledged message (in a
                # processing list), and kill it frozen: it cannot acknowledge in between.
                def frozen_holding() -> bool:
                    os.kill(old_pid, signal.SIGSTOP)
                    if _processing(broker, settings.queue_shards) >= 1:
                        return True
                    os.kill(old_pid, signal.SIGCONT)
                    time.sleep(0.002)
                    return False

                wait_until(frozen_holding, 30, "the worker to hold a message", interval=0.001)
                held = _processing(broker, settings.queue_shards)
                os.kill(old_pid, signal.SIGKILL)
                killed_at = time.monotonic()
                issued_at_kill = _count(engine)
                wait_until(lambda: len(up.pids(worker)) >= 2, 30, "the worker to be restarted",
                           interval=0.02, on_timeout=up.log)
                restart_s = time.monotonic() - killed_at
                request_ids = [f.result() for f in futures]

            wait_until(worker_ready, 60, "the restarted worker", on_timeout=up.log)
            ready_s = time.monotonic() - killed_at
            wait_until(lambda: _count(engine) >= BURST + 1, 60,
                       "every accepted request to be issued", interval=0.1, on_timeout=up.log)
            issued_s = time.monotonic() - killed_at
            # ... and answered: a batch committed by the killed worker but not answered shows
            # "queued" until the restarted worker serves its processing list again.
            pending = list(request_ids)

            def answered() -> bool:
                pending[:] = [rid for rid in pending if requests.get(
                    f"{url}{BASE}/requests/{rid}", headers=auth, timeout=10).json()["status"]
                    != "succeeded"]
                return not pending

            wait_until(answered, 60, "every accepted request to be answered", interval=0.5,
                       on_timeout=up.log)
            served_s = time.monotonic() - killed_at
            assert not pid_alive(old_pid)
            assert f"{worker} exited with -9; restarting" in up.log()

            # The API: SIGKILL gunicorn's master (``docnum api`` execs it: the child's pid).
            api_pid = up.pids("api")[-1]
            os.kill(api_pid, signal.SIGKILL)
            api_killed = time.monotonic()
            wait_until(lambda: len(up.pids("api")) >= 2, 30, "the API to be restarted",
                       interval=0.05, on_timeout=up.log)
            wait_until(lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200,
                       60, "the restarted API", interval=0.1, on_timeout=up.log)
            api_ready_s = time.monotonic() - api_killed
            after = generate(recipient="TEAM-A")
            assert after.status_code == 201, after.text
            api_issuing_s = time.monotonic() - api_killed
            assert "api exited with -9; restarting" in up.log()
        finally:
            code = up.stop()
            control.close()
    assert code == 0, up.log()[-3000:]

    rows = _ledger(engine)
    assert len(rows) == BURST + 2
    assert len({r.request_id for r in rows}) == len(rows)
    assert set(request_ids) <= {r.request_id for r in rows}
    for key in {r.counter_key for r in rows}:
        sequences = sorted(r.sequence for r in rows if r.counter_key == key)
        assert sequences == list(range(1, len(sequences) + 1)), key
    print(f"\nworker SIGKILLed holding {held} messages after {issued_at_kill}/{BURST + 1} issued: "
          f"restarted after {restart_s:.1f}s, consuming after {ready_s:.1f}s, all {BURST} "
          f"issued {issued_s:.1f}s and answered {served_s:.1f}s after the kill; API master "
          f"SIGKILLed: ready again after "
          f"{api_ready_s:.1f}s, issuing after {api_issuing_s:.1f}s")


def test_up_exits_non_zero_when_a_child_keeps_crashing(tmp_path):
    from docnum.cli.supervisor import MAX_RESTARTS

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    # The embedded default (no servers); the API's port is taken by somebody else.
    env = {"DOCNUM_PORT": str(port), "DOCNUM_HOST": "127.0.0.1",
           "DOCNUM_VAR_DIR": str(tmp_path / "var"), "DOCNUM_QUEUE_SHARDS": "1"}
    started = time.monotonic()
    up = Up(env, tmp_path / "up.log", "--worker-processes", "1")
    try:
        code = up.popen.wait(75)
        elapsed = time.monotonic() - started
        log = up.log()
        # Everything else was stopped with it.
        survivors = [pid for pid in up.all_pids() if pid_alive(pid)]
    finally:
        squatter.close()
        up.stop(5)
    assert code == 1, log[-3000:]
    assert "already in use" in log
    assert "api exited with 1; restarting" in log
    assert "keeps crashing" in log and "giving up" in log
    assert len(up.pids("api")) == MAX_RESTARTS + 1
    assert not survivors, survivors
    print(f"\nAPI crashed {MAX_RESTARTS + 1} times; docnum up gave up with exit {code} after "
          f"{elapsed:.1f}s")
