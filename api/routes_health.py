"""Liveness, readiness, metrics and the OpenAPI document."""
from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import text

from api.http import json_response, services
from api.openapi import openapi_document
from shared import metrics

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    return json_response({"status": "ok"})


def _check_database() -> bool:
    try:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def _check_redis() -> bool | None:
    client = services().redis
    if client is None:
        return None
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False


@bp.get("/readyz")
def readyz():  # noqa: ANN201
    svc = services()
    database = _check_database()
    redis_ok = _check_redis()
    if redis_ok is None:  # embedded default: the broker and results live in SQLite files
        broker = result_backend = "ok" if database else "down"
        mode = "queue"
    else:
        broker = result_backend = "ok" if redis_ok else "down"
        mode = "queue" if redis_ok else "db-fallback"
        health = svc.frontdoor.health
        if redis_ok:
            health.mark_up()
        else:
            health.mark_down()
    body = {"database": "ok" if database else "down", "broker": broker,
            "result_backend": result_backend, "mode": mode}
    return json_response(body, 200 if database else 503)


@bp.get("/metrics")
def metrics_endpoint():  # noqa: ANN201
    if services().redis is not None:
        metrics.redis_connection_status.set(1 if _check_redis() else 0)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@bp.get("/api/v1/document-numbering/openapi.json")
def openapi():  # noqa: ANN201
    return json_response(openapi_document())
