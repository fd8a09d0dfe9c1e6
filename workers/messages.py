"""Allocation messages: what a shard queue carries, how a batch of them is served and answered.

Both consumers of the shard queues use these: the ShardConsumer on Redis
(workers/shard_consumer.py) and the ``docnum.allocate`` Celery task on the embedded SQL broker
(workers/tasks.py).
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field

from celery import Celery

from docnum.shared.allocation import Outcome, serve_requests
from docnum.shared.db import allocation_engine, ledger_identity
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import AllocationRequest
from docnum.shared.routing import ALLOCATE_TASK
from docnum.shared.settings import Settings
from docnum.workers.shard_queues import Taken

log = logging.getLogger("docnum.messages")


@dataclass
class Message:
    """An allocation message as the front door (or Celery's ``send_task``) wrote it."""

    taken: Taken | None           # None when Celery itself delivered it
    task_id: str
    requests: list[AllocationRequest]
    ledger: str | None
    reply: str | None
    argsrepr: str = ""
    outcomes: list[Outcome] = field(default_factory=list)


def decode(taken: Taken) -> Message:
    """Kombu's Redis envelope around Celery's task protocol 2 (JSON, base64 body)."""
    envelope = json.loads(taken.raw)
    headers = envelope["headers"]
    if headers.get("task") != ALLOCATE_TASK:
        raise ValueError(f"not an allocation message: task {headers.get('task')!r}")
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    requests = [AllocationRequest.from_message(m) for m in args[0]]
    return Message(taken, headers["id"], requests, kwargs.get("ledger"), kwargs.get("reply"),
                   headers.get("argsrepr") or f"<{len(requests)} request(s)>")


def serve_messages(settings: Settings, messages: list[Message]) -> None:
    """Serve every request of ``messages`` in one batch; each message gets its outcomes.

    A message stamped with another deployment's ledger (two deployments sharing one broker by
    mistake) is never numbered here: its requests get a retryable MISROUTED error (putting them
    back would let them starve this shard), and the log says so loudly.
    """
    own = ledger_identity(allocation_engine(settings.database_url))
    mine = []
    for message in messages:
        if message.ledger in (None, own):
            mine.append(message)
            continue
        log.error("refused %d requests for ledger %s: this worker serves ledger %s; two "
                  "deployments share one broker", len(message.requests), message.ledger, own)
        error = DocnumError("MISROUTED", f"the request reached a worker of another "
                                         f"deployment ({own}); retry it", retry_after=1)
        message.outcomes = [Outcome(r.request_id, error=error) for r in message.requests]
    requests = [r for m in mine for r in m.requests]
    if requests:
        outcomes = iter(serve_requests(settings, requests))
        for message in mine:
            message.outcomes = [next(outcomes) for _ in message.requests]


def store_answers(celery: Celery, answers: list[tuple[AllocationRequest, Outcome, str | None]],
                  ) -> None:
    """Store each answer under its request id in the result backend, as Celery would.

    On Redis, one pipeline stores and publishes the whole batch (Celery's own ``store_result``
    costs a round trip per request); keys and values are exactly Celery's. The answers for one
    ``reply`` channel (the sending API process's, api/frontdoor/waiter.py) travel as ONE
    message, a JSON list; an answer without a reply channel goes to Celery's per-key channel.
    """
    if not answers:
        return
    from celery.backends.redis import RedisBackend

    backend = celery.backend
    if not isinstance(backend, RedisBackend):
        for request, outcome, _ in answers:
            backend.store_result(request.request_id, outcome.to_result(), "SUCCESS")
        return
    done = celery.now().isoformat()
    by_channel: dict[str, list[str]] = {}
    with backend.client.pipeline(transaction=False) as pipe:
        for request, outcome, reply in answers:
            key = backend.get_key_for_task(request.request_id)
            value = backend.encode({"status": "SUCCESS", "result": outcome.to_result(),
                                    "traceback": None, "children": [], "date_done": done,
                                    "task_id": request.request_id})
            if backend.expires:
                pipe.setex(key, backend.expires, value)
            else:
                pipe.set(key, value)
            if reply:
                by_channel.setdefault(reply, []).append(value)
            else:
                pipe.publish(key, value)
        # One message per API process and batch: a JSON list of the answers (the listener
        # reads one message instead of one per request).
        for reply, values in by_channel.items():
            pipe.publish(reply, "[" + ",".join(values) + "]")
        pipe.execute()
