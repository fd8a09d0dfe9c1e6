"""The lock design docnum replaces, runnable, so benchmarks can measure both side by side.

Benchmark-only code, not part of the installed package (docs/benchmarks.md#method says why).
Everything happens inside the HTTP handler, per request:

1. Redis ``SET lock:<counter_key> <token> NX PX 5000``; when taken, up to 5 retries, each after
   100 ms +/- 50 ms (uniform jitter); still taken: ``503 SERVICE_BUSY``.
2. MariaDB, one transaction per try: read the counter row (``last_sequence, version``), render
   the number, ``UPDATE ... SET last_sequence = last_sequence + 1, version = version + 1 WHERE
   counter_key = ? AND version = ?``; 0 rows updated: roll back, re-read, try again (3 tries,
   then ``503``). Then one ledger row and one audit row, ``COMMIT``.
3. Release the lock with a compare-and-delete Lua script (only while it still holds our token).

It answers ``POST /api/v1/document-numbering/generate`` with docnum's request body, JWT check
(``docnum.api.security``, HS256 with ``DOCNUM_JWT_SECRET``), ``Idempotency-Key`` check and
problem+json, and ``201 {"document_number", "sequence", ...}``, so ``docnum loadtest --target
lock`` drives it unchanged. Numbers come from one fixed template (the load generator's), rendered
by ``docnum.shared.templates``. Its tables (``lock_counters``, ``lock_ledger``, ``lock_audit``)
live beside docnum's in the same database and are created at start-up when missing.

Configuration: ``DOCNUM_DATABASE_URL`` (MariaDB), ``DOCNUM_JWT_SECRET``, ``DOCNUM_HOST``/``PORT``,
``DOCNUM_TIMEZONE``, gunicorn's ``DOCNUM_API_WORKERS``/``DOCNUM_API_THREADS``, and
``LOCK_DESIGN_REDIS_URL`` (default: ``DOCNUM_BROKER_URL``).

Run it behind the same gunicorn configuration as ``docnum api``::

    .venv/bin/python scripts/lock_design/app.py
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import redis
from flask import Flask, request
from flask.typing import ResponseReturnValue
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable
from werkzeug.exceptions import HTTPException

from docnum.api.contract import json_object
from docnum.api.http import json_response
from docnum.api.problems import problem_response
from docnum.api.security import current_principal, requires
from docnum.cli.loadtest import RESET, TEMPLATE
from docnum.shared import issuing, templates
from docnum.shared.clock import iso, to_db
from docnum.shared.context import NumberingContext
from docnum.shared.db import get_engine, is_unreachable, service_busy
from docnum.shared.errors import DocnumError
from docnum.shared.schemas import IdempotencyHeaders, parse
from docnum.shared.settings import Settings, get_settings

BASE = "/api/v1/document-numbering"
LOCK_TTL_MS = 5000
LOCK_RETRIES = 5
LOCK_RETRY_DELAY_S = (0.05, 0.15)  # 100 ms +/- 50 ms
VERSION_TRIES = 3
# Deletes the lock only while it still holds this request's token: a lock that expired and was
# taken by another request is not ours to delete.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

TIMESTAMP = mysql.DATETIME(fsp=6)
TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
              "mysql_engine": "InnoDB"}
metadata = MetaData()
# Column names match docnum's own tables where ``docnum loadtest`` verifies them.
lock_counters = Table(
    "lock_counters", metadata,
    Column("counter_key", String(300), primary_key=True),
    Column("project", String(30), nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", TIMESTAMP, nullable=False),
    Index("ix_lock_counters_project", "project"),
    **TABLE_ARGS,
)
lock_ledger = Table(
    "lock_ledger", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("document_number", String(64), nullable=False),
    Column("project", String(30), nullable=False),
    Column("counter_key", String(300), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("correspondence_type", String(30)),
    Column("originator", String(30)),
    Column("recipient", String(30)),
    Column("document_date", Date),
    Column("request_id", String(64), nullable=False),
    Column("idempotency_key", String(255)),
    Column("issued_by", String(255), nullable=False),
    Column("issued_at", TIMESTAMP, nullable=False),
    # The same unique keys as docnum's ledger: a number, a sequence and a request once.
    UniqueConstraint("project", "document_number", name="uq_lock_number_per_project"),
    UniqueConstraint("counter_key", "sequence", name="uq_lock_counter_sequence"),
    UniqueConstraint("request_id", name="uq_lock_request"),
    Index("ix_lock_ledger_document_number", "document_number"),
    **TABLE_ARGS,
)
lock_audit = Table(
    "lock_audit", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("operation", String(32), nullable=False),
    Column("actor", String(255)),
    Column("client_ip", String(64)),
    Column("user_agent", String(255)),
    Column("request_id", String(64)),
    Column("counter_key", String(300)),
    Column("document_number", String(64)),
    Column("before", JSON),
    Column("after", JSON),
    Column("lock_wait_ms", Integer),
    Column("duration_ms", Integer),
    Column("retry_count", Integer, nullable=False),
    Column("success", Boolean, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Index("ix_lock_audit_created", "created_at"),
    Index("ix_lock_audit_number", "document_number"),
    Index("ix_lock_audit_request", "request_id"),
    **TABLE_ARGS,
)


# The statements of the hot path, written once: building SQLAlchemy expressions per request would
# cost the baseline CPU that the replaced system's plain queries do not.
SELECT_COUNTER = "SELECT last_sequence, version FROM lock_counters WHERE counter_key = %s"
INSERT_COUNTER = ("INSERT IGNORE INTO lock_counters (counter_key, project, last_sequence, version, "
                  "updated_at) VALUES (%s, %s, 0, 0, %s)")
UPDATE_COUNTER = ("UPDATE lock_counters SET last_sequence = last_sequence + 1, "
                  "version = version + 1, updated_at = %s WHERE counter_key = %s AND version = %s")
INSERT_LEDGER = ("INSERT INTO lock_ledger (document_number, project, counter_key, sequence, "
                 "correspondence_type, originator, recipient, document_date, request_id, "
                 "idempotency_key, issued_by, issued_at) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
INSERT_AUDIT = ("INSERT INTO lock_audit (operation, actor, client_ip, user_agent, request_id, "
                "counter_key, document_number, `before`, `after`, lock_wait_ms, duration_ms, "
                "retry_count, success, created_at) "
                "VALUES ('GENERATE', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s)")


def create_tables(engine: Engine) -> None:
    """``CREATE TABLE/INDEX IF NOT EXISTS``: every gunicorn process runs it at start-up, and
    MariaDB serialises the DDL, so two processes starting together do not trip over it."""
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))


@dataclass(frozen=True)
class Issued:
    document_number: str
    sequence: int
    counter_key: str
    request_id: str
    issued_at: datetime
    document_date: date


def counter_busy(detail: str) -> DocnumError:
    return DocnumError("SERVICE_BUSY", detail, retry_after=1)


class LockDesign:
    """Number allocation of the replaced system: Redis lock, then optimistic version update."""

    def __init__(self, engine: Engine, client: redis.Redis, timezone: str) -> None:
        self.engine = engine
        self.redis = client
        self.timezone = timezone
        self.parsed = templates.validate_template(TEMPLATE, RESET)
        self._release = client.register_script(RELEASE_LUA)

    def issue(self, ctx: NumberingContext, actor: str, idempotency_key: str,
              client_ip: str | None, user_agent: str | None) -> Issued:
        day = issuing.period_day(ctx, datetime.now(UTC), self.timezone)
        counter_key = templates.counter_key(self.parsed, ctx, RESET, day)
        lock_key = f"lock:{counter_key}"
        token = uuid.uuid4().hex
        started = time.perf_counter()
        self._acquire(lock_key, token)
        lock_wait_ms = int((time.perf_counter() - started) * 1000)
        try:
            return self._allocate(ctx, day, counter_key, actor, idempotency_key, client_ip,
                                  user_agent, lock_wait_ms)
        finally:
            self._release(keys=[lock_key], args=[token])

    def _acquire(self, lock_key: str, token: str) -> None:
        for retry in range(LOCK_RETRIES + 1):
            if self.redis.set(lock_key, token, nx=True, px=LOCK_TTL_MS):
                return
            if retry < LOCK_RETRIES:
                time.sleep(random.uniform(*LOCK_RETRY_DELAY_S))
        raise counter_busy("the counter is locked by another request; try again")

    def _allocate(self, ctx: NumberingContext, day: date, counter_key: str, actor: str,
                  idempotency_key: str, client_ip: str | None, user_agent: str | None,
                  lock_wait_ms: int) -> Issued:
        started = time.perf_counter()
        for attempt in range(VERSION_TRIES):
            with self.engine.connect() as conn:
                transaction = conn.begin()
                last, version = self._read_counter(conn, ctx.project, counter_key)
                sequence = last + 1
                number = templates.render_number(self.parsed, ctx, sequence, day)
                templates.check_number_length(number)
                now = to_db(datetime.now(UTC))
                moved = conn.exec_driver_sql(UPDATE_COUNTER, (now, counter_key, version)).rowcount
                if moved != 1:  # someone moved it since the read: read again
                    transaction.rollback()
                    continue
                issued = Issued(number, sequence, counter_key, str(uuid.uuid4()), now, day)
                conn.exec_driver_sql(INSERT_LEDGER, (
                    number, ctx.project, counter_key, sequence, ctx.correspondence_type,
                    ctx.originator, ctx.recipient, ctx.document_date, issued.request_id,
                    idempotency_key, actor, now))
                after = {"last_sequence": sequence, "version": version + 1,
                         "context": ctx.to_dict()}
                conn.exec_driver_sql(INSERT_AUDIT, (
                    actor, client_ip, (user_agent or "")[:255] or None, issued.request_id,
                    counter_key, number,
                    json.dumps({"last_sequence": last, "version": version}),
                    json.dumps(after, ensure_ascii=False), lock_wait_ms,
                    int((time.perf_counter() - started) * 1000), attempt, now))
                transaction.commit()
                return issued
        raise counter_busy(f"the counter changed under each of {VERSION_TRIES} tries")

    @staticmethod
    def _read_counter(conn: Connection, project: str, counter_key: str) -> tuple[int, int]:
        row = conn.exec_driver_sql(SELECT_COUNTER, (counter_key,)).first()
        if row is not None:
            return row[0], row[1]
        # A new counter: IGNORE because a request whose lock expired may create it too; the
        # version check then settles which of them moves it.
        conn.exec_driver_sql(INSERT_COUNTER, (counter_key, project, to_db(datetime.now(UTC))))
        return 0, 0


def lock_redis_url(settings: Settings) -> str:
    return os.environ.get("LOCK_DESIGN_REDIS_URL") or settings.broker_url


def create_app(settings: Settings | None = None, redis_url: str | None = None) -> Flask:
    settings = settings or get_settings()
    # No pre-ping, like docnum's allocation path: a round trip per request saved for both.
    engine = get_engine(settings.database_url, pre_ping=False)
    create_tables(engine)
    client = redis.Redis.from_url(redis_url or lock_redis_url(settings), socket_timeout=5)
    design = LockDesign(engine, client, settings.timezone)
    app = Flask("lock_design")
    app.config["DOCNUM_SETTINGS"] = settings  # docnum.api.security reads the JWT settings here

    @app.post(f"{BASE}/generate")
    @requires("correspondence.create")
    def generate() -> ResponseReturnValue:
        # The same parsing and validation as docnum's /generate (shared/schemas.py).
        key = parse(IdempotencyHeaders, dict(request.headers.items())).idempotency_key
        ctx = issuing.parse_context(json_object(request))
        issued = design.issue(ctx, current_principal().sub, key, request.remote_addr,
                              request.headers.get("User-Agent"))
        return json_response({"document_number": issued.document_number,
                              "sequence": issued.sequence, "state": "CONFIRMED",
                              "counter_key": issued.counter_key,
                              "document_date": issued.document_date.isoformat(),
                              "issued_at": iso(issued.issued_at),
                              "request_id": issued.request_id}, 201)

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        client.ping()
        return json_response({"database": "ok", "redis": "ok", "design": "lock"})

    @app.errorhandler(DocnumError)
    def _docnum_error(error: DocnumError) -> ResponseReturnValue:
        return problem_response(error, request)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> ResponseReturnValue:
        code = "NOT_FOUND" if error.code == 404 else "BAD_REQUEST"
        return problem_response(DocnumError(code, error.description or ""), request)

    @app.errorhandler(DBAPIError)
    def _db_error(error: DBAPIError) -> ResponseReturnValue:
        if is_unreachable(error):
            return problem_response(service_busy(), request)
        app.logger.exception("database error")
        return problem_response(DocnumError("INTERNAL_ERROR", "a database error occurred"),
                                request)

    @app.errorhandler(redis.RedisError)
    def _redis_error(_error: redis.RedisError) -> ResponseReturnValue:
        return problem_response(counter_busy("the lock server cannot be reached"), request)

    return app


def gunicorn_argv(settings: Settings) -> list[str]:
    """``docnum api``'s gunicorn command line (its configuration file, the same bind), serving
    this app instead."""
    config = os.environ.get("DOCNUM_GUNICORN_CONFIG") or "python:docnum.api.gunicorn_conf"
    return [sys.executable, "-m", "gunicorn", "-c", config,
            "--bind", f"{settings.host}:{settings.port}",
            "--pythonpath", str(Path(__file__).resolve().parent), "app:create_app()"]


if __name__ == "__main__":
    argv = gunicorn_argv(get_settings())
    os.execv(argv[0], argv)
