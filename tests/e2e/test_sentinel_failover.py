"""Redis Sentinel failover under load: no duplicate number, no lost accepted request.

Real processes on loopback: a Redis primary, a replica and three Sentinels (quorum 2,
down-after 1 s), a real ``docnum worker`` subprocess on every shard, and the API in-process,
all with ``sentinel://`` broker and result backend URLs. The test issues numbers (``POST
/generate`` and ``POST /requests``), SIGKILLs the primary, keeps issuing through the failover
(answers then come from the DB-only path, or as 202), waits for the Sentinels to promote the
replica and shows that issuing is back in queue mode. Like a real client it retries a failed
call with the same Idempotency-Key, and resubmits (same key) a request it cannot find or that
stays queued: a message the old primary had not yet replicated is lost with it.

At the end: every accepted request has its number, no number twice, every counter contiguous,
one success audit row per request. The measured pauses are printed (``-s``).
"""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from docnum.shared.db import transaction
from docnum.shared.models import AuditRow, IssuedNumber
from tests.conftest import BASE, letter, make_settings, wait_for
from tests.e2e.service import start_worker

MASTER = "docnum-test"
KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]
DEADLINE_S = 85.0
# The guide's production values are 5000 / 10000 ms (docs/deploy.md quotes a run with them).
DOWN_AFTER_MS = int(os.environ.get("DOCNUM_TEST_SENTINEL_DOWN_AFTER_MS", "1000"))
FAILOVER_TIMEOUT_MS = int(os.environ.get("DOCNUM_TEST_SENTINEL_FAILOVER_TIMEOUT_MS", "3000"))

