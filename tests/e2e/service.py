"""docnum as real subprocesses, for end-to-end tests.

``Service`` starts ``docnum api`` and any number of ``docnum worker`` (and optionally the
maintenance worker, beat and Flower) with ONE environment, writes each process's output to
``<log_dir>/<name>.log``, waits until they are ready and stops them with SIGTERM::

    env = docnum_env(database_url, redis.url(0), redis.url(1), tmp_path / "var",
                     PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    with Service(env, tmp_path / "logs", workers=["0,1,2,3"]) as svc:
        svc.post("/api/v1/document-numbering/generate", json=..., headers=...)
        svc.restart("worker[0,1,2,3]")

``RedisServer`` is a private ``redis-server`` on a free port (never the machine's 6379), which
a test may stop and start again on the same port. ``Up`` is ``docnum up`` as one subprocess,
whose log names the pid of each child it starts and restarts.

Nothing here uses the machine's Redis or stops anything it did not start.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_lib
import requests
from sqlalchemy import text
from sqlalchemy.engine import Engine

from docnum.shared.settings import Settings
from docnum.workers.shard_queues import Taken, processing_key

DOCNUM = str(Path(sys.executable).with_name("docnum"))
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, message: str,
               interval: float = 0.1, on_timeout: Callable[[], str] | None = None) -> object:
    """Poll ``predicate`` until it returns something truthy (exceptions count as "not yet")."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                                 f"{detail}{extra}")
        time.sleep(interval)


def docnum_env(database_url: str, broker: str, backend: str, var_dir: Path,
               **extra: str) -> dict[str, str]:
    """The DOCNUM_* environment of a service (the same names ``tests.conftest.make_settings``
    uses), with generous rate limits so that tests are not throttled."""
    from tests.conftest import JWT_SECRET

    env = {"DOCNUM_DATABASE_URL": database_url, "DOCNUM_BROKER_URL": broker,
           "DOCNUM_RESULT_BACKEND": backend, "DOCNUM_JWT_SECRET": JWT_SECRET,
           "DOCNUM_VAR_DIR": str(var_dir), "DOCNUM_QUEUE_SHARDS": "4",
           "DOCNUM_VISIBILITY_TIMEOUT": "5", "DOCNUM_RATE_LIMIT_USER": "100000/minute",
           "DOCNUM_RATE_LIMIT_IP": "100000/minute"}
    env.update(extra)
    return env


