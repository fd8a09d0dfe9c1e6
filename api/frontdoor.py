"""The front door: accept an issuing request once, queue it on its shard, hand back its answer.

Queue mode: claim the request id in the request store (Idempotency-Key → one request id),
publish one message on the shard queue of its counter key, and either return 202 or wait for
the answer. DB-only mode (Redis unreachable, SPEC §6): allocate right here through the same
``allocate_numbers`` the workers call, marked ``fallback_used=DB_ONLY``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.engine import Engine

from api.request_store import Record
from shared import ledger, metrics
from shared.allocation import Outcome
from shared.db import transaction
from shared.errors import DocnumError
from shared.issuing import AllocationRequest
from shared.routing import queue_for
from shared.settings import Settings
from workers.tasks import ALLOCATE_TASK, observe_generation, serve_requests

log = logging.getLogger(__name__)

BROKER_ERRORS = (redis.RedisError, KombuOperationalError, ConnectionError, OSError)


@dataclass
class Answer:
    """Where a request stands: queued, or finished with a number or an error."""

    request_id: str
    status: str                         # queued | succeeded | failed
    number: dict | None = None
    error: DocnumError | None = None
    joined: bool = False                # an earlier submission with this key already existed


class RedisHealth:
    """Remembers a Redis failure for a moment so requests go straight to the DB-only path."""

    RETRY_AFTER_S = 2.0

    def __init__(self) -> None:
        self._down_until = 0.0
        self._lock = threading.Lock()

    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def mark_down(self) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self.RETRY_AFTER_S
        metrics.redis_connection_status.set(0)

    def mark_up(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
        metrics.redis_connection_status.set(1)


def answer_from_result(request_id: str, result: dict) -> Answer:
    if result.get("ok"):
        return Answer(request_id, "succeeded", number=result["number"])
    return Answer(request_id, "failed", error=DocnumError.from_dict(result.get("error") or {}))


def answer_from_outcome(outcome: Outcome) -> Answer:
    if outcome.ok:
        return Answer(outcome.request_id, "succeeded", number=outcome.number)
    return Answer(outcome.request_id, "failed", error=outcome.error)


class FrontDoor:
    def __init__(self, settings: Settings, celery: Celery, engine: Engine, store, waiter,
                 health: RedisHealth | None) -> None:  # noqa: ANN001
        self.settings = settings
        self.celery = celery
        self.engine = engine
        self.store = store
        self.waiter = waiter
        self.health = health  # None on the embedded default: no Redis to lose

    # -- submission -----------------------------------------------------------------------
    def submit(self, request: AllocationRequest) -> Answer:
        if self.health is not None and not self.health.available():
            return self._serve_directly(request)
        record = Record(request.request_id, request.actor, request.fingerprint or "",
                        request.mode, request.counter_key, request.submitted_at or "")
        try:
            existing = self.store.claim(record)
            if existing is not None:
                return self._join(existing, request)
            done = self._already_issued(request)
            if done is not None:
                return done
            self.celery.send_task(ALLOCATE_TASK, args=[[request.to_message()]],
                                  queue=queue_for(request.counter_key,
                                                  self.settings.queue_shards),
                                  ignore_result=True, retry=False)
        except BROKER_ERRORS as exc:
            if self.health is None:
                raise
            log.warning("Redis unavailable (%s): serving %s through the DB-only path",
                        type(exc).__name__, request.request_id)
            self.health.mark_down()
            return self._serve_directly(request)
        if self.health is not None:
            self.health.mark_up()
        return Answer(request.request_id, "queued")

    def _join(self, existing: Record, request: AllocationRequest) -> Answer:
        if existing.fingerprint != (request.fingerprint or ""):
            raise DocnumError("IDEMPOTENCY_KEY_REUSED",
                              "this Idempotency-Key was already used with a different body")
        result = self.store.result(request.request_id)
        if result is not None:
            answer = answer_from_result(request.request_id, result)
        else:
            answer = self._already_issued(request) or Answer(request.request_id, "queued")
        answer.joined = True
        return answer

    def _already_issued(self, request: AllocationRequest) -> Answer | None:
        """A request the ledger already holds (its store record expired, or Redis restarted)."""
        with transaction(self.engine) as session:
            row = ledger.by_request_id(session, request.request_id)
            if row is None:
                return None
            if row.idempotency_fingerprint not in (None, request.fingerprint):
                raise DocnumError("IDEMPOTENCY_KEY_REUSED",
                                  "this Idempotency-Key was already used with a different body")
            return Answer(request.request_id, "succeeded", number=ledger.issued_number(row),
                          joined=True)

    def _serve_directly(self, request: AllocationRequest) -> Answer:
        outcome = serve_requests(self.settings, [request], fallback_used="DB_ONLY")[0]
        observe_generation(request, outcome)
        return answer_from_outcome(outcome)

    # -- answers --------------------------------------------------------------------------
    def wait(self, request_id: str, timeout: float) -> Answer | None:
        try:
            result = self.waiter.wait(request_id, timeout)
        except BROKER_ERRORS:
            result = None
        return answer_from_result(request_id, result) if result is not None else None

    def status(self, request_id: str) -> tuple[Answer, str] | None:
        """(answer, owner) from the result backend, the request store, then the database."""
        record = None
        if self.health is None or self.health.available():
            try:
                result = self.store.result(request_id)
                record = self.store.get(request_id)
                if result is not None:
                    owner = record.client if record else self._owner_from_db(request_id)
                    return answer_from_result(request_id, result), owner or ""
            except BROKER_ERRORS:
                record = None
        with transaction(self.engine) as session:
            row = ledger.by_request_id(session, request_id)
            if row is not None:
                return (Answer(request_id, "succeeded", number=ledger.issued_number(row)),
                        row.issued_by)
            failure = ledger.failed_request(session, request_id)
        if record is not None:
            return Answer(request_id, "queued"), record.client
        if failure is not None:
            error = DocnumError.from_dict({"code": failure.error_code,
                                           "detail": "the request was refused"})
            return Answer(request_id, "failed", error=error), failure.actor or ""
        return None

    def _owner_from_db(self, request_id: str) -> str | None:
        with transaction(self.engine) as session:
            row = ledger.by_request_id(session, request_id)
            return row.issued_by if row else None
