"""Celery tasks: thin wrappers that hand a message to the domain services in ``shared/``."""
from __future__ import annotations

import logging

from celery import Celery
from celery.backends.redis import RedisBackend

from docnum.shared.allocation import Outcome, observe_generation, serve_requests
from docnum.shared.db import allocation_engine, ledger_identity
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import AllocationRequest
from docnum.shared.routing import ALLOCATE_TASK
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)



def register(celery: Celery) -> None:
    # shared=False: this app's task only (see workers/maintenance.py, register).
    @celery.task(name=ALLOCATE_TASK, bind=True, ignore_result=True, shared=False)
    def allocate(self, messages: list[dict], ledger: str | None = None,
                 reply: str | None = None, **_later: object) -> int:
        # ``reply``: the answer channel of the API process that sent the batch (api/frontdoor/waiter.py).
        # ``_later``: optional fields a newer front door may add (docs/deploy.md §7).
        settings: Settings = self.app.conf.docnum_settings
        own = ledger_identity(allocation_engine(settings.database_url))
        requests = [AllocationRequest.from_message(m) for m in messages]
        if ledger is not None and ledger != own:
            # Published by the front door of another deployment that shares this broker: its
            # requests belong to its own ledger. Never number them here; answer each with a
            # retryable error (putting them back would let them starve this shard) and say so
            # loudly: each deployment needs its own Redis databases.
            log.error("refused %d requests for ledger %s: this worker serves ledger %s; two "
                      "deployments share one broker", len(requests), ledger, own)
            error = DocnumError("MISROUTED", f"the request reached a worker of another "
                                             f"deployment ({own}); retry it", retry_after=1)
            store_outcomes(self.app, requests, [Outcome(r.request_id, error=error)
                                                for r in requests], reply=reply)
            return 0
        outcomes = serve_requests(settings, requests)
        store_outcomes(self.app, requests, outcomes, reply=reply)
        return len(outcomes)


def store_outcomes(celery: Celery, requests: list[AllocationRequest],
                   outcomes: list[Outcome], reply: str | None = None) -> None:
    """Store each request's answer under its own request id in the result backend.

    On Redis, one pipeline stores and publishes the whole batch (Celery's own ``store_result``
    would cost a round trip per request); the keys and values are exactly Celery's. Each
    answer is published on ``reply`` (the sending API process's channel, api/frontdoor/waiter.py), or,
    without one, on Celery's per-key channel.
    """
    backend = celery.backend
    if isinstance(backend, RedisBackend):
        done = celery.now().isoformat()
        with backend.client.pipeline(transaction=False) as pipe:
            for request, outcome in zip(requests, outcomes):
                key = backend.get_key_for_task(request.request_id)
                value = backend.encode({"status": "SUCCESS", "result": outcome.to_result(),
                                        "traceback": None, "children": [], "date_done": done,
                                        "task_id": request.request_id})
                if backend.expires:
                    pipe.setex(key, backend.expires, value)
                else:
                    pipe.set(key, value)
                pipe.publish(reply or key, value)
            pipe.execute()
    else:
        for request, outcome in zip(requests, outcomes):
            backend.store_result(request.request_id, outcome.to_result(), "SUCCESS")
    for request, outcome in zip(requests, outcomes):
        observe_generation(request, outcome)
