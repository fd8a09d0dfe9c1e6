"""The lock design of the benchmarks (``scripts/lock_design/app.py``) under the gunicorn
configuration of ``docnum api``, on the session's MariaDB and a claimed Redis DB: concurrent
clients get contiguous numbers, a lock held by someone else answers 503 and leaves nothing
half-written, and the JWT check is docnum's.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from docnum.cli.loadtest import TARGETS, key_bodies, verify_run
from tests.conftest import JWT_SECRET, claim_redis_dbs, release_redis_dbs, throwaway_database
from tests.e2e.service import REPO, free_port, wait_until

pytestmark = pytest.mark.e2e

LOCK_APP = REPO / "scripts" / "lock_design" / "app.py"
GENERATE = "/api/v1/document-numbering/generate"


@pytest.fixture(scope="module")
def lock_database_url(server_db_url: str) -> Iterator[str]:
    """A database of its own: the lock design's tables are not the models' (the migrations
    test compares the session database with the models)."""
    with throwaway_database(server_db_url, "docnum_lock") as url:
        yield url


@pytest.fixture(scope="module")
def lock_service(lock_database_url: str, redis_base_url: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The app under gunicorn (2 processes x 4 threads); yields its URL and its Redis URL."""
    [lock_redis] = claim_redis_dbs(redis_base_url, 1)
    workdir = tmp_path_factory.mktemp("lock-design")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DOCNUM_", "PROMETHEUS_", "LOCK_DESIGN_"))}
    env.update(DOCNUM_DATABASE_URL=lock_database_url, DOCNUM_JWT_SECRET=JWT_SECRET,
               DOCNUM_HOST="127.0.0.1", DOCNUM_PORT=str(port), DOCNUM_VAR_DIR=str(workdir),
               DOCNUM_API_WORKERS="2", DOCNUM_API_THREADS="4", LOCK_DESIGN_REDIS_URL=lock_redis)
    log_path = workdir / "lock-design.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(LOCK_APP)], env=env, cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200, 40,
                   "the lock design to answer /readyz", on_timeout=Path(log_path).read_text)
        yield url, lock_redis
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        release_redis_dbs([lock_redis])


def _post(session: requests.Session, url: str, token: str, body: dict) -> requests.Response:
    return session.post(f"{url}{GENERATE}", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {token}",
                                 "Idempotency-Key": uuid.uuid4().hex})


def test_concurrent_clients_get_contiguous_numbers(lock_service, lock_database_url,
                                                  token) -> None:
    url, _ = lock_service
    bearer = token(perms=["correspondence.create"])
    project = f"LK{uuid.uuid4().hex[:8].upper()}"
    bodies = key_bodies(project, 2, date.today())  # two counters, three clients on each

    def client(index: int) -> list[tuple[int, dict]]:
        with requests.Session() as session:
            return [(r.status_code, r.json()) for r in
                    (_post(session, url, bearer, bodies[(index + n) % 2]) for n in range(12))]

    with ThreadPoolExecutor(6) as pool:
        results = [answer for answers in pool.map(client, range(6)) for answer in answers]
    statuses = Counter(status for status, _ in results)
    # The design may refuse (503) when the lock stays taken through every retry; nothing else.
    assert set(statuses) <= {201, 503}, statuses
    assert all(body["code"] == "SERVICE_BUSY" for status, body in results if status == 503)
    served = [body["document_number"] for status, body in results if status == 201]
    verify = verify_run(lock_database_url, project, served, TARGETS["lock"])
    assert verify["ok"], verify
    assert verify["counters"] == 2 and verify["contiguous"] and verify["one_audit_each"]
    assert verify["ledger_rows"] == len(served) == statuses[201]  # a 503 leaves no row


def test_a_lock_held_by_someone_else_answers_503(lock_service, token) -> None:
    url, lock_redis = lock_service
    bearer = token(perms=["correspondence.create"])
    body = key_bodies(f"LK{uuid.uuid4().hex[:8].upper()}", 1, date.today())[0]
    session = requests.Session()
    first = _post(session, url, bearer, body)
    assert first.status_code == 201, first.text
    assert first.json()["sequence"] == 1
    lock_key = f"lock:{first.json()['counter_key']}"
    client = redis_lib.Redis.from_url(lock_redis)
    client.set(lock_key, "someone-else", px=30_000)
    try:
        started = time.monotonic()
        refused = _post(session, url, bearer, body)
        waited = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        assert refused.json()["code"] == "SERVICE_BUSY" and refused.headers["Retry-After"]
        assert waited >= 5 * 0.05  # five retries, each after at least 50 ms
        assert client.get(lock_key) == b"someone-else"  # another holder's lock stays
    finally:
        client.delete(lock_key)
    again = _post(session, url, bearer, body)
    assert again.status_code == 201, again.text
    assert again.json()["sequence"] == 2  # the refused request took no number
    assert client.get(lock_key) is None  # released after use


def test_the_jwt_check_is_docnums(lock_service, token) -> None:
    url, _ = lock_service
    body = key_bodies("LKJWT", 1, date.today())[0]
    session = requests.Session()
    missing = session.post(f"{url}{GENERATE}", json=body,
                           headers={"Idempotency-Key": uuid.uuid4().hex}, timeout=10)
    assert missing.status_code == 401 and missing.json()["code"] == "UNAUTHENTICATED"
    read_only = _post(session, url, token(perms=["correspondence.read"]), body)
    assert read_only.status_code == 403 and read_only.json()["code"] == "FORBIDDEN"
    no_key = session.post(f"{url}{GENERATE}", json=body, timeout=10,
                          headers={"Authorization": f"Bearer {token()}"})
    assert no_key.status_code == 400 and no_key.json()["code"] == "IDEMPOTENCY_KEY_REQUIRED"
