"""Shard ownership: a second consumer of an owned shard is refused; it may take over once the
owner stops (keys deleted) or dies (keys expire, ``DOCNUM_SHARD_OWNER_TTL`` after the last
heartbeat). Real ``docnum worker`` subprocesses against two Redis DBs of the machine's Redis
claimed for the test.
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

from docnum.shared.settings import load_settings
from docnum.workers.ownership import REFUSED_EXIT_CODE, ShardOwned, ShardOwnership, owner_key
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
                        DOCNUM_QUEUE_SHARDS="4", DOCNUM_SHARD_OWNER_TTL=str(TTL_S))
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, shards: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "docnum.cli.main", "worker", "--shards", shards, "--loglevel",
             "warning"], env=self.env, stdout=(self.tmp_path / f"{name}.out").open("wb"),
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
    value = client.get(owner_key(f"docnum.shard.{shard}"))
    return value.decode() if value else None


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
        assert _holder(client, 0) and _owns(client, a, 0, 1), "B released or took A's keys"
        time.sleep(TTL_S + 1)  # A's heartbeat keeps its keys past their TTL
        assert a.poll() is None and _owns(client, a, 0, 1)

        # A stops cleanly (SIGTERM: warm shutdown) and deletes its keys; B can start.
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0, workers.stderr(a)
        assert _holder(client, 0) is None and _holder(client, 1) is None
        b2 = workers.start("b2", "1")
        wait_for(lambda: _owns(client, b2, 1), timeout=20, message="B to take shard 1")
        time.sleep(1)
        assert b2.poll() is None, workers.stderr(b2)

        # B2 is SIGKILLed: its key stays until it expires; C is refused until then.
        b2.send_signal(signal.SIGKILL)
        b2.wait(10)
        killed_at = time.monotonic()
        c = workers.start("c", "1,2")
        _refused(workers, c, 1)
        assert _holder(client, 2) is None, "a refused worker keeps nothing"
        wait_for(lambda: _holder(client, 1) is None, timeout=TTL_S + 2,
                 message="the dead owner's key to expire")
        expired_after = time.monotonic() - killed_at
        d = workers.start("d", "1,2")
        wait_for(lambda: _owns(client, d, 1, 2), timeout=20, message="D to take shards 1,2")
        time.sleep(1)
        assert d.poll() is None, workers.stderr(d)
    finally:
        workers.stop_all()
    print(f"\nsecond consumer refused in {refused_in:.1f} s (process start included); "
          f"a SIGKILLed owner's key expired {expired_after:.1f} s after the kill "
          f"(TTL {TTL_S} s)")


def test_heartbeat_retakes_a_vanished_key_and_reports_a_stolen_one(broker):
    client = redis.Redis.from_url(broker[0])
    lost = []
    owner = ShardOwnership(client, ["docnum.shard.0", "docnum.shard.1"], TTL_S,
                           holder="h:1:a", on_lost=lambda q, h: lost.append((q, h)))
    owner.acquire()
    assert client.ttl(owner_key("docnum.shard.0")) > 0
    client.delete(owner_key("docnum.shard.0"))                 # e.g. lost in a failover
    assert owner.refresh() is None
    assert _holder(client, 0) == "h:1:a"
    client.set(owner_key("docnum.shard.1"), "other:2:b")       # our TTL ran out, B took it
    assert owner.refresh() == ("docnum.shard.1", "other:2:b")
    assert lost == [] and owner.lost is None  # reporting is the heartbeat thread's business
    owner.start_heartbeat()  # every TTL/3 = 1 s: finds shard 1 taken, stops this worker
    wait_for(lambda: lost, timeout=5, message="the heartbeat to notice the stolen key")
    assert lost == [("docnum.shard.1", "other:2:b")] and owner.lost == lost[0]
    owner.release()
    assert _holder(client, 0) is None, "our key is released"
    assert _holder(client, 1) == "other:2:b", "someone else's key is left alone"


def test_refusal_releases_what_was_taken_and_successor_takes_over(broker):
    client = redis.Redis.from_url(broker[0])
    client.set(owner_key("docnum.shard.2"), "host:10:up-run1-2", ex=30)
    stranger = ShardOwnership(client, ["docnum.shard.1", "docnum.shard.2"], TTL_S,
                              holder="host:11:other")
    with pytest.raises(ShardOwned) as refused:
        stranger.acquire()
    assert refused.value.holder == "host:10:up-run1-2"
    assert _holder(client, 1) is None
    # `docnum up` restarts a dead child in the same slot: it takes over at once.
    successor = ShardOwnership(client, ["docnum.shard.1", "docnum.shard.2"], TTL_S,
                               holder="host:12:up-run1-2", successor_of="up-run1-2")
    successor.acquire()
    assert _holder(client, 1) == _holder(client, 2) == "host:12:up-run1-2"
    successor.release()


def test_no_ownership_on_the_embedded_sql_fallback(tmp_path):
    from docnum.workers.ownership import claim_shards

    settings = load_settings({"DOCNUM_VAR_DIR": str(tmp_path), "DOCNUM_JWT_SECRET": "x",
                              "DOCNUM_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"})
    assert claim_shards(settings, ["docnum.shard.0"]) is None
