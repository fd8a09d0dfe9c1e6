"""The front door: accept an issuing request once, queue it on its shard, hand back its answer.

Queue mode: claim the request id in the request store (Idempotency-Key → one request id),
publish one message on the shard queue of its counter key, and either return 202 or wait for
the answer. DB-only mode (Redis unreachable, docs/reference.md#failure-behaviour): allocate
right here through the same ``serve_requests`` the workers call, marked ``fallback_used=DB_ONLY``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import redis
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.engine import Engine

from docnum.api.frontdoor.coalescer import Coalescer
from docnum.api.frontdoor.health import DatabaseProbe, RedisHealth
from docnum.api.frontdoor.publisher import make_publisher
from docnum.api.frontdoor.request_store import Record
from docnum.api.frontdoor.waiter import PubSubWaiter
from docnum.shared import issuing, ledger
from docnum.shared.allocation import Outcome, observe_generation, serve_requests
from docnum.shared.clock import SystemClock, iso
from docnum.shared.context import NumberingContext
from docnum.shared.db import ledger_identity, service_busy, transaction
from docnum.shared.errors import DocnumError
from docnum.shared.issuing import AllocationRequest
from docnum.shared.refcache import DbReference, ReferenceCache, Snapshot, load_snapshot
from docnum.shared.routing import ALLOCATE_TASK, queue_for
from docnum.shared.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from docnum.api.frontdoor.request_store import RedisRequestStore, SqlRequestStore
    from docnum.api.frontdoor.waiter import PollingWaiter
    from docnum.api.ratelimit import Admission
    from docnum.shared.configs import ConfigView
    from docnum.shared.refcache import Reference

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
    slot: object = None                 # where the waiter will put the answer (``expect``)


# Failures that say nothing about the request itself: a retry with the same Idempotency-Key
# queues it again instead of repeating the stored failure (see ``FrontDoor._join``).
TRANSIENT_FAILURES = frozenset({"SERVICE_BUSY", "INTERNAL_ERROR", "MISROUTED"})


def answer_from_result(request_id: str, result: dict) -> Answer:
    if result.get("ok"):
        return Answer(request_id, "succeeded", number=result["number"])
    error = DocnumError.from_dict(result.get("error") or {})
    if error.status == 503 and error.retry_after is None:
        # Answers stored before errors carried Retry-After across the result backend;
        # docs/reference.md#failure-behaviour wants every 503 to carry one.
        error.retry_after = service_busy().retry_after
    return Answer(request_id, "failed", error=error)


def answer_from_outcome(outcome: Outcome) -> Answer:
    if outcome.ok:
        return Answer(outcome.request_id, "succeeded", number=outcome.number)
    return Answer(outcome.request_id, "failed", error=outcome.error)


class _SessionReference:
    """Reference data straight from the database, one short transaction per question."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check_codes(self, ctx: NumberingContext) -> None:
        with transaction(self.engine) as session:
            DbReference(session).check_codes(ctx)

    def resolve(self, project: str, correspondence_type: str | None) -> ConfigView:
        with transaction(self.engine) as session:
            return DbReference(session).resolve(project, correspondence_type)


