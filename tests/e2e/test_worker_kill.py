"""SIGKILL a shard worker while it holds messages: no request lost, no number issued twice.

600 async requests on 3 counter keys are accepted, then the worker is killed while it holds
messages in its processing lists (workers/shard_queues.py).

The API runs in-process (its own Redis DBs, so the session's in-thread worker never sees these
messages); the shard worker is a real ``docnum worker`` subprocess, killed with SIGKILL mid-run
and replaced at once in the same owner slot, as ``docnum up`` does. The replacement takes over
the dead worker's ownership keys and serves its processing lists first, without waiting for any
timeout; the ledger's unique request id turns a second serving of an already-committed request
into "return the number already issued".
"""
from __future__ import annotations

import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, IssuedNumber
from docnum.shared.routing import all_shard_queues
from tests.conftest import BASE, letter, make_settings, wait_for
from tests.e2e.service import held_messages, request_ids_in, start_worker

REQUESTS = 600
KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]

pytestmark = pytest.mark.e2e


def _ledger_count(engine) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(IssuedNumber))


def _start_worker(settings, log: Path) -> subprocess.Popen:
    # The same owner slot as a supervisor restart uses: the replacement may take over the
    # dead worker's shard ownership at once (workers/ownership.py).
    return start_worker(settings, log, "--owner-instance", "kill-test")


def test_sigkilled_worker_loses_nothing(database_url, fresh_redis_dbs, tmp_path, seed, engine,
                                        token):
    import redis

    from docnum.api.app import create_app

    broker, backend = fresh_redis_dbs(2)
    # Production settings: nothing here waits for a visibility timeout or an ownership TTL.
    settings = make_settings(database_url, broker, backend, tmp_path / "var",
                             DOCNUM_VISIBILITY_TIMEOUT="45")
    client = create_app(settings).test_client()
    seed()
    headers = {"Authorization": f"Bearer {token('killer')}"}

    def submit(i: int) -> str:
        response = client.post(f"{BASE}/requests", json=letter(recipient=KEYS[i % 3]),
                               headers=dict(headers, **{"Idempotency-Key": uuid.uuid4().hex}))
        assert response.status_code == 202, response.json
        return response.json["request_id"]

    # Submitted concurrently, like real clients: the front door coalesces what arrives together.
    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        request_ids = list(pool.map(submit, range(REQUESTS)))
    submit_s = time.monotonic() - started

    log = tmp_path / "worker.log"
    first = _start_worker(settings, log)
    try:
        unacked = redis.Redis.from_url(broker)
        queues = all_shard_queues(settings.queue_shards)
        try:
            wait_for(lambda: _ledger_count(engine) >= 40, timeout=60, interval=0.01,
                     message="the first worker to start issuing")
        except AssertionError as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc} (exit code {first.poll()})\n{tail}") from None
        # Strike while it holds taken, unanswered messages (its processing lists): freeze it
        # (SIGSTOP), look, and kill it frozen, so that it cannot answer in between; if it held
        # nothing at that instant, let it run a moment and look again.
        def frozen_holding() -> bool:
            first.send_signal(signal.SIGSTOP)
            if held_messages(unacked, queues):
                return True
            first.send_signal(signal.SIGCONT)
            time.sleep(0.002)
            return False

        wait_for(frozen_holding, timeout=10, interval=0.001,
                 message="the worker to hold a message")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        issued_at_kill = _ledger_count(engine)
        taken = held_messages(unacked, queues)
        held = len(taken)
        assert held >= 1, "the worker held no message when it was killed"
        held_requests = len(request_ids_in(taken))
        # Numbered or not (a batch may be committed and still unanswered), what it held must
        # be answered by its replacement.
        # Restarted at once in the same slot, as `docnum up` does: no TTL to wait for.
        second = _start_worker(settings, log)
        try:
            wait_for(lambda: _ledger_count(engine) >= REQUESTS, timeout=90, interval=0.1,
                     message="every accepted request to be served after the kill")
            issued_s = time.monotonic() - killed_at
            # A batch the killed worker committed but could not answer shows "queued" to its
            # pollers until the replacement serves its message again from the processing list.
            pending = list(request_ids)

            def all_answered() -> bool:
                pending[:] = [rid for rid in pending if client.get(
                    f"{BASE}/requests/{rid}", headers=headers).json["status"] != "succeeded"]
                return not pending

            wait_for(all_answered, timeout=60, interval=0.5,
                     message="every request to be answered after the kill")
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
    print(f"\n{REQUESTS} requests on {len(KEYS)} keys accepted in {submit_s:.1f}s; worker killed "
          f"holding {held} messages ({held_requests} requests) after {issued_at_kill}/{REQUESTS} "
          f"were issued; all issued {issued_s:.1f}s and all answered {recovery_s:.1f}s after the "
          f"kill (worker start-up included)")
