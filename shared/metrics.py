"""Prometheus metrics, named exactly as the operations guide (§3.1) names them.

Multiprocess-safe: when ``PROMETHEUS_MULTIPROC_DIR`` is set (by ``docnum up``, or by the service
manager for ``docnum api``/``docnum worker``; never by the code that imports this), every gunicorn
worker and every Celery worker process writes its samples into that directory and the API's
``/metrics`` sums them (``api/routes_health.py``). Counters and histograms are summed over
processes; each gauge says below how its per-process values combine.

Three metrics are not stored per process but computed when ``/metrics`` is scraped, because
their truth lives outside the process: ``docnum_queue_depth`` and ``docnum_redis_memory_usage``
(the broker, ``api/metrics_collectors.py``) and ``docnum_sequence_utilization`` (the counters
table, :class:`UtilizationSnapshot`).
"""
from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence

import redis
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection

LOCK_BUCKETS = (1, 5, 10, 50, 100, 200, 500, 1000, 2000, 5000)
GENERATION_BUCKETS = (5, 10, 25, 50, 100, 200, 500, 1000, 2000, 5000)

lock_acquisition_duration = Histogram(
    "docnum_lock_acquisition_duration_ms",
    "Counter-row lock acquisition time in milliseconds (inside the allocation transaction)",
    ["project", "type"], buckets=LOCK_BUCKETS)
lock_acquisition_failures = Counter(
    "docnum_lock_acquisition_failures_total",
    "Total number of counter-row lock acquisition failures",
    ["project", "type", "reason"])
lock_acquisition_total = Counter(
    "docnum_lock_acquisition_total",
    "Total number of counter-row lock acquisitions attempted",
    ["project", "type"])
generation_duration = Histogram(
    "docnum_generation_duration_ms",
    "Document number generation time, request to response, in milliseconds",
    ["project", "type", "status"], buckets=GENERATION_BUCKETS)
# Observed once per counter key of each allocation batch (``observe_batch_retries``): one
# retried batch of n requests is one observation, not n.
retry_count = Histogram(
    "docnum_retry_count", "Number of transaction retries per generation",
    ["project", "type"], buckets=(0, 1, 2, 3, 5, 10))
# Set by the API process that answers a scrape (just before it collects), and whenever the front
# door sees Redis fail or recover: the most recent value across processes is the truth.
redis_connection_status = Gauge(
    "docnum_redis_connection_status", "Redis connection status (1=up, 0=down)",
    multiprocess_mode="mostrecent")
# Every process keeps its own pool's usage current (checkout/checkin events); the busiest live
# process is reported. "live": gunicorn's child_exit and the worker's shutdown drop a dead
# process's value, so a recycled worker cannot pin the gauge at its last reading.
db_connection_pool_usage = Gauge(
    "docnum_db_connection_pool_usage",
    "Database connection pool usage percentage (checked out / (pool size + max overflow))",
    multiprocess_mode="livemax")
# Every time the API finds Redis failing (``redis_failure_reason``: oom, refused, unreachable).
# Each sends issuing requests to the DB-only path for a moment.
redis_errors = Counter(
    "docnum_redis_errors_total",
    "Redis failures seen by the API (reason: oom, refused, unreachable)", ["reason"])
reservations_expired = Counter(
    "docnum_reservations_expired_total", "Reservations marked EXPIRED by the sweeper")
duplicate_collisions = Counter(
    "docnum_duplicate_number_collisions_total",
    "Requests refused because another template of the project rendered the same number",
    ["project"])

# Not in the operations guide: shard ownership changes (workers/ownership.py). cause: stalled
# (the owner's consumer made no progress and it stood down), lost (another worker adopted the
# shard while this one was paused or cut off), adopted, handed_back, reclaimed.
shard_handovers = Counter(
    "docnum_shard_handover_total", "Shard ownership changes, by shard queue and cause",
    ["queue", "cause"])

#: The metrics stored per process, in the order ``/metrics`` declares them.
PROCESS_METRICS = (lock_acquisition_duration, lock_acquisition_failures, lock_acquisition_total,
                   generation_duration, retry_count, redis_connection_status,
                   db_connection_pool_usage, redis_errors, reservations_expired,
                   duplicate_collisions, shard_handovers)


def declarations() -> list[Metric]:
    """HELP/TYPE families (no samples) of every per-process metric.

    In multiprocess mode a labelled metric exists in the files only once something observed it
    (``docnum_lock_acquisition_failures_total`` stays absent until the first failure); ``/metrics``
    declares the missing ones so that every metric of the guide is always listed.
    """
    return [metric.describe()[0] for metric in PROCESS_METRICS]


# -- allocation: lock and retry samples per counter key ----------------------------------------
def counter_labels(groups: Mapping[str, Sequence[object]]) -> list[tuple[str, str]]:
    """(project, type) of each counter key of an allocation batch, taken from the key's own
    requests: a batch spans several keys, and each key's samples carry its own labels."""
    labels = []
    for requests in groups.values():
        ctx = requests[0].context
        labels.append((ctx.project, ctx.correspondence_type or ""))
    return labels


def count_lock_attempts(labels: Iterable[tuple[str, str]]) -> None:
    """``docnum_lock_acquisition_total``: one attempt per counter key of the batch."""
    for project, ctype in labels:
        lock_acquisition_total.labels(project, ctype).inc()


def count_lock_failures(labels: Iterable[tuple[str, str]], reason: str) -> None:
    """``docnum_lock_acquisition_failures_total``: a failed batch attempt fails each of its keys."""
    for project, ctype in labels:
        lock_acquisition_failures.labels(project, ctype, reason).inc()


