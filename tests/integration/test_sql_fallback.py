"""The embedded default's SQL fallback (no Redis server binary): the request store is a table
and the queue kombu's SQL transport, and the front door still accepts, joins and refuses
issuing requests."""
from __future__ import annotations

import uuid

from docnum.api.app import create_app
from docnum.shared.auth import mint_token
from docnum.shared.catalog import upsert_entry
from docnum.shared.clock import SystemClock
from docnum.shared.configs import insert_config
from docnum.shared.db import get_engine, transaction
from docnum.shared.migrate import upgrade
from docnum.shared.settings import load_settings
from tests.conftest import BASE


def test_issuing_requests_are_queued_and_joined_on_the_sql_fallback(tmp_path):
    var = tmp_path / "var"
    settings = load_settings({"DOCNUM_VAR_DIR": str(var), "DOCNUM_JWT_SECRET": "x" * 40,
                              "DOCNUM_BROKER_URL": f"sqla+sqlite:///{var / 'broker.sqlite'}"})
    assert settings.sql_broker_fallback
    upgrade(settings.database_url)
    now = SystemClock().now()
    with transaction(get_engine(settings.database_url)) as session:
        upsert_entry(session, "project", "P", "P", True, now)
        upsert_entry(session, "correspondence_type", "LETTER", "Letter", True, now)
        insert_config(session, {"project": "P", "correspondence_type": "LETTER",
                                "template": "{PROJECT}-{SEQ:4}", "reset": "NONE"}, "seed", now)
    client = create_app(settings).test_client()
    token = mint_token(settings, "alice", ["correspondence.create", "correspondence.read"], [],
                       3600)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    body = {"project": "P", "correspondence_type": "LETTER"}

    first = client.post(f"{BASE}/requests", json=body, headers=headers)
    assert first.status_code == 202 and first.json["status"] == "queued"
    retry = client.post(f"{BASE}/requests", json=body, headers=headers)
    assert retry.status_code == 202 and retry.json["request_id"] == first.json["request_id"]
    polled = client.get(first.json["status_url"], headers=headers)
    assert polled.status_code == 200 and polled.json["status"] == "queued"

    unknown = client.post(f"{BASE}/generate?timeout=0", json=dict(body, originator="NOPE"),
                          headers=dict(headers, **{"Idempotency-Key": uuid.uuid4().hex}))
    assert unknown.status_code == 422 and unknown.json["code"] == "UNKNOWN_CODE"
