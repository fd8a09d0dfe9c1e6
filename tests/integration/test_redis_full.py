"""A Redis that is full (maxmemory reached, noeviction) still answers PING but refuses writes:
readiness says so, the status gauge and the error counter show it, issuing falls back to the
DB-only path, and the memory gauge warned before. A PRIVATE redis-server with a tiny maxmemory
(its own port); the machine's Redis is never touched."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from docnum.api.app import create_app
from docnum.shared import metrics
from docnum.shared.settings import Settings
from tests.conftest import BASE, letter, make_settings
from tests.e2e.service import RedisServer
from tests.integration.test_failures import fallback_of, headers

FILLER_DB = 2


def scrape(client) -> dict[str, list]:
    text = client.get("/metrics").get_data(as_text=True)
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict, name: str, **labels: str) -> float | None:
    for sample in families.get(name.removesuffix("_total"), []):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def fill(url: str) -> int:
    """Write until Redis refuses even a tiny value (large values first, then smaller ones to
    use up the rest): returns the number of values written."""
    client = redis_lib.Redis.from_url(url)
    written = 0
    for size in (65536, 1024, 16):
        with pytest.raises(redis_lib.exceptions.OutOfMemoryError):
            while written < 100_000:
                client.set(f"filler:{written}", b"x" * size)
                written += 1
    # Keep it full: closing this connection frees its buffers (tens of KiB, counted in
    # used_memory), which would otherwise give back room for the next small writes.
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory", str(used - 256 * 1024))
    client.close()
    return written


@pytest.fixture
def tiny_redis(tmp_path):
    server = RedisServer(tmp_path / "redis", maxmemory="4mb").start()
    yield server
    server.stop()


def app_on(tiny_redis: RedisServer, database_url: str,
           var_dir: Path) -> tuple[Settings, FlaskClient]:
    """Settings whose broker and result backend are DBs 0 and 1 of ``tiny_redis``, and a test
    client of an app built on them."""
    settings = make_settings(database_url, tiny_redis.url(0), tiny_redis.url(1), var_dir)
    return settings, create_app(settings).test_client()


def test_a_full_redis_is_degraded_counted_and_served_around(database_url, seed, engine,
                                                            tmp_path, tiny_redis):
    seed()
    settings, client = app_on(tiny_redis, database_url, tmp_path / "var")

    assert client.get("/readyz").json["mode"] == "queue"
    before = scrape(client)
    usage = value(before, "docnum_redis_memory_usage")
    assert usage is not None and 0 < usage < 80
    assert value(before, "docnum_redis_connection_status") == 1

    assert fill(tiny_redis.url(FILLER_DB)) > 0
    assert redis_lib.Redis.from_url(tiny_redis.url(0)).ping()  # it still answers PING

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"database": "ok", "broker": "degraded",
                          "result_backend": "degraded", "mode": "db-fallback"}
    full = scrape(client)
    assert value(full, "docnum_redis_memory_usage") >= 99  # the 80 % alert fired long ago
    assert value(full, "docnum_redis_connection_status") == 0  # RedisUnavailable
    assert value(full, "docnum_redis_errors_total", reason="oom") >= 2  # readyz and /metrics

    # Issuing goes on through the database, visibly.
    issued = client.post(f"{BASE}/generate?timeout=5", json=letter(),
                         headers=headers(settings))
    assert issued.status_code == 201, issued.get_data(as_text=True)
    assert fallback_of(engine, issued.json["request_id"]) == "DB_ONLY"
    assert value(scrape(client), "docnum_redis_connection_status") == 0

    # Memory freed: back to the queue by itself.
    redis_lib.Redis.from_url(tiny_redis.url(FILLER_DB)).flushdb()
    assert client.get("/readyz").json == {"database": "ok", "broker": "ok",
                                          "result_backend": "ok", "mode": "queue"}
    recovered = scrape(client)
    assert value(recovered, "docnum_redis_connection_status") == 1
    assert value(recovered, "docnum_redis_memory_usage") < 80


def test_a_request_that_meets_a_full_redis_is_counted_as_oom(database_url, seed, engine,
                                                             tmp_path, tiny_redis):
    """No readiness probe in between: the request itself finds Redis full."""
    seed()
    settings, client = app_on(tiny_redis, database_url, tmp_path / "var")
    fill(tiny_redis.url(FILLER_DB))
    ooms = metrics.redis_errors.labels("oom")._value.get()
    issued = client.post(f"{BASE}/generate?timeout=5", json=letter(),
                         headers={**headers(settings), "Idempotency-Key": uuid.uuid4().hex})
    assert issued.status_code == 201, issued.get_data(as_text=True)
    assert fallback_of(engine, issued.json["request_id"]) == "DB_ONLY"
    assert metrics.redis_errors.labels("oom")._value.get() == ooms + 1
