"""Front-door coalescing: requests for one shard that arrive together leave as ONE message.

A Celery message costs ~1 ms of CPU to publish and ~3 ms to consume, while the allocator serves
a list of requests on one counter in one transaction for about the price of one. Batching only
happens if requests are *held back* while the shard is busy, so each API process keeps at most
``inflight_limit`` messages per shard queue outstanding: the flusher thread sends what has
gathered for a queue when that queue's previous message has been answered (every answer is
published on the result backend; the API's listener reports it through ``answered``), or after
``inflight_timeout_s`` — whichever comes first. Under light load a message carries one request
and leaves at once; under load the batch grows to whatever arrived during one worker cycle (Nagle's
algorithm, with the shard worker's answer as the acknowledgement).

Request threads hand their message over and wait (normally well under a millisecond, at most one
worker cycle) until it is on the broker; publishing errors (Redis down) are handed back to every
waiting thread, which then takes the DB-only path exactly as if it had published itself.

Who publishes: a request that finds its queue free publishes its own message at once, and the
answer that frees a queue publishes what gathered meanwhile, right on the listener thread that
received it. Handing either to another thread cost a wake-up and, on a busy process, a wait for
the GIL of up to its 5 ms switch interval, during which the shard worker sat idle. The flusher
thread only sends what an in-flight timeout released.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

MAX_BATCH = 200            # keeps one transaction (and one redelivery) bounded
INFLIGHT_LIMIT = 1         # outstanding messages per shard queue per API process
INFLIGHT_TIMEOUT_S = 0.25  # stop waiting for an answer (a slow or restarted worker) after this
HANDOFF_TIMEOUT_S = 10.0
FILL = 16                  # a lingering batch leaves as soon as it holds this many requests
BUSY_BATCH = 4             # linger only after a batch at least this big (the shard is busy)


class _Item:
    __slots__ = ("request_id", "message", "done", "error")

    def __init__(self, request_id: str, message: dict) -> None:
        self.request_id = request_id
        self.message = message
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Batch:
    __slots__ = ("waiting", "sent_at", "size")

    def __init__(self, request_ids: set[str]) -> None:
        self.waiting = request_ids
        self.sent_at = time.monotonic()
        self.size = len(request_ids)


class Coalescer:
    def __init__(self, send: Callable[[str, list[dict]], None], *,
                 inflight_limit: int = INFLIGHT_LIMIT,
                 inflight_timeout_s: float = INFLIGHT_TIMEOUT_S,
                 max_batch: int = MAX_BATCH, linger_s: float = 0.0,
                 fill: int = FILL) -> None:
        self._send = send
        self._limit = inflight_limit
        self._timeout = inflight_timeout_s
        self._max_batch = max_batch
        self._linger = linger_s
        self._fill = fill
        self._hold_until: dict[str, float] = {}
        self._cond = threading.Condition()
        self._pending: dict[str, list[_Item]] = {}
        self._inflight: dict[str, list[_Batch]] = {}
        self._batch_of: dict[str, tuple[str, _Batch]] = {}
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.messages_sent = 0
        self.requests_sent = 0

    def publish(self, queue: str, request_id: str, message: dict) -> None:
        """Hand ``message`` over; return once it is on the broker (or raise)."""
        item = _Item(request_id, message)
        with self._cond:
            self._ensure_flusher()
            first_held = queue not in self._pending
            self._pending.setdefault(queue, []).append(item)
            work = self._take(queue)
            if not work and first_held:
                self._cond.notify()  # the flusher now watches this queue's release time
        self._flush_all(work)
        if not item.done.wait(HANDOFF_TIMEOUT_S):
            raise TimeoutError(f"the publisher did not publish within {HANDOFF_TIMEOUT_S:.0f}s")
        if item.error is not None:
            raise item.error

    def answered(self, request_id: str) -> None:
        """A request's answer was published: its shard may be sent the next batch (at once,
        from the calling thread)."""
        work: list = []
        with self._cond:
            entry = self._batch_of.pop(request_id, None)
            if entry is None:
                return
            queue, batch = entry
            batch.waiting.discard(request_id)
            if not batch.waiting:
                self._retire(queue, batch)
                if self._linger > 0 and batch.size >= BUSY_BATCH:
                    # The shard is busy: let the next batch gather a little longer.
                    self._hold_until[queue] = time.monotonic() + self._linger
                work = self._take(queue)
                if not work and queue in self._pending:
                    self._cond.notify()  # the flusher sends it when the hold ends
        self._flush_all(work)

    def _ready(self, queue: str, now: float) -> tuple[bool, float | None]:
        """Under the lock: may ``queue`` send now? If not, when to look again."""
        batches = self._inflight.get(queue, [])
        for batch in [b for b in batches if now - b.sent_at >= self._timeout]:
            self._retire(queue, batch)
        if len(batches) >= self._limit:
            return False, min(b.sent_at for b in batches) + self._timeout
        hold = self._hold_until.get(queue)
        if hold is not None and now < hold and len(self._pending.get(queue, ())) < self._fill:
            return False, hold
        return True, None

    def _take(self, queue: str) -> list:
        """Under the lock: what ``queue`` may send now, registered as in flight."""
        items = self._pending.get(queue)
        if not items or not self._ready(queue, time.monotonic())[0]:
            return []
        del self._pending[queue]
        self._hold_until.pop(queue, None)
        work = []
        for i in range(0, len(items), self._max_batch):
            chunk = items[i:i + self._max_batch]
            batch = _Batch({item.request_id for item in chunk})
            self._inflight.setdefault(queue, []).append(batch)
            for item in chunk:
                self._batch_of[item.request_id] = (queue, batch)
            work.append((queue, chunk, batch))
        return work

    def _flush_all(self, work: list) -> None:
        for queue, chunk, batch in work:
            self._flush(queue, chunk, batch)

    def _retire(self, queue: str, batch: _Batch) -> None:
        batches = self._inflight.get(queue, [])
        if batch in batches:
            batches.remove(batch)
        for request_id in batch.waiting:
            self._batch_of.pop(request_id, None)

    def _ensure_flusher(self) -> None:
        # gunicorn forks after import: each worker process needs its own flusher thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._pending, self._inflight, self._batch_of = {}, {}, {}
        self._hold_until = {}
        self._thread = threading.Thread(target=self._run, name="docnum-coalescer", daemon=True)
        self._thread.start()

    def _ready_queues(self) -> tuple[list[str], float | None]:
        """Queues that may send now, and how long until the next one may."""
        now = time.monotonic()
        ready, next_at = [], None
        for queue in list(self._pending):
            ok, again_at = self._ready(queue, now)
            if ok:
                ready.append(queue)
            elif again_at is not None:
                next_at = again_at if next_at is None else min(next_at, again_at)
        return ready, (None if next_at is None else max(next_at - now, 0.0))

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready, wait_s = self._ready_queues()
                    if ready:
                        break
                    self._cond.wait(wait_s)
                work = [w for queue in ready for w in self._take(queue)]
            self._flush_all(work)

    def _flush(self, queue: str, chunk: list[_Item], batch: _Batch) -> None:
        error: BaseException | None = None
        try:
            self._send(queue, [item.message for item in chunk])
            self.messages_sent += 1
            self.requests_sent += len(chunk)
        except BaseException as exc:  # handed to the request threads
            error = exc
            with self._cond:
                self._retire(queue, batch)
                batch.waiting.clear()
        for item in chunk:
            item.error = error
            item.done.set()
