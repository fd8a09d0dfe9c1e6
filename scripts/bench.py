#!/usr/bin/env python3
"""docnum against the lock design it replaces, side by side in one run (docs/benchmarks.md#method).

Each round, on fresh databases:

1. docnum (``docnum up`` with its defaults plus ``--env``): the DB ceiling
   (``docnum.cli.db_ceiling``, 4 connections), then the phases ``hot`` (one counter, 32
   connections), ``keys64`` (64 counters, 32 connections), ``rate200`` (200 req/s offered on 64
   counters) and ``burst`` (5,000 async submissions at once); then docnum is stopped.
2. The lock design (``scripts/lock_design/app.py`` behind ``docnum api``'s gunicorn
   configuration) right after, on the same load: ``hot``, ``keys64``, ``rate200``.
3. With ``--db-latency-ms N``: docnum again, its processes started one by one so that only the
   shard workers reach MariaDB through a relay adding N ms per round trip
   (``scripts/delay_relay.py``), 8 synchronous clients on 64 counters (``latency``).

Every phase is ``docnum loadtest``, which verifies the run in MariaDB (numbers distinct, counters
contiguous, one audit row each) and reports the CPU each process group spent per served request.
Prints one JSON line per measurement, then medians (min-max) over the rounds and the docnum /
lock ratios.

Usage: .venv/bin/python scripts/bench.py [--rounds 3] [--duration 20] [--rate-duration 60]
       [--burst 5000] [--db-latency-ms 50] [--only hot,keys64] [--env DOCNUM_QUEUE_SHARDS=2]
       [--private-mariadb]
Loopback only; every phase is bounded in time and count.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")
LOCK_APP = REPO / "scripts" / "lock_design" / "app.py"
RELAY = REPO / "scripts" / "delay_relay.py"

PHASES = ("ceiling", "hot", "keys64", "rate200", "burst", "latency")
DOCNUM_UP_PHASES = ("hot", "keys64", "rate200", "burst")
LOCK_PHASES = ("hot", "keys64", "rate200")
DEFAULT_DB_LATENCY_MS = 50.0
# Gunicorn sizing: whatever docnum gets through --env, the lock design gets too (same HTTP stack).
GUNICORN_VARIABLES = ("DOCNUM_API_WORKERS", "DOCNUM_API_THREADS", "DOCNUM_GUNICORN_CONFIG")
CPU_GROUPS = ("api", "worker", "other", "relay", "mariadb", "redis", "loadgen")
PHASE_TITLES = {
    "ceiling": "DB ceiling, 4 connections (commits/s)",
    "hot": "hot key, sync, 32 connections",
    "keys64": "64 keys (16 pairs x 4 years), sync, 32 connections",
    "rate200": "200 req/s offered on 64 keys",
    "burst": "burst of async requests",
    "latency": "64 keys, 8 sync clients, DB latency added for the shard workers",
}


# ------------------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        parent = int(raw[raw.rindex(b")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children = _children_by_parent()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks after boot): with the pid, names one process even
    after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as raw:
            return raw.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_group(pid: int) -> str:
    """Which CPU group a docnum or lock-design process belongs to, by its command line."""
    command = cmdline(pid)
    if "gunicorn" in command:
        return "api"  # master and workers, either design
    if "--shards" in command:
        return "worker"
    if RELAY.name in command:
        return "relay"
    return "other"  # docnum up's supervisor, the maintenance worker, beat


class Managed:
    """A child process in its own session, output to a log file; stopped by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{''.join(c if c.isalnum() else '_' for c in name)}.log"
        self.popen: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Managed:
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (the process stops what it started), then SIGKILL for whatever of its tree
        is left after ``grace`` seconds."""
        if self.popen is None:
            return
        tree = [(pid, start_time(pid)) for pid in process_tree(self.pid)] if self.alive() else []
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        for pid, started in tree:  # ours: this process and what it forked, if still there
            if started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.popen.poll() is None:
            self.popen.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               watched: Iterable[Managed] = ()) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in watched:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited while waiting for {what}:\n"
                                   f"{process.tail()}")
        try:
            if check():
                return True
        except Exception:  # not up yet
            pass
        time.sleep(0.3)
    return False


def http_ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
        return response.status == 200


# ------------------------------------------------------------------------------ services here

class PrivateRedis:
    """A redis-server of this run only: nothing else's keys, and its CPU is this run's."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        data = run_dir / "redis"
        data.mkdir()
        self.process = Managed("redis", ["redis-server", "--port", str(self.port), "--bind",
                                         "127.0.0.1", "--save", "", "--appendonly", "no",
                                         "--dir", str(data)], dict(os.environ), run_dir)
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        import redis

        self.process.start()
        if not wait_until(lambda: redis.Redis.from_url(self.url).ping(), 20, "redis",
                          [self.process]):
            raise RuntimeError("private redis-server did not start")


