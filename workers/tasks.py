"""The ``docnum.allocate`` Celery task: the shard queues' consumer on the embedded SQL broker.

On Redis the shard queues are served by the ShardConsumer (workers/shard_consumer.py), which
takes several messages per batch from a reliable queue; Celery's own consumer serves them only
where the broker is kombu's SQL transport. Both serve and answer a message the same way
(workers/messages.py).
"""
from __future__ import annotations

from celery import Celery, Task

from docnum.shared.allocation import observe_generation
from docnum.shared.issuing import AllocationRequest
from docnum.shared.routing import ALLOCATE_TASK
from docnum.shared.settings import Settings
from docnum.workers.messages import Message, serve_messages, store_answers


def register(celery: Celery) -> None:
    # shared=False: this app's task only (see workers/maintenance.py, register).
    @celery.task(name=ALLOCATE_TASK, bind=True, ignore_result=True, shared=False)
    def allocate(self: Task, messages: list[dict], ledger: str | None = None,
                 reply: str | None = None, **_later: object) -> int:
        # ``reply``: the answer channel of the API process that sent the batch
        # (api/frontdoor/waiter.py). ``_later``: optional fields a newer front door may add
        # (docs/deploy.md §7).
        settings: Settings = self.app.conf.docnum_settings
        message = Message(None, self.request.id or "",
                          [AllocationRequest.from_message(m) for m in messages], ledger, reply)
        serve_messages(settings, [message])
        answers = list(zip(message.requests, message.outcomes, strict=True))
        store_answers(self.app, [(r, o, reply) for r, o in answers])
        for request, outcome in answers:
            observe_generation(request, outcome)
        return len(answers)
