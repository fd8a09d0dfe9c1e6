"""Putting an allocation message on a Redis shard queue with ONE ``LPUSH``.

``Celery.send_task`` costs about 0.8 ms of CPU per message here (measured: building the task
message, ``saferepr`` of the arguments, a kombu producer and channel, the queue declaration
check, and a new redis-py client object per publish) — more than everything else the front
door does for a request when each message carries a single request (many counter keys). The
message itself is small and fixed: Celery's task protocol 2 inside kombu's Redis envelope. This
publisher writes exactly that, as ``send_task(..., ignore_result=True)`` would, and pushes it
on the queue's list, which is all kombu's Redis transport does for a queue bound to the
default exchange. The shard workers consume it with Celery as usual (acks late, visibility
timeout, redelivery): nothing on the consuming side changes, and
``tests/integration/test_publisher.py`` checks the message field by field against one that
Celery itself published.

Brokers other than Redis keep ``FastFailPublisher``, which publishes through Celery.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import threading
import uuid

import redis
from celery import Celery
from kombu.connection import ConnectionPool

from docnum.shared import redis_urls
from docnum.shared.settings import Settings

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class RedisTaskPublisher:
    """Publishes Celery tasks (fire and forget) straight onto kombu Redis queue lists."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"

    def message(self, name: str, args: list, queue: str, kwargs: dict | None = None,
                task_id: str | None = None) -> bytes:
        task_id = task_id or str(uuid.uuid4())
        body = json.dumps([args, kwargs or {}, EMBED], ensure_ascii=False).encode("utf-8")
        count = len(args[0]) if args and isinstance(args[0], list) else len(args)
        envelope = {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py", "task": name, "id": task_id, "shadow": None, "eta": None,
                "expires": None, "group": None, "group_index": None, "retries": 0,
                "timelimit": [None, None], "root_id": task_id, "parent_id": None,
                # Flower shows these; a batch of 200 requests would make a huge repr.
                "argsrepr": f"<{count} request(s)>",
                "kwargsrepr": repr(kwargs or {}),
                "origin": self.origin, "ignore_result": True, "replaced_task_nesting": 0,
                "stamped_headers": None, "stamps": {},
            },
            "properties": {
                "correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
                "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
            },
        }
        return json.dumps(envelope).encode("utf-8")

    def send(self, name: str, args: list, queue: str, kwargs: dict | None = None) -> None:
        # Priority 0 lives on the list named after the queue (kombu's ``_q_for_pri``).
        self.redis.lpush(queue, self.message(name, args, queue, kwargs))


class FastFailPublisher:
    """Publishes allocation messages over connections that give up after ONE connect attempt.

    ``send_task(retry=False)`` alone is not enough: before publishing, kombu re-establishes a
    dropped broker connection through ``Connection.default_channel``, which retries for
    ``broker_connection_timeout`` (4 s) with 2 s sleeps: about 6 s per request, measured, while
    Redis is down. ``max_retries: 0`` in these connections' transport options makes that a
    single attempt (a refused connection fails in ~1 ms), and a short socket timeout bounds a
    Redis that accepts but does not answer. The workers' connections keep Celery's patient
    reconnect behaviour; only the API's publishing path is impatient.
    """

    TRANSPORT_OPTIONS = {"max_retries": 0, "socket_connect_timeout": 2, "socket_timeout": 3}
    POOL_LIMIT = 64  # above gunicorn's threads per process, so acquire never waits

    def __init__(self, celery: Celery) -> None:
        self.celery = celery
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _connections(self) -> ConnectionPool:  # built lazily (after fork)
        with self._lock:
            if self._pool is None:
                connection = self.celery.connection_for_write(
                    transport_options=self.TRANSPORT_OPTIONS)
                self._pool = connection.Pool(limit=self.POOL_LIMIT)
            return self._pool

    def send(self, name: str, args: list, queue: str, kwargs: dict | None = None) -> None:
        with self._connections().acquire(block=True, timeout=5) as connection:
            self.celery.send_task(name, args=args, kwargs=kwargs, queue=queue,
                                  ignore_result=True, retry=False, connection=connection)


def make_publisher(settings: Settings, celery: Celery) -> RedisTaskPublisher | FastFailPublisher:
    """One ``LPUSH`` per message on a Redis broker (``api/frontdoor/publisher.py``), else kombu."""
    if redis_urls.is_redis_url(settings.broker_url):
        client = redis_urls.redis_client(settings.broker_url,
                                         master_name=settings.redis_sentinel_master,
                                         socket_timeout=3.0)
        return RedisTaskPublisher(client)
    return FastFailPublisher(celery)
