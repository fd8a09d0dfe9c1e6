"""Celery tasks: thin wrappers that hand a message to the domain services in ``shared/``."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import Celery
from celery.backends.redis import RedisBackend

from docnum.shared import metrics
from docnum.shared.allocation import Outcome, allocate_many, record_failures
from docnum.shared.clock import SystemClock
from docnum.shared.db import get_engine, ledger_identity
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import AllocationRequest
from docnum.shared.settings import Settings

log = logging.getLogger(__name__)

ALLOCATE_TASK = "docnum.allocate"
# While the database is unreachable a batch waits and tries again, up to this long, before it
# fails its requests with SERVICE_BUSY (the message is only acknowledged after that).
DB_OUTAGE_PATIENCE_S = 20.0


def register(celery: Celery) -> None:
    # shared=False: this app's task only (see workers/maintenance.py, register).
    @celery.task(name=ALLOCATE_TASK, bind=True, ignore_result=True, shared=False)
    def allocate(self, messages: list[dict], ledger: str | None = None,
                 reply: str | None = None, **_later: object) -> int:
        # ``reply``: the answer channel of the API process that sent the batch (api/waiter.py).
        # ``_later``: optional fields a newer front door may add (docs/deploy.md §7).
        settings: Settings = self.app.conf.docnum_settings
        own = ledger_identity(get_engine(settings.database_url, pre_ping=False))
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


def serve_requests(settings: Settings, requests: list[AllocationRequest], *,
                   fallback_used: str = "NONE") -> list[Outcome]:
    """Allocate a batch: grouped by counter key, all keys in one transaction; keeps order."""
    engine = get_engine(settings.database_url, pre_ping=False)
    clock = SystemClock()
    groups: dict[str, list[AllocationRequest]] = {}
    for request in requests:
        groups.setdefault(request.counter_key, []).append(request)
    served = _allocate_patiently(settings, engine, groups, clock, fallback_used)
    position = {key: 0 for key in served}
    outcomes = []
    for request in requests:
        outcomes.append(served[request.counter_key][position[request.counter_key]])
        position[request.counter_key] += 1
    return outcomes


def _allocate_patiently(settings, engine, groups, clock, fallback_used):
    deadline = time.monotonic() + DB_OUTAGE_PATIENCE_S
    delay = 0.25
    everyone = [r for group in groups.values() for r in group]
    while True:
        try:
            return allocate_many(engine, groups, clock=clock,
                                 reservation_ttl=settings.reservation_ttl,
                                 fallback_used=fallback_used)
        except DocnumError as exc:
            if exc.code != "SERVICE_BUSY" or time.monotonic() + delay > deadline:
                record_failures(engine, everyone, exc, clock=clock, fallback_used=fallback_used)
                return {key: [Outcome(r.request_id, error=exc) for r in group]
                        for key, group in groups.items()}
            log.warning("database unavailable for %d keys; retrying in %.2fs", len(groups), delay)
            time.sleep(delay)
            # At most 1 s between attempts (one connect attempt each): the queue moves again
            # within about a second of the database's return.
            delay = min(delay * 2, 1.0)
        except Exception:  # every request must get an answer, never a silent loss
            log.exception("allocation failed on %s", sorted(groups))
            error = DocnumError("INTERNAL_ERROR", "the allocation failed; the request can be "
                                                  "retried with the same Idempotency-Key")
            record_failures(engine, everyone, error, clock=clock, fallback_used=fallback_used)
            return {key: [Outcome(r.request_id, error=error) for r in group]
                    for key, group in groups.items()}


def observe_generation(request: AllocationRequest, outcome: Outcome) -> None:
    """docnum_generation_duration_ms: from acceptance at the front door to the answer."""
    started = request.submitted_at
    if not started:
        return
    try:
        began = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return
    elapsed_ms = (SystemClock().now() - began).total_seconds() * 1000
    status = "success" if outcome.ok else outcome.error.code.lower()
    ctx = request.context
    metrics.generation_duration.labels(ctx.project, ctx.correspondence_type or "",
                                       status).observe(max(elapsed_ms, 0))


def store_outcomes(celery: Celery, requests: list[AllocationRequest],
                   outcomes: list[Outcome], reply: str | None = None) -> None:
    """Store each request's answer under its own request id in the result backend.

    On Redis, one pipeline stores and publishes the whole batch (Celery's own ``store_result``
    would cost a round trip per request); the keys and values are exactly Celery's. Each
    answer is published on ``reply`` (the sending API process's channel, api/waiter.py), or,
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
