"""Shard ownership: a second worker started for an owned home shard is refused; it may take over
once the owner stops (keys deleted) or dies (keys expire, ``DOCNUM_SHARD_OWNER_TTL`` after the
last heartbeat). A shard without an owner is adopted by a live worker and handed back when its
home worker returns; a worker whose consumer stops progressing stands down. Real ``docnum
worker`` subprocesses, and ``ShardOwnership`` driven tick by tick, against Redis DBs of the
machine's Redis claimed for the test.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from docnum.shared.routing import shard_for
from docnum.shared.settings import load_settings
from docnum.workers import ownership as ownership_module
from docnum.workers.ownership import (
    REFUSED_EXIT_CODE,
    ShardOwned,
    ShardOwnership,
    owner_key,
    parse_owner,
    wanted_key,
)
from tests.conftest import JWT_SECRET, wait_for

pytestmark = pytest.mark.e2e

TTL_S = 3


@pytest.fixture
def broker(fresh_redis_dbs):
    """Broker and result DBs of this test alone (claimed, emptied after)."""
    return tuple(fresh_redis_dbs(2))


class Workers:
    def __init__(self, database_url: str, broker: tuple[str, str], tmp_path: Path) -> None:
        self.env = dict(os.environ, DOCNUM_DATABASE_URL=database_url,
                        DOCNUM_BROKER_URL=broker[0], DOCNUM_RESULT_BACKEND=broker[1],
                        DOCNUM_JWT_SECRET=JWT_SECRET, DOCNUM_VAR_DIR=str(tmp_path / "var"),
                        DOCNUM_QUEUE_SHARDS="2", DOCNUM_SHARD_OWNER_TTL=str(TTL_S))
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, shards: str, **env: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docnum.cli.main", "worker", "--shards", shards, "--loglevel",
             "warning"], env=dict(self.env, **env),
            stdout=(self.tmp_path / f"{name}.out").open("wb"),
            stderr=(self.tmp_path / f"{name}.err").open("wb"))
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen) -> str:
        return (self.tmp_path / f"{proc.name}.err").read_text()  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def _holder(client: redis.Redis, shard: int) -> str | None:
    owner = parse_owner(client.get(owner_key(f"docnum.shard.{shard}")))
    return owner[0] if owner else None


def _role(client: redis.Redis, shard: int) -> str | None:
    owner = parse_owner(client.get(owner_key(f"docnum.shard.{shard}")))
    return owner[1] if owner else None


def _owns(client: redis.Redis, proc: subprocess.Popen, *shards: int) -> bool:
    return all(f":{proc.pid}:" in (_holder(client, s) or "") for s in shards)


def _refused(workers: Workers, proc: subprocess.Popen, shard: int) -> None:
    code = proc.wait(20)
    err = workers.stderr(proc)
    assert code == REFUSED_EXIT_CODE, err
    assert f"shard docnum.shard.{shard} is owned by " in err, err
    assert "refusing to start a second consumer (see docs/deploy.md)" in err, err


def test_second_worker_on_an_owned_shard_is_refused(database_url, broker,
                                                    tmp_path):
    client = redis.Redis.from_url(broker[0])
    workers = Workers(database_url, broker, tmp_path)
    try:
        # A owns shards 0 and 1; B on shard 1 is refused and exits, A keeps running.
        a = workers.start("a", "0,1")
        wait_for(lambda: _owns(client, a, 0, 1), timeout=20, message="A to own shards 0,1")
        b = workers.start("b", "1")
        started = time.monotonic()
        _refused(workers, b, 1)
        refused_in = time.monotonic() - started
        assert _owns(client, a, 0, 1), "B released or took A's keys"
        time.sleep(TTL_S + 1)  # A's heartbeat keeps its keys past their TTL
        assert a.poll() is None and _owns(client, a, 0, 1)

        # A stops cleanly (SIGTERM: warm shutdown) and deletes its keys; B can start, and
        # adopts shard 0, which nobody owns any more.
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0, workers.stderr(a)
        b2 = workers.start("b2", "1")
        wait_for(lambda: _owns(client, b2, 1), timeout=20, message="B to take shard 1")
        wait_for(lambda: _owns(client, b2, 0) and _role(client, 0) == "adopted", timeout=20,
                 message="B to adopt the orphaned shard 0")
        assert _role(client, 1) == "home"

        # B2 is SIGKILLed: its keys stay until they expire; C is refused until then.
        b2.send_signal(signal.SIGKILL)
        b2.wait(10)
        killed_at = time.monotonic()
        c = workers.start("c", "1")
        _refused(workers, c, 1)
        wait_for(lambda: _holder(client, 1) is None, timeout=TTL_S + 2,
                 message="the dead owner's key to expire")
        expired_after = time.monotonic() - killed_at
        d = workers.start("d", "1")
        wait_for(lambda: _owns(client, d, 0, 1), timeout=20,
                 message="D to take shard 1 and adopt shard 0")

        # A comes back: D hands shard 0 back between two batches.
        a2 = workers.start("a2", "0")
        wait_for(lambda: _owns(client, a2, 0) and _role(client, 0) == "home", timeout=20,
                 message="D to hand shard 0 back to its home worker")
        assert _owns(client, d, 1) and a2.poll() is None and d.poll() is None
    finally:
        workers.stop_all()
    print(f"\nsecond consumer refused in {refused_in:.1f} s (process start included); "
          f"a SIGKILLed owner's key expired {expired_after:.1f} s after the kill "
          f"(TTL {TTL_S} s)")


def test_two_hosts_share_the_shards_and_agree_on_their_count(database_url, broker, tmp_path,
                                                             seed, token):
    """Scale-out: each "host" runs a worker for its own shards; both serve the load they are
    sent, every shard has one owner, and a worker started with another DOCNUM_QUEUE_SHARDS
    (routing the same counter to another queue) is refused."""
    from docnum.api.app import create_app
    from tests.conftest import BASE, letter, make_settings

    client = redis.Redis.from_url(broker[0])
    workers = Workers(database_url, broker, tmp_path)
    four = {"DOCNUM_QUEUE_SHARDS": "4"}
    seed()
    try:
        host_a = workers.start("host-a", "0,1", **four)
        host_b = workers.start("host-b", "2,3", **four)
        wait_for(lambda: _owns(client, host_a, 0, 1) and _owns(client, host_b, 2, 3),
                 timeout=20, message="each host's worker to own its shards")
        settings = make_settings(database_url, broker[0], broker[1], tmp_path / "api")
        api = create_app(settings).test_client()
        headers = {"Authorization": f"Bearer {token('scale')}"}
        bodies = [letter(originator=o, recipient=r) for o in ("คคง.", "TEAM-A", "TEAM-B")
                  for r in ("สคฉ.3", "ผรม.1")]
        answers = [api.post(f"{BASE}/generate?timeout=20", json=body,
                            headers=dict(headers, **{"Idempotency-Key": f"scale-{i}"}))
                   for i, body in enumerate(bodies * 4)]
        assert [a.status_code for a in answers] == [201] * len(answers)
        assert len({a.json["document_number"] for a in answers}) == len(answers)
        shards = {int(s.rsplit(".", 1)[1]) for s in
                  (f"docnum.shard.{shard_for(a.json['counter_key'], 4)}" for a in answers)}
        assert shards & {0, 1} and shards & {2, 3}, "the load must reach both hosts"

        eight = workers.start("misconfigured", "5", DOCNUM_QUEUE_SHARDS="8")
        assert eight.wait(20) == REFUSED_EXIT_CODE, workers.stderr(eight)
        assert "live workers use DOCNUM_QUEUE_SHARDS=4, this worker 8" in workers.stderr(eight)
        assert host_a.poll() is None and host_b.poll() is None
    finally:
        workers.stop_all()


def _ownership(client: redis.Redis, home: list[str], holder: str, **kwargs: object
               ) -> ShardOwnership:
    return ShardOwnership(client, home, TTL_S, all_queues=["docnum.shard.0", "docnum.shard.1",
                                                           "docnum.shard.2"],
                          holder=holder, **kwargs)


def test_refresh_retakes_a_vanished_key_and_gives_up_a_taken_one(broker):
    client = redis.Redis.from_url(broker[0])
    owner = _ownership(client, ["docnum.shard.0", "docnum.shard.1"], "h:1:a")
    owner.acquire()
    assert client.ttl(owner_key("docnum.shard.0")) > 0
    client.delete(owner_key("docnum.shard.0"))                 # e.g. lost in a failover
    assert owner.refresh() == []
    assert _holder(client, 0) == "h:1:a"
    # Our TTL ran out (paused, cut off) and another worker adopted shard 1.
    client.set(owner_key("docnum.shard.1"), "other:2:b|adopted")
    assert owner.refresh() == [("docnum.shard.1", "other:2:b")]
    assert owner.queues() == ["docnum.shard.0"]
    owner.tick()  # a home shard held by an adopter is asked back
    assert client.get(wanted_key("docnum.shard.1")) == b"h:1:a"
    owner.release()
    assert _holder(client, 0) is None, "our key is released"
    assert _holder(client, 1) == "other:2:b", "someone else's key is left alone"


def test_orphans_are_adopted_and_handed_back_between_batches(broker, monkeypatch):
    monkeypatch.setattr(ownership_module, "ORPHAN_GRACE_S", 0.0)
    client = redis.Redis.from_url(broker[0])
    adopter = _ownership(client, ["docnum.shard.0"], "h:1:adopter")
    adopter.acquire()
    adopter.tick()
    assert adopter.queues() == ["docnum.shard.0", "docnum.shard.1", "docnum.shard.2"]
    assert _role(client, 1) == _role(client, 2) == "adopted"

    home = _ownership(client, ["docnum.shard.1"], "h:2:home")
    home.acquire()  # held by an adopter: asked back, not refused
    assert home.queues() == [] and client.exists(wanted_key("docnum.shard.1"))
    with adopter.serving:          # the adopter is serving a batch: nothing is handed over
        adopter.tick()
    assert adopter.holds("docnum.shard.1")
    adopter.tick()                 # between batches: handed back
    assert not adopter.holds("docnum.shard.1")
    home.tick()
    assert home.queues() == ["docnum.shard.1"] and _role(client, 1) == "home"
    assert _holder(client, 1) == "h:2:home"
    adopter.release()
    home.release()


def test_a_stalled_consumer_stands_down_and_comes_back(broker, monkeypatch):
    monkeypatch.setattr(ownership_module, "ORPHAN_GRACE_S", 0.0)
    client = redis.Redis.from_url(broker[0])
    reachable = [False]
    stuck = _ownership(client, ["docnum.shard.0"], "h:1:stuck", stall_timeout=0.2,
                       database_ok=lambda: reachable[0])
    stuck.acquire()
    other = _ownership(client, ["docnum.shard.1"], "h:2:other")
    other.acquire()
    stuck.begin_batch()            # a batch that never returns (database unreachable)
    time.sleep(0.3)
    stuck.tick()
    assert stuck.stood_down == "stalled" and stuck.queues() == []
    assert _holder(client, 0) is None, "its keys are deleted at once, not left to expire"
    other.tick()
    assert other.holds("docnum.shard.0") and _role(client, 0) == "adopted"
    stuck.end_batch()              # the batch returned, but the database is still down
    stuck.tick()
    assert stuck.stood_down == "stalled" and stuck.queues() == []
    reachable[0] = True
    stuck.tick()                   # progress again: asks for its home shard back
    assert stuck.stood_down is None and client.exists(wanted_key("docnum.shard.0"))
    other.tick()
    stuck.tick()
    assert stuck.queues() == ["docnum.shard.0"] and _role(client, 0) == "home"
    stuck.release()
    other.release()


def test_refusal_releases_what_was_taken_and_successor_takes_over(broker):
    client = redis.Redis.from_url(broker[0])
    client.set(owner_key("docnum.shard.2"), "host:10:up-run1-2|home", ex=30)
    stranger = _ownership(client, ["docnum.shard.1", "docnum.shard.2"], "host:11:other")
    with pytest.raises(ShardOwned) as refused:
        stranger.acquire()
    assert refused.value.holder == "host:10:up-run1-2"
    assert _holder(client, 1) is None
    # `docnum up` restarts a dead child in the same slot: it takes over at once.
    successor = _ownership(client, ["docnum.shard.1", "docnum.shard.2"], "host:12:up-run1-2",
                           successor_of="up-run1-2")
    successor.acquire()
    assert _holder(client, 1) == _holder(client, 2) == "host:12:up-run1-2"
    successor.release()


def test_no_ownership_on_the_embedded_sql_fallback(tmp_path):
    from docnum.workers.ownership import claim_shards

    settings = load_settings({"DOCNUM_VAR_DIR": str(tmp_path), "DOCNUM_JWT_SECRET": "x",
                              "DOCNUM_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"})
    assert claim_shards(settings, ["docnum.shard.0"]) is None


def test_a_paused_process_is_not_a_stalled_consumer(broker):
    """A whole-process pause (SIGSTOP) is not the consumer's stall: the batch in hand keeps its
    time, and the next tick refreshes at once to find out which shards changed hands."""
    client = redis.Redis.from_url(broker[0])
    paused = _ownership(client, ["docnum.shard.0", "docnum.shard.1"], "h:1:paused",
                        stall_timeout=0.5)
    paused.acquire()
    paused.begin_batch()
    time.sleep(0.8)             # as if frozen 0.8 s in the middle of the batch
    client.set(owner_key("docnum.shard.1"), "other:2:b|adopted")   # adopted meanwhile
    paused.resumed(0.8)
    assert paused.stalled_for() < 0.5
    paused.tick()
    assert paused.stood_down is None, "a pause made the worker stand down"
    assert paused.queues() == ["docnum.shard.0"], "the refresh after the pause found the loss"
    time.sleep(0.6)             # a real stall after the pause still counts
    paused.tick()
    assert paused.stood_down == "stalled"
    paused.end_batch()
    paused.release()
