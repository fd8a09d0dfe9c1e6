"""Fixtures: a private MariaDB database and Redis DBs per test session, the real Celery worker
(in a thread) and the Flask app, plus helpers to mint tokens and seed the catalog.

``DOCNUM_TEST_DATABASE_URL`` (a MariaDB server URL) and ``DOCNUM_TEST_REDIS_URL`` come from
``./scripts/test``; each session creates its own database ``docnum_t_<random>`` and drops it.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from sqlalchemy import ColumnElement, create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

from docnum.shared.auth import PERMISSIONS, mint_token
from docnum.shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.test import TestResponse

pytest_plugins = ("celery.contrib.pytest",)

BASE = "/api/v1/document-numbering"
ALL_PERMS = list(PERMISSIONS)
JWT_SECRET = "test-secret-" + "x" * 40
TABLES = ("reset_approvals", "reset_requests", "config_history", "document_numbers",
          "audit_log", "audit_log_archive", "counters", "numbering_configs", "catalog_entries",
          "maintenance_locks", "request_registry", "chain_heads", "checkpoints",
          "checkpoint_leaves", "chain_backfills")


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> object:
    """Poll until ``predicate`` returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def server_db_url() -> str:
    return os.environ.get("DOCNUM_TEST_DATABASE_URL",
                          "mysql+mysqldb://root@127.0.0.1:3306/test?charset=utf8mb4")


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    return os.environ.get("DOCNUM_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


@contextmanager
def throwaway_database(server_url: str, prefix: str, revision: str = "head") -> Iterator[str]:
    """A new MariaDB database on ``server_url``, migrated to ``revision``; dropped when the
    block ends."""
    from docnum.shared.db import dispose_engines
    from docnum.shared.migrate import upgrade

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url, revision)
        yield url
    finally:
        dispose_engines(url)
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(server_db_url: str) -> Iterator[str]:
    """A fresh MariaDB database for this session, migrated to head."""
    with throwaway_database(server_db_url, "docnum_t") as url:
        yield url


CLAIM_KEY = "docnum:test-claim"


def claim_redis_dbs(base_url: str, count: int) -> list[str]:
    """Claim ``count`` empty Redis DBs (1-15) for this process; released (flushed) after.

    Several test sessions may share the machine's Redis (a developer's run beside CI's): each
    takes DBs nobody else holds (``SET NX`` of a claim key with a TTL) instead of fixed numbers.
    """
    claimed: list[str] = []
    for db in range(1, 16):
        client = redis_lib.Redis.from_url(f"{base_url}/{db}")
        holder = f"{os.getpid()}:{uuid.uuid4().hex}"
        if client.set(CLAIM_KEY, holder, nx=True, ex=3600):
            if client.dbsize() != 1:  # somebody else's data (a running service): not ours
                client.delete(CLAIM_KEY)
                continue
            claimed.append(f"{base_url}/{db}")
            if len(claimed) == count:
                return claimed
    release_redis_dbs(claimed)
    raise RuntimeError(f"no {count} free Redis DBs among 1-15 on {base_url}")


def release_redis_dbs(urls: list[str]) -> None:
    for url in urls:
        redis_lib.Redis.from_url(url).flushdb()  # our data and our claim


@pytest.fixture(scope="session")
def redis_dbs(redis_base_url: str) -> Iterator[tuple[str, str]]:
    """Broker and result backend DBs of this session, claimed, emptied after."""
    broker, backend = claim_redis_dbs(redis_base_url, 2)
    yield broker, backend
    release_redis_dbs([broker, backend])


@pytest.fixture
def fresh_redis_dbs(redis_base_url: str) -> Iterator[Callable[[int], list[str]]]:
    """For tests that need Redis DBs of their own (a second app, a subprocess worker)."""
    taken: list[str] = []

    def take(count: int = 2) -> list[str]:
        urls = claim_redis_dbs(redis_base_url, count)
        taken.extend(urls)
        return urls

    yield take
    release_redis_dbs(taken)


def make_settings(database_url: str, broker: str, backend: str, var_dir: Path,
                  **extra: str) -> Settings:
    env = {"DOCNUM_DATABASE_URL": database_url, "DOCNUM_BROKER_URL": broker,
           "DOCNUM_RESULT_BACKEND": backend, "DOCNUM_JWT_SECRET": JWT_SECRET,
           "DOCNUM_VAR_DIR": str(var_dir), "DOCNUM_QUEUE_SHARDS": "4",
           "DOCNUM_VISIBILITY_TIMEOUT": "5",
           # Rate limits are tested on their own app (test_ratelimit.py); elsewhere they must
           # never get in the way.
           "DOCNUM_RATE_LIMIT_USER": "1000000/minute", "DOCNUM_RATE_LIMIT_IP": "1000000/minute",
           **extra}
    return load_settings(env)


