"""A request whose queued message was lost (a Redis failover took the unreplicated tail with
it) while its request record survived: a retry with the same Idempotency-Key queues it again
once it is older than twice the visibility timeout; a younger one just joins (docs/deploy.md
§6, "What a failover can lose").
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from docnum.api.frontdoor.request_store import Record
from docnum.shared import issuing
from docnum.shared.clock import SystemClock, iso
from tests.conftest import BASE, letter, wait_for


def _orphan_record(app, sub: str, key: str, body: dict, age_s: float) -> str:
    """The request record of an accepted /requests call whose message never reached a worker."""
    request_id = issuing.request_id_for(sub, key)
    submitted = SystemClock().now() - timedelta(seconds=age_s)
    record = Record(request_id, sub, issuing.fingerprint("requests:generate", body), "generate",
                    "", iso(submitted))
    assert app.extensions["docnum"].frontdoor.store.claim(record) is None
    return request_id


def test_retry_requeues_a_request_whose_message_was_lost(app, client, seed,
                                                         auth):
    seed()
    frontdoor = app.extensions["docnum"].frontdoor
    body = letter()
    old_key, young_key = uuid.uuid4().hex, uuid.uuid4().hex
    lost = _orphan_record(app, "alice", old_key, body, age_s=frontdoor.requeue_after_s + 5)
    young = _orphan_record(app, "alice", young_key, body, age_s=0)

    # Polling alone cannot help: the record says "queued" and nothing will ever serve it.
    assert client.get(f"{BASE}/requests/{lost}", headers=auth()).json["status"] == "queued"

    # The client's retry (same key, same body) publishes the message again.
    retry = client.post(f"{BASE}/requests", json=body, headers=auth(key=old_key))
    assert retry.status_code == 202 and retry.json["request_id"] == lost
    done = wait_for(lambda: (r := client.get(f"{BASE}/requests/{lost}", headers=auth()).json)
                    ["status"] == "succeeded" and r, timeout=15, message="the requeued request")
    assert done["result"]["sequence"] == 1

    # A retry of a recent request joins it and publishes nothing (it may still be queued).
    joined = client.post(f"{BASE}/requests", json=body, headers=auth(key=young_key))
    assert joined.status_code == 202 and joined.json["request_id"] == young
    again = client.post(f"{BASE}/requests", json=body, headers=auth(key=old_key))
    assert again.status_code == 200 and again.json["result"] == done["result"]
    assert client.get(f"{BASE}/requests/{young}", headers=auth()).json["status"] == "queued"
