"""Shard ownership: one live consumer per shard queue, handed over when an owner stops progressing.

Two workers on one shard would serve one counter's requests concurrently and out of order (the
counter row lock in MariaDB still keeps every number unique and contiguous, but "served one after
another" is lost). So a shard worker holds one Redis key per shard it serves, on the broker's
Redis::

    docnum:shard-owner:docnum.shard.N = "<host:pid:instance>|home"     (or "|adopted")

**Home shards** are the ones a worker is started with (``docnum worker --shards``). If another
worker holds one of them as ITS home shard, the new worker gives back what it took and exits with
status 3 (a deployment mistake: two workers configured for one shard). If an adopter holds it,
the new worker asks for it back (``docnum:shard-wanted:…``) and the adopter hands it over between
two batches.

**Adoption.** Every worker looks once a second for shards nobody holds (a worker that stood down,
or died without a successor and whose key expired) and, after ``ORPHAN_GRACE_S`` (so that workers
starting together take their own home shards first), adopts them: it serves their processing
lists (the messages the previous owner had taken) at once, then their queues.

**Progress, not liveness.** A heartbeat proves only that the process runs. The consumer reports
each batch it starts and ends; a worker whose current batch has made no progress for
``DOCNUM_SHARD_STALL_TIMEOUT`` seconds (database unreachable, a connection stuck mid-query)
stands down: it deletes its keys, so that another worker adopts its shards within a few
seconds, counts the handover (``docnum_shard_handover_total{cause="stalled"}``) and logs why. It
stays alive and holds nothing until its stuck batch has returned and a database probe succeeds;
then it takes its home shards back.

**Partitions and pauses.** Keys live ``DOCNUM_SHARD_OWNER_TTL`` seconds after the last refresh.
A worker frozen (SIGSTOP) or cut off from Redis for longer loses its keys: another worker adopts
its shards while it cannot act. When it comes back, the refresh finds the key gone or held by
the adopter; it drops the shard (answers of a batch it was serving are still stored if they are
numbers: the ledger decided them; transient failures are not) and asks for its home shards back.
A heartbeat that wakes up late knows the whole process was paused: it says so in the log, does
not count the pause as the batch's stall, and refreshes at once.
During such a split two workers may briefly serve one shard; the ledger's unique keys keep every
number unique (docs/reliability.md).

The embedded default's SQL broker has no ownership keys: ``docnum up`` runs exactly one consumer
per shard there by construction.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from docnum.shared import metrics, redis_urls
from docnum.shared.settings import Settings

log = logging.getLogger("docnum.ownership")

KEY_PREFIX = "docnum:shard-owner:"
WANTED_PREFIX = "docnum:shard-wanted:"
# The shard count the live workers route with; kept alive by their heartbeats.
SHARD_COUNT_KEY = "docnum:queue-shards"
REFUSED_EXIT_CODE = 3
HOME = "home"
ADOPTED = "adopted"
TICK_S = 1.0
# A shard must be seen without an owner this long before a worker adopts it.
ORPHAN_GRACE_S = 3.0
# A heartbeat that wakes up this much later than it asked was not running at all: the whole
# process was paused (SIGSTOP, a frozen VM or container) or starved of CPU.
PAUSE_S = 2.0

# Extend the key only while it is still ours.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete the key only while it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Take over a key from a holder that is known to be dead (see ``successor_of``).
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class ShardOwned(Exception):
    """Another live worker owns, as its home shard, a shard this worker was started with."""

    def __init__(self, queue: str, holder: str) -> None:
        self.queue = queue
        self.holder = holder
        super().__init__(f"shard {queue} is owned by {holder}; refusing to start a second "
                         f"consumer (see docs/deploy.md)")


class ShardCountMismatch(ShardOwned):
    """Live workers route with another DOCNUM_QUEUE_SHARDS: one counter key would have two
    queues (and two consumers)."""

    def __init__(self, ours: int, theirs: str) -> None:
        self.queue = SHARD_COUNT_KEY
        self.holder = theirs
        Exception.__init__(self, f"live workers use DOCNUM_QUEUE_SHARDS={theirs}, this worker "
                                 f"{ours}; refusing to start (every API and worker must use the "
                                 f"same shard count: see docs/deploy.md)")


def owner_key(queue: str) -> str:
    return KEY_PREFIX + queue


def wanted_key(queue: str) -> str:
    return WANTED_PREFIX + queue


def holder_id(instance: str | None = None) -> str:
    """``host:pid:instance``: who holds a shard, readable in the refusal message."""
    return f"{socket.gethostname()}:{os.getpid()}:{instance or uuid.uuid4().hex[:12]}"


def parse_owner(value: bytes | str | None) -> tuple[str, str] | None:
    """(holder, role) of an ownership key's value."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    holder, _, role = text.rpartition("|")
    if not holder:  # a value without a role: a home shard
        return text, HOME
    return holder, role


