"""Two deployments sharing one broker: a worker never serves another ledger's requests."""
from __future__ import annotations

import json
import time
import uuid

import redis
from sqlalchemy import func, select

from docnum.shared import issuing
from docnum.shared.clock import SystemClock
from docnum.shared.db import ledger_identity, transaction
from docnum.shared.models import IssuedNumber
from docnum.shared.routing import ALLOCATE_TASK, queue_for
from tests.conftest import letter


def test_a_misrouted_message_is_answered_not_numbered(celery_session_app, celery_session_worker,
                                                      settings,
                                                      engine, seed):
    seed()
    ctx = issuing.parse_context(letter())
    now = SystemClock().now()
    with transaction(engine) as session:
        config, key, day = issuing.prepare(session, ctx, now=now, timezone=settings.timezone)
    request = issuing.build_request(request_id=str(uuid.uuid4()), mode="generate", ctx=ctx,
                                    config=config, counter_key=key, day=day, actor="x", now=now)
    queue = queue_for(key, settings.queue_shards)
    broker = redis.Redis.from_url(settings.broker_url)

    backend = redis.Redis.from_url(settings.result_backend)
    celery_session_app.send_task(ALLOCATE_TASK, args=[[request.to_message()]], queue=queue,
                                 kwargs={"ledger": "other-host:3306/other_db"},
                                 ignore_result=True)
    deadline = time.monotonic() + 10
    while not backend.get(f"celery-task-meta-{request.request_id}"):
        assert time.monotonic() < deadline, "the misrouted request got no answer"
        time.sleep(0.05)
    answer = json.loads(backend.get(f"celery-task-meta-{request.request_id}"))["result"]
    assert answer["ok"] is False and answer["error"]["code"] == "MISROUTED"
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(IssuedNumber)) == 0
    assert broker.llen(queue) == 0  # nothing left to starve the shard

    # The worker's own ledger is served as usual.
    backend.delete(f"celery-task-meta-{request.request_id}")
    assert ledger_identity(engine).endswith("/" + engine.url.database)
    celery_session_app.send_task(ALLOCATE_TASK, args=[[request.to_message()]], queue=queue,
                                 kwargs={"ledger": ledger_identity(engine)},
                                 ignore_result=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with transaction(engine) as session:
            if session.scalar(select(func.count()).select_from(IssuedNumber)) == 1:
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the worker did not serve a message for its own ledger")