def signing_key_file(directory: Path) -> Path:
    """A fresh Ed25519 checkpoint-signing key (PKCS#8 PEM) in ``directory``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = directory / "signing_key.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


@pytest.fixture(scope="session")
def settings(database_url: str, redis_dbs: tuple[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var_dir = tmp_path_factory.mktemp("var")
    return make_settings(database_url, *redis_dbs, var_dir,
                         DOCNUM_SIGNING_KEY_FILE=str(signing_key_file(var_dir)))


@pytest.fixture(scope="session")
def celery_session_app(settings: Settings):  # overrides the contrib fixture
    from docnum.workers.celery_app import make_celery

    app = make_celery(settings)
    app.set_current()
    yield app


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app, settings: Settings):
    """The real worker, in a thread, consuming every shard queue (celery.contrib.testing)."""
    from celery.contrib.testing.worker import start_worker

    from docnum.shared.routing import MAINTENANCE_QUEUE, all_shard_queues

    queues = ",".join(all_shard_queues(settings.queue_shards) + [MAINTENANCE_QUEUE])
    with start_worker(celery_session_app, pool="solo", concurrency=1, queues=queues,
                      perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker


@pytest.fixture(scope="session")
def app(settings: Settings, celery_session_app, celery_session_worker):
    from docnum.api.app import create_app

    flask_app = create_app(settings, celery=celery_session_app)
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(autouse=True)
def answers_match_the_document() -> Iterator[None]:
    """Every answer of the API in this test matches the OpenAPI document
    (tests/contract_check.py)."""
    from tests.contract_check import ContractCheck

    with ContractCheck() as check:
        yield
    assert not check.failures, "answers that break the OpenAPI document:\n" + "\n".join(
        check.failures)


@pytest.fixture
def engine(database_url: str):
    from docnum.shared.db import get_engine

    return get_engine(database_url)


@pytest.fixture(autouse=True)
def clean_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty every table (and the request store) before each test that uses the database."""
    if "database_url" not in request.fixturenames:
        yield
        return
    engine = request.getfixturevalue("engine")
    if "redis_dbs" in request.fixturenames:
        # An earlier test's queued request must not be served after this cleanup (into the
        # next test's empty ledger): wait until every shard queue and processing list is empty.
        broker_url, _ = request.getfixturevalue("redis_dbs")
        _wait_for_idle_shards(broker_url, request.getfixturevalue("settings").queue_shards)
    with engine.begin() as conn:
        conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
        for table in TABLES:
            conn.execute(text(f"DELETE FROM `{table}`"))
        conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
    if "redis_dbs" in request.fixturenames:
        _, backend = request.getfixturevalue("redis_dbs")
        client = redis_lib.Redis.from_url(backend)
        # Forget earlier tests' answers and request records, but keep holding the DB.
        stale = [k for k in client.scan_iter(count=1000) if k != CLAIM_KEY.encode()]
        if stale:
            client.delete(*stale)
        bump_reference_generation(backend)
    yield


def _wait_for_idle_shards(broker_url: str, shards: int) -> None:
    from docnum.shared.routing import all_shard_queues
    from docnum.workers.shard_queues import processing_key

    client = redis_lib.Redis.from_url(broker_url)
    keys = [k for q in all_shard_queues(shards) for k in (q, processing_key(q))]
    wait_for(lambda: not client.exists(*keys), timeout=15, message="the shard queues to drain")


def bump_reference_generation(backend_url: str) -> None:
    """Tests write catalog and configs behind the API's back: tell its caches (refcache)."""
    from docnum.shared.refcache import bump_generation

    bump_generation(redis_lib.Redis.from_url(backend_url))


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    def make(sub: str = "alice", perms: list[str] | None = None,
             roles: list[str] | None = None, ttl: int = 3600) -> str:
        return mint_token(settings, sub, ALL_PERMS if perms is None else perms, roles or [], ttl)

    return make


