"""Partitions and pauses between real processes: accepted means answered, without a client retry.

A. A shard worker in its own network namespace is cut from Redis (iptables DROP, both ways)
   while it is idle, blocked in ``BLMOVE`` on its shard queues; requests for its shards arrive
   during the partition (the first ones are handed by Redis to the blocked read, whose reply
   goes into the partition), and the partition lasts longer than the ownership TTL.
B. A shard worker holding messages is frozen (SIGSTOP) beyond the visibility timeout + the
   ownership TTL, under load, then thawed.
C. The only shard worker of ``docnum up`` is killed (SIGKILL) with 600 requests in flight,
   production settings (TTL 30 s, visibility 45 s).
D. A shard worker in its own namespace is cut from MariaDB only, under load.

Each test checks from the ledger: no number twice, no request with two numbers, counters
contiguous, one audit row per number, and every accepted request answered (``GET
/requests/{id}`` → ``succeeded``) although no client sent anything twice. Redis and MariaDB
are private to each test; in A and D they listen on the root side of the namespace's veth pair
(tests/e2e/netns.py). Shortened settings are named where they are used. Each test prints what it
measured (``-s``); docs/reliability.md's failure matrix copies the figures.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import pytest
import redis as redis_lib
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from docnum.shared.auth import mint_token
from docnum.shared.routing import all_shard_queues, shard_for
from docnum.shared.settings import load_settings
from docnum.workers.ownership import owner_key, parse_owner
from docnum.workers.shard_queues import Taken
from tests.conftest import ALL_PERMS, BASE, letter
from tests.e2e import netns
from tests.e2e.netns import Host
from tests.e2e.service import (
    MariaDBServer,
    RedisServer,
    Service,
    Up,
    check_ledger,
    docnum_env,
    free_port,
    held_messages,
    prepare_database,
    request_ids_in,
    wait_until,
)

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not MariaDBServer.available(), reason="needs mariadbd")]

KEYS = ["สคฉ.3", "TEAM-A", "TEAM-B"]
SHARDS = 4   # docnum_env's DOCNUM_QUEUE_SHARDS
RESULT_PREFIX = "celery-task-meta-"


@pytest.fixture(scope="module")
def namespaces() -> None:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"partition tests need network namespaces and iptables: {reason}")


# ------------------------------------------------------------------------------ helpers


def _counter_shards(database_url: str) -> dict[str, int]:
    """The shard of each recipient's counter key (what the front door computes)."""
    from docnum.shared.clock import SystemClock
    from docnum.shared.db import make_engine, transaction
    from docnum.shared.issuing import parse_context, prepare

    engine = make_engine(database_url, pool_size=1)
    try:
        with transaction(engine) as session:
            return {r: shard_for(prepare(session, parse_context(letter(recipient=r)),
                                         now=SystemClock().now(), timezone="UTC")[1], SHARDS)
                    for r in KEYS}
    finally:
        engine.dispose()


def _split_shards(database_url: str) -> tuple[str, str]:
    """(W1's shards: those of every counter key used, W2's: the others), as ``--shards``."""
    used = sorted(set(_counter_shards(database_url).values()))
    others = [s for s in range(SHARDS) if s not in used]
    assert others, f"the counter keys use every shard ({used}): no home shard left for W2"
    return ",".join(map(str, used)), ",".join(map(str, others))


