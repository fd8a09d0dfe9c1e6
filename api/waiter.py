"""Waiting for a request's answer without polling (Redis pub/sub), or by polling (embedded).

The Redis result backend publishes every stored result on its key's channel. One listener
thread per API process subscribes to the pattern once and wakes the thread waiting for that
request id, so a synchronous ``/generate`` costs no Redis round trips while it waits.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import redis

from api.request_store import RESULT_KEY_PREFIX, _result_from_meta

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
        # Told about every answer published by any worker (the coalescer paces on it).
        self.on_answer: Callable[[str], None] | None = None

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
                pubsub.psubscribe(RESULT_KEY_PREFIX + "*")
                self._ready.set()
                for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    channel = message["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode()
                    request_id = channel[len(RESULT_KEY_PREFIX):]
                    if self.on_answer is not None:
                        self.on_answer(request_id)
                    with self._lock:
                        slots = self._slots.pop(request_id, None)
                    if not slots:
                        continue
                    value = _result_from_meta(json.loads(message["data"]))
                    for slot in slots:
                        slot.value = value
                        slot.event.set()
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters fall back to fetches
                self._ready.set()
                log.warning("result listener lost Redis (%s); reconnecting", exc)
                time.sleep(0.5)

    def expect(self, request_id: str) -> _Slot:
        """Listen for ``request_id``'s answer from now on (before its message is published, so
        the answer cannot slip by and ``wait`` needs no first look in the result backend)."""
        self._ensure_listener()
        slot = _Slot()
        with self._lock:
            self._slots.setdefault(request_id, []).append(slot)
        return slot

    def forget(self, request_id: str, slot: _Slot) -> None:
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
            if slot is not None:
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