pytestmark = pytest.mark.e2e


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class RedisProcesses:
    """Private redis-server / Sentinel processes under ``base``; killed at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.base / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.base)
        self.procs[name] = proc
        return proc

    def server(self, name: str, port: int, *extra: str) -> redis.Redis:
        data = self.base / name
        data.mkdir()
        self.start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", str(data), "--save", "", "--appendonly", "no", *extra])
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
        wait_for(lambda: _pings(client), timeout=10, message=f"{name} to answer")
        return client

    def sentinel(self, name: str, port: int, primary_port: int) -> redis.Redis:
        conf = self.base / f"{name}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.base}\n"
            "sentinel resolve-hostnames no\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n")
        self.start(name, ["redis-server", str(conf), "--sentinel", "--save", "",
                          "--appendonly", "no"])
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
        wait_for(lambda: _pings(client), timeout=10, message=f"{name} to answer")
        return client

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _master_port(sentinel: redis.Redis) -> int | None:
    try:
        addr = sentinel.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
    except redis.RedisError:
        return None
    return int(addr[1]) if addr else None


def _sentinel_ready(sentinel: redis.Redis) -> bool:
    """This Sentinel knows the replica and both other Sentinels (else no failover)."""
    try:
        state = sentinel.execute_command("SENTINEL", "MASTER", MASTER)
    except redis.RedisError:
        return False
    # RESP2 answers a flat list of field, value pairs.
    info = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
    return int(info["num-slaves"]) >= 1 and int(info["num-other-sentinels"]) >= 2


@dataclass
class Submission:
    key: str
    route: str                      # "generate" | "requests"
    body: dict
    request_id: str | None = None
    attempts: int = 0
    first_status: int | None = None
    resubmitted: int = 0
    accepted_at: float = 0.0
    statuses: list[int] = field(default_factory=list)


class Client:
    """A well-behaved client: same Idempotency-Key on every retry of one request."""

    def __init__(self, http, headers: dict) -> None:
        self.http = http
        self.headers = headers
        self.submissions: list[Submission] = []
        self.served_at: list[float] = []      # when a call came back with a number

    def _post(self, sub: Submission):
        headers = dict(self.headers, **{"Idempotency-Key": sub.key})
        url = f"{BASE}/generate?timeout=1" if sub.route == "generate" else f"{BASE}/requests"
        return self.http.post(url, json=sub.body, headers=headers)

    def submit(self, sub: Submission, retries: int = 40) -> Submission:
        for _ in range(retries):
            sub.attempts += 1
            response = self._post(sub)
            sub.statuses.append(response.status_code)
            if response.status_code in (200, 201, 202):
                body = response.json
                sub.request_id = body["request_id"]
                if sub.first_status is None:
                    sub.first_status = response.status_code
                    sub.accepted_at = time.monotonic()
                if response.status_code == 201 or body.get("status") == "succeeded":
                    self.served_at.append(time.monotonic())
                return sub
            assert response.status_code >= 500, response.json  # only outages are retried
            time.sleep(0.2)
        raise AssertionError(f"{sub.key} never accepted: {sub.statuses}")

    def issue(self, i: int) -> Submission:
        sub = Submission(uuid.uuid4().hex, "generate" if i % 2 else "requests",
                         letter(recipient=KEYS[i % len(KEYS)]))
        self.submissions.append(sub)
        return self.submit(sub)

    def status(self, sub: Submission) -> tuple[int, str | None]:
        response = self.http.get(f"{BASE}/requests/{sub.request_id}", headers=self.headers)
        return response.status_code, (response.json or {}).get("status")


def _fallback_of(engine, request_id: str) -> str | None:
    with transaction(engine) as session:
        return session.scalar(select(AuditRow.fallback_used).where(
            AuditRow.request_id == request_id, AuditRow.success.is_(True)))


def _start_worker(settings, log: Path) -> subprocess.Popen:
    return start_worker(settings, log,
                        DOCNUM_REDIS_SENTINEL_MASTER=settings.redis_sentinel_master,
                        DOCNUM_VISIBILITY_TIMEOUT=str(settings.visibility_timeout))


def test_sentinel_failover_loses_nothing(database_url, tmp_path, seed, engine,
                                         token):
    from docnum.api.app import create_app

    started = time.monotonic()
    procs = RedisProcesses(tmp_path)
    worker = None
    try:
        primary_port, replica_port, *sentinel_ports = free_ports(5)
        procs.server("primary", primary_port, "--appendonly", "yes")
        replica = procs.server("replica", replica_port, "--appendonly", "yes",
                               "--replicaof", "127.0.0.1", str(primary_port))
        wait_for(lambda: replica.info("replication").get("master_link_status") == "up",
                 timeout=15, message="the replica to sync")
        sentinels = [procs.sentinel(f"sentinel-{i}", port, primary_port)
                     for i, port in enumerate(sentinel_ports, 1)]
        wait_for(lambda: all(_sentinel_ready(s) for s in sentinels), timeout=20, interval=0.2,
                 message="each Sentinel to know the replica and the other Sentinels")

        def urls(db: int) -> str:
            return ";".join(f"sentinel://127.0.0.1:{p}/{db}" for p in sentinel_ports)

        settings = make_settings(database_url, urls(0), urls(1), tmp_path / "var",
                                 DOCNUM_REDIS_SENTINEL_MASTER=MASTER)
        seed()
        worker = _start_worker(settings, tmp_path / "worker.log")
        client = Client(create_app(settings).test_client(),
                        {"Authorization": f"Bearer {token('failover')}"})

        # 1. Queue mode before the failover: answered by the worker.
        first = client.issue(0)
        wait_for(lambda: client.status(first) == (200, "succeeded"), timeout=20,
                 message="the worker to serve the first request")
        for i in range(1, 30):
            client.issue(i)
        assert _fallback_of(engine, first.request_id) == "NONE"

        # 2. Kill the primary and keep issuing until the Sentinels promote the replica.
        procs.kill("primary")
        killed_at = time.monotonic()
        before_kill = len(client.submissions)
        i = 30
        promoted_at = None
        while promoted_at is None:
            client.issue(i)
            i += 1
            if _master_port(sentinels[0]) == replica_port:
                promoted_at = time.monotonic()
            assert time.monotonic() - killed_at < 10 + DOWN_AFTER_MS / 1000, "no failover"
        # 3. ... and until a request is served through the queue again (worker, new master).
        queue_again_at = None
        while queue_again_at is None:
            sub = client.issue(i)
            i += 1
            if sub.first_status == 201 and _fallback_of(engine, sub.request_id) == "NONE":
                queue_again_at = time.monotonic()
            assert time.monotonic() - killed_at < 40 + DOWN_AFTER_MS / 1000, \
                "issuing did not return to the queue"
        during = len(client.submissions) - before_kill
        # 4. A few more after the failover, all through the queue.
        after = [client.issue(i + n) for n in range(10)]

        # Every accepted request ends with its number. A request the old primary took with it
        # (unreplicated) answers 404 or stays queued: the client submits it again, same key.
        resubmit_after = 2 * settings.visibility_timeout + 2
        pending = list(client.submissions)
        while pending:
            assert time.monotonic() - started < DEADLINE_S, \
                f"{len(pending)} requests unanswered, e.g. {pending[0]}"
            still = []
            for sub in pending:
                code, status = client.status(sub)
                if code == 200 and status == "succeeded":
                    continue
                assert status != "failed", sub
                if code == 404 or time.monotonic() - sub.accepted_at > resubmit_after * (
                        sub.resubmitted + 1):
                    sub.resubmitted += 1
                    client.submit(sub)
                still.append(sub)
            pending = still
            if pending:
                time.sleep(0.5)
        readyz = client.http.get("/readyz").json
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        procs.stop_all()

    assert readyz["mode"] == "queue", readyz
    assert all(_fallback_of(engine, s.request_id) == "NONE" for s in after)
    request_ids = {s.request_id for s in client.submissions}
    assert len(request_ids) == len(client.submissions), "two keys shared a request id"
    with transaction(engine) as session:
        rows = session.execute(select(IssuedNumber.counter_key, IssuedNumber.sequence,
                                      IssuedNumber.document_number,
                                      IssuedNumber.request_id)).all()
        audits = session.execute(select(AuditRow.request_id, AuditRow.fallback_used).where(
            AuditRow.operation == "GENERATE", AuditRow.success.is_(True))).all()
    assert len(rows) == len(request_ids)
    assert {r.request_id for r in rows} == request_ids
    assert len({r.document_number for r in rows}) == len(rows), "a number issued twice"
    for key in {r.counter_key for r in rows}:
        sequences = sorted(r.sequence for r in rows if r.counter_key == key)
        assert sequences == list(range(1, len(sequences) + 1)), key
    assert sorted(a.request_id for a in audits) == sorted(request_ids), \
        "one success audit row per request"

    db_only = sum(1 for a in audits if a.fallback_used == "DB_ONLY")
    gaps = [b - a for a, b in itertools.pairwise(client.served_at) if a >= killed_at - 1]
    resubmitted = [s for s in client.submissions if s.resubmitted]
    print(f"\nSentinel failover: replica promoted {promoted_at - killed_at:.1f} s after SIGKILL "
          f"of the primary (down-after {DOWN_AFTER_MS} ms); queue mode again after "
          f"{queue_again_at - killed_at:.1f} s; longest wait between two answered calls "
          f"{max(gaps, default=0):.2f} s; {during} requests during the failover, "
          f"{db_only} served on the DB-only path; {len(resubmitted)} resubmitted with their "
          f"key; {len(rows)} numbers, total {time.monotonic() - started:.1f} s")
