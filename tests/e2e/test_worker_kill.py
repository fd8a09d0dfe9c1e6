"""SIGKILL a shard worker while it holds messages: no request lost, no number issued twice.

The API runs in-process (its own Redis DBs, so the session's in-thread worker never sees these
messages); the shard worker is a real ``docnum worker`` subprocess, killed with SIGKILL mid-run
and replaced. The killed worker's unacknowledged messages come back after the visibility timeout
(5 s here) and the replacement serves them; the ledger's unique request id turns a redelivery of
an already-committed request into "return the number already issued".
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from shared.db import transaction
from shared.models import AuditRow, IssuedNumber
from tests.conftest import letter, make_settings, wait_for

BASE = "/api/v1/document-numbering"
REQUESTS = 300
KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]

pytestmark = pytest.mark.e2e


def _ledger_count(engine) -> int:  # noqa: ANN001
    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(IssuedNumber))


def _start_worker(settings, log: Path) -> subprocess.Popen:  # noqa: ANN001
    env = dict(os.environ, DOCNUM_DATABASE_URL=settings.database_url,
               DOCNUM_BROKER_URL=settings.broker_url, DOCNUM_RESULT_BACKEND=settings.result_backend,
               DOCNUM_JWT_SECRET=settings.jwt_secret, DOCNUM_VAR_DIR=str(settings.var_dir),
               DOCNUM_QUEUE_SHARDS=str(settings.queue_shards),
               DOCNUM_VISIBILITY_TIMEOUT=str(settings.visibility_timeout),
               # A killed worker's shard ownership keys outlive it by this TTL (not 30 s).
               DOCNUM_SHARD_OWNER_TTL="3")
    shards = ",".join(str(i) for i in range(settings.queue_shards))
    # The same owner slot as a supervisor restart uses: the replacement may take over the
    # dead worker's shard ownership at once (workers/ownership.py).
    return subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--shards", shards,
                             "--loglevel", "warning", "--owner-instance", "kill-test"],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_sigkilled_worker_loses_nothing(database_url, fresh_redis_dbs, tmp_path, seed, engine,
                                        token):  # noqa: ANN001
    import redis

    from api.app import create_app

    broker, backend = fresh_redis_dbs(2)
    settings = make_settings(database_url, broker, backend, tmp_path / "var")
    client = create_app(settings).test_client()
    seed()
    headers = {"Authorization": f"Bearer {token('killer')}"}

    request_ids = []
    for i in range(REQUESTS):
        response = client.post(f"{BASE}/requests", json=letter(recipient=KEYS[i % 3]),
                               headers=dict(headers, **{"Idempotency-Key": uuid.uuid4().hex}))
        assert response.status_code == 202, response.json
        request_ids.append(response.json["request_id"])

    log = tmp_path / "worker.log"
    first = _start_worker(settings, log)
    try:
        unacked = redis.Redis.from_url(broker)
        wait_for(lambda: _ledger_count(engine) >= 40, timeout=60, interval=0.01,
                 message="the first worker to start issuing")
        # Strike while it holds a delivered, unacknowledged message (kombu's "unacked" hash).
        wait_for(lambda: unacked.hlen("unacked") >= 1, timeout=10, interval=0.001,
                 message="the worker to hold a message")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        issued_at_kill = _ledger_count(engine)
        # kombu's record of delivered-but-unacknowledged messages: what the dead worker held.
        held = unacked.hlen("unacked")
        assert held >= 1, "the worker held no message when it was killed"
        assert issued_at_kill < REQUESTS, "the worker finished before it could be killed"
        # Its replacement would be refused (exit 3) while the dead worker's ownership keys live.
        wait_for(lambda: not unacked.keys("docnum:shard-owner:*"), timeout=10, interval=0.1,
                 message="the killed worker's shard ownership keys to expire")
        second = _start_worker(settings, log)
        try:
            wait_for(lambda: _ledger_count(engine) >= REQUESTS, timeout=90, interval=0.1,
                     message="every accepted request to be served after the kill")
            recovery_s = time.monotonic() - killed_at
            statuses = [client.get(f"{BASE}/requests/{rid}", headers=headers).json
                        for rid in request_ids]
        finally:
            second.terminate()
            second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()

    assert all(s["status"] == "succeeded" for s in statuses), \
        [s for s in statuses if s["status"] != "succeeded"][:3]
    with transaction(engine) as session:
        rows = session.execute(select(IssuedNumber.counter_key, IssuedNumber.sequence,
                                      IssuedNumber.document_number,
                                      IssuedNumber.request_id)).all()
        audits = session.execute(select(AuditRow.request_id).where(
            AuditRow.operation == "GENERATE", AuditRow.success.is_(True))).scalars().all()
    assert len(rows) == REQUESTS
    assert len({r.document_number for r in rows}) == REQUESTS
    assert {r.request_id for r in rows} == set(request_ids)
    for key in {r.counter_key for r in rows}:
        sequences = sorted(r.sequence for r in rows if r.counter_key == key)
        assert sequences == list(range(1, len(sequences) + 1)), key
    assert sorted(audits) == sorted(request_ids), "one audit row per request, no duplicates"
    print(f"\nkilled holding {held} messages after {issued_at_kill}/{REQUESTS}; all served {recovery_s:.1f}s after the "
          f"kill (visibility timeout {settings.visibility_timeout}s)")