class FrontDoor:
    def __init__(self, settings: Settings, celery: Celery, engine: Engine,
                 store: RedisRequestStore | SqlRequestStore,
                 waiter: PubSubWaiter | PollingWaiter, health: RedisHealth | None) -> None:
        self.settings = settings
        self.celery = celery
        self.engine = engine
        self.store = store
        self.waiter = waiter
        self.health = health  # None on the embedded default: no Redis to lose
        # With Redis, publish fast-failing so that an outage diverts to the DB-only path at
        # once; the embedded SQL broker has nothing to lose and keeps Celery's defaults.
        self.publisher = make_publisher(settings, celery) if health is not None else None
        # With DOCNUM_COALESCE_INFLIGHT > 0, requests for one shard that arrive while its last
        # message is unanswered leave together as one message (api/frontdoor/coalescer.py);
        # with 0 each request is published at once and the shard worker batches what it finds
        # waiting (workers/shard_consumer.py).
        self.coalescer = None
        if settings.coalesce_inflight > 0:
            self.coalescer = Coalescer(
                lambda queue, messages: self.publisher.send(
                    ALLOCATE_TASK, [messages], queue, kwargs=self._task_kwargs()),
                inflight_limit=settings.coalesce_inflight,
                linger_s=settings.coalesce_linger_ms / 1000)
            if isinstance(waiter, PubSubWaiter):
                waiter.on_answer = self.coalescer.answered
        self.references = ReferenceCache(self._load_snapshot)
        # A retry publishes an unanswered request again after this long (``_requeue_if_lost``).
        self.requeue_after_s = 2.0 * settings.visibility_timeout
        self.db_probe = DatabaseProbe(settings.database_url, engine)

    # -- submission -----------------------------------------------------------------------
    def accept(self, *, client: str, idempotency_key: str, route: str, mode: str, body: dict,
               ctx: NumberingContext, client_ip: str | None,
               user_agent: str | None, expect_answer: bool = False,
               admission: Admission | None = None) -> Answer:
        """Take one issuing request: join an earlier one with the same key, queue it, or (Redis
        down) serve it on the DB-only path. Refusals (codes, config, template fields) raise
        before anything is queued, and leave no trace of the key. ``admission``: the request's
        rate-limit budgets, counted in the same round trip as its claim (api/ratelimit.py)."""
        now = SystemClock().now()
        request_id = issuing.request_id_for(client, idempotency_key)
        fingerprint = issuing.fingerprint(f"{route}:{mode}", body)
        record = Record(request_id, client, fingerprint, mode, "", iso(now) or "")

        def build(reference: Session | Reference) -> AllocationRequest:
            config, counter_key, day = issuing.prepare(reference, ctx, now=now,
                                                       timezone=self.settings.timezone)
            return issuing.build_request(
                request_id=request_id, mode=mode, ctx=ctx, config=config,
                counter_key=counter_key, day=day, actor=client, now=now, client_ip=client_ip,
                user_agent=user_agent, idempotency_key=idempotency_key,
                fingerprint_=fingerprint)

        if self.health is not None and not self.health.available():
            if admission is not None:
                admission.count_now()
            return self._serve_directly(self._build_from_db(build))
        # The database was seen down by the last probe: refuse before anything is claimed or
        # queued (a queued request would only wait for the outage), unless it is back.
        self.check_database(only_if_seen_down=True)
        try:
            existing, generation = self.store.claim_with_generation(record, admission)
        except BROKER_ERRORS as exc:
            self._redis_down(exc, request_id)
            if admission is not None:
                admission.count_now()
            return self._serve_directly(self._build_from_db(build))
        if existing is not None:
            return self._join(existing, build(self._reference(generation)))
        try:
            request = build(self._reference(generation))
        except DocnumError:
            self._forget(request_id)  # a refused request was never accepted
            raise
        # A synchronous caller listens before publishing: no first look for the answer later.
        slot = self.waiter.expect(request_id) if expect_answer else None
        try:
            self._publish(request)
        except BaseException as exc:
            self.waiter.forget(request_id, slot)  # nobody will wait on this slot
            if not isinstance(exc, BROKER_ERRORS):
                raise
            self._redis_down(exc, request_id)
            return self._serve_directly(request)
        if self.health is not None:
            self.health.mark_up()
        return Answer(request_id, "queued", slot=slot)

    def _reference(self, generation: object) -> Reference:
        """The cached snapshot while the store reports a generation, else the database."""
        if generation is None:
            return _SessionReference(self.engine)
        return self.references.get(generation)

    def _build_from_db(self, build: Callable[[Session], AllocationRequest]) -> AllocationRequest:
        with transaction(self.engine) as session:
            return build(session)

    def _forget(self, request_id: str) -> None:
        try:
            self.store.release(request_id)
        except BROKER_ERRORS:
            pass

    def _redis_down(self, exc: BaseException, request_id: str) -> None:
        if self.health is None:
            raise exc
        log.warning("Redis unavailable (%s): serving %s through the DB-only path",
                    type(exc).__name__, request_id)
        self.health.mark_down(exc)

    def _publish(self, request: AllocationRequest) -> None:
        queue = queue_for(request.counter_key, self.settings.queue_shards)
        if self.publisher is not None and self.coalescer is None:
            self.publisher.send(ALLOCATE_TASK, [[request.to_message()]], queue,
                                kwargs=self._task_kwargs())
        elif self.publisher is not None:
            self.waiter.start()  # the coalescer learns of answers from the listener
            self.coalescer.publish(queue, request.request_id, request.to_message())
        else:
            self.celery.send_task(ALLOCATE_TASK, args=[[request.to_message()]],
                                  kwargs={"ledger": ledger_identity(self.engine)},
                                  queue=queue, ignore_result=True, retry=False)

    def _task_kwargs(self) -> dict:
        """Whose ledger the requests belong to, and where this process hears the answers."""
        kwargs = {"ledger": ledger_identity(self.engine)}
        if isinstance(self.waiter, PubSubWaiter):
            kwargs["reply"] = self.waiter.reply_channel
        return kwargs

    def _load_snapshot(self) -> Snapshot:
        with transaction(self.engine) as session:
            return load_snapshot(session)

    def _join(self, existing: Record, request: AllocationRequest) -> Answer:
        if existing.fingerprint != (request.fingerprint or ""):
            raise DocnumError("IDEMPOTENCY_KEY_REUSED",
                              "this Idempotency-Key was already used with a different body")
        result = self.store.result(request.request_id)
        if result is not None:
            answer = answer_from_result(request.request_id, result)
            if answer.error is not None and answer.error.code in TRANSIENT_FAILURES:
                # The worker gave up on it (database down longer than its patience): the
                # failure is the outage's, not the request's. Queue it again; the ledger's
                # unique request id still guarantees at most one number.
                answer = self._already_issued(request) or self._requeue(existing, request)
        else:
            answer = self._already_issued(request) or self._requeue_if_lost(existing, request)
        answer.joined = True
        return answer

    def _requeue(self, existing: Record, request: AllocationRequest) -> Answer:
        log.info("request %s failed transiently; queueing it again", request.request_id)
        self.store.drop_result(request.request_id)  # or the waiter would read the old failure
        # Restamped: its old failure now predates it, so further retries wait for this attempt
        # (``_requeue_if_lost``) instead of queueing it yet again.
        self.store.restamp(existing, request.submitted_at or existing.submitted_at)
        self._publish(request)
        return Answer(request.request_id, "queued")

    def _requeue_if_lost(self, existing: Record, request: AllocationRequest) -> Answer:
        """A retry of a request that is still unanswered long after it was accepted.

        Its message may be gone: a Redis failover loses what the old master had not yet
        replicated, and the request record can survive while the message that followed it did
        not. Past ``requeue_after_s`` (twice the visibility timeout, by when even a message held
        by a dead worker has come back) the retry publishes the message again. If the first
        one still exists, the second finds the number in the ledger (unique request id) and
        returns it: wasted work, never a second number.
        """
        with transaction(self.engine) as session:
            failure = ledger.failed_request(session, request.request_id)
        if failure is not None and failure.error_code in TRANSIENT_FAILURES:
            if (iso(failure.created_at) or "") >= existing.submitted_at:
                return self._requeue(existing, request)  # failed since it was last queued
            failure = None  # an earlier attempt's failure: this attempt may still be queued
        if failure is not None:
            return Answer(request.request_id, "failed", error=DocnumError.from_dict(
                {"code": failure.error_code, "detail": "the request was refused"}))
        try:
            age = (datetime.fromisoformat(request.submitted_at or "")
                   - datetime.fromisoformat(existing.submitted_at)).total_seconds()
        except ValueError:
            age = 0.0
        if age > self.requeue_after_s:
            log.warning("request %s unanswered %.0f s after it was accepted; queueing it again",
                        request.request_id, age)
            self._publish(request)
        return Answer(request.request_id, "queued")

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
    # A wait that ends without an answer this soon after the database was seen down is the
    # outage's doing (the worker is still catching up): 503, not 202.
    OUTAGE_MEMORY_S = 10.0

    def check_database(self, *, only_if_seen_down: bool = False) -> None:
        """Raise ``503 SERVICE_BUSY`` (with Retry-After) when the database is unreachable.

        ``only_if_seen_down`` (before queueing): only when the last probe saw it down, so the
        normal path costs nothing. Otherwise (a synchronous wait ended without an answer): when
        it is down now or was seen down in the last ``OUTAGE_MEMORY_S``. A request that is
        merely slow stays a 202. The request itself stays queued; a retry with the same
        Idempotency-Key joins it (or, if the worker gave up on it meanwhile, queues it again),
        so nothing is lost and nothing is issued twice.
        """
        if only_if_seen_down:
            if not self.db_probe.last_ok and not self.db_probe.reachable():
                raise service_busy()
            return
        if not self.db_probe.reachable():
            raise DocnumError("SERVICE_BUSY", "the database cannot be reached; the request "
                              "is queued: retry with the same Idempotency-Key",
                              retry_after=service_busy().retry_after)
        if self.db_probe.down_within(self.OUTAGE_MEMORY_S):
            raise DocnumError("SERVICE_BUSY", "the database was unreachable moments ago and "
                              "the request is still queued: retry with the same "
                              "Idempotency-Key", retry_after=2)

    def wait(self, request_id: str, timeout: float, slot: object = None) -> Answer | None:
        try:
            result = self.waiter.wait(request_id, timeout, slot)
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
                if record is not None:
                    # Accepted and not answered yet: no database round trip for a poll.
                    return Answer(request_id, "queued"), record.client
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
