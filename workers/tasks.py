"""Celery tasks: thin wrappers that hand a message to the domain services in ``shared/``."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from celery import Celery

from shared import metrics
from shared.allocation import Outcome, allocate_numbers, record_failures
from shared.clock import SystemClock
from shared.db import get_engine
from shared.errors import DocnumError
from shared.issuing import AllocationRequest
from shared.settings import Settings

log = logging.getLogger(__name__)

ALLOCATE_TASK = "docnum.allocate"
# While the database is unreachable a batch waits and tries again, up to this long, before it
# fails its requests with SERVICE_BUSY (the message is only acknowledged after that).
DB_OUTAGE_PATIENCE_S = 20.0


def register(celery: Celery) -> None:
    @celery.task(name=ALLOCATE_TASK, bind=True, ignore_result=True)
    def allocate(self, messages: list[dict]) -> int:  # noqa: ANN001
        requests = [AllocationRequest.from_message(m) for m in messages]
        settings: Settings = self.app.conf.docnum_settings
        outcomes = serve_requests(settings, requests)
        store_outcomes(self.app, requests, outcomes)
        return len(outcomes)


def serve_requests(settings: Settings, requests: list[AllocationRequest], *,
                   fallback_used: str = "NONE") -> list[Outcome]:
    """Group by counter key and allocate each group in one transaction; keeps request order."""
    engine = get_engine(settings.database_url)
    clock = SystemClock()
    groups: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.counter_key, []).append(index)
    outcomes: list[Outcome | None] = [None] * len(requests)
    for counter_key, indexes in groups.items():
        group = [requests[i] for i in indexes]
        for i, outcome in zip(indexes, _allocate_patiently(settings, engine, counter_key, group,
                                                           clock, fallback_used)):
            outcomes[i] = outcome
    return [o for o in outcomes if o is not None]


def _allocate_patiently(settings, engine, counter_key, group, clock, fallback_used):  # noqa: ANN001
    deadline = time.monotonic() + DB_OUTAGE_PATIENCE_S
    delay = 0.25
    while True:
        try:
            return allocate_numbers(engine, counter_key, group, clock=clock,
                                    reservation_ttl=settings.reservation_ttl,
                                    fallback_used=fallback_used)
        except DocnumError as exc:
            if exc.code != "SERVICE_BUSY" or time.monotonic() + delay > deadline:
                record_failures(engine, group, exc, clock=clock, fallback_used=fallback_used)
                return [Outcome(r.request_id, error=exc) for r in group]
            log.warning("database unavailable for %s; retrying in %.2fs", counter_key, delay)
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
        except Exception:  # noqa: BLE001 - every request must get an answer, never a silent loss
            log.exception("allocation failed on %s", counter_key)
            error = DocnumError("INTERNAL_ERROR", "the allocation failed; the request can be "
                                                  "retried with the same Idempotency-Key")
            record_failures(engine, group, error, clock=clock, fallback_used=fallback_used)
            return [Outcome(r.request_id, error=error) for r in group]


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
    metrics.retry_count.labels(ctx.project, ctx.correspondence_type or "").observe(
        outcome.retry_count)


def store_outcomes(celery: Celery, requests: list[AllocationRequest],
                   outcomes: list[Outcome]) -> None:
    """Publish each request's answer under its own request id in the result backend."""
    for request, outcome in zip(requests, outcomes):
        celery.backend.store_result(request.request_id, outcome.to_result(), "SUCCESS")
        observe_generation(request, outcome)