class PrivateMariaDB:
    """A mariadbd of this run only (``--private-mariadb``), with the compiled-in defaults that
    the machine's server runs with too (``innodb_flush_log_at_trx_commit=1``, 128 MiB buffer
    pool): no other session's queries in its CPU or its disk flushes."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        # Its own directory: mariadbd drops to the mysql user, which cannot enter run_dir.
        self.workdir = Path(tempfile.mkdtemp(prefix="docnum-bench-mariadb-"))
        self.datadir = self.workdir / "data"
        self.as_root = os.geteuid() == 0
        user = ["--user=mysql"] if self.as_root else []
        self.install = ["mariadb-install-db", "--no-defaults", *user,
                        f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"]
        self.process = Managed("mariadbd", [
            "mariadbd", "--no-defaults", *user, f"--datadir={self.datadir}",
            f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--socket={self.workdir / 'mysqld.sock'}", f"--pid-file={self.workdir / 'pid'}",
            "--character-set-server=utf8mb4", "--skip-name-resolve"], dict(os.environ), run_dir)
        self.url = f"mysql+mysqldb://root@127.0.0.1:{self.port}"

    def _chown(self) -> None:
        if self.as_root:
            import shutil

            for path in [self.workdir, *self.workdir.rglob("*")]:
                shutil.chown(path, "mysql", "mysql")

    def start(self) -> None:
        from sqlalchemy import create_engine

        self._chown()
        subprocess.run(self.install, check=True, capture_output=True, timeout=120)
        self._chown()
        self.process.start()

        def ping() -> bool:
            engine = create_engine(self.url)
            try:
                with engine.connect():
                    return True
            finally:
                engine.dispose()

        if not wait_until(ping, 60, "mariadbd", [self.process]):
            raise RuntimeError("private mariadbd did not start")

    def stop(self) -> None:
        import shutil

        self.process.stop(grace=60)  # SIGTERM: a clean shutdown
        shutil.rmtree(self.workdir, ignore_errors=True)


def redis_pid(url: str) -> int | None:
    import redis

    try:
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError):
        return None


def mariadb_pid(server: str) -> int | None:
    """The MariaDB server's pid from its pid file (several may run on this machine)."""
    from sqlalchemy import create_engine

    engine = create_engine(server)
    try:
        with engine.connect() as conn:
            pid_file = conn.exec_driver_sql("SELECT @@pid_file").scalar_one()
        pid = int(Path(pid_file).read_text().strip())
        return pid if os.path.exists(f"/proc/{pid}") else None
    except (OSError, ValueError):
        return None
    finally:
        engine.dispose()


def create_database(server: str, name: str) -> str:
    from sqlalchemy import create_engine

    engine = create_engine(server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                             "COLLATE utf8mb4_bin")
    engine.dispose()
    return f"{server}/{name}?charset=utf8mb4"


