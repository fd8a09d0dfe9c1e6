"""Waiting for a request's answer without polling (Redis pub/sub), or by polling (embedded).

Every message an API process publishes names that process's own answer channel
(``reply_channel``); the shard worker stores each answer under its request id as Celery would
and publishes it on that channel. One listener thread per API process subscribes to it and
wakes the thread waiting for that request id, so a synchronous ``/generate`` costs no Redis
round trips while it waits, and each process only reads its own answers (with one pattern
subscription per process, each read every answer of every process: 8 % of an API process's
CPU under load, half of it for nothing). An answer published elsewhere (a worker of an older
release, on Celery's per-key channel) is still found: a waiter looks in the result backend
every 2 s.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from docnum.api.frontdoor.request_store import _result_from_meta

ANSWER_CHANNEL_PREFIX = "docnum:answers:"

log = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: dict | None = None


class PubSubWaiter:
    def __init__(self, client: redis.Redis, fetch: Callable[[str], dict | None]) -> None:
        self.redis = client
        self.fetch = fetch
        self._slots: dict[str, list[_Slot]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        # Told about every answer to this process (the coalescer paces on it).
        self.on_answer: Callable[[str], None] | None = None
        self._channel: tuple[int, str] | None = None

    @property
    def reply_channel(self) -> str:
        """This process's answer channel (gunicorn forks: one per process, made after fork)."""
        pid = os.getpid()
        if self._channel is None or self._channel[0] != pid:
            name = f"{ANSWER_CHANNEL_PREFIX}{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
            self._channel = (pid, name)
        return self._channel[1]

    def start(self) -> None:
        """Make sure this process's listener runs (idempotent, cheap)."""
        self._ensure_listener()

    def _ensure_listener(self) -> None:
        import os

        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()  # gunicorn forks: each worker process runs its own listener
            self._ready.clear()
            self._thread = threading.Thread(target=self._listen, name="docnum-result-listener",
                                            daemon=True)
            self._thread.start()
        self._ready.wait(2.0)

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.reply_channel)
                self._ready.set()
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = json.loads(message["data"])
                    # A batch's answers for this process arrive as one list.
                    for meta in data if isinstance(data, list) else (data,):
                        self._deliver(meta)
            except Exception as exc:  # reconnect; waiters fall back to fetches
                self._ready.set()
                log.warning("result listener lost Redis (%s); reconnecting", exc)
                time.sleep(0.5)

    def _deliver(self, meta: dict) -> None:
        request_id = meta.get("task_id") or ""
        if self.on_answer is not None:
            self.on_answer(request_id)
        with self._lock:
            slots = self._slots.pop(request_id, None)
        if not slots:
            return
        value = _result_from_meta(meta)
        for slot in slots:
            slot.value = value
            slot.event.set()

    def expect(self, request_id: str) -> _Slot:
        """Listen for ``request_id``'s answer from now on (before its message is published, so
        the answer cannot slip by and ``wait`` needs no first look in the result backend)."""
        self._ensure_listener()
        slot = _Slot()
        with self._lock:
            self._slots.setdefault(request_id, []).append(slot)
        return slot

    def forget(self, request_id: str, slot: _Slot | None) -> None:
        if slot is None:
            return
        with self._lock:
            slots = self._slots.get(request_id)
            if slots and slot in slots:
                slots.remove(slot)
                if not slots:
                    del self._slots[request_id]

    def wait(self, request_id: str, timeout: float, slot: _Slot | None = None) -> dict | None:
        """The answer, or None after ``timeout``. With a ``slot`` from ``expect`` registered
        before publishing, the first look in the result backend is skipped."""
        if timeout <= 0:
            self.forget(request_id, slot)
            return self.fetch(request_id)
        registered_early = slot is not None
        if slot is None:
            slot = self.expect(request_id)
        try:
            if not registered_early:
                # The answer may have been stored before we registered: look once, then wait.
                value = self.fetch(request_id)
                if value is not None:
                    return value
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self.fetch(request_id)
                # Wake now and then to fetch: a listener reconnect could have missed a publish.
                if slot.event.wait(min(remaining, 2.0)):
                    return slot.value if slot.value is not None else self.fetch(request_id)
                value = self.fetch(request_id)
                if value is not None:
                    return value
        finally:
            self.forget(request_id, slot)


class PollingWaiter:
    """For result backends without pub/sub (the embedded default's SQLite)."""

    def __init__(self, fetch: Callable[[str], dict | None], interval: float = 0.05) -> None:
        self.fetch = fetch
        self.interval = interval

    def expect(self, request_id: str) -> None:
        return None

    def forget(self, request_id: str, slot: object) -> None:
        pass

    def wait(self, request_id: str, timeout: float, slot: object = None) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            value = self.fetch(request_id)
            if value is not None or time.monotonic() >= deadline:
                return value
            time.sleep(min(self.interval, max(deadline - time.monotonic(), 0)))