@pytest.fixture
def auth(token) -> Callable[..., dict]:
    """Headers for a user: ``auth()`` has every permission; ``auth(perms=[...])`` fewer."""

    def headers(sub: str = "alice", perms: list[str] | None = None,
                roles: list[str] | None = None, key: str | None = None,
                **extra: str) -> dict:
        out = {"Authorization": f"Bearer {token(sub, perms, roles)}"}
        out["Idempotency-Key"] = key or uuid.uuid4().hex
        out.update(extra)
        return out

    return headers


CATALOG = {
    "project": ["LCBP3", "P2"],
    "organization": ["คคง.", "สคฉ.3", "ผรม.1", "TEAM-A", "TEAM-B"],
    "correspondence_type": ["LETTER", "MEMO", "RFI", "RFA", "TRANSMITTAL"],
    "sub_type": ["21"],
    "rfa_type": ["RPT"],
    "discipline": ["TER", "STR"],
}
LETTER_TEMPLATE = "{ORIGINATOR}-{RECIPIENT}-{SEQ:4}-{YEAR:B.E.}"
VECTOR_CONFIGS = {
    "LETTER": (LETTER_TEMPLATE, "YEARLY"),
    "MEMO": (LETTER_TEMPLATE, "YEARLY"),
    "RFI": ("{PROJECT}-{ORIGINATOR}-{RECIPIENT}-{CORR_TYPE}-{SEQ:4}-{YY:B.E.}", "YEARLY"),
    "RFA": ("{PROJECT}-{CORR_TYPE}-{DISCIPLINE}-{RFA_TYPE}-{SEQ:4}-{REV}", "NONE"),
    "TRANSMITTAL": ("{ORIGINATOR}-{RECIPIENT}-{SUB_TYPE}-{SEQ:4}-{YEAR:B.E.}", "YEARLY"),
}


@pytest.fixture
def seed(engine, settings) -> Callable[..., dict[str, int]]:
    """Load the test catalog and the SPEC vector configs straight through the services."""
    from docnum.shared.catalog import upsert_entry
    from docnum.shared.clock import SystemClock
    from docnum.shared.configs import insert_config
    from docnum.shared.db import transaction

    def run(configs: dict[str, tuple[str, str]] | None = None,
            project: str = "LCBP3") -> dict[str, int]:
        now = SystemClock().now()
        ids: dict[str, int] = {}
        with transaction(engine) as session:
            for kind, codes in CATALOG.items():
                for code in codes:
                    upsert_entry(session, kind, code, f"{kind} {code}", True, now)
            for ctype, (template, reset) in (VECTOR_CONFIGS if configs is None
                                             else configs).items():
                body = {"project": project, "correspondence_type": ctype, "template": template,
                        "reset": reset}
                ids[ctype] = insert_config(session, body, "seed", now).id
        bump_reference_generation(settings.result_backend)
        return ids

    return run


def letter(**overrides: object) -> dict:
    body = {"project": "LCBP3", "correspondence_type": "LETTER", "originator": "คคง.",
            "recipient": "สคฉ.3", "document_date": "2025-06-15"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def generate(client: FlaskClient, auth: Callable[..., dict], body: dict,
             **headers: str) -> TestResponse:
    """``POST /generate`` of ``body`` (waiting up to 10 s for the number) as the user
    ``auth(**headers)`` names: the response, whatever its status."""
    return client.post(f"{BASE}/generate?timeout=10", json=body, headers=auth(**headers))


def generated(client: FlaskClient, auth: Callable[..., dict], body: dict,
              **headers: str) -> dict:
    """``generate`` that must succeed: the issued-number object."""
    response = generate(client, auth, body, **headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def reserve(client: FlaskClient, auth: Callable[..., dict], body: dict,
            **headers: Any) -> dict:
    """``POST /reserve`` of ``body`` as the user ``auth(**headers)`` names, which must
    succeed: the reserved number with its reservation token."""
    response = client.post(f"{BASE}/reserve?timeout=10", json=body, headers=auth(**headers))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def count(engine: Engine, model: type, *where: ColumnElement[bool]) -> int:
    """How many rows of ``model``'s table match ``where``."""
    from docnum.shared.db import transaction

    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


@contextmanager
def serving(flask_app: Flask) -> Iterator[str]:
    """``flask_app`` on a real loopback HTTP server (threaded werkzeug) while the block runs:
    its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live_server(app) -> Iterator[str]:
    """The app on a real loopback HTTP server for concurrency tests."""
    with serving(app) as url:
        yield url
