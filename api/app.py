"""The Flask application factory: wiring only. Views live in ``api/routes_*.py``."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, Response, request
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from docnum.api.contract import BASE, init_contract
from docnum.api.frontdoor import FrontDoor, RedisHealth
from docnum.api.frontdoor.request_store import RedisRequestStore, SqlRequestStore
from docnum.api.frontdoor.waiter import PollingWaiter, PubSubWaiter
from docnum.api.problems import problem_response
from docnum.shared import redis_urls
from docnum.shared.clock import Clock, SystemClock
from docnum.shared.db import get_engine, is_unreachable, service_busy
from docnum.shared.errors import DocnumError
from docnum.shared.settings import Settings, get_settings
from docnum.workers.celery_app import make_celery

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

_HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND",
               405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
               415: "UNSUPPORTED_MEDIA_TYPE", 429: "RATE_LIMITED"}


@dataclass
class Services:
    settings: Settings
    engine: Engine
    read_engine: Engine
    celery: Celery
    frontdoor: FrontDoor
    clock: Clock
    redis: redis.Redis | None


def redis_client(url: str, *, master_name: str | None = None,
                 socket_timeout: float = 5.0) -> redis.Redis:
    """A redis-py client for a ``redis://`` URL or a kombu-style ``sentinel://`` list
    (``shared/redis_urls.py``; the workers' shard ownership lock uses the same function).

    Short timeouts on purpose: the front door must notice a dead Redis within one request and
    go to the DB-only path (docs/reference.md#failure-behaviour). A refused connection fails in
    about a millisecond; a host that does not answer costs at most the 2 s connect timeout.
    """
    return redis_urls.redis_client(url, master_name=master_name, socket_timeout=socket_timeout)


def build_services(settings: Settings, celery: Celery | None = None,
                   clock: Clock | None = None) -> Services:
    engine = get_engine(settings.database_url)
    read_engine = get_engine(settings.database_replica_url) if settings.database_replica_url \
        else engine
    celery = celery or make_celery(settings)
    client = None
    if redis_urls.is_redis_url(settings.result_backend):
        client = redis_client(settings.result_backend,
                              master_name=settings.redis_sentinel_master)
        store = RedisRequestStore(client, settings.idempotency_ttl)
        waiter = PubSubWaiter(client, store.result)
        health = RedisHealth()
    else:
        store = SqlRequestStore(engine, celery, settings.idempotency_ttl)
        waiter = PollingWaiter(store.result)
        health = None
    frontdoor = FrontDoor(settings, celery, engine, store, waiter, health)
    return Services(settings, engine, read_engine, celery, frontdoor, clock or SystemClock(),
                    client)


def create_app(settings: Settings | None = None, *, celery: Celery | None = None,
               clock: Clock | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("docnum")
    app.config["DOCNUM_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.extensions["docnum"] = build_services(settings, celery, clock)
    if settings.proxy_hops:
        # Client address for audit rows and the per-IP rate limit, as nginx saw it.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops)

    from docnum.api import (
        console,
        routes_admin,
        routes_health,
        routes_issuing,
        routes_lifecycle,
        routes_proofs,
        routes_reference,
    )
    from docnum.api.ratelimit import init_rate_limits

    init_contract(app)
    app.register_blueprint(routes_health.bp)
    app.register_blueprint(routes_issuing.bp, url_prefix=BASE)
    app.register_blueprint(routes_reference.bp, url_prefix=BASE)
    app.register_blueprint(routes_lifecycle.bp, url_prefix=BASE)
    app.register_blueprint(routes_admin.bp, url_prefix=BASE)
    app.register_blueprint(routes_proofs.bp, url_prefix=BASE)
    console.register(app, url_prefix="/console")  # the admin console
    init_rate_limits(app, settings)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DocnumError)
    def _docnum_error(error: DocnumError) -> Response:
        return problem_response(error, request)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        code = _HTTP_CODES.get(error.code or 500, "INTERNAL_ERROR")
        detail = error.description or ""
        if error.code == 413:
            detail = f"the request body is larger than {MAX_BODY_BYTES} bytes"
        response = problem_response(DocnumError(code, detail), request)
        # 405 must say what is allowed (RFC 9110 §15.5.6; found by schemathesis).
        allow = dict(error.get_headers()).get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(DBAPIError)
    def _db_error(error: DBAPIError) -> Response:
        if is_unreachable(error):
            log.warning("database unreachable: %s", type(error.orig).__name__)
            return problem_response(service_busy(), request)
        log.exception("database error")
        return problem_response(DocnumError("INTERNAL_ERROR", "a database error occurred"),
                                request)

    @app.errorhandler(PoolTimeoutError)
    def _pool_exhausted(error: PoolTimeoutError) -> Response:
        # Every pooled connection stayed busy for pool_timeout: the database is overloaded,
        # which the client sees like an outage: 503 SERVICE_BUSY with Retry-After.
        log.warning("database connection pool exhausted: %s", error)
        return problem_response(service_busy(), request)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(DocnumError("INTERNAL_ERROR", "an unexpected error occurred"),
                                request)
