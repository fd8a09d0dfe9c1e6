"""Scrape-time collectors for ``/metrics``: values read from elsewhere when Prometheus asks.

They are registered on the per-request registry of ``/metrics`` (never on the global one: in
multiprocess mode nothing but samples in the files reaches another process).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable

import redis
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from docnum.shared import metrics, redis_urls
from docnum.shared.routing import MAINTENANCE_QUEUE, all_shard_queues
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

QUEUE_DEPTH = "docnum_queue_depth"
QUEUE_DEPTH_HELP = "Messages waiting in a queue, read from the broker at scrape time"
# A scrape must stay fast when Redis is slow or gone (Prometheus times out at 10 s).
SCRAPE_SOCKET_TIMEOUT_S = 1.0


def docnum_queues(settings: Settings) -> list[str]:
    return all_shard_queues(settings.queue_shards) + [MAINTENANCE_QUEUE]


class RedisQueueDepth:
    """``LLEN`` of every key kombu's Redis transport stores a queue's waiting messages under.

    kombu keeps one list per priority step (``priority_steps``, default ``[0, 3, 6, 9]``): step 0
    is the queue name itself, the others ``<queue>\\x06\\x16<step>``; ``global_keyprefix`` (if
    configured) prefixes them all. Messages a worker has fetched but not yet acknowledged sit in
    kombu's ``unacked`` hash, not in these lists, so they are not counted as waiting.
    """

    def __init__(self, client: redis.Redis, transport_options: dict | None = None) -> None:
        from kombu.transport.redis import PRIORITY_STEPS, Channel

        options = transport_options or {}
        self.client = client
        self.steps = sorted(options.get("priority_steps") or PRIORITY_STEPS)
        self.prefix = options.get("global_keyprefix") or ""
        self.sep = Channel.sep

    def keys(self, queue: str) -> list[str]:
        return [self.prefix + (f"{queue}{self.sep}{step}" if step else queue)
                for step in self.steps]

    def depths(self, queues: list[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for queue in queues:
            for key in self.keys(queue):
                pipe.llen(key)
        sizes = iter(pipe.execute())
        return {queue: sum(next(sizes) for _ in self.steps) for queue in queues}


class SqlQueueDepth:
    """The embedded default's broker: kombu's SQLAlchemy transport (visible messages)."""

    def __init__(self, engine: Engine, transport_options: dict | None = None) -> None:
        options = transport_options or {}
        self.engine = engine
        self.queue_table = options.get("queue_tablename", "kombu_queue")
        self.message_table = options.get("message_tablename", "kombu_message")

    def depths(self, queues: list[str]) -> dict[str, int]:
        counts = dict.fromkeys(queues, 0)
        from sqlalchemy import inspect

        if not inspect(self.engine).has_table(self.queue_table):
            return counts  # nothing was ever queued
        query = text(f"SELECT q.name, COUNT(m.id) FROM {self.queue_table} q "
                     f"JOIN {self.message_table} m ON m.queue_id = q.id AND m.visible = 1 "
                     "GROUP BY q.name")
        with self.engine.connect() as conn:
            for name, count in conn.execute(query):
                if name in counts:
                    counts[name] = int(count)
        return counts


class BrokerDown:
    """The source to use when the broker was just found unreachable."""

    def depths(self, _queues: list[str]) -> dict[str, int]:
        raise ConnectionError("the broker is unreachable")


class QueueDepthCollector:
    """``docnum_queue_depth{queue}`` for every shard queue and the maintenance queue.

    When the broker cannot be read the family is exported without samples: a stale depth would
    be a lie, and ``docnum_redis_connection_status`` already says why.
    """

    def __init__(self, source: Callable[[], object] | object, queues: list[str]) -> None:
        self._source = source
        self.queues = queues

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(QUEUE_DEPTH, QUEUE_DEPTH_HELP, labels=["queue"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(QUEUE_DEPTH, QUEUE_DEPTH_HELP, labels=["queue"])
        try:
            source = self._source() if callable(self._source) else self._source
            depths = source.depths(self.queues)
        except Exception as exc:  # a broken broker must not break the scrape
            log.info("queue depth not available: %s", exc)
            return [family]
        for queue in self.queues:
            family.add_metric([queue], depths.get(queue, 0))
        return [family]


REDIS_MEMORY = "docnum_redis_memory_usage"
REDIS_MEMORY_HELP = ("Redis used_memory as a percentage of maxmemory, read from the broker at "
                     "scrape time")


class RedisMemoryCollector:
    """``docnum_redis_memory_usage``: the broker's ``used_memory`` / ``maxmemory`` × 100.

    With ``maxmemory-policy noeviction`` (deploy/redis/redis.conf) Redis refuses every write at
    100 % and issuing falls back to the DB-only path, so the percentage is the warning before
    that. No sample when Redis cannot be read or sets no ``maxmemory`` (no limit to reach).
    """

    def __init__(self, source: Callable[[], object] | object) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(REDIS_MEMORY, REDIS_MEMORY_HELP)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(REDIS_MEMORY, REDIS_MEMORY_HELP)
        try:
            source = self._source() if callable(self._source) else self._source
            client = getattr(source, "client", None)
            info = client.info("memory") if client is not None else {}
        except Exception as exc:  # a broken broker must not break the scrape
            log.info("redis memory not available: %s", exc)
            return [family]
        used, limit = info.get("used_memory"), info.get("maxmemory")
        if used is not None and limit:
            family.add_metric([], 100.0 * float(used) / float(limit))
        return [family]


_sources: dict[str, object] = {}
_sources_lock = threading.Lock()


def queue_depth_source(settings: Settings, transport_options: dict) -> object:
    """One broker reader per broker URL per process (built lazily, after gunicorn forked)."""
    url = settings.broker_url
    with _sources_lock:
        source = _sources.get(url)
        if source is None:
            if redis_urls.is_redis_url(url):
                client = redis_urls.redis_client(url, master_name=settings.redis_sentinel_master,
                                                 socket_timeout=SCRAPE_SOCKET_TIMEOUT_S,
                                                 socket_connect_timeout=SCRAPE_SOCKET_TIMEOUT_S)
                source = RedisQueueDepth(client, transport_options)
            elif url.startswith("sqla+"):
                engine = create_engine(url[len("sqla+"):])
                source = SqlQueueDepth(engine, transport_options)
            else:
                raise ValueError(f"no queue-depth reader for broker {url.split(':')[0]}")
            _sources[url] = source
        return source


class _GlobalRegistry:
    """The process's own metrics (single-process mode) as one collector."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


class _MultiProcessFiles:
    """Samples of every process writing into ``PROMETHEUS_MULTIPROC_DIR``, summed, plus the
    declarations of metrics no process has observed yet."""

    def __init__(self, path: str) -> None:
        from prometheus_client import multiprocess

        self.inner = multiprocess.MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Metric]:
        seen = set()
        for family in self.inner.collect():
            seen.add(family.name)
            yield family
        for family in metrics.declarations():
            if family.name not in seen:
                yield family


def scrape_registry(extra: list[object]) -> CollectorRegistry:
    """A fresh registry for one scrape: process metrics (all processes when multiprocess) and
    the scrape-time collectors in ``extra``."""
    registry = CollectorRegistry(support_collectors_without_names=True)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry.register(_MultiProcessFiles(path) if path else _GlobalRegistry())
    for collector in extra:
        registry.register(collector)
    return registry