def drop_database(server: str, name: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(server)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    engine.dispose()


def flush_redis(urls: list[str], private: bool) -> None:
    import redis

    for url in urls[:1] if private else urls:
        client = redis.Redis.from_url(url)
        client.flushall() if private else client.flushdb()


# ------------------------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run = secrets.token_hex(3)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"docnum-bench-{self.run}-"))
        self.records: list[dict] = []
        self.out = open(args.out, "a") if args.out else None
        self.jwt_secret = secrets.token_urlsafe(40)
        self.redis: PrivateRedis | None = None
        self.redis_base = args.redis
        self.mariadb: PrivateMariaDB | None = None
        self.failures: list[str] = []

    # -- environment ---------------------------------------------------------------------------
    def redis_urls(self) -> tuple[str, str, str]:
        base = self.redis_base.rstrip("/")
        # A private server: its own DB numbers; a shared one (--redis): 7, 8 (and 9), which the
        # bench flushes, away from DB 0 where a running service keeps its data.
        dbs = (0, 1, 2) if self.redis else (7, 8, 9)
        return f"{base}/{dbs[0]}", f"{base}/{dbs[1]}", f"{base}/{dbs[2]}"

    def base_env(self, database_url: str, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCNUM_", "PROMETHEUS_", "LOCK_DESIGN_"))}
        env.update(DOCNUM_DATABASE_URL=database_url, DOCNUM_JWT_SECRET=self.jwt_secret,
                   DOCNUM_HOST="127.0.0.1", DOCNUM_PORT=str(port),
                   DOCNUM_VAR_DIR=str(self.run_dir / f"var-{port}"), PYTHONUNBUFFERED="1")
        return env

    def docnum_env(self, database_url: str, port: int) -> dict[str, str]:
        broker, backend, _ = self.redis_urls()
        env = self.base_env(database_url, port)
        env.update(DOCNUM_BROKER_URL=broker, DOCNUM_RESULT_BACKEND=backend,
                   DOCNUM_RATE_LIMIT_USER="100000000/minute",
                   DOCNUM_RATE_LIMIT_IP="100000000/minute")
        env.update(self.args.env_overrides)
        return env

    def lock_env(self, database_url: str, port: int) -> dict[str, str]:
        _, _, lock_redis = self.redis_urls()
        env = self.base_env(database_url, port)
        env.update(LOCK_DESIGN_REDIS_URL=lock_redis, DOCNUM_BROKER_URL=lock_redis)
        env.update({k: v for k, v in self.args.env_overrides.items()
                    if k in GUNICORN_VARIABLES})
        env.update(self.args.lock_env_overrides)
        return env

    # -- measuring -----------------------------------------------------------------------------
    def record(self, round_no: int, design: str, phase: str, data: dict) -> None:
        entry = {"round": round_no, "design": design, "phase": phase, **data}
        self.records.append(entry)
        line = json.dumps(entry, ensure_ascii=False)
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()
        verify = data.get("verify")
        if "error" in data or (verify is not None and not verify.get("ok")):
            self.failures.append(f"round {round_no} {design} {phase}")

    def cpu_args(self, roots: list[int]) -> list[str]:
        groups: dict[str, list[int]] = {}
        for root in roots:
            for pid in process_tree(root):
                groups.setdefault(cpu_group(pid), []).append(pid)
        mariadb = mariadb_pid(self.args.server)
        if mariadb:
            groups["mariadb"] = [mariadb]
        redis = redis_pid(self.redis_base)
        if redis:
            groups["redis"] = [redis]
        return [arg for name, pids in groups.items()
                for arg in ("--cpu", f"{name}={','.join(map(str, pids))}")]

    def load_args(self, phase: str) -> list[str]:
        a = self.args
        return {
            "hot": ["--keys", "1", "--concurrency", "32", "--duration", str(a.duration)],
            "keys64": ["--keys", "64", "--concurrency", "32", "--duration", str(a.duration)],
            "rate200": ["--keys", "64", "--rate", "200", "--duration", str(a.rate_duration)],
            "burst": ["--mode", "async", "--burst", str(a.burst)],
            "latency": ["--keys", "64", "--concurrency", str(a.latency_clients), "--duration",
                        str(a.latency_duration or a.duration)],
        }[phase]

    def loadtest(self, design: str, phase: str, url: str, env: dict[str, str],
                 roots: list[int]) -> dict:
        argv = [PY, "-m", "docnum.cli.loadtest", "--url", url, "--json", "--target", design,
                *self.load_args(phase), *self.cpu_args(roots)]
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
        budget = max(self.args.duration, self.args.rate_duration) + 300
        try:
            done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True,
                                  timeout=budget)
        except subprocess.TimeoutExpired:
            return {"error": f"loadtest ran over {budget} s", "loadavg_before": loadavg}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"loadtest printed no JSON: {done.stderr[-2000:]}",
                    "loadavg_before": loadavg}
        return {**json.loads(lines[-1]), "loadavg_before": loadavg}

    def ceiling(self, env: dict[str, str]) -> dict:
        seconds = min(10.0, self.args.duration)
        done = subprocess.run([PY, "-m", "docnum.cli.db_ceiling", "4", str(seconds)], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=seconds + 120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"db_ceiling printed no JSON: {done.stderr[-2000:]}"}
        return json.loads(lines[-1])

    def wait_shard_owners(self, env: dict[str, str], watched: list[Managed]) -> None:
        """Until every shard queue has its consumer (its ownership key; workers/ownership.py);
        a warning, not a failure, when one is still missing after 60 s."""
        import redis

        from docnum.shared.routing import all_shard_queues
        from docnum.shared.settings import load_settings
        from docnum.workers.ownership import owner_key

        settings = load_settings(env)
        client = redis.Redis.from_url(settings.broker_url)
        keys = [owner_key(q) for q in all_shard_queues(settings.queue_shards)]
        if not wait_until(lambda: client.exists(*keys) == len(keys), 60, "shard owners",
                          watched):
            print(f"# not every shard queue of {settings.queue_shards} has an owner after 60 s; "
                  "going on", flush=True)

    # -- the designs ---------------------------------------------------------------------------
    def docnum_up(self, round_no: int, database_url: str, phases: list[str]) -> None:
        port = free_port()
        env = self.docnum_env(database_url, port)
        argv = [PY, "-m", "docnum.cli.main", "up"]
        if self.args.worker_processes:
            argv += ["--worker-processes", str(self.args.worker_processes)]
        up = Managed(f"r{round_no}-docnum-up", argv, env, self.run_dir).start()
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_until(lambda: http_ready(url), 120, "docnum up", [up]):
                raise RuntimeError(f"docnum up not ready:\n{up.tail()}")
            self.wait_shard_owners(env, [up])
            if "ceiling" in phases:
                self.record(round_no, "docnum", "ceiling", self.ceiling(env))
            for phase in DOCNUM_UP_PHASES:
                if phase in phases:
                    self.record(round_no, "docnum", phase,
                                self.loadtest("docnum", phase, url, env, [up.pid]))
        finally:
            up.stop()

    def lock_design(self, round_no: int, database_url: str, phases: list[str]) -> None:
        port = free_port()
        env = self.lock_env(database_url, port)
        app = Managed(f"r{round_no}-lock-design", [PY, str(LOCK_APP)], env,
                      self.run_dir).start()
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_until(lambda: http_ready(url), 60, "the lock design", [app]):
                raise RuntimeError(f"lock design not ready:\n{app.tail()}")
            for phase in LOCK_PHASES:
                if phase in phases:
                    self.record(round_no, "lock", phase,
                                self.loadtest("lock", phase, url, env, [app.pid]))
        finally:
            app.stop()

    def docnum_with_db_latency(self, round_no: int, database_url: str) -> None:
        """``docnum up``'s processes started one by one: the API on the direct URL, the
        workers on the relay's (``docnum.cli.supervisor.build_children`` says which)."""
        from sqlalchemy.engine import make_url

        from docnum.cli.supervisor import build_children
        from docnum.shared.settings import load_settings

        port = free_port()
        direct_env = self.docnum_env(database_url, port)
        direct_env["PROMETHEUS_MULTIPROC_DIR"] = str(self.run_dir / f"metrics-r{round_no}")
        Path(direct_env["PROMETHEUS_MULTIPROC_DIR"]).mkdir()
        server = make_url(database_url)
        relay = Managed(f"r{round_no}-relay", [
            PY, str(RELAY), "--listen", "127.0.0.1:0",
            "--target", f"{server.host or '127.0.0.1'}:{server.port or 3306}",
            "--delay-ms", str(self.args.db_latency_ms / 2)], direct_env, self.run_dir).start()
        started: list[Managed] = [relay]
        try:
            listening: list[str] = []

            def relay_port() -> bool:
                listening[:] = [ln for ln in relay.tail().splitlines()
                                if ln.startswith("listening ")]
                return bool(listening)

            if not wait_until(relay_port, 20, "the relay", [relay]):
                raise RuntimeError(f"relay did not start:\n{relay.tail()}")
            relay_env = dict(direct_env, DOCNUM_DATABASE_URL=server.set(
                host="127.0.0.1", port=int(listening[0].split()[2])).render_as_string(
                    hide_password=False))
            subprocess.run([PY, "-m", "docnum.cli.main", "migrate"], env=direct_env, cwd=REPO,
                           check=True, capture_output=True, timeout=120)
            settings = load_settings(direct_env)
            for child in build_children(settings.queue_shards,
                                        self.args.latency_workers,
                                        with_beat=False):
                argv = [PY, *child.argv[1:]]  # this checkout's interpreter
                env = direct_env if child.name == "api" else relay_env
                started.append(Managed(f"r{round_no}-latency-{child.name}", argv, env,
                                       self.run_dir).start())
            url = f"http://127.0.0.1:{port}"
            if not wait_until(lambda: http_ready(url), 120, "docnum api", started):
                raise RuntimeError("docnum api not ready")
            self.wait_shard_owners(direct_env, started)
            data = self.loadtest("docnum", "latency", url, direct_env,
                                 [p.pid for p in started])
            self.record(round_no, "docnum", "latency", {
                **data, "db_latency_ms": self.args.db_latency_ms,
                "processes": [f"{p.name} ({'relay' if p.env is relay_env else 'direct'})"
                              for p in started[1:]]})
        finally:
            for process in reversed(started):
                process.stop()

    # -- rounds --------------------------------------------------------------------------------
    def round(self, round_no: int) -> None:
        a = self.args
        phases = a.phases
        created: list[str] = []
        try:
            docnum_db = None
            if "docnum" in a.designs and set(phases) & {"ceiling", "latency",
                                                         *DOCNUM_UP_PHASES}:
                name = f"docnum_bench_{self.run}_r{round_no}"
                docnum_db = create_database(a.server, name)
                created.append(name)
                flush_redis(list(self.redis_urls()), self.redis is not None)
                if set(phases) & {"ceiling", *DOCNUM_UP_PHASES}:
                    self.docnum_up(round_no, docnum_db, phases)
            if "lock" in a.designs and set(phases) & set(LOCK_PHASES):
                name = f"docnum_bench_{self.run}_r{round_no}_lock"
                lock_db = create_database(a.server, name)
                created.append(name)
                flush_redis(list(self.redis_urls()), self.redis is not None)
                self.lock_design(round_no, lock_db, phases)
            if docnum_db and "latency" in phases:
                flush_redis(list(self.redis_urls()), self.redis is not None)
                self.docnum_with_db_latency(round_no, docnum_db)
        except Exception as exc:
            self.record(round_no, "-", "round", {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            if not a.keep_databases:
                for name in created:
                    drop_database(a.server, name)

    def main(self) -> int:
        a = self.args
        try:
            if not a.redis:
                self.redis = PrivateRedis(self.run_dir)
                self.redis.start()
                self.redis_base = self.redis.url
            if a.private_mariadb:
                self.mariadb = PrivateMariaDB(self.run_dir)
                self.mariadb.start()
                a.server = self.mariadb.url
            print(f"# docnum bench {self.run}: rounds={a.rounds} phases={','.join(a.phases)} "
                  f"designs={','.join(a.designs)} env={a.env_overrides} "
                  f"lock-env={a.lock_env_overrides} mariadb={a.server} redis={self.redis_base} "
                  f"logs={self.run_dir}", flush=True)
            for round_no in range(1, a.rounds + 1):
                self.round(round_no)
        finally:
            if self.mariadb:
                self.mariadb.stop()
            if self.redis:
                self.redis.process.stop()
            if self.out:
                self.out.close()
        print(summary_text(self.records, a), flush=True)
        print(json.dumps({"summary": summary(self.records)}, ensure_ascii=False), flush=True)
        if self.failures:
            print(f"# NOT VERIFIED or failed: {'; '.join(self.failures)}; logs in "
                  f"{self.run_dir}", flush=True)
        elif not a.keep_logs:
            import shutil

            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 1 if self.failures else 0


# ---------------------------------------------------------------------------------- the summary

def _values(records: list[dict], design: str, phase: str, field: str) -> list[float]:
    return [r[field] for r in records if r["design"] == design and r["phase"] == phase
            and isinstance(r.get(field), int | float)]


def spread(values: list[float], digits: int = 1) -> str | None:
    """``median (min-max)``; the median alone for one value."""
    if not values:
        return None
    median = round(statistics.median(values), digits)
    if len(values) == 1:
        return f"{median}"
    return f"{median} ({round(min(values), digits)}-{round(max(values), digits)})"


def _by_round(records: list[dict], design: str, phase: str) -> dict[int, dict]:
    return {r["round"]: r for r in records if r["design"] == design and r["phase"] == phase
            and "error" not in r}


def ratios(records: list[dict], top: tuple[str, str], bottom: tuple[str, str],
           field: str = "rate_per_s") -> list[float]:
    above, below = _by_round(records, *top), _by_round(records, *bottom)
    return [above[n][field] / below[n][field] for n in sorted(above)
            if n in below and below[n].get(field)]


def cpu_rows(records: list[dict]) -> dict[str, dict[str, str | None]]:
    rows: dict[str, dict[str, str | None]] = {}
    for design, phase in sorted({(r["design"], r["phase"]) for r in records
                                 if r.get("cpu_ms_per_served")}):
        runs = [r["cpu_ms_per_served"] for r in _by_round(records, design, phase).values()
                if r.get("cpu_ms_per_served")]
        row = {group: spread([run[group] for run in runs if run.get(group) is not None], 3)
               for group in CPU_GROUPS if any(run.get(group) is not None for run in runs)}
        row["total"] = spread([sum(v for v in run.values() if v is not None) for run in runs], 3)
        rows[f"{design} {phase}"] = row
    return rows


def summary(records: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for design, phase in sorted({(r["design"], r["phase"]) for r in records
                                 if r["phase"] in PHASES}):
        if phase == "ceiling":
            out["ceiling commits/s"] = spread(_values(records, design, phase, "commits_per_s"))
            continue
        entry = {field: spread(_values(records, design, phase, field))
                 for field in ("rate_per_s", "p50_ms", "p99_ms", "failed_pct")}
        if phase == "burst":
            entry.update({field: spread(_values(records, design, phase, field), 2)
                          for field in ("accepted_in_s", "elapsed_s", "completed")})
        runs = [r for r in records if r["design"] == design and r["phase"] == phase]
        entry["errors"] = [r.get("errors") or r.get("error") for r in runs
                           if r.get("errors") or r.get("error")]
        entry["verified"] = all(r.get("verify", {}).get("ok") for r in runs)
        out[f"{design} {phase}"] = entry
    for phase in LOCK_PHASES:
        values = ratios(records, ("docnum", phase), ("lock", phase))
        if values:
            out[f"{phase}: docnum / lock served/s"] = spread(values, 2)
    values = ratios(records, ("docnum", "keys64"), ("docnum", "hot"))
    if values:
        out["docnum keys64 / docnum hot"] = spread(values, 2)
    out["cpu ms per served request"] = cpu_rows(records)
    return out


def summary_text(records: list[dict], args: argparse.Namespace) -> str:
    """Markdown tables: medians (min-max) over the rounds."""
    rounds = len({r["round"] for r in records})
    lines = [f"\n## Summary: medians (min-max) of {rounds} round(s)\n",
             "| phase | design | served/s | p50 ms | p99 ms | failed % | verified |",
             "|---|---|---|---|---|---|---|"]
    for phase in PHASES:
        for design in ("docnum", "lock"):
            runs = [r for r in records if r["design"] == design and r["phase"] == phase]
            if not runs:
                continue
            if phase == "ceiling":
                lines.append(f"| {PHASE_TITLES[phase]} | MariaDB | "
                             f"{spread(_values(records, design, phase, 'commits_per_s'))} "
                             "| | | | |")
                continue
            title = PHASE_TITLES[phase]
            if phase == "burst":
                title += (f" ({args.burst}; accepted in "
                          f"{spread(_values(records, design, phase, 'accepted_in_s'), 2)} s, "
                          f"all done in {spread(_values(records, design, phase, 'elapsed_s'), 2)}"
                          " s)")
            if phase == "latency":
                title += f" (+{args.db_latency_ms:g} ms)"
            cells = [spread(_values(records, design, phase, f)) or "-"
                     for f in ("rate_per_s", "p50_ms", "p99_ms", "failed_pct")]
            errors = [r.get("error") for r in runs if r.get("error")]
            verified = "yes" if all(r.get("verify", {}).get("ok") for r in runs) else \
                f"NO {errors or ''}"
            lines.append(f"| {title} | {design} | {' | '.join(cells)} | {verified} |")
    lines += ["", "| ratio (per round) | median (min-max) |", "|---|---|"]
    for phase in LOCK_PHASES:
        values = ratios(records, ("docnum", phase), ("lock", phase))
        if values:
            lines.append(f"| {phase}: docnum / lock, served/s | {spread(values, 2)} |")
    values = ratios(records, ("docnum", "keys64"), ("docnum", "hot"))
    if values:
        lines.append(f"| docnum keys64 / docnum hot | {spread(values, 2)} |")
    rows = cpu_rows(records)
    if rows:
        groups = [g for g in (*CPU_GROUPS, "total") if any(g in row for row in rows.values())]
        lines += ["", "CPU ms per served request (mariadb and redis: the whole server; "
                  "other: supervisor, maintenance, beat)", "",
                  "| phase | " + " | ".join(groups) + " |",
                  "|---|" + "---|" * len(groups)]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(row.get(g) or "-" for g in groups) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the CLI

def _assignments(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"{option} takes KEY=VALUE, got {value!r}")
        out[name] = setting
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20,
                        help="seconds of each closed-loop phase (the ceiling: at most 10)")
    parser.add_argument("--rate-duration", type=float, default=60)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--db-latency-ms", type=float, default=0,
                        help="add the latency phase with this round trip added between "
                             "docnum's shard workers and MariaDB (e.g. 50)")
    parser.add_argument("--latency-clients", type=int, default=8)
    parser.add_argument("--latency-workers", type=int, default=4,
                        help="shard worker processes in the latency phase (default 4: the "
                             "compose topology; a worker far from its database waits on the "
                             "network, not the CPU: docs/deploy.md)")
    parser.add_argument("--latency-duration", type=float, default=None,
                        help="seconds of the latency phase (default: --duration)")
    parser.add_argument("--only", default=None,
                        help=f"comma list of phases: {','.join(PHASES)}")
    parser.add_argument("--designs", default="docnum,lock", help="comma list: docnum,lock")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for docnum's processes (repeatable); the gunicorn "
                             "sizing variables also go to the lock design")
    parser.add_argument("--lock-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the lock design only (repeatable)")
    parser.add_argument("--worker-processes", type=int, default=None,
                        help="docnum up --worker-processes (default: docnum up's own default, "
                             "the CPU cores)")
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306",
                        help="MariaDB server URL (databases are created and dropped there)")
    parser.add_argument("--private-mariadb", action="store_true",
                        help="start a mariadbd of this run only instead of using --server")
    parser.add_argument("--redis", default=None,
                        help="a Redis server URL to use (its DBs 7-9 are FLUSHED); default: a "
                             "private redis-server started for this run")
    parser.add_argument("--keep-databases", action="store_true")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs (always kept when a phase failed)")
    parser.add_argument("--out", default=None, help="append the JSON lines here")
    args = parser.parse_args(argv)
    args.env_overrides = _assignments(args.env, "--env")
    args.lock_env_overrides = _assignments(args.lock_env, "--lock-env")
    if args.only:
        args.phases = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = [p for p in args.phases if p not in PHASES]
        if unknown:
            raise SystemExit(f"unknown phases {unknown}; choose from {','.join(PHASES)}")
        if "latency" in args.phases and not args.db_latency_ms:
            args.db_latency_ms = DEFAULT_DB_LATENCY_MS
    else:
        args.phases = [p for p in PHASES if p != "latency" or args.db_latency_ms]
    args.designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    if not set(args.designs) <= {"docnum", "lock"}:
        raise SystemExit("--designs takes docnum and/or lock")
    if args.rounds < 1 or args.duration <= 0 or args.rate_duration <= 0:
        raise SystemExit("--rounds, --duration and --rate-duration must be positive")
    return args


if __name__ == "__main__":
    sys.exit(Bench(parse_args(sys.argv[1:])).main())
