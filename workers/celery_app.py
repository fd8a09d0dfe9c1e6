"""The Celery application: queues, routing and the settings that make redelivery safe.

``celery -A docnum.workers.celery_app worker ...`` and ``docnum worker`` both load ``app`` from
here.
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from docnum.shared import redis_urls
from docnum.shared.db import get_engine
from docnum.shared.routing import MAINTENANCE_QUEUE, all_shard_queues
from docnum.shared.settings import Settings, get_settings
from docnum.workers import embedded, maintenance

# A SIGKILLed worker's unacknowledged messages go back to their queue once they are older than
# DOCNUM_VISIBILITY_TIMEOUT (default 45 s); every live worker sweeps for them every
# RESTORE_INTERVAL_S, so redelivery happens within ~50 s. Shorter re-runs messages that are merely
# slow or waiting in a prefetch buffer: harmless (allocation is idempotent on the request id)
# but wasted work.
RESTORE_INTERVAL_S = 5


def celery_config(settings: Settings) -> dict:
    embedded.register()
    transport_options: dict = {}
    backend_options: dict = {}
    if settings.uses_redis:
        transport_options = {"visibility_timeout": settings.visibility_timeout,
                             "unacked_restore_interval": RESTORE_INTERVAL_S,
                             # kombu scans only every Nth sweep by default (10 x 10 s)
                             "unacked_restore_throttle": 1,
                             "socket_connect_timeout": 2, "socket_timeout": 10}
        backend_options = {"visibility_timeout": settings.visibility_timeout}
        if settings.redis_sentinel_master:
            # sentinel://…;sentinel://… URLs: kombu and Celery ask the Sentinels for this
            # master on every (re)connect, so both follow a failover. The URL's password is
            # the master's; the Sentinels are asked without one, with short timeouts (Celery's
            # backend would otherwise wait on a silent Sentinel without a limit).
            for options in (transport_options, backend_options):
                options["master_name"] = settings.redis_sentinel_master
                options["sentinel_kwargs"] = redis_urls.sentinel_kwargs()
    queues = [Queue(name) for name in all_shard_queues(settings.queue_shards)]
    queues.append(Queue(MAINTENANCE_QUEUE))
    return {
        "broker_url": embedded.broker_url(settings.broker_url),
        "result_backend": settings.result_backend,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "broker_connection_retry_on_startup": True,
        "task_queues": queues,
        "task_default_queue": MAINTENANCE_QUEUE,
        "task_create_missing_queues": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Crontab schedules (workers/maintenance.py) read in the deployment's time zone:
        # the nightly jobs run at night where the users are, outside office hours.
        "timezone": settings.timezone,
        "enable_utc": True,
        # Late ack: a message is acknowledged only after its transaction committed, so a crash
        # mid-task redelivers it; the ledger's unique request id makes the retry return the
        # number already issued.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One solo consumer per shard serves its FIFO queue in order whatever the prefetch;
        # a few prefetched messages keep the worker busy without widening redelivery much.
        "worker_prefetch_multiplier": 4,
        "worker_soft_shutdown_timeout": 10,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "result_expires": 86400,
        "result_extended": False,
        "task_ignore_result": True,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "beat_schedule": maintenance.beat_schedule(),
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("docnum", set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.conf.docnum_settings = settings
    # Importing the task modules registers their tasks on this app.
    from docnum.workers import tasks

    tasks.register(celery)
    maintenance.register(celery)
    # On Redis, the worker's shard queues are served by the ShardConsumer, not by kombu.
    from docnum.workers.shard_consumer import ShardConsumerStep

    celery.steps["consumer"].add(ShardConsumerStep)
    # docnum_db_connection_pool_usage exists in this process from the start: get_engine counts
    # each engine it makes (this one is the maintenance tasks'; nothing connects yet).
    get_engine(settings.database_url)
    return celery


def __getattr__(name: str) -> Celery:
    # ``celery -A docnum.workers.celery_app`` looks up ``app``; build it on first use, from the
    # environment, so that importing this module has no side effects.
    if name == "app":
        globals()["app"] = make_celery()
        return globals()["app"]
    raise AttributeError(name)
