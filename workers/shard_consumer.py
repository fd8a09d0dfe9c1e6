"""The shard consumer: takes what waits on all of a worker's shards and serves it as ONE batch.

A shard worker is a Celery worker (Flower sees it, beat and the maintenance queue are untouched,
remote control works) whose shard queues are not consumed by kombu but by this consumer, in a
thread of its own:

1. **take**: one Redis script tops up each shard's processing list from its queue and returns
   every message of those lists, oldest first (workers/shard_queues.py: a message is never held
   only in transit, and the leftovers of a crashed, frozen or cut-off consumer come first);
2. **serve** every request of every message in ONE transaction (``serve_requests``: grouped by
   counter key, keys locked in order; a message for another deployment's ledger is refused);
3. **answer**: store each answer under its request id as Celery would and publish it on the
   sending API process's channel, then remove the messages from the processing lists.

With nothing waiting, one thread per shard blocks in ``BLMOVE`` (which also moves the message
into the processing list in the same step) and wakes the consumer. Under load the consumer
never waits: each take returns what arrived while the last batch was served, so the batch grows
with the load and the fixed cost of a transaction, a Redis round trip and the answers is shared
by every request in it (docs/benchmarks.md).

Which shards: the worker's ownership (workers/ownership.py) decides, batch by batch: its home
shards, those it adopted, minus those handed back. The consumer reports each batch's start and
end so that a stuck batch makes the worker stand down.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, bootsteps
from celery.worker import control
from celery.worker import state as worker_state
from kombu import Queue

from docnum.shared import redis_urls
from docnum.shared.allocation import Outcome, observe_generation
from docnum.shared.issuing import AllocationRequest
from docnum.shared.routing import ALLOCATE_TASK, SHARD_QUEUE_PREFIX
from docnum.shared.settings import Settings
from docnum.workers.messages import Message, decode, serve_messages, store_answers
from docnum.workers.ownership import ShardOwnership
from docnum.workers.shard_queues import ShardQueues, Taken, dead_letter_key

log = logging.getLogger("docnum.shard_consumer")

# Messages taken per shard per batch (a message carries one request, or a few that one API
# process coalesced).
TAKE_LIMIT = 200
DOORBELL_WAIT_S = 1.0
ERROR_BACKOFF_S = (0.1, 0.5, 1.0, 2.0)
# Transient failures are the outage's, not the request's: a worker that no longer owns the
# shard leaves them unanswered (and the message in the processing list) for the new owner.
TRANSIENT = frozenset({"SERVICE_BUSY", "INTERNAL_ERROR", "MISROUTED"})


class ShardConsumer:
    """Serves a worker's shard queues in batches, in a thread of its own."""

    def __init__(self, celery: Celery, settings: Settings, queues: list[str],
                 ownership: ShardOwnership | None = None, hostname: str | None = None,
                 events: Callable[[], Any] | None = None) -> None:
        self.celery = celery
        self.settings = settings
        self.static_queues = sorted(queues)
        self.ownership = ownership
        self.hostname = hostname or f"shard@{os.getpid()}"
        self.events = events   # the worker's event dispatcher: are task events wanted?
        client = redis_urls.redis_client(settings.broker_url,
                                         master_name=settings.redis_sentinel_master,
                                         socket_timeout=10.0)
        self.queues_ops = ShardQueues(client)
        self._client = client
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._doorbells: dict[str, threading.Thread] = {}
        self._dispatcher: Any = None
        self.batches = 0
        self.requests_served = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="docnum-shard-consumer",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then stop (a warm shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for bell in list(self._doorbells.values()):
            bell.join(DOORBELL_WAIT_S + 1)
        if self._dispatcher is not None:
            try:
                self._dispatcher.close()
            except Exception:  # the connection may be gone already; nothing is lost
                log.debug("closing the event dispatcher failed", exc_info=True)

    def queues(self) -> list[str]:
        return self.ownership.queues() if self.ownership is not None else self.static_queues

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            # Cleared BEFORE the take: a doorbell that moves a message after the take looked
            # (it was already blocked in BLMOVE) leaves the event set, so the idle wait below
            # returns at once instead of after DOORBELL_WAIT_S.
            self._wake.clear()
            try:
                served = self.serve_once()
                failures = 0
            except redis.RedisError as exc:
                delay = ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)]
                failures += 1
                log.warning("shard consumer cannot reach Redis (%s); retrying in %.1f s", exc,
                            delay)
                self._stop.wait(delay)
                continue
            except Exception:  # a bug must not stop the shard: log it, back off, go on
                log.exception("shard consumer failed; retrying")
                self._stop.wait(1.0)
                continue
            if not served:
                self._idle_wait()

    def _idle_wait(self) -> None:
        self._ring_doorbells()
        self._idle.set()
        self._wake.wait(DOORBELL_WAIT_S)
        self._idle.clear()

    def serve_once(self) -> int:
        """Take what waits on every shard of this worker and serve it; how many messages."""
        queues = self.queues()
        if not queues:
            return 0
        serving = self.ownership.serving if self.ownership is not None else None
        if serving is not None:
            serving.acquire()
        try:
            taken = self.queues_ops.take(queues, TAKE_LIMIT)
            if not taken:
                return 0
            if self.ownership is not None:
                self.ownership.begin_batch()
            try:
                self._serve(taken)
            finally:
                if self.ownership is not None:
                    self.ownership.end_batch()
            return len(taken)
        finally:
            if serving is not None:
                serving.release()

    # -- one batch ------------------------------------------------------------------------
    def _serve(self, taken: list[Taken]) -> None:
        started = time.monotonic()
        messages: list[Message] = []
        for item in taken:
            try:
                messages.append(decode(item))
            except Exception as exc:  # undecodable: nobody can answer it; keep it for a human
                log.error("set aside an unreadable message on %s (%s): see %s", item.queue,
                          exc, dead_letter_key(item.queue))
                self.queues_ops.dead_letter(item)
        if not messages:
            return
        self._task_events("task-received", messages)
        serve_messages(self.settings, messages)
        self._answer(messages)
        self.batches += 1
        self.requests_served += sum(len(m.requests) for m in messages)
        # The worker's own task counts (``celery inspect stats``, Flower's "Processed").
        worker_state.total_count[ALLOCATE_TASK] += len(messages)
        worker_state.all_total_count[0] += len(messages)
        self._task_events("task-succeeded", messages, runtime=time.monotonic() - started)

    def _answer(self, messages: list[Message]) -> None:
        """Store and publish every answer, then acknowledge the messages answered in full."""
        answered: list[Message] = []
        answers: list[tuple[AllocationRequest, Outcome, str | None]] = []
        for message in messages:
            if not self._may_answer(message):
                continue
            answered.append(message)
            answers.extend((r, o, message.reply)
                           for r, o in zip(message.requests, message.outcomes, strict=True))
        store_answers(self.celery, answers)
        if answered:
            with self._client.pipeline(transaction=False) as pipe:
                for message in answered:
                    ShardQueues.ack(pipe, message.taken)
                pipe.execute()
        for request, outcome, _ in answers:
            observe_generation(request, outcome)

    def _may_answer(self, message: Message) -> bool:
        if self.ownership is None or self.ownership.holds(message.taken.queue):
            return True
        if any(o.error is not None and o.error.code in TRANSIENT for o in message.outcomes):
            log.warning("shard %s changed hands while this batch was served: its transient "
                        "failures are left to the new owner", message.taken.queue)
            return False
        return True  # numbers (and refusals) are the ledger's: the same whoever reports them

    # -- waiting for work -----------------------------------------------------------------
    def _ring_doorbells(self) -> None:
        """One thread per shard blocks in BLMOVE while the consumer is idle."""
        for queue in self.queues():
            bell = self._doorbells.get(queue)
            if bell is None or not bell.is_alive():
                bell = threading.Thread(target=self._doorbell, args=(queue,), daemon=True,
                                        name=f"docnum-doorbell-{queue}")
                self._doorbells[queue] = bell
                bell.start()

    def _doorbell(self, queue: str) -> None:
        client = redis_urls.redis_client(self.settings.broker_url,
                                         master_name=self.settings.redis_sentinel_master,
                                         socket_timeout=DOORBELL_WAIT_S + 5)
        ops = ShardQueues(client)
        failures = 0
        while not self._stop.is_set() and queue in self.queues():
            if not self._idle.wait(DOORBELL_WAIT_S):
                continue  # the consumer is busy: it takes what arrives without us
            try:
                moved = ops.wait(queue, DOORBELL_WAIT_S)
                failures = 0
            except redis.RedisError:
                failures += 1
                self._stop.wait(ERROR_BACKOFF_S[min(failures, len(ERROR_BACKOFF_S) - 1)])
                continue
            if moved:
                self._idle.clear()
                self._wake.set()
        client.close()

    # -- Flower ---------------------------------------------------------------------------
    def _task_events(self, kind: str, messages: list[Message], runtime: float = 0.0) -> None:
        """Task events for Flower, when the worker's events are on (Flower turns them on)."""
        main = self.events() if self.events is not None else None
        if main is None or not getattr(main, "enabled", False):
            return
        groups = getattr(main, "groups", None)
        if groups and "task" not in groups:
            return
        try:
            if self._dispatcher is None:
                self._dispatcher = self.celery.events.Dispatcher(
                    self.celery.connection_for_write(), hostname=self.hostname, enabled=True)
            for message in messages:
                if kind == "task-received":
                    self._dispatcher.send("task-received", uuid=message.task_id,
                                          name=ALLOCATE_TASK, args=message.argsrepr,
                                          kwargs="{}", retries=0, eta=None, expires=None,
                                          root_id=message.task_id, parent_id=None)
                    self._dispatcher.send("task-started", uuid=message.task_id,
                                          pid=os.getpid())
                else:
                    served = sum(1 for o in message.outcomes if o.ok)
                    self._dispatcher.send("task-succeeded", uuid=message.task_id,
                                          result=f"{served} of {len(message.outcomes)} issued",
                                          runtime=runtime)
        except Exception as exc:  # monitoring must never cost a request its answer
            log.warning("could not send task events (%s)", exc)
            self._dispatcher = None