def start_worker(settings: Settings, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """``docnum worker`` for every shard of ``settings`` as a subprocess of this test, on the
    database, broker, result backend, secret and var dir of ``settings`` (``env`` adds
    variables, ``args`` go to its command line); its output is appended to ``log``."""
    environment = dict(os.environ, DOCNUM_DATABASE_URL=settings.database_url,
                       DOCNUM_BROKER_URL=settings.broker_url,
                       DOCNUM_RESULT_BACKEND=settings.result_backend,
                       DOCNUM_JWT_SECRET=settings.jwt_secret,
                       DOCNUM_VAR_DIR=str(settings.var_dir),
                       DOCNUM_QUEUE_SHARDS=str(settings.queue_shards), **env)
    shards = ",".join(str(i) for i in range(settings.queue_shards))
    return subprocess.Popen([sys.executable, "-m", "docnum.cli.main", "worker", "--shards", shards,
                             "--loglevel", "warning", *args],
                            env=environment, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def prepare_database(database_url: str, configs: dict[str, tuple[str, str]] | None = None,
                     project: str = "LCBP3") -> dict[str, int]:
    """Migrate a database and load the test catalog and configs (what the ``seed`` fixture does
    for the session database), for tests that run on a database of their own."""
    from docnum.shared.catalog import upsert_entry
    from docnum.shared.clock import SystemClock
    from docnum.shared.configs import insert_config
    from docnum.shared.db import make_engine, transaction
    from docnum.shared.migrate import upgrade
    from tests.conftest import CATALOG, VECTOR_CONFIGS

    upgrade(database_url)
    engine = make_engine(database_url, pool_size=1)
    now = SystemClock().now()
    ids: dict[str, int] = {}
    try:
        with transaction(engine) as session:
            for kind, codes in CATALOG.items():
                for code in codes:
                    upsert_entry(session, kind, code, f"{kind} {code}", True, now)
            for ctype, (template, reset) in (configs or VECTOR_CONFIGS).items():
                body = {"project": project, "correspondence_type": ctype, "template": template,
                        "reset": reset}
                ids[ctype] = insert_config(session, body, "seed", now).id
    finally:
        engine.dispose()
    return ids


def held_messages(broker: redis_lib.Redis, queues: Iterable[str]) -> list[Taken]:
    """The messages shard workers took from ``queues`` and have not acknowledged yet (their
    processing lists, workers/shard_queues.py)."""
    return [Taken(queue, raw) for queue in queues
            for raw in broker.lrange(processing_key(queue), 0, -1)]


def request_ids_in(messages: Iterable[Taken]) -> list[str]:
    """The requests the allocation messages carry (a message is a batch), read as the shard
    workers read them."""
    from docnum.workers.messages import decode

    return [request.request_id for message in messages for request in decode(message).requests]


def check_ledger(engine: Engine, expected_request_ids: set[str]) -> dict[str, list[int]]:
    """Nothing duplicated, nothing half-written: one ledger row per request, contiguous
    counters that match the ledger, one successful audit row per ledger row."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT counter_key, sequence, document_number, request_id "
                                 "FROM document_numbers")).all()
        counters = dict(conn.execute(text("SELECT counter_key, last_sequence FROM counters"))
                        .all())
        audits = conn.execute(text("SELECT request_id FROM audit_log WHERE operation = "
                                   "'GENERATE' AND success")).scalars().all()
    assert {r.request_id for r in rows} == expected_request_ids
    assert len(rows) == len(expected_request_ids), "a request was issued twice"
    assert len({r.document_number for r in rows}) == len(rows), "a number was issued twice"
    sequences: dict[str, list[int]] = {}
    for row in rows:
        sequences.setdefault(row.counter_key, []).append(row.sequence)
    for key, seqs in sequences.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"gap or duplicate on {key}"
        assert counters[key] == len(seqs), f"counter {key} disagrees with the ledger"
    assert Counter(audits) == Counter({r.request_id for r in rows}), \
        "every issued number has exactly one successful audit row"
    return sequences


@dataclass
class Process:
    name: str
    argv: list[str]
    ready: Callable[[Process], bool] | None = None
    node: str | None = None             # Celery node name before the '@' (workers)
    popen: subprocess.Popen | None = None
    log_path: Path | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Service:
    """A set of docnum processes sharing one environment. See the module docstring."""

    def __init__(self, env: dict[str, str], log_dir: Path, *, api: bool = True,
                 api_workers: int = 1, workers: Iterable[str] = ("0,1,2,3",),
                 maintenance: bool = False, beat: bool = False, flower: bool = False,
                 port: int | None = None, ready_timeout: float = 40.0) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.log_dir = Path(log_dir)
        self.ready_timeout = ready_timeout
        self.env = self._environment(env)
        self.processes: dict[str, Process] = {}
        self._control = None  # a Celery app on the service's broker, for pings
        if api:
            self.add("api", "api", "--workers", str(api_workers), ready=self._api_ready)
        for shards in workers:
            process = self.add(f"worker[{shards}]", "worker", "--shards", shards,
                               ready=self._celery_ready)
            process.node = "shard" + "-".join(s.strip() for s in shards.split(","))
        if maintenance:
            self.add("maintenance", "worker", "--maintenance",
                     ready=self._celery_ready).node = "maintenance"
        if beat:
            self.add("beat", "beat", ready=lambda p: "beat: Starting" in p.log())
        if flower:
            self.add("flower", "flower", ready=self._flower_ready)

    # -- set-up ----------------------------------------------------------------------------
    def _environment(self, env: dict[str, str]) -> dict[str, str]:
        # Only what the test gives: nothing DOCNUM_* or PROMETHEUS_* leaks from the caller.
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("DOCNUM_", "PROMETHEUS_"))}
        base.update({"DOCNUM_HOST": self.host, "DOCNUM_PORT": str(self.port),
                     "PYTHONUNBUFFERED": "1", "DOCNUM_API_WORKERS": "1"})
        base.update(env)
        return base

    def add(self, name: str, *args: str, ready: Callable[[Process], bool] | None = None) -> Process:
        """Declare a process (``docnum <args>``); ``start`` starts every declared process."""
        process = Process(name, [DOCNUM, *args], ready)
        self.processes[name] = process
        return process

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- life cycle ------------------------------------------------------------------------
    def start(self, *names: str, wait: bool = True) -> Service:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        chosen = [self.processes[n] for n in names] if names else list(self.processes.values())
        for process in chosen:
            if process.running:
                continue
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in process.name)
            process.log_path = self.log_dir / f"{safe}.log"
            process._log_file = open(process.log_path, "ab")  # closed in stop
            process.popen = subprocess.Popen(process.argv, env=self.env, cwd=REPO,
                                             stdout=process._log_file,
                                             stderr=subprocess.STDOUT,
                                             start_new_session=True)
        if wait:
            self.wait_ready(*[p.name for p in chosen])
        return self

    def wait_ready(self, *names: str, timeout: float | None = None) -> None:
        chosen = [self.processes[n] for n in names] if names else list(self.processes.values())
        for process in chosen:
            if process.ready is None:
                continue

            def check(p: Process = process) -> bool:
                if p.popen is not None and p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")
                return p.ready(p)

            wait_until(check, timeout or self.ready_timeout, f"{process.name} to be ready",
                       on_timeout=process.tail)

    def stop(self, *names: str, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM, then SIGKILL after ``timeout``; returns each process's exit code."""
        chosen = [self.processes[n] for n in names] if names else list(self.processes.values())
        for process in chosen:
            if process.running:
                process.popen.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for process in chosen:
            if process.popen is None:
                continue
            try:
                codes[process.name] = process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                codes[process.name] = process.popen.wait(5)
            if process._log_file is not None:
                process._log_file.close()
                process._log_file = None
        if not names and self._control is not None:
            self._control.close()
            self._control = None
        return codes

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process (default: SIGKILL, a crash)."""
        process = self.processes[name]
        process.popen.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            process.popen.wait(20)

    def restart(self, *names: str) -> None:
        self.stop(*names)
        self.start(*names)

    def __enter__(self) -> Service:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- readiness checks ------------------------------------------------------------------
    def _api_ready(self, _process: Process) -> bool:
        return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200

    def _celery_ready(self, process: Process) -> bool:
        """The worker answers a control ping (Redis brokers); with the embedded SQL broker,
        which has no broadcast, its start-up banner has been printed."""
        broker = self.env.get("DOCNUM_BROKER_URL", "")
        if not broker.startswith(("redis://", "rediss://", "sentinel://")):
            return "[queues]" in process.log()
        if self._control is None:
            from docnum.shared.settings import load_settings
            from docnum.workers.celery_app import make_celery

            self._control = make_celery(load_settings(self.env))
        replies = self._control.control.ping(timeout=1.0) or []
        return any(name.split("@")[0] == process.node for reply in replies for name in reply)

    def _flower_ready(self, _process: Process) -> bool:
        port = self.env.get("DOCNUM_FLOWER_PORT", "5555")
        return requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).ok

    # -- HTTP ------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 35)
        return requests.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: object) -> requests.Response:
        kwargs.setdefault("timeout", 35)
        return requests.post(self.url + path, **kwargs)

    def logs(self) -> str:
        return "\n".join(f"==> {p.name}\n{p.tail()}" for p in self.processes.values())


STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")
# What ``docnum up``'s children run (the embedded default's private Redis included): a pid of
# its log is only ended while it still runs one of these.
UP_COMMANDS = ("docnum", "docnum.cli.main", "gunicorn", "celery", "redis-server",
               "valkey-server")


class Up:
    """``docnum up`` as a subprocess in ``cwd``, with ``env`` over this environment less its
    DOCNUM_* and PROMETHEUS_*; its log tells which pid each child has."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, cwd: Path = REPO) -> None:
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DOCNUM_", "PROMETHEUS_"))}
        self.env.update(env, PYTHONUNBUFFERED="1")
        self.log_path = log
        self._log = log.open("ab")
        self.popen = subprocess.Popen([DOCNUM, "up", *args], env=self.env, cwd=cwd,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """Every pid the child ``name`` has had, oldest first."""
        return [int(pid) for child, pid in STARTED.findall(self.log()) if child == name]

    def all_pids(self) -> set[int]:
        return {int(pid) for _child, pid in STARTED.findall(self.log())}

    def stop(self, timeout: float = 40.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        # Normally nothing is left. If something went wrong, end what docnum up started (each
        # child leads its own process group), and only those still running our code.
        for pid in [self.popen.pid, *self.all_pids()]:
            if pid_alive(pid) and _runs_ours(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._log.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _runs_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            text = cmdline.read().decode(errors="replace")
    except OSError:
        return False
    return any(word in text for word in UP_COMMANDS)


class RedisServer:
    """A private redis-server on a free loopback port; stop/start keep the port.

    In-memory only by default. ``appendonly=True`` persists like the deployed Redis
    (deploy/redis/redis.conf: AOF, ``appendfsync everysec``), so a stop/start keeps the data.
    ``bind`` listens on another local address instead of loopback (e.g. the root side of a
    veth pair, tests/e2e/netns.py), so that processes in another network namespace reach it.
    """

    def __init__(self, workdir: Path, port: int | None = None, *,
                 appendonly: bool = False, maxmemory: str | None = None,
                 bind: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.appendonly = appendonly
        # Like deploy/redis/redis.conf: a memory cap with noeviction (writes refused when full).
        self.maxmemory = maxmemory
        self.bind = bind
        self.popen: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{self.bind}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis_lib.Redis:
        return redis_lib.Redis(host=self.bind, port=self.port, db=db, socket_timeout=5)

    def ping(self) -> bool:
        try:
            return bool(redis_lib.Redis(host=self.bind, port=self.port,
                                        socket_connect_timeout=0.5).ping())
        except redis_lib.RedisError:
            return False

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")  # owned by the process
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", self.bind,
             "--save", "", "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", "everysec", "--daemonize", "no",
             # Without a password, protected mode refuses every client not on loopback.
             "--protected-mode", "yes" if self.bind == "127.0.0.1" else "no",
             "--dir", str(self.workdir),
             *(["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
               if self.maxmemory else [])], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_until(self.ping, 10, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class MariaDBServer:
    """A private mariadbd: its own data directory and loopback port, root without a password.

    For tests that must stop the database or need a binary log; everything else uses the
    session database on the machine's MariaDB. ``binlog=True`` writes ROW binlogs as the
    production primary does. ``stop``/``start`` keep the data and the port; ``destroy``
    removes the data directory. ``bind`` listens on another local address instead of loopback
    (as ``RedisServer``'s).
    """

    def __init__(self, port: int | None = None, *, binlog: bool = False,
                 bind: str = "127.0.0.1") -> None:
        import tempfile

        self.port = port or free_port()
        self.binlog = binlog
        self.bind = bind
        # Not under pytest's tmp_path: that is private to root (0700) and mariadbd drops to the
        # mysql user when started as root.
        self.workdir = Path(tempfile.mkdtemp(prefix="docnum-mariadb-"))
        self.datadir = self.workdir / "data"
        self.popen: subprocess.Popen | None = None
        self._as_root = os.geteuid() == 0

    @staticmethod
    def available() -> bool:
        import shutil

        return bool(shutil.which("mariadbd") and shutil.which("mariadb-install-db"))

    def url(self, database: str = "") -> str:
        return f"mysql+mysqldb://root@{self.bind}:{self.port}/{database}?charset=utf8mb4"

    def _chown(self) -> None:
        if self._as_root:
            import shutil

            for path in [self.workdir, *self.workdir.rglob("*")]:
                shutil.chown(path, "mysql", "mysql")

    def _user(self) -> list[str]:
        return ["--user=mysql"] if self._as_root else []

    def ping(self) -> bool:
        import MySQLdb

        try:
            MySQLdb.connect(host=self.bind, port=self.port, user="root",
                            connect_timeout=1).close()
            return True
        except MySQLdb.Error:
            return False

    def start(self) -> MariaDBServer:
        if not self.datadir.exists():
            self._chown()
            subprocess.run(["mariadb-install-db", "--no-defaults", *self._user(),
                            f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
                            "--skip-test-db"], check=True, capture_output=True, timeout=60)
        self._chown()
        argv = ["mariadbd", "--no-defaults", *self._user(), f"--datadir={self.datadir}",
                f"--port={self.port}", f"--bind-address={self.bind}",
                f"--socket={self.workdir / 'mysqld.sock'}", f"--pid-file={self.workdir / 'pid'}",
                f"--log-error={self.workdir / 'error.log'}", "--innodb-buffer-pool-size=32M",
                "--character-set-server=utf8mb4", "--skip-name-resolve"]
        if self.binlog:
            argv += [f"--log-bin={self.workdir / 'data' / 'binlog'}", "--server-id=1",
                     "--binlog-format=ROW"]
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping_socket, 30, f"mariadbd on port {self.port}",
                   on_timeout=lambda: (self.workdir / "error.log").read_text(errors="replace"))
        if self.bind not in ("127.0.0.1", "localhost"):
            # mariadb-install-db's root is root@localhost: clients on another address need
            # their own account (the same passwordless root, as on loopback).
            self._socket_execute("CREATE USER IF NOT EXISTS 'root'@'%'",
                                 "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION")
        wait_until(self.ping, 10, f"mariadbd on {self.bind}:{self.port}")
        return self

    def _ping_socket(self) -> bool:
        try:
            self._socket_execute("SELECT 1")
            return True
        except Exception:  # not up yet (no socket, or not accepting)
            return False

    def _socket_execute(self, *statements: str) -> None:
        import MySQLdb

        conn = MySQLdb.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root",
                               connect_timeout=1)
        try:
            for statement in statements:
                conn.cursor().execute(statement)
        finally:
            conn.close()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()  # clean shutdown
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self.popen = None

    def destroy(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def execute(self, sql: str, database: str = "") -> list[tuple]:
        import MySQLdb

        conn = MySQLdb.connect(host=self.bind, port=self.port, user="root", db=database,
                               charset="utf8mb4", autocommit=True)
        try:
            cursor = conn.cursor()
            cursor.execute(sql)
            return list(cursor.fetchall() or [])
        finally:
            conn.close()

    def binlog_files(self) -> list[Path]:
        return sorted(p for p in self.datadir.glob("binlog.[0-9]*"))

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.destroy()
