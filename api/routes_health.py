"""Liveness, readiness, metrics and the OpenAPI document."""
from __future__ import annotations

import logging

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from docnum.api.contract import BASE, PUBLIC, Answers, contract, openapi_document
from docnum.api.http import json_response, services
from docnum.api.metrics_collectors import (
    BrokerDown,
    QueueDepthCollector,
    RedisMemoryCollector,
    docnum_queues,
    queue_depth_source,
    scrape_registry,
)
from docnum.shared import maintenance, metrics
from docnum.shared.schemas import Health, OpenAPIDocument, Readiness

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@contract.validate(resp=Answers(HTTP_200=(Health, "The process answers"), problems=(500,)),
                   security=PUBLIC,
                   operation_id="healthz", tags=["health"])
def healthz() -> Response:
    """Liveness."""
    return json_response({"status": "ok"})


def _check_database() -> bool:
    try:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not reachable"
        return False


# Written (with a short expiry) by every readiness check: PING alone is not enough, a Redis at
# maxmemory (noeviction) still answers it while it refuses every write the front door needs.
PROBE_KEY = "docnum:ready-probe"


def _check_redis() -> str | None:
    """``ok``, ``degraded`` (Redis answers but refuses writes: out of memory, a read-only
    replica, a failed snapshot with stop-writes-on-bgsave-error) or ``down``; None when there
    is no Redis.

    Tells the front door what was seen: a failure starts (or extends) a DB-only spell and is
    counted in ``docnum_redis_errors_total``; a success ends the spell at once.
    """
    svc = services()
    if svc.redis is None:
        return None
    failure: BaseException | None = None
    try:
        svc.redis.set(PROBE_KEY, "1", ex=60)
    except Exception as exc:  # any failure means "not usable"
        failure = exc
    health = svc.frontdoor.health
    if health is not None:
        # Also sets docnum_redis_connection_status.
        if failure is None:
            health.mark_up()
        else:
            health.mark_down(failure)
    if failure is None:
        return "ok"
    return "down" if metrics.redis_failure_reason(failure) == "unreachable" else "degraded"


@bp.get("/readyz")
@contract.validate(resp=Answers(HTTP_200=(Readiness, "Ready"),
                                HTTP_503=(Readiness, "The database is down"),
                                problems=(500,)),
                   security=PUBLIC, operation_id="readyz", tags=["health"])
def readyz() -> Response:
    """Readiness: the database, the broker and the result backend."""
    database = _check_database()
    # What a load balancer's probe saw helps the front door answer 503 during an outage.
    services().frontdoor.db_probe.observe(database)
    redis_state = _check_redis()
    if redis_state is None:  # embedded default: the broker and results live in SQLite files
        broker = result_backend = "ok" if database else "down"
        mode = "queue"
    else:
        broker = result_backend = redis_state
        mode = "queue" if redis_state == "ok" else "db-fallback"
    body = {"database": "ok" if database else "down", "broker": broker,
            "result_backend": result_backend, "mode": mode}
    return json_response(body, 200 if database else 503)


def _refresh_utilization() -> None:
    """Re-read the counters table when this process's copy is older than 30 s (one thread at a
    time; a failure keeps the previous values and is retried 30 s later)."""
    if not metrics.sequence_utilization.claim_refresh():
        return
    try:
        maintenance.refresh_utilization(services().read_engine)
    except Exception as exc:  # the database may be down; the scrape goes on
        log.info("sequence utilization not refreshed: %s", exc)


@bp.get("/metrics")
@contract.validate(resp=Answers(text={200: "Prometheus text exposition format"},
                                problems=(500,)),
                   security=PUBLIC, operation_id="metrics", tags=["health"])
def metrics_endpoint() -> Response:
    """Prometheus metrics (docs/operations.md)."""
    svc = services()
    redis_state = _check_redis()
    if redis_state is None:
        # Embedded default: no Redis to lose; the queue lives in the SQLite broker.
        metrics.redis_connection_status.set(1)
    metrics.refresh_pool_usage()
    _refresh_utilization()
    options = dict(svc.celery.conf.broker_transport_options or {})
    # With Redis just seen down, export the families without samples instead of waiting again
    # (a Redis that refuses writes still answers reads: its depths and memory are exported).
    source = BrokerDown() if redis_state == "down" else \
        (lambda: queue_depth_source(svc.settings, options))
    collectors = [metrics.sequence_utilization,
                  QueueDepthCollector(source, docnum_queues(svc.settings))]
    if redis_state is not None:
        collectors.append(RedisMemoryCollector(source))
    return Response(generate_latest(scrape_registry(collectors)),
                    content_type=CONTENT_TYPE_LATEST)


@bp.get(f"{BASE}/openapi.json")
@contract.validate(resp=Answers(HTTP_200=(OpenAPIDocument, "OpenAPI 3.1"), problems=(500,)),
                   security=PUBLIC,
                   operation_id="openapi", tags=["health"])
def openapi() -> Response:
    """This document."""
    return json_response(openapi_document())
