"""What the front door knows about its servers: Redis (the queue) and the database.

``RedisHealth`` remembers a Redis failure for a moment so that requests go straight to the
DB-only path instead of each discovering the outage; ``DatabaseProbe`` answers "is the
database reachable?" cheaply enough to ask on the request path.
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from docnum.shared import metrics

log = logging.getLogger(__name__)


class RedisHealth:
    """Remembers a Redis failure for a moment so requests go straight to the DB-only path."""

    RETRY_AFTER_S = 2.0

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self, cause: BaseException | None = None) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.RETRY_AFTER_S
        metrics.redis_connection_status.set(0)
        metrics.redis_errors.labels(metrics.redis_failure_reason(cause)).inc()

    def mark_up(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
        metrics.redis_connection_status.set(1)


class DatabaseProbe:
    """Is the database reachable right now? A cheap, cached answer for the front door.

    With the reference data cached (shared/refcache.py) and Redis up, an issuing request never
    touches the database at the front door: during a database outage a ``/generate`` would
    queue, wait its whole timeout for a worker that is itself waiting for the database
    (``DB_OUTAGE_PATIENCE_S`` in shared/allocation.py) and answer 202. The front door asks this
    probe instead (``FrontDoor.check_database``).

    ``SELECT 1`` over a fresh connection (no pool: a pooled connection to a dead server is
    exactly what must not be trusted) with a 1 s connect timeout, at most once per
    ``INTERVAL_S`` per process; threads that ask while another thread probes wait for its
    answer. ``/readyz`` reports what it saw too (``observe``).
    """

    INTERVAL_S = 1.0
    CONNECT_TIMEOUT_S = 1

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self._engine = engine if url.startswith("sqlite") else None
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._down_seen_at = float("-inf")
        self.last_ok = True

    def _probe_engine(self) -> Engine:
        if self._engine is None:
            connect_args = {}
            if self.url.startswith(("mysql", "mariadb")):
                connect_args = {"connect_timeout": self.CONNECT_TIMEOUT_S,
                                "read_timeout": 2, "charset": "utf8mb4"}
            self._engine = create_engine(self.url, poolclass=NullPool,
                                         connect_args=connect_args)
        return self._engine

    def _check(self) -> bool:
        try:
            with self._probe_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any failure means "not reachable"
            return False

    def observe(self, ok: bool) -> None:
        """Record a result (a probe of ours, or ``/readyz``'s own check)."""
        if ok != self.last_ok:
            log.warning("database %s", "reachable again" if ok else "unreachable")
        now = time.monotonic()
        self.last_ok, self._checked_at = ok, now
        if not ok:
            self._down_seen_at = now

    def reachable(self) -> bool:
        if time.monotonic() - self._checked_at < self.INTERVAL_S:
            return self.last_ok
        # Stale: probe, or wait for the thread probing right now and share its answer (a stale
        # "up" would turn the first waiters of an outage into 202s). Bounded: a probe costs at
        # most its connect and read timeouts.
        if not self._lock.acquire(timeout=self.CONNECT_TIMEOUT_S + 3):
            return self.last_ok
        try:
            if time.monotonic() - self._checked_at >= self.INTERVAL_S:
                self.observe(self._check())
            return self.last_ok
        finally:
            self._lock.release()

    def down_within(self, seconds: float) -> bool:
        """Seen down by a probe in the last ``seconds``."""
        return time.monotonic() - self._down_seen_at < seconds
