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
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

MAX_BATCH = 200            # keeps one transaction (and one redelivery) bounded
INFLIGHT_LIMIT = 1         # outstanding messages per shard queue per API process
INFLIGHT_TIMEOUT_S = 0.25  # stop waiting for an answer (a slow or restarted worker) after this
HANDOFF_TIMEOUT_S = 10.0


class _Item:
    __slots__ = ("request_id", "message", "done", "error")

    def __init__(self, request_id: str, message: dict) -> None:
        self.request_id = request_id
        self.message = message
        self.done = threading.Event()
        self.error: BaseException | None = None


class _Batch:
    __slots__ = ("waiting", "sent_at")

    def __init__(self, request_ids: set[str]) -> None:
        self.waiting = request_ids
        self.sent_at = time.monotonic()


class Coalescer:
    def __init__(self, send: Callable[[str, list[dict]], None], *,
                 inflight_limit: int = INFLIGHT_LIMIT,
                 inflight_timeout_s: float = INFLIGHT_TIMEOUT_S,
                 max_batch: int = MAX_BATCH) -> None:
        self._send = send
        self._limit = inflight_limit
        self._timeout = inflight_timeout_s
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: dict[str, list[_Item]] = {}
        self._inflight: dict[str, list[_Batch]] = {}
        self._batch_of: dict[str, tuple[str, _Batch]] = {}
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.messages_sent = 0
        self.requests_sent = 0

    def publish(self, queue: str, request_id: str, message: dict) -> None:
        """Hand ``message`` to the flusher; return once it is on the broker (or raise)."""
        item = _Item(request_id, message)
        with self._cond:
            self._ensure_flusher()
            self._pending.setdefault(queue, []).append(item)
            self._cond.notify()
        if not item.done.wait(HANDOFF_TIMEOUT_S):
            raise TimeoutError(f"the publisher did not publish within {HANDOFF_TIMEOUT_S:.0f}s")
        if item.error is not None:
            raise item.error

    def answered(self, request_id: str) -> None:
        """A request's answer was published: its shard may be sent the next batch."""
        with self._cond:
            entry = self._batch_of.pop(request_id, None)
            if entry is None:
                return
            queue, batch = entry
            batch.waiting.discard(request_id)
            if not batch.waiting:
                self._retire(queue, batch)
                self._cond.notify()

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
        self._thread = threading.Thread(target=self._run, name="docnum-coalescer", daemon=True)
        self._thread.start()

    def _ready_queues(self) -> tuple[list[str], float | None]:
        """Queues that may send now, and how long until an in-flight batch times out."""
        now = time.monotonic()
        ready, next_expiry = [], None
        for queue in self._pending:
            batches = self._inflight.get(queue, [])
            for batch in [b for b in batches if now - b.sent_at >= self._timeout]:
                self._retire(queue, batch)
            if len(batches) < self._limit:
                ready.append(queue)
            else:
                expiry = min(b.sent_at for b in batches) + self._timeout - now
                next_expiry = expiry if next_expiry is None else min(next_expiry, expiry)
        return ready, next_expiry

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready, wait_s = self._ready_queues()
                    if ready:
                        break
                    self._cond.wait(wait_s)
                work = []
                for queue in ready:
                    items = self._pending.pop(queue)
                    chunks = [items[i:i + self._max_batch]
                              for i in range(0, len(items), self._max_batch)]
                    for chunk in chunks:
                        batch = _Batch({item.request_id for item in chunk})
                        self._inflight.setdefault(queue, []).append(batch)
                        for item in chunk:
                            self._batch_of[item.request_id] = (queue, batch)
                        work.append((queue, chunk, batch))
            for queue, chunk, batch in work:
                self._flush(queue, chunk, batch)

    def _flush(self, queue: str, chunk: list[_Item], batch: _Batch) -> None:
        error: BaseException | None = None
        try:
            self._send(queue, [item.message for item in chunk])
            self.messages_sent += 1
            self.requests_sent += len(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the request threads
            error = exc
            with self._cond:
                self._retire(queue, batch)
                batch.waiting.clear()
        for item in chunk:
            item.error = error
            item.done.set()
