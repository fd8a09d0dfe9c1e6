"""The front door's one-LPUSH publisher writes what Celery itself would, and workers serve it."""
from __future__ import annotations

import base64
import json

import redis

from docnum.api.frontdoor.publisher import RedisTaskPublisher
from docnum.shared.routing import ALLOCATE_TASK
from docnum.workers.celery_app import make_celery
from tests.conftest import make_settings

QUEUE = "docnum.shard.0"


def _decode(raw: bytes) -> dict:
    envelope = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def test_message_matches_celery_send_task(fresh_redis_dbs, database_url,
                                          tmp_path):
    broker, backend = fresh_redis_dbs(2)
    celery = make_celery(make_settings(database_url, broker, backend, tmp_path))
    client = redis.Redis.from_url(broker)
    messages = [{"request_id": "r1", "counter_key": "k"}, {"request_id": "r2"}]
    celery.send_task(ALLOCATE_TASK, args=[messages], kwargs={"ledger": "L"}, queue=QUEUE,
                     ignore_result=True)
    RedisTaskPublisher(client).send(ALLOCATE_TASK, [messages], QUEUE, kwargs={"ledger": "L"})

    ours_raw, celerys_raw = client.lrange(QUEUE, 0, -1)  # LPUSH: newest first
    ours, celerys = _decode(ours_raw), _decode(celerys_raw)
    assert ours["body"] == celerys["body"]
    assert set(ours) == set(celerys)
    assert set(ours["headers"]) == set(celerys["headers"])
    assert set(ours["properties"]) == set(celerys["properties"])
    differ = {"id", "root_id", "argsrepr", "origin"}  # per message, or display only
    for name, value in celerys["headers"].items():
        if name not in differ:
            assert ours["headers"][name] == value, name
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["headers"]["argsrepr"] == "<2 request(s)>"
    for name in ("content-type", "content-encoding"):
        assert ours[name] == celerys[name]
    for name in ("delivery_mode", "delivery_info", "priority", "body_encoding"):
        assert ours["properties"][name] == celerys["properties"][name], name
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]
