"""Accepted requests: who asked, with which body, and where their answer will appear.

Production keeps them in Redis (``SET NX EX``, one round trip, expiring after
``DOCNUM_IDEMPOTENCY_TTL``); the embedded default keeps them in its SQLite database. Answers
live in the Celery result backend under the request id (``celery-task-meta-<id>``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import redis
from celery import Celery
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from docnum.shared.clock import SystemClock, from_db, iso, to_db
from docnum.shared.db import transaction
from docnum.shared.models import RequestRecord
from docnum.shared.refcache import GENERATION_KEY

if TYPE_CHECKING:
    from docnum.api.ratelimit import Admission

RESULT_KEY_PREFIX = "celery-task-meta-"

# The moving window of ``limits`` (its acquire_moving_window.lua, amount 1) for every budget,
# all or none, then the request's claim and the reference generation: ONE round trip.
# KEYS: budget lists…, request key, generation key.
# ARGV: now, budget count, (limit, expiry) per budget, record, record TTL.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local budgets = tonumber(ARGV[2])
for i = 1, budgets do
  local limit = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i])
  local entry = redis.call('lindex', KEYS[i], limit - 1)
  if entry and tonumber(entry) >= now - expiry then
    return {-i, false, false}
  end
end
for i = 1, budgets do
  local limit = tonumber(ARGV[1 + 2 * i])
  redis.call('lpush', KEYS[i], now)
  redis.call('ltrim', KEYS[i], 0, limit - 1)
  redis.call('expire', KEYS[i], tonumber(ARGV[2 + 2 * i]))
end
local claim = KEYS[budgets + 1]
local tail = 3 + 2 * budgets
if redis.call('set', claim, ARGV[tail], 'NX', 'EX', ARGV[tail + 1]) then
  return {1, false, redis.call('get', KEYS[budgets + 2])}
end
return {0, redis.call('get', claim), redis.call('get', KEYS[budgets + 2])}
"""


@dataclass(frozen=True)
class Record:
    request_id: str
    client: str
    fingerprint: str
    mode: str
    counter_key: str
    submitted_at: str

    def to_dict(self) -> dict:  # not dataclasses.asdict (a deep copy): once per request
        return {"request_id": self.request_id, "client": self.client,
                "fingerprint": self.fingerprint, "mode": self.mode,
                "counter_key": self.counter_key, "submitted_at": self.submitted_at}


class RedisRequestStore:
    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.redis = client
        self.ttl = ttl
        self._admit = client.register_script(ADMIT_SCRIPT)

    @staticmethod
    def _key(request_id: str) -> str:
        return f"docnum:request:{request_id}"

    def claim(self, record: Record) -> Record | None:
        """Store ``record`` unless one exists; return the existing one (None when claimed)."""
        payload = json.dumps(record.to_dict(), ensure_ascii=False)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key(record.request_id), payload, nx=True, ex=self.ttl)
        pipe.get(self._key(record.request_id))
        created, current = pipe.execute()
        if created:
            return None
        return Record(**json.loads(current)) if current else None

    def claim_with_generation(self, record: Record, admission: Admission | None = None,
                              ) -> tuple[Record | None, object]:
        """``claim`` plus the reference generation, in the same round trip (the hot path), and
        with an ``admission`` its rate-limit budgets too (raises the 429 when one is spent)."""
        payload = json.dumps(record.to_dict(), ensure_ascii=False)
        if admission is not None:
            keys, args = admission.script_keys_and_args(time.time())
            status, current, generation = self._admit(
                keys=[*keys, self._key(record.request_id), GENERATION_KEY],
                args=[*args, payload, self.ttl])
            admission.counted = True
            if status < 0:
                raise admission.refused(-status)
            generation = generation or b"0"
            return (Record(**json.loads(current)) if current else None), generation
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._key(record.request_id), payload, nx=True, ex=self.ttl)
        pipe.get(self._key(record.request_id))
        pipe.get(GENERATION_KEY)
        created, current, generation = pipe.execute()
        generation = generation or b"0"  # never bumped yet is a generation too, not "no cache"
        if created:
            return None, generation
        return (Record(**json.loads(current)) if current else None), generation

    def release(self, request_id: str) -> None:
        self.redis.delete(self._key(request_id))

    def restamp(self, record: Record, submitted_at: str) -> None:
        """The request was queued again at ``submitted_at`` (expiry unchanged)."""
        payload = json.dumps(record.to_dict() | {"submitted_at": submitted_at}, ensure_ascii=False)
        self.redis.set(self._key(record.request_id), payload, xx=True, keepttl=True)

    def drop_result(self, request_id: str) -> None:
        self.redis.delete(RESULT_KEY_PREFIX + request_id)

    def get(self, request_id: str) -> Record | None:
        raw = self.redis.get(self._key(request_id))
        return Record(**json.loads(raw)) if raw else None

    def result(self, request_id: str) -> dict | None:
        raw = self.redis.get(RESULT_KEY_PREFIX + request_id)
        return _result_from_meta(json.loads(raw)) if raw else None


class SqlRequestStore:
    def __init__(self, engine: Engine, celery: Celery, ttl: int) -> None:
        self.engine = engine
        self.celery = celery
        self.ttl = ttl

    def claim(self, record: Record) -> Record | None:
        now = SystemClock().now()
        try:
            with transaction(self.engine) as session:
                session.execute(delete(RequestRecord).where(
                    RequestRecord.request_id == record.request_id,
                    RequestRecord.expires_at < to_db(now)))
                session.add(RequestRecord(
                    request_id=record.request_id, client=record.client,
                    fingerprint=record.fingerprint, mode=record.mode,
                    counter_key=record.counter_key, submitted_at=to_db(now),
                    expires_at=to_db(now + timedelta(seconds=self.ttl))))
            return None
        except IntegrityError:
            return self.get(record.request_id)

    def claim_with_generation(self, record: Record, admission: Admission | None = None,
                              ) -> tuple[Record | None, object]:
        """``claim``; None for the generation: no cache on the embedded default, the front
        door reads the database. Without Redis the rate limits count in memory before the
        view runs, so an ``admission`` only arrives here if that changes: counted on its own."""
        if admission is not None:
            admission.count_now()
        return self.claim(record), None

    def release(self, request_id: str) -> None:
        with transaction(self.engine) as session:
            session.execute(delete(RequestRecord).where(RequestRecord.request_id == request_id))

    def restamp(self, record: Record, submitted_at: str) -> None:
        from datetime import datetime

        when = to_db(datetime.fromisoformat(submitted_at.replace("Z", "+00:00")))
        with transaction(self.engine) as session:
            session.execute(update(RequestRecord).where(
                RequestRecord.request_id == record.request_id).values(submitted_at=when))

    def drop_result(self, request_id: str) -> None:
        self.celery.backend.forget(request_id)

    def get(self, request_id: str) -> Record | None:
        with transaction(self.engine) as session:
            row = session.scalar(select(RequestRecord).where(
                RequestRecord.request_id == request_id))
            if row is None:
                return None
            return Record(row.request_id, row.client, row.fingerprint, row.mode,
                          row.counter_key, iso(from_db(row.submitted_at)))

    def result(self, request_id: str) -> dict | None:
        meta = self.celery.backend.get_task_meta(request_id)
        return _result_from_meta(meta)


def _result_from_meta(meta: dict | None) -> dict | None:
    """Our answer envelope out of Celery's task meta; None while nothing is stored."""
    if not meta or meta.get("status") != "SUCCESS":
        return None
    result = meta.get("result")
    return result if isinstance(result, dict) and "ok" in result else None
