"""DOCNUM_DATABASE_REPLICA_URL: read-only endpoints read the replica, issuing uses the primary.

The "replica" here is a second, separate database on the same MariaDB server, migrated and left
empty: a replica that has not caught up at all. Whatever the API answers from it is visibly
stale, which proves where each route reads.
"""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.conftest import BASE, letter, throwaway_database


@pytest.fixture(scope="module")
def replica_url(server_db_url: str):
    """A second database standing in for a replica that has seen nothing yet."""
    with throwaway_database(server_db_url, "docnum_r") as url:
        yield url


@pytest.fixture
def replica_client(app, settings, celery_session_app, replica_url):
    from docnum.api.app import create_app

    replica_app = create_app(settings.with_overrides(database_replica_url=replica_url),
                             celery=celery_session_app)
    replica_app.testing = True
    return replica_app.test_client()


def test_reads_use_the_replica_and_issuing_the_primary(client, replica_client, seed,
                                                       auth):
    seed()
    # Allocation on the primary: the catalog and config checks, the worker's transaction.
    issued = replica_client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
    assert issued.status_code == 201, issued.json
    number = issued.json["document_number"]
    path = f"{BASE}/numbers/{quote(number, safe='')}"

    # The primary has the number; the (empty) replica does not: GET /numbers reads the replica.
    assert client.get(path, headers=auth()).status_code == 200
    stale = replica_client.get(path, headers=auth())
    assert stale.status_code == 404, stale.json

    # The request's own status must see its own write: it reads the primary.
    status = replica_client.get(f"{BASE}/requests/{issued.json['request_id']}", headers=auth())
    assert status.json["status"] == "succeeded"

    # The other read-only endpoints answer from the replica too (a reservation makes a gap).
    reserved = replica_client.post(f"{BASE}/reserve?timeout=10", json=letter(), headers=auth())
    assert reserved.status_code == 201, reserved.json
    for route in ("/catalog/project", "/configs", "/counters", "/audit", "/reports/gaps"):
        primary = client.get(BASE + route, headers=auth()).json["items"]
        replica = replica_client.get(BASE + route, headers=auth(roles=["SUPER_ADMIN"]))
        assert replica.status_code == 200, (route, replica.json)
        assert primary and replica.json["items"] == [], route
    assert replica_client.get(f"{BASE}/catalog/project/LCBP3",
                              headers=auth()).status_code == 404
    preview = replica_client.post(f"{BASE}/preview", json=letter(), headers=auth())
    assert preview.status_code == 422, preview.json  # the empty replica has no config, no codes
    assert preview.json["code"] in ("NO_CONFIG", "UNKNOWN_CODE"), preview.json
    assert client.post(f"{BASE}/preview", json=letter(), headers=auth()).status_code == 200

    # And issuing keeps working through the replica-configured app.
    again = replica_client.post(f"{BASE}/generate?timeout=10", json=letter(), headers=auth())
    assert again.status_code == 201 and again.json["sequence"] == issued.json["sequence"] + 2