class ShardOwnership:
    """The ownership keys of one worker process: home shards, adopted shards, handovers."""

    def __init__(self, client: redis.Redis, home: list[str], ttl: int, *,
                 all_queues: list[str] | None = None, holder: str | None = None,
                 successor_of: str | None = None, stall_timeout: float = 6.0,
                 database_ok: Callable[[], bool] | None = None) -> None:
        self.redis = client
        self.home = list(home)
        self.all_queues = list(all_queues or home)
        self.ttl = ttl
        self.holder = holder or holder_id()
        # ``docnum up`` restarts a crashed child only after it exited, and tells the new one
        # its slot (``--owner-instance``): a key held by that same slot is its dead
        # predecessor's, taken over at once instead of waiting for the key to expire.
        self.successor_of = successor_of
        self.stall_timeout = stall_timeout
        self.database_ok = database_ok or (lambda: True)
        self.shard_count = len(self.all_queues)
        self.stood_down: str | None = None   # why, while this worker holds nothing
        # The consumer holds this while it takes, serves and answers a batch: an adopted
        # shard is handed back only between two batches.
        self.serving = threading.Lock()
        self._held: dict[str, str] = {}       # queue -> HOME | ADOPTED
        self._lock = threading.Lock()
        self._orphan_since: dict[str, float] = {}
        self._batch_started: float | None = None
        self._paused_in_batch = 0.0
        self._refreshed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)
        self._replace = client.register_script(_REPLACE)

    # -- what the consumer asks -----------------------------------------------------------
    def queues(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def holds(self, queue: str) -> bool:
        with self._lock:
            return queue in self._held

    def begin_batch(self) -> None:
        self._paused_in_batch = 0.0
        self._batch_started = time.monotonic()

    def end_batch(self) -> None:
        self._batch_started = None

    def stalled_for(self) -> float:
        """Seconds the batch in hand has been running (0 when the consumer is idle)."""
        started = self._batch_started
        if started is None:
            return 0.0
        # A pause of the whole process is nobody's stall: the batch gets its time again.
        return max(time.monotonic() - started - self._paused_in_batch, 0.0)

    # -- keys -----------------------------------------------------------------------------
    def _value(self, role: str) -> str:
        return f"{self.holder}|{role}"

    def _take(self, queue: str, role: str) -> bool:
        if self.redis.set(owner_key(queue), self._value(role), nx=True, ex=self.ttl):
            with self._lock:
                self._held[queue] = role
            if role == HOME:
                self.redis.delete(wanted_key(queue))
            return True
        return False

    def _drop(self, queue: str) -> None:
        with self._lock:
            self._held.pop(queue, None)

    def _is_predecessor(self, holder: str) -> bool:
        return bool(self.successor_of) and holder.rsplit(":", 1)[-1] == self.successor_of

    def acquire(self) -> None:
        """Take the home shards; raise ``ShardOwned`` (having given back what it took) if
        another worker holds one as its home shard. A home shard held by an adopter is asked
        back and taken by the heartbeat once handed over."""
        try:
            self._agree_on_shard_count()
            for queue in self.home:
                if self._take(queue, HOME):
                    continue
                raw = self.redis.get(owner_key(queue))
                owner = parse_owner(raw)
                if owner is None and self._take(queue, HOME):
                    continue  # expired between SET and GET
                if owner is None:
                    raise ShardOwned(queue, "another worker")
                holder, role = owner
                if self._is_predecessor(holder) and self._replace(
                        keys=[owner_key(queue)], args=[raw, self._value(HOME), self.ttl]):
                    log.info("took over %s from this slot's previous process %s", queue, holder)
                    with self._lock:
                        self._held[queue] = HOME
                    continue
                if role == ADOPTED:
                    self._ask_back(queue)
                    continue
                raise ShardOwned(queue, holder)
        except BaseException:
            self.release()
            raise

    def _agree_on_shard_count(self) -> None:
        ours = str(self.shard_count)
        if self.redis.set(SHARD_COUNT_KEY, ours, nx=True, ex=self.ttl):
            return
        theirs = self.redis.get(SHARD_COUNT_KEY)
        theirs = theirs.decode() if isinstance(theirs, bytes) else theirs
        if theirs is None:
            self.redis.set(SHARD_COUNT_KEY, ours, nx=True, ex=self.ttl)
        elif theirs != ours:
            raise ShardCountMismatch(self.shard_count, theirs)

    def _ask_back(self, queue: str) -> None:
        self.redis.set(wanted_key(queue), self.holder, ex=self.ttl)
        log.info("asked the adopter of %s to hand it back", queue)

    # -- heartbeat ------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="docnum-shard-ownership",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while True:
            asleep = time.monotonic()
            if self._stop.wait(TICK_S):
                return
            try:
                paused = time.monotonic() - asleep - TICK_S
                if paused > PAUSE_S:
                    self.resumed(paused)
                self.tick()
            except redis.RedisError as exc:
                # Unreachable (or failing over): keep trying. Our keys expire a TTL after the
                # last refresh, and another worker may then adopt the shards; the next
                # refresh that gets through finds out.
                log.warning("shard ownership heartbeat failed (%s); retrying", exc)

    def resumed(self, paused: float) -> None:
        """The process runs again after a pause of ``paused`` seconds: the batch in hand did not
        stall meanwhile, and the shards may have changed hands (the next tick refreshes)."""
        started = self._batch_started
        if started is not None and started < time.monotonic() - paused:
            self._paused_in_batch += paused
        self._refreshed_at = float("-inf")
        log.warning("this process was paused for %.0f s (SIGSTOP, a frozen VM or container, or "
                    "no CPU): its ownership keys live %d s after the last refresh; checking "
                    "which shards it still holds", paused, self.ttl)

    def tick(self) -> None:
        """One heartbeat: stall check, refresh, handovers, adoption (once a second)."""
        if self.stood_down is None and self.stalled_for() > self.stall_timeout:
            self.stand_down("stalled")
        if self.stood_down is not None:
            if self._batch_started is not None or not self.database_ok():
                return
            log.warning("shard consumer is making progress again (it stood down: %s); "
                        "taking its home shards back", self.stood_down)
            self.stood_down = None
        now = time.monotonic()
        if now - self._refreshed_at >= max(self.ttl / 3.0, TICK_S):
            self.refresh()
            self._refreshed_at = now
        self._hand_back()
        self._reclaim_home()
        if self.stalled_for() <= self.stall_timeout:
            self._adopt_orphans(now)

    def refresh(self) -> list[tuple[str, str | None]]:
        """Extend every key; retake one that vanished. The shards lost to another worker, with
        their new holder."""
        lost: list[tuple[str, str | None]] = []
        # Live workers keep the shard count alive; with all of them stopped (to change it) it
        # expires within a TTL.
        self.redis.set(SHARD_COUNT_KEY, str(self.shard_count), ex=self.ttl)
        with self._lock:
            held = dict(self._held)
        for queue, role in held.items():
            key = owner_key(queue)
            if self._refresh(keys=[key], args=[self._value(role), self.ttl]):
                continue
            if self.redis.set(key, self._value(role), nx=True, ex=self.ttl):
                log.warning("ownership key of %s had expired or vanished (this process was "
                            "paused or cut off from Redis for over %d s, or Redis lost the "
                            "key); nobody had taken the shard: taken again", queue, self.ttl)
                continue
            owner = parse_owner(self.redis.get(key))
            holder = owner[0] if owner else None
            self._drop(queue)
            lost.append((queue, holder))
            metrics.shard_handovers.labels(queue, "lost").inc()
            log.error("shard %s is now held by %s: this process missed its heartbeat for over "
                      "%d s (paused, or cut off from Redis) and the shard was adopted; it stops "
                      "serving it%s", queue, holder, self.ttl,
                      " and asks for it back" if role == HOME else "")
        return lost

    def stand_down(self, cause: str) -> None:
        """Give up every shard so that another worker adopts them (the consumer is stuck)."""
        self.stood_down = cause
        held = self._release_held()
        for queue in held:
            metrics.shard_handovers.labels(queue, cause).inc()
        log.error("shard consumer made no progress for %.0f s (%s: database unreachable or a "
                  "connection stuck); stood down from %s so that another worker adopts them",
                  self.stalled_for(), cause, ", ".join(sorted(held)) or "no shard")

    def _hand_back(self) -> None:
        with self._lock:
            adopted = [q for q, role in self._held.items() if role == ADOPTED]
        if not adopted:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in adopted:
                pipe.exists(wanted_key(queue))
            wanted = [q for q, asked in zip(adopted, pipe.execute(), strict=True) if asked]
        if not wanted or not self.serving.acquire(blocking=False):
            return  # between two batches only: try again next tick
        try:
            for queue in wanted:
                self._release(keys=[owner_key(queue)], args=[self._value(ADOPTED)])
                self._drop(queue)
                metrics.shard_handovers.labels(queue, "handed_back").inc()
                log.info("handed %s back to its home worker", queue)
        finally:
            self.serving.release()

    def _reclaim_home(self) -> None:
        with self._lock:
            missing = [q for q in self.home if q not in self._held]
        for queue in missing:
            if self._take(queue, HOME):
                metrics.shard_handovers.labels(queue, "reclaimed").inc()
                log.info("took home shard %s back", queue)
                continue
            owner = parse_owner(self.redis.get(owner_key(queue)))
            if owner is not None and owner[1] == ADOPTED:
                self._ask_back(queue)

    def _adopt_orphans(self, now: float) -> None:
        with self._lock:
            candidates = [q for q in self.all_queues if q not in self._held]
        if not candidates:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in candidates:
                # A shard asked back by its home worker is about to be taken by it.
                pipe.exists(owner_key(queue), wanted_key(queue))
            owned = pipe.execute()
        for queue, has_owner in zip(candidates, owned, strict=True):
            if has_owner:
                self._orphan_since.pop(queue, None)
                continue
            since = self._orphan_since.setdefault(queue, now)
            if now - since < ORPHAN_GRACE_S:
                continue
            if self._take(queue, ADOPTED):
                self._orphan_since.pop(queue, None)
                metrics.shard_handovers.labels(queue, "adopted").inc()
                log.warning("adopted %s: it had no owner for %.0f s", queue, now - since)

    # -- stop -----------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the heartbeat and delete the keys that are still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._release_held()

    def _release_held(self) -> dict[str, str]:
        """Forget every shard held and delete its key where it is still ours; answers the
        shards (queue -> role) that were held. A key Redis cannot delete now expires."""
        with self._lock:
            held, self._held = dict(self._held), {}
        for queue, role in held.items():
            try:
                self._release(keys=[owner_key(queue)], args=[self._value(role)])
            except redis.RedisError as exc:
                log.warning("could not release %s (%s); it expires in at most %d s", queue,
                            exc, self.ttl)
        return held


def claim_shards(settings: Settings, queues: list[str], instance: str | None = None,
                 database_ok: Callable[[], bool] | None = None) -> ShardOwnership | None:
    """Take the ownership keys of ``queues`` (home shards) and start the heartbeat.

    None on the embedded default (no Redis). Raises ``ShardOwned`` when another worker owns one
    of them as its home shard, and ``redis.RedisError`` when Redis cannot be reached.
    """
    if not redis_urls.is_redis_url(settings.broker_url):
        log.info("shard ownership lock skipped: the broker is not Redis (embedded default)")
        return None
    from docnum.shared.routing import all_shard_queues

    client = redis_urls.redis_client(settings.broker_url,
                                     master_name=settings.redis_sentinel_master)
    ownership = ShardOwnership(client, queues, settings.shard_owner_ttl,
                               all_queues=all_shard_queues(settings.queue_shards),
                               holder=holder_id(instance), successor_of=instance,
                               stall_timeout=settings.shard_stall_timeout,
                               database_ok=database_ok)
    ownership.acquire()
    ownership.start_heartbeat()
    log.info("owning %s as %s (lock TTL %d s)", ", ".join(queues), ownership.holder,
             settings.shard_owner_ttl)
    return ownership