def is_shard_queue(name: str) -> bool:
    return name.startswith(SHARD_QUEUE_PREFIX)


class ShardConsumerStep(bootsteps.StartStopStep):
    """Celery consumer step: the worker's shard queues go to a ShardConsumer, not to kombu.

    Built before the consumer starts, it takes the shard queues out of the queues kombu will
    consume (``-Q`` still names them, so ``docnum worker --shards`` and Flower read as before).
    The consumer thread outlives Celery's own reconnects (``stop``), and finishes its batch at
    shutdown. On a broker that is not Redis (the embedded SQL fallback) it does nothing:
    kombu consumes the shard queues and runs the ``docnum.allocate`` task.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.consumer: ShardConsumer | None = None
        settings: Settings = c.app.conf.docnum_settings
        selected = list(c.app.amqp.queues.consume_from)
        shards = [name for name in selected if is_shard_queue(name)]
        if not shards or not settings.uses_redis:
            return
        c.app.amqp.queues.deselect(shards)
        ownership = c.app.conf.get("docnum_ownership")
        self.consumer = ShardConsumer(c.app, settings, shards, ownership=ownership,
                                      hostname=c.hostname,
                                      events=lambda: getattr(c, "event_dispatcher", None))
        _CONSUMERS[c.hostname] = self.consumer

    def start(self, c: Any) -> None:
        if self.consumer is not None:
            self.consumer.start()

    def shutdown(self, c: Any) -> None:
        if self.consumer is not None:
            self.consumer.stop()
            _CONSUMERS.pop(c.hostname, None)


_CONSUMERS: dict[str, ShardConsumer] = {}


@control.inspect_command()
def active_queues(state: Any) -> list[dict]:
    """The queues a worker consumes: kombu's, plus the shard queues its ShardConsumer serves
    (Flower's worker page and ``celery inspect active_queues`` read this)."""
    consumer = state.consumer
    queues = []
    if consumer.task_consumer:
        queues = [dict(queue.as_dict(recurse=True)) for queue in consumer.task_consumer.queues]
    shard_consumer = _CONSUMERS.get(consumer.hostname)
    if shard_consumer is not None:
        queues += [dict(Queue(name).as_dict(recurse=True)) for name in shard_consumer.queues()]
    return queues
