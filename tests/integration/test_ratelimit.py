"""Rate limits on the issuing routes: per user and per IP, on Redis, 429 problem+json with
Retry-After; Redis trouble must not turn into errors. Each test builds its own app with small
limits (the shared test settings set huge ones) and uses users and addresses unique to the run.
"""
from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import func, select

from docnum.api.ratelimit import storage_uri
from docnum.shared.db import transaction
from docnum.shared.models import IssuedNumber
from tests.conftest import BASE, letter


@pytest.fixture
def limited_app(settings, celery_session_app, celery_session_worker):
    from docnum.api.app import create_app

    def make(**limits: str):
        app = create_app(settings.with_overrides(**limits), celery=celery_session_app)
        app.testing = True
        return app

    return make


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


def test_per_user_limit_is_shared_by_the_issuing_routes(limited_app, auth, seed, engine):
    seed()
    app = limited_app(rate_limit_user="3/minute", rate_limit_ip="1000/minute")
    client = app.test_client()
    env = {"REMOTE_ADDR": ip()}
    user = unique("rl-user")
    for _ in range(3):
        ok = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(user),
                         environ_base=env)
        assert ok.status_code == 201, ok.json
    for route in ("generate?timeout=10", "reserve?timeout=10", "requests"):
        limited = client.post(f"{BASE}/{route}", json=letter(), headers=auth(user),
                              environ_base=env)
        assert limited.status_code == 429, (route, limited.json)
        assert limited.json["code"] == "RATE_LIMITED" and limited.json["status"] == 429
        assert limited.headers["Content-Type"].startswith("application/problem+json")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    th = client.post(f"{BASE}/generate", json=letter(), environ_base=env,
                     headers=auth(user, **{"Accept-Language": "th"}))
    assert th.status_code == 429 and th.json["title"] == "มีคำขอมากเกินไป"
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 3

    # Another user on the same address has a budget of their own; other routes are unlimited.
    other = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(unique("u")),
                        environ_base=env)
    assert other.status_code == 201
    for _ in range(5):
        assert client.get(f"{BASE}/catalog/project", headers=auth(user),
                          environ_base=env).status_code == 200


def test_per_ip_limit_counts_every_user_of_an_address(limited_app, auth, seed):
    seed()
    app = limited_app(rate_limit_user="1000/minute", rate_limit_ip="4/minute")
    client = app.test_client()
    env = {"REMOTE_ADDR": ip()}
    assert app.extensions["docnum_rate_limits"]._pipelined  # both budgets in one round trip
    codes = [client.post(f"{BASE}/generate?timeout=10", json=letter(),
                         headers=auth(unique("ip-user")), environ_base=env).status_code
             for _ in range(5)]
    assert codes == [201, 201, 201, 201, 429]
    elsewhere = client.post(f"{BASE}/generate?timeout=10", json=letter(),
                            headers=auth(unique("ip-user")), environ_base={"REMOTE_ADDR": ip()})
    assert elsewhere.status_code == 201


def test_unauthenticated_calls_are_limited_by_address_and_still_401(limited_app, auth, seed):
    seed()
    app = limited_app(rate_limit_user="2/minute", rate_limit_ip="1000/minute")
    client = app.test_client()
    env = {"REMOTE_ADDR": ip()}
    codes = [client.post(f"{BASE}/generate", json=letter(),
                         headers={"Authorization": "Bearer nonsense"},
                         environ_base=env).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_redis_down_never_turns_into_errors(limited_app, auth, seed, engine):
    """The limiter's Redis is unreachable: no 5xx, issuing keeps working (DB-only path), and
    the budgets still hold, counted in the process's memory."""
    seed()
    app = limited_app(rate_limit_user="2/minute", rate_limit_ip="1000/minute",
                      result_backend="redis://127.0.0.1:1/0")
    client = app.test_client()
    user = unique("rl-down")
    started = time.perf_counter()
    answers = [client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(user),
                           environ_base={"REMOTE_ADDR": ip()}) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 429, 429]
    assert answers[2].json["code"] == "RATE_LIMITED" and answers[2].headers["Retry-After"]
    assert time.perf_counter() - started < 10
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 2
    other = client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth(unique("u")),
                        environ_base={"REMOTE_ADDR": ip()})
    assert other.status_code == 201


def test_storage_uri_follows_the_result_backend(settings):
    assert storage_uri(settings) == settings.result_backend
    embedded = settings.with_overrides(result_backend="db+sqlite:///var/results.sqlite")
    assert storage_uri(embedded) == "memory://"
    sentinel = settings.with_overrides(
        result_backend="sentinel://10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0",
        redis_sentinel_master="docnum")
    assert storage_uri(sentinel) == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/docnum"
