"""``docnum up``: run the API, the shard workers, the maintenance worker and beat together.

Each child is restarted with backoff when it dies; Ctrl-C or SIGTERM stops them all. If one
child keeps crashing (``MAX_RESTARTS`` within ``RESTART_WINDOW_S``) everything stops and the
supervisor exits non-zero, so a broken deployment is loud rather than flapping forever.

On the embedded default the private Redis (shared/embedded_redis.py) is one more child, marked
``infrastructure``: it starts first and the others only once it answers, it is restarted like
any child when it dies, and it stops last, after every process that uses it has exited.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from docnum.shared.embedded_redis import EmbeddedRedis, ping

log = logging.getLogger("docnum.up")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 60.0  # an infrastructure child loading a large append-only file


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0
    # Started before and stopped after every other child; ``ready`` says when it serves.
    infrastructure: bool = False
    ready: Callable[[], bool] | None = None

    def start(self, env: dict[str, str]) -> None:
        # Its own process group: stopping the child also reaches what it forked (gunicorn's
        # workers), so nothing outlives `docnum up` holding a port.
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True)
        log.info("started %s (pid %d)", self.name, self.process.pid)


class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str]) -> None:
        self.children = children
        self.env = env
        self.stopping = False

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True

    def _wait_ready(self, child: Child) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stopping and time.monotonic() < deadline:
            if child.process is None or child.process.poll() is not None:
                log.error("%s exited before it was ready", child.name)
                return False
            if child.ready is None or child.ready():
                log.info("%s is ready", child.name)
                return True
            time.sleep(0.05)
        if not self.stopping:
            log.error("%s was not ready within %.0f s", child.name, READY_TIMEOUT_S)
        return False

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        ordered = sorted(self.children, key=lambda c: not c.infrastructure)
        for child in ordered:
            child.start(self.env)
            if child.infrastructure and not self._wait_ready(child):
                self.stop_all()
                return 0 if self.stopping else 1
        exit_code = 0
        while not self.stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    if now >= child.next_start and not self.stopping:
                        child.start(self.env)
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                _kill_group(child.process.pid)  # its forks die with it (a port stays free)
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S]
                child.restarts.append(now)
                if len(child.restarts) > MAX_RESTARTS:
                    log.error("%s exited with %s and keeps crashing (%d times in %.0fs); giving up",
                              child.name, code, len(child.restarts), RESTART_WINDOW_S)
                    self.stopping, exit_code = True, 1
                    break
                delay = min(0.5 * 2 ** (len(child.restarts) - 1), 10.0)
                log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)
                child.process, child.next_start = None, now + delay
        self.stop_all()
        return exit_code

    def stop_all(self) -> None:
        # The services first, then what they use (the private Redis): a worker stopping
        # acknowledges its last message, the API answers what it holds.
        self._stop([c for c in self.children if not c.infrastructure])
        self._stop([c for c in self.children if c.infrastructure])
        log.info("all stopped")

    def _stop(self, children: list[Child]) -> None:
        running = [c for c in children if c.process and c.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
        for child in children:
            if child.process is not None:
                _kill_group(child.process.pid)  # stragglers of the group, e.g. orphaned forks
                if child.process.poll() is None:
                    child.process.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def shard_groups(shards: int, processes: int) -> list[list[int]]:
    """Spread shards over worker processes; every shard lands in exactly one group."""
    processes = max(1, min(processes, shards))
    return [list(range(i, shards, processes)) for i in range(processes)]


def docnum_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "docnum.cli.main", *args]


def build_children(shards: int, worker_processes: int, with_beat: bool = True,
                   private_redis: EmbeddedRedis | None = None) -> list[Child]:
    children = []
    if private_redis is not None:
        children.append(Child("redis", docnum_argv("redis"), infrastructure=True,
                              ready=lambda: ping(private_redis.socket)))
    children.append(Child("api", docnum_argv("api")))
    run = uuid.uuid4().hex[:8]
    for group in shard_groups(shards, worker_processes):
        label = ",".join(map(str, group))
        # A child is restarted only after it exited: with Redis, its replacement may take over
        # its shard ownership keys at once (same slot) instead of being refused until they
        # expire (workers/ownership.py).
        slot = f"up-{run}-" + "-".join(map(str, group))
        children.append(Child(f"worker[{label}]", docnum_argv(
            "worker", "--shards", label, "--owner-instance", slot)))
    children.append(Child("maintenance", docnum_argv("worker", "--maintenance")))
    if with_beat:
        children.append(Child("beat", docnum_argv("beat")))
    return children


def run_up(shards: int, worker_processes: int, metrics_dir: str,
           private_redis: EmbeddedRedis | None = None) -> int:
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    supervisor = Supervisor(build_children(shards, worker_processes,
                                           private_redis=private_redis), env)
    return supervisor.run()