@pytest.fixture
def ledger_db() -> Iterator[Callable[[str], tuple[MariaDBServer, str]]]:
    """A private mariadbd (on ``bind``) with a migrated, seeded database ``docnum``."""
    servers: list[MariaDBServer] = []

    def start(bind: str = "127.0.0.1") -> tuple[MariaDBServer, str]:
        db = MariaDBServer(bind=bind)
        servers.append(db)
        db.start()
        db.execute("CREATE DATABASE docnum CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = db.url("docnum")
        prepare_database(url)
        return db, url

    yield start
    for db in servers:
        db.destroy()


class Client:
    """An API client that never sends a request twice: a fresh Idempotency-Key each time."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        token = mint_token(load_settings(env), "partition", ALL_PERMS, [], 1800)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))

    def submit(self, recipient: str) -> str:
        """POST /requests (async): the request id of an accepted request."""
        response = self.session.post(f"{self.url}{BASE}/requests", json=letter(
            recipient=recipient), headers=dict(self.auth, **{"Idempotency-Key": uuid.uuid4().hex}),
            timeout=30)
        assert response.status_code in (200, 202), response.text
        return response.json()["request_id"]

    def generate(self, recipient: str, timeout: int) -> tuple[int, dict]:
        """POST /generate (sync): status and body, whatever they are."""
        try:
            response = self.session.post(
                f"{self.url}{BASE}/generate?timeout={timeout}", json=letter(recipient=recipient),
                headers=dict(self.auth, **{"Idempotency-Key": uuid.uuid4().hex}),
                timeout=timeout + 15)
        except requests.RequestException as exc:
            return 0, {"code": repr(exc)}
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"code": response.text[:200]}

    def unanswered(self, request_ids: list[str]) -> list[tuple[str, dict]]:
        """The requests whose ``GET /requests/{id}`` is not ``succeeded`` (polling only)."""
        left = []
        for rid in request_ids:
            body = self.session.get(f"{self.url}{BASE}/requests/{rid}", headers=self.auth,
                                    timeout=30).json()
            if body.get("status") != "succeeded":
                left.append((rid, body))
        return left


class Background:
    """Daemon threads that each run ``_run(n)`` while the ``with`` block lasts; leaving it sets
    ``_stop`` and gives each thread ``JOIN_S`` to finish."""

    JOIN_S = 5.0

    def __init__(self, threads: int = 1) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]

    def _run(self, n: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.JOIN_S)


class Answers(Background):
    """When each request's answer first appeared in the result backend (polled every 50 ms):
    what ``GET /requests/{id}`` reports, timed more finely than polling the API could."""

    def __init__(self, backend: redis_lib.Redis) -> None:
        super().__init__()
        self.backend = backend
        self.at: dict[str, float] = {}
        self.results: dict[str, dict] = {}
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def add(self, *request_ids: str) -> None:
        with self._lock:
            self._pending.extend(request_ids)

    def _run(self, _n: int) -> None:
        while not self._stop.wait(0.05):
            with self._lock:
                pending = [r for r in self._pending if r not in self.at]
                self._pending = pending
            for start in range(0, len(pending), 500):
                chunk = pending[start:start + 500]
                try:
                    values = self.backend.mget([RESULT_PREFIX + r for r in chunk])
                except redis_lib.RedisError:
                    continue
                now = time.monotonic()
                for rid, value in zip(chunk, values, strict=True):
                    if value is not None:
                        self.results[rid] = json.loads(value)["result"]
                        self.at[rid] = now

    def all_answered(self, request_ids: list[str]) -> bool:
        return all(r in self.at for r in request_ids)

    def last(self, request_ids: list[str]) -> float:
        return max(self.at[r] for r in request_ids)


class Owners(Background):
    """Every change of the shard ownership keys, sampled every 50 ms: (when, queue, holder,
    role), holder None when the key is absent."""

    def __init__(self, broker: redis_lib.Redis) -> None:
        super().__init__()
        self.broker = broker
        self.changes: list[tuple[float, str, str | None, str | None]] = []

    def _run(self, _n: int) -> None:
        queues = all_shard_queues(SHARDS)
        current: dict[str, tuple[str | None, str | None]] = {}
        while not self._stop.is_set():
            try:
                values = self.broker.mget([owner_key(q) for q in queues])
            except redis_lib.RedisError:
                values = None
            now = time.monotonic()
            for queue, value in zip(queues, values or [], strict=False):
                owner = parse_owner(value) or (None, None)
                if current.get(queue) != owner:
                    current[queue] = owner
                    self.changes.append((now, queue, *owner))
            self._stop.wait(0.05)

    def first(self, queue: str, after: float, pid: int | None = None,
              role: str | None = None, absent: bool = False) -> float | None:
        """When ``queue``'s key was first (after ``after``) absent, or held by ``pid`` in
        ``role``."""
        for when, q, holder, held_as in self.changes:
            if q != queue or when < after:
                continue
            if absent and holder is None:
                return when
            if not absent and holder is not None and (pid is None or f":{pid}:" in holder) \
                    and (role is None or held_as == role):
                return when
        return None

    def holds(self, queue: str, pid: int, role: str | None = None) -> bool:
        owner = parse_owner(self.broker.get(owner_key(queue)))
        return owner is not None and f":{pid}:" in owner[0] and (role is None or
                                                                  owner[1] == role)

    def timeline(self, since: float) -> str:
        return "; ".join(f"{when - since:+.1f}s {q.rsplit('.', 1)[-1]}="
                         f"{'-' if h is None else h.split(':')[1] + '|' + str(r)}"
                         for when, q, h, r in self.changes if when >= since - 1)


class Load(Background):
    """Async clients submitting without pause (each request once) until stopped."""

    JOIN_S = 40.0  # a submission in flight ends within its 30 s HTTP timeout

    def __init__(self, client: Client, answers: Answers, threads: int = 4,
                 pause: float = 0.02) -> None:
        super().__init__(threads)
        self.client, self.answers, self.pause = client, answers, pause
        self.accepted: list[tuple[float, str, str]] = []   # (sent, recipient, request id)
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            recipient = KEYS[i % len(KEYS)]
            sent = time.monotonic()
            try:
                rid = self.client.submit(recipient)
            except BaseException as exc:  # an accepted-or-not answer the test must see
                self.errors.append(exc)
                return
            with self._lock:
                self.accepted.append((sent, recipient, rid))
            self.answers.add(rid)
            i += 1
            self._stop.wait(self.pause)

    def ids(self) -> list[str]:
        with self._lock:
            return [rid for _s, _r, rid in self.accepted]


def _held(broker: redis_lib.Redis, shards: str) -> list[Taken]:
    """Messages in the processing lists of ``shards`` (taken, not yet acknowledged)."""
    return held_messages(broker, [f"docnum.shard.{s}" for s in shards.split(",")])


def _served_by(svc: Service) -> dict[str, int]:
    """Allocation messages each worker served (its Celery stats), by node name."""
    stats = svc._control.control.inspect(timeout=3).stats() or {}
    return {node.split("@")[0]: (info.get("total") or {}).get("docnum.allocate", 0)
            for node, info in stats.items()}


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _wait_answered(client: Client, answers: Answers, request_ids: list[str], timeout: float,
                   svc: Service) -> None:
    wait_until(lambda: answers.all_answered(request_ids), timeout,
               f"all {len(request_ids)} accepted requests to be answered",
               on_timeout=lambda: f"{sum(r not in answers.at for r in request_ids)} unanswered\n"
                                  f"{svc.logs()}")
    left = client.unanswered(request_ids)
    assert not left, f"{len(left)} accepted requests not succeeded, e.g. {left[:3]}"


def _two_workers(env: dict[str, str], log_dir: Path, w1: str, w2: str,
                 host: Host | None = None) -> tuple[Service, str, str]:
    """A service whose two workers consume ``w1`` and ``w2`` and log at info level (their
    ownership changes); the first runs in ``host``'s network namespace when one is given.
    Answers the service and the two workers' process names."""
    svc = Service(env, log_dir, workers=[w1, w2])
    n1, n2 = f"worker[{w1}]", f"worker[{w2}]"
    if host is not None:
        svc.processes[n1].argv[:0] = host.prefix()
    for name in (n1, n2):
        svc.processes[name].argv += ["--loglevel", "info"]
    return svc, n1, n2


def _wait_home_again(owners: Owners, shards: str, pid: int, svc: Service) -> None:
    """Wait until the worker ``pid`` holds each of ``shards`` as its home shard again."""
    wait_until(lambda: all(owners.holds(f"docnum.shard.{s}", pid, "home")
                           for s in shards.split(",")), 30,
               f"worker {pid} to hold its home shards {shards} again", on_timeout=svc.logs)


def _log_since(log: str, marker: str) -> str:
    index = log.find(marker)
    return log[index:] if index >= 0 else log


def _wait_for_fresh_reads(rds: RedisServer, address: str, queues: int,
                          within: float = 0.6) -> None:
    """Return as soon as every one of ``queues`` shard queues has had a BLMOVE from ``address``
    in the last ``within`` seconds (Redis's clock, MONITOR). Doorbells re-block every second, so
    this happens within about a second; the oldest read then has ≥ 1 - ``within`` s to go."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 10
    with rds.client(0).monitor() as monitor:
        while time.monotonic() < deadline:
            command = monitor.next_command()
            if command["client_address"] != address or \
                    not command["command"].upper().startswith("BLMOVE"):
                continue
            seen[command["command"].split()[1]] = command["time"]
            if len(seen) == queues and command["time"] - min(seen.values()) <= within:
                return
    raise AssertionError(f"no fresh BLMOVE from {address} on {queues} queues: {seen}")


# ------------------------------------------------------------------------------ A


def test_partition_from_redis_longer_than_the_ttl_while_idle_in_blmove(namespaces, ledger_db,
                                                                      tmp_path):
    """W1 (home shards of every counter key) in a namespace, W2 (the other shards) and the API
    in the root namespace. W1 goes idle, blocked in BLMOVE; the partition is cut, requests for
    W1's shards arrive, and the partition lasts 2 × TTL + 4 s. TTL 5 s instead of 30 s, to
    keep the test short: every interval scales with it."""
    ttl, partition_s, burst = 5, 14.0, 30
    with Host("a") as host:
        db, url = ledger_db(host.gateway)
        w1, w2 = _split_shards(url)
        with RedisServer(tmp_path / "redis", bind=host.gateway) as rds:
            env = docnum_env(url, rds.url(0), rds.url(1), tmp_path / "var",
                             DOCNUM_SHARD_OWNER_TTL=str(ttl))
            svc, n1, n2 = _two_workers(env, tmp_path / "logs", w1, w2, host)
            broker, backend = rds.client(0), rds.client(1)
            with svc, Answers(backend) as answers, Owners(broker) as owners:
                client = Client(svc.url, env)
                pid1, pid2 = svc.processes[n1].popen.pid, svc.processes[n2].popen.pid
                warm = [client.submit(k) for k in KEYS]
                answers.add(*warm)
                wait_until(lambda: answers.all_answered(warm), 30, "the warm-up requests")

                def w1_blocked() -> int:
                    return sum(1 for c in broker.client_list()
                               if c["addr"].startswith(host.address + ":")
                               and c["cmd"] == "blmove" and "b" in c["flags"])

                # Cut just after the doorbells started fresh BLMOVEs (each blocks for 1 s, then
                # blocks again), seen as they reach Redis (MONITOR): the reads are still
                # waiting on the server when the requests come.
                blocking = len(w1.split(","))
                wait_until(lambda: w1_blocked() == blocking, 20,
                           "W1's doorbells to block in BLMOVE", interval=0.02)
                _wait_for_fresh_reads(rds, host.address, blocking)
                try:
                    host.cut(rds.port)
                    cut_at = time.monotonic()
                    # The first requests at once: Redis hands each shard's first one to W1's
                    # blocked BLMOVE (it moves it to the processing list and sends the reply
                    # into the partition); the rest wait in the queues.
                    with ThreadPoolExecutor(8) as pool:
                        first = list(pool.map(client.submit, [KEYS[i % 3] for i in range(burst)]))
                    answers.add(*first)
                    submitted_s = time.monotonic() - cut_at
                    in_transit = request_ids_in(_held(broker, w1))
                    # ... and a trickle during the rest of the partition.
                    during: list[tuple[float, str]] = []
                    while time.monotonic() - cut_at < partition_s:
                        rid = client.submit(KEYS[len(during) % 3])
                        during.append((time.monotonic(), rid))
                        answers.add(rid)
                        time.sleep(0.25)
                finally:
                    host.heal()
                healed_at = time.monotonic()
                after = [client.submit(k) for k in KEYS * 3]
                answers.add(*after)
                accepted = warm + first + [r for _t, r in during] + after
                _wait_answered(client, answers, accepted, 60, svc)
                _wait_home_again(owners, w1, pid1, svc)
                served = _served_by(svc)
                log1 = svc.processes[n1].log()
                log2 = svc.processes[n2].log()
        with _engine(url) as engine:
            check_ledger(engine, set(accepted))

    assert in_transit, ("no message was handed to W1's blocked BLMOVE during the partition: "
                        "the in-transit case was not exercised")
    queues1 = [f"docnum.shard.{s}" for s in w1.split(",")]
    adopted = [owners.first(q, cut_at, pid2, "adopted") for q in queues1]
    assert all(adopted), owners.timeline(cut_at)
    back = [owners.first(q, healed_at, pid1, "home") for q in queues1]
    served_during = [r for _t, r in during if answers.at[r] < healed_at]
    answered_in_partition = len(served_during) + sum(answers.at[r] < healed_at for r in first)
    first_during = [r for r in first if answers.at[r] < healed_at]
    assert served_during and len(first_during) == len(first), \
        "W1's shards were not served by the adopter during the partition"
    assert served.get("shard" + w2.replace(",", "-"), 0) > 0
    assert "Redis failover?" not in log1
    assert "is now held by" in log1, log1[-3000:]
    assert "adopted docnum.shard." in log2
    print(f"\nA. W1 (shards {w1}) cut from Redis for {partition_s:.0f}s while blocked in BLMOVE on "
          f"{blocking} shard(s) (ownership TTL {ttl}s, shortened): {burst} requests "
          f"submitted in {submitted_s:.1f}s after the cut, {len(in_transit)} of them handed to "
          f"W1's blocked read (reply lost in the partition, message kept in the processing "
          f"list); W2 adopted W1's shards {', '.join(f'{a - cut_at:.1f}s' for a in adopted)} "
          f"after the cut and answered the burst {answers.last(first) - cut_at:.1f}s after the "
          f"cut (in-transit requests {answers.last(in_transit) - cut_at:.1f}s); "
          f"{len(during)} more requests during the partition, answered "
          f"{max(answers.at[r] - t for t, r in during):.1f}s after submission at worst; "
          f"{answered_in_partition} answered before the heal; W1 held its home shards again "
          f"{max(b - healed_at for b in back):.1f}s after the heal; messages served per "
          f"worker {served}; {len(accepted)} accepted, all answered without a client retry, "
          f"one number each, counters contiguous; ownership {owners.timeline(cut_at)}")


# ------------------------------------------------------------------------------ B


class RowLocks:
    """Whether somebody holds a counter row lock right now: ``FOR UPDATE NOWAIT`` on the
    counters, rolled back at once (``information_schema.innodb_trx`` is a snapshot refreshed at
    most every 0.1 s: too coarse for a transaction of a few milliseconds)."""

    def __init__(self, db: MariaDBServer) -> None:
        import MySQLdb

        self.error = MySQLdb.OperationalError
        self.conn = MySQLdb.connect(host=db.bind, port=db.port, user="root", db="docnum")

    def held(self) -> bool:
        cursor = self.conn.cursor()
        try:
            cursor.execute("SELECT counter_key FROM counters FOR UPDATE NOWAIT")
            return False
        except self.error as exc:
            if exc.args[0] in (1205, 3572):   # lock wait timeout / NOWAIT
                return True
            raise
        finally:
            self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


def _freeze_holding_locks(process: subprocess.Popen, db: MariaDBServer,
                          broker: redis_lib.Redis, shards: str, trying_s: float) -> bool:
    """SIGSTOP ``process`` while it holds taken, unanswered messages of ``shards`` and — if that
    can be caught within ``trying_s`` (the window is a few milliseconds per batch) — counter
    row locks, its transaction open. Look, freeze, look again; True when frozen with locks."""
    row_locks = RowLocks(db)
    trying_until = time.monotonic() + trying_s
    try:
        while time.monotonic() < trying_until + 20:
            catch_locks = time.monotonic() < trying_until
            if catch_locks and not row_locks.held():
                time.sleep(0.0005)
                continue
            process.send_signal(signal.SIGSTOP)
            if _held(broker, shards):
                # Still locked a moment later: not a COMMIT already on its way.
                locked = row_locks.held() and not time.sleep(0.2) and row_locks.held()
                if locked or not catch_locks:
                    return locked
            process.send_signal(signal.SIGCONT)
            time.sleep(0.002)
    finally:
        row_locks.close()
    raise AssertionError("the worker never held a message")


def test_sigstop_beyond_visibility_and_ttl_under_load(ledger_db, tmp_path):
    """W1 (home shards of every counter key) is frozen under load while it holds taken,
    unanswered messages — inside its allocation transaction (counter rows locked) when the
    timing allows — for visibility timeout + TTL + 4 s, then thawed. TTL 5 s instead of 30 s
    and visibility 5 s instead of 45 s (the test environment's), to keep the test short."""
    ttl, load_threads = 5, 4
    db, url = ledger_db()
    w1, w2 = _split_shards(url)
    with RedisServer(tmp_path / "redis") as rds:
        env = docnum_env(url, rds.url(0), rds.url(1), tmp_path / "var",
                         DOCNUM_SHARD_OWNER_TTL=str(ttl))
        freeze_s = int(env["DOCNUM_VISIBILITY_TIMEOUT"]) + ttl + 4.0
        svc, n1, n2 = _two_workers(env, tmp_path / "logs", w1, w2)
        broker, backend = rds.client(0), rds.client(1)
        with svc, Answers(backend) as answers, Owners(broker) as owners:
            client = Client(svc.url, env)
            w1_process = svc.processes[n1].popen
            pid1, pid2 = w1_process.pid, svc.processes[n2].popen.pid
            with Load(client, answers, load_threads) as load:
                wait_until(lambda: len(answers.at) >= 30, 30, "the load to be served",
                           on_timeout=svc.logs)
                # Freeze it while it holds counter row locks (its transaction is open), if
                # that can be caught within 10 s; otherwise while it holds taken messages.
                locked = _freeze_holding_locks(w1_process, db, broker, w1, 10)
                frozen_at = time.monotonic()
                held_ids = request_ids_in(_held(broker, w1))
                try:
                    time.sleep(freeze_s)
                finally:
                    w1_process.send_signal(signal.SIGCONT)
                thawed_at = time.monotonic()
                time.sleep(3)
            assert not load.errors, load.errors[:3]
            accepted = load.ids()
            _wait_answered(client, answers, accepted, 60, svc)
            _wait_home_again(owners, w1, pid1, svc)
            served = _served_by(svc)
            log1 = _log_since(svc.processes[n1].log(), "ready.")
            log2 = svc.processes[n2].log()
        with _engine(url) as engine:
            check_ledger(engine, set(accepted))

    queues1 = [f"docnum.shard.{s}" for s in w1.split(",")]
    adopted = [owners.first(q, frozen_at, pid2, "adopted") for q in queues1]
    during = [(s, r) for s, _k, r in load.accepted if frozen_at <= s < thawed_at]
    late = max(answers.at[r] - s for s, r in during)
    back = [owners.first(q, thawed_at, pid1, "home") for q in queues1]
    assert all(adopted), owners.timeline(frozen_at)
    assert all(answers.at[r] < thawed_at for r in held_ids), \
        "the frozen worker's messages waited for it to thaw"
    assert "stood down" not in log2, "the adopter stood down (waiting on the frozen worker's " \
                                     "row locks?)"
    assert "Redis failover?" not in log1 and "stood down" not in log1
    assert "this process was paused for" in log1 and "is now held by" in log1, log1[-3000:]
    print(f"\nB. W1 (shards {w1}) SIGSTOPped for {freeze_s:.0f}s (visibility "
          f"{env['DOCNUM_VISIBILITY_TIMEOUT']}s + TTL {ttl}s + 4s, both shortened) under load "
          f"({load_threads} async clients) holding {len(held_ids)} requests"
          f"{' inside its transaction (counter rows locked)' if locked else ''}: W2 "
          f"adopted its shards {', '.join(f'{a - frozen_at:.1f}s' for a in adopted)} after the "
          f"freeze; the held requests answered {answers.last(held_ids) - frozen_at:.1f}s after "
          f"the freeze; requests sent during the freeze answered {late:.1f}s after submission "
          f"at worst; W1 held its home shards again "
          f"{max(b - thawed_at for b in back):.1f}s after the thaw; messages served per worker "
          f"{served}; {len(accepted)} accepted, all answered without a client retry, one "
          f"number each, counters contiguous; ownership {owners.timeline(frozen_at)}\n"
          f"W1's log after the thaw:\n"
          + "\n".join(line for line in log1.splitlines()
                      if "WARNING" in line or "ERROR" in line or "took" in line)[-3000:])


# ------------------------------------------------------------------------------ C


def test_sigkill_under_docnum_up_with_600_requests_in_flight(ledger_db, tmp_path):
    """Production settings: ownership TTL 30 s, visibility timeout 45 s, stall timeout 6 s.
    ``docnum up`` with one shard worker (every shard, so every request in flight is its own).
    600 async requests are submitted at once; the worker is frozen as soon as it holds taken,
    unanswered messages, so that the rest of the burst piles up behind it, and SIGKILLed once
    all 600 are accepted."""
    total = 600
    db, url = ledger_db()
    port = free_port()
    with RedisServer(tmp_path / "redis") as rds:
        env = docnum_env(url, rds.url(0), rds.url(1), tmp_path / "var",
                         DOCNUM_VISIBILITY_TIMEOUT="45", DOCNUM_HOST="127.0.0.1",
                         DOCNUM_PORT=str(port), DOCNUM_API_WORKERS="2",
                         DOCNUM_LOG_LEVEL="warning")
        settings = load_settings(env)
        assert (settings.shard_owner_ttl, settings.shard_stall_timeout) == (30, 6)
        api = f"http://127.0.0.1:{port}"
        broker, backend = rds.client(0), rds.client(1)
        worker = "worker[0,1,2,3]"
        up = Up(env, tmp_path / "up.log", "--worker-processes", "1")
        try:
            wait_until(lambda: requests.get(f"{api}/readyz", timeout=2).status_code == 200,
                       60, "docnum up's API", on_timeout=up.log)
            wait_until(lambda: all(broker.exists(owner_key(q))
                                   for q in all_shard_queues(SHARDS)), 60,
                       "the shard worker to own its shards", on_timeout=up.log)
            client = Client(api, env)
            with Answers(backend) as answers:
                warm = [client.submit(k) for k in KEYS]
                answers.add(*warm)
                wait_until(lambda: answers.all_answered(warm), 30, "the warm-up requests",
                           on_timeout=up.log)
                old_pid = up.pids(worker)[-1]
                stop_looking = threading.Event()

                def freeze_when_holding() -> None:
                    # Frozen while it holds taken messages whose answers are not stored yet.
                    while not stop_looking.is_set():
                        os.kill(old_pid, signal.SIGSTOP)
                        taken = request_ids_in(_held(broker, "0,1,2,3"))
                        if taken and not all(backend.mget([RESULT_PREFIX + r for r in taken])):
                            return
                        os.kill(old_pid, signal.SIGCONT)
                        time.sleep(0.002)

                freezer = threading.Thread(target=freeze_when_holding, daemon=True)
                started = time.monotonic()
                with ThreadPoolExecutor(32) as pool:
                    futures = [pool.submit(client.submit, KEYS[i % 3]) for i in range(total)]
                    freezer.start()
                    request_ids = [f.result() for f in futures]
                accepted_s = time.monotonic() - started
                freezer.join(20)
                stop_looking.set()
                answers.add(*request_ids)
                time.sleep(0.3)   # the tracker's look at what was answered before the kill
                os.kill(old_pid, signal.SIGKILL)
                killed_at = time.monotonic()
                in_flight = [r for r in request_ids if r not in answers.at]
                # Taken into its processing lists and not answered: only a restore serves them.
                held = [r for r in request_ids_in(_held(broker, "0,1,2,3")) if r in in_flight]
                wait_until(lambda: len(up.pids(worker)) >= 2, 30, "the worker to be restarted",
                           interval=0.02, on_timeout=up.log)
                restarted_s = time.monotonic() - killed_at
                wait_until(lambda: answers.all_answered(request_ids), 30,
                           "every accepted request to be answered after the kill",
                           interval=0.05, on_timeout=up.log)
                answered_s = answers.last(request_ids) - killed_at
                held_s = answers.last(held) - killed_at if held else 0.0
                left = client.unanswered(warm + request_ids)
                assert not left, left[:3]
        finally:
            code = up.stop()
    assert code == 0, up.log()[-3000:]
    assert f"{worker} exited with -9; restarting" in up.log()
    assert len(in_flight) >= total // 2, f"only {len(in_flight)} requests were in flight"
    assert held, "the worker held no unanswered message when it was killed"
    with _engine(url) as engine:
        check_ledger(engine, set(warm + request_ids))
    print(f"\nC. docnum up, production settings (TTL 30s, visibility 45s): {total} requests "
          f"accepted in {accepted_s:.1f}s; the shard worker SIGKILLed with {len(in_flight)} of "
          f"them unanswered ({len(held)} of those taken into its processing lists); restarted "
          f"by docnum "
          f"up after {restarted_s:.1f}s; the held requests answered {held_s:.1f}s and all "
          f"{total} {answered_s:.1f}s after the kill (target 5 s); one number each, counters "
          f"contiguous")


# ------------------------------------------------------------------------------ D


def test_worker_cut_from_mariadb_under_load(namespaces, ledger_db, tmp_path):
    """W1 (home shards of every counter key) in a namespace, cut from MariaDB only (it still
    reaches Redis) under load: async clients (which must all be answered) and synchronous
    ``/generate?timeout=5`` clients (which may see 202 or 503 during the cut: recorded; a 202's
    request joins the async ones). Production ownership settings (TTL 30 s, stall 6 s)."""
    cut_s, sync_threads = 16.0, 3
    with Host("d") as host:
        db, url = ledger_db(host.gateway)
        w1, w2 = _split_shards(url)
        with RedisServer(tmp_path / "redis", bind=host.gateway) as rds:
            env = docnum_env(url, rds.url(0), rds.url(1), tmp_path / "var")
            settings = load_settings(env)
            assert (settings.shard_owner_ttl, settings.shard_stall_timeout) == (30, 6)
            svc, n1, n2 = _two_workers(env, tmp_path / "logs", w1, w2, host)
            broker, backend = rds.client(0), rds.client(1)
            sync: list[tuple[float, float, int, dict]] = []   # sent, elapsed, status, body
            stop_sync = threading.Event()
            with svc, Answers(backend) as answers, Owners(broker) as owners:
                client = Client(svc.url, env)
                pid1, pid2 = svc.processes[n1].popen.pid, svc.processes[n2].popen.pid

                def sync_client(n: int) -> None:
                    i = n
                    while not stop_sync.is_set():
                        sent = time.monotonic()
                        status, body = client.generate(KEYS[i % 3], timeout=5)
                        sync.append((sent, time.monotonic() - sent, status, body))
                        if status in (201, 202):
                            answers.add(body["request_id"])
                        i += 1
                        stop_sync.wait(0.05)

                with Load(client, answers, threads=2, pause=0.05) as load:
                    syncs = [threading.Thread(target=sync_client, args=(n,), daemon=True)
                             for n in range(sync_threads)]
                    for thread in syncs:
                        thread.start()
                    try:
                        wait_until(lambda: len(answers.at) >= 30, 30, "the load to be served",
                                   on_timeout=svc.logs)
                        # Cut it in the middle of its transaction (counter rows locked) if
                        # that can be caught within 10 s: freeze it there, cut, let it run.
                        w1_process = svc.processes[n1].popen
                        locked = _freeze_holding_locks(w1_process, db, broker, w1, 10)
                        try:
                            host.cut(db.port)
                            cut_at = time.monotonic()
                            w1_process.send_signal(signal.SIGCONT)
                            time.sleep(cut_s)
                        finally:
                            w1_process.send_signal(signal.SIGCONT)
                            host.heal()
                        healed_at = time.monotonic()
                        time.sleep(3)
                    finally:
                        stop_sync.set()
                        for thread in syncs:
                            thread.join(30)
                assert not load.errors, load.errors[:3]
                accepted = load.ids() + [b["request_id"] for _s, _e, st, b in sync
                                         if st in (201, 202)]
                _wait_answered(client, answers, accepted, 60, svc)
                _wait_home_again(owners, w1, pid1, svc)
                served = _served_by(svc)
                log1 = svc.processes[n1].log()
                log2 = svc.processes[n2].log()
        with _engine(url) as engine:
            with engine.connect() as conn:
                issued = set(conn.execute(text(
                    "SELECT request_id FROM document_numbers")).scalars())
            # A 503 after a wait leaves its request queued: it may have been served since.
            busy = {b.get("request_id") for _s, _e, st, b in sync if st == 503} & issued
            check_ledger(engine, set(accepted) | busy)

    queues1 = [f"docnum.shard.{s}" for s in w1.split(",")]
    stood_down = [owners.first(q, cut_at, absent=True) for q in queues1]
    adopted = [owners.first(q, cut_at, pid2, "adopted") for q in queues1]
    assert all(stood_down) and all(adopted), owners.timeline(cut_at)
    # Served by another worker: the first answer, after the adoption, of a request that was
    # waiting at that moment or sent since.
    w1_served_again = min(answers.at[r] for r in accepted
                          if answers.at[r] > max(adopted)) - cut_at
    during = [(s, r) for s, _k, r in load.accepted if cut_at <= s < healed_at]
    late = max(answers.at[r] - s for s, r in during)
    back = [owners.first(q, healed_at, pid1, "home") for q in queues1]
    in_cut = Counter(st for s, _e, st, _b in sync if cut_at <= s < healed_at)
    slowest = max(e for _s, e, _st, _b in sync)
    assert set(Counter(st for _s, _e, st, _b in sync)) <= {201, 202, 503}, Counter(
        st for _s, _e, st, _b in sync)
    assert "stalled" in log1 and "stood down from" in log1, log1[-3000:]
    assert "adopted docnum.shard." in log2 and "stood down" not in log2, log2[-3000:]
    print(f"\nD. W1 (shards {w1}) cut from MariaDB for {cut_s:.0f}s under load (2 async + "
          f"{sync_threads} sync clients), production settings (TTL 30s, stall 6s)"
          f"{', cut inside its transaction (counter rows locked)' if locked else ''}: W1 stood "
          f"down {max(stood_down) - cut_at:.1f}s after the cut, W2 adopted its shards "
          f"{max(adopted) - cut_at:.1f}s after the cut and answered its first waiting request "
          f"{w1_served_again:.1f}s after the cut (target 15 s); async requests sent during the "
          f"cut answered {late:.1f}s after submission at worst; sync clients during the cut "
          f"saw {dict(in_cut)} (slowest answer {slowest:.1f}s, timeout 5s); W1 held its home "
          f"shards again {max(b - healed_at for b in back):.1f}s after the heal; messages served "
          f"per worker {served}; {len(accepted)} accepted, all answered without a client retry, "
          f"one number each, counters contiguous; ownership {owners.timeline(cut_at)}")
