"""Answers travel on the answer channel of the API process that sent the batch
(api/frontdoor/waiter.py, workers/messages.py ``store_answers``): its waiter wakes at once,
other processes never see it."""
from __future__ import annotations

import time
import uuid

import redis

from docnum.api.frontdoor.request_store import RedisRequestStore
from docnum.api.frontdoor.waiter import PubSubWaiter
from docnum.shared.allocation import Outcome
from docnum.shared.errors import DocnumError
from docnum.workers.messages import store_answers


class _Request:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.submitted_at = None


def test_answer_reaches_only_the_waiter_of_the_sending_process(
        celery_session_app) -> None:
    backend = celery_session_app.backend.client
    # Two API processes' waiters (two instances stand in for two processes: one channel each).
    ours = PubSubWaiter(backend, RedisRequestStore(backend, 60).result)
    theirs = PubSubWaiter(redis.Redis(connection_pool=backend.connection_pool),
                          RedisRequestStore(backend, 60).result)
    ours.start()
    theirs.start()
    assert ours.reply_channel != theirs.reply_channel

    request_id = str(uuid.uuid4())
    slot = ours.expect(request_id)
    other_slot = theirs.expect(request_id)
    error = DocnumError("SEQUENCE_EXHAUSTED", "full")
    started = time.monotonic()
    store_answers(celery_session_app,
                  [(_Request(request_id), Outcome(request_id, error=error), ours.reply_channel)])
    backend.delete(f"celery-task-meta-{request_id}")  # only the published copy remains

    value = ours.wait(request_id, 5, slot)
    assert value is not None and value["ok"] is False
    assert value["error"]["code"] == "SEQUENCE_EXHAUSTED"
    assert time.monotonic() - started < 1.5  # woken by the message, not by the 2 s re-check
    assert theirs.wait(request_id, 0.5, other_slot) is None  # never published to it