def observe_batch_retries(labels: Iterable[tuple[str, str]], retries: int) -> None:
    """``docnum_retry_count``: the retries a batch needed, once per counter key."""
    for project, ctype in labels:
        retry_count.labels(project, ctype).observe(retries)


def redis_failure_reason(exc: BaseException | None) -> str:
    """How Redis failed: ``oom`` (it answers but refuses writes: maxmemory reached),
    ``refused`` (it answers but refuses the command otherwise: a read-only replica, a failed
    snapshot with stop-writes-on-bgsave-error) or ``unreachable``."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "oom"
    if isinstance(exc, redis.exceptions.ResponseError):
        return "refused"
    return "unreachable"


# -- docnum_db_connection_pool_usage ------------------------------------------------------------
_tracked_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_tracked_lock = threading.Lock()


def _pool_usage(pool: Pool, returning: bool = False) -> float | None:
    """Percent of ``pool`` in use; None for pools without a fixed size (NullPool, StaticPool)."""
    try:
        size, overflow, out = pool.size(), pool._max_overflow, pool.checkedout()
    except AttributeError:
        return None
    capacity = size + max(overflow, 0)  # max_overflow -1 means unbounded: count the core only
    if returning:
        # The checkin event fires before the connection is back in the pool.
        out -= 1
    return 100.0 * max(out, 0) / capacity if capacity > 0 else None


def refresh_pool_usage(event_pool: Pool | None = None) -> float | None:
    """Set the gauge to the busiest tracked pool of this process; returns the value set."""
    values = []
    for engine in list(_tracked_engines):
        pool = engine.pool
        value = _pool_usage(pool, returning=pool is event_pool)
        if value is not None:
            values.append(value)
    if not values:
        return None
    value = max(values)
    db_connection_pool_usage.set(value)
    return value


def track_pool(engine: Engine) -> None:
    """Keep ``docnum_db_connection_pool_usage`` current for ``engine`` in this process.

    Cheap enough for every checkout: one mmap write in multiprocess mode. The listeners stay
    attached across ``engine.dispose()`` (SQLAlchemy carries pool events over to the new pool).
    """
    with _tracked_lock:
        if engine in _tracked_engines:
            return
        _tracked_engines.add(engine)

    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi: DBAPIConnection, _record: ConnectionPoolEntry,
                     _proxy: PoolProxiedConnection) -> None:
        refresh_pool_usage()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi: DBAPIConnection | None, _record: ConnectionPoolEntry) -> None:
        refresh_pool_usage(event_pool=engine.pool)

    refresh_pool_usage()


# -- docnum_sequence_utilization ----------------------------------------------------------------
class UtilizationSnapshot:
    """``docnum_sequence_utilization{counter_key}``: last_sequence / capacity, 0..1.

    Not a prometheus_client Gauge on purpose: the set of counter keys changes with every period
    (a new ``Y2026`` key each year, a new ``M2026-01`` each month) and multiprocess gauges can
    never drop a label, so old periods would be exported forever. Instead the whole set is
    replaced by each refresh (``docnum.shared.maintenance.refresh_utilization``: the beat job every
    minute in the maintenance worker, and the API at scrape time when its copy is older than
    ``MAX_AGE_S``) and collected from memory by ``/metrics``.
    """

    NAME = "docnum_sequence_utilization"
    HELP = "last_sequence / capacity of a counter key of a current period (0..1)"
    MAX_AGE_S = 30.0

    def __init__(self) -> None:
        self._values: dict[str, float] = {}
        self._refreshed: float | None = None     # time.monotonic() of the last publish
        self._attempted: float | None = None     # ... of the last refresh attempt, failed or not
        self._lock = threading.Lock()

    def publish(self, values: dict[str, float]) -> None:
        with self._lock:
            self._values = dict(values)
            self._refreshed = self._attempted = time.monotonic()

    def values(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def claim_refresh(self, max_age: float | None = None) -> bool:
        """True (once per ``max_age``) when the caller should refresh; never two at once."""
        max_age = self.MAX_AGE_S if max_age is None else max_age
        now = time.monotonic()
        with self._lock:
            if self._attempted is not None and now - self._attempted < max_age:
                return False
            self._attempted = now
            return True

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["counter_key"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["counter_key"])
        for key, value in sorted(self.values().items()):
            family.add_metric([key], value)
        return [family]


sequence_utilization = UtilizationSnapshot()


# -- one process's own samples (a worker scraped on its own port) -------------------------------
class _OwnSamples:
    """This process's metrics only: its own multiprocess files, or the in-process registry."""

    def collect(self) -> Iterable[Metric]:
        import glob
        import os

        from prometheus_client import REGISTRY
        from prometheus_client.multiprocess import MultiProcessCollector

        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return REGISTRY.collect()
        # Files are <type>[_<mode>]_<pid>.db; the '_' before the pid keeps 12 from matching 112.
        return MultiProcessCollector.merge(glob.glob(os.path.join(path, f"*_{os.getpid()}.db")))


def serve_process_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Export this process's own samples on ``http://address:port/metrics`` (a daemon thread).

    For a ``docnum worker`` that does not share ``PROMETHEUS_MULTIPROC_DIR`` with an API (one
    container per worker): Prometheus scrapes it directly. Never scrape a worker both ways, or
    its samples count twice.
    """
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(support_collectors_without_names=True)
    registry.register(_OwnSamples())
    start_http_server(port, addr=address, registry=registry)
