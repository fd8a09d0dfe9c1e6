"""Shard ownership: at most one live consumer per shard queue, across every host.

Two workers on one shard queue become competing consumers: one counter's requests would then
run concurrently and out of order (the counter row lock in MariaDB still keeps every number
unique and contiguous, but "served one after another" is lost). So a shard worker, before it
consumes anything, takes one Redis key per shard queue on the broker's Redis::

    SET docnum:shard-owner:docnum.shard.N  <host:pid:instance>  NX EX <ttl>

If any is held by someone else it gives back what it took and exits with status 3 and a clear
message. While it runs, a daemon thread refreshes its keys every ttl/3 (only while they are
still its own: a compare-and-expire script); a clean shutdown deletes them (compare-and-
delete). A worker that dies without cleaning up (SIGKILL, power loss) holds its shards until
the keys expire, ``DOCNUM_SHARD_OWNER_TTL`` (30 s) after the last heartbeat; a replacement
started earlier is refused and restarted by its service manager until then.

If the heartbeat finds a key taken by another worker (this process could not refresh it for a
whole TTL: Redis unreachable, or the process was frozen), this worker has lost the shard and
stops itself with a warm shutdown, exiting with status 3. A key that vanished (a Redis failover
that lost it) is simply taken again.

The embedded default (no Redis) has no ownership lock: ``docnum up`` there runs exactly one
consumer per shard by construction.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable

import redis

from docnum.shared import redis_urls
from docnum.shared.settings import Settings

log = logging.getLogger("docnum.ownership")

KEY_PREFIX = "docnum:shard-owner:"
REFUSED_EXIT_CODE = 3
ERROR_RETRY_S = 1.0

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
    """Another live worker owns a shard queue this worker was asked to consume."""

    def __init__(self, queue: str, holder: str) -> None:
        self.queue = queue
        self.holder = holder
        super().__init__(f"shard {queue} is owned by {holder}; refusing to start a second "
                         f"consumer (see docs/deploy.md)")


def owner_key(queue: str) -> str:
    return KEY_PREFIX + queue


def holder_id(instance: str | None = None) -> str:
    """``host:pid:instance``: who holds a shard, readable in the refusal message."""
    return f"{socket.gethostname()}:{os.getpid()}:{instance or uuid.uuid4().hex[:12]}"


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class ShardOwnership:
    """The ownership keys of one worker process: acquire, heartbeat, release."""

    def __init__(self, client: redis.Redis, queues: list[str], ttl: int,
                 holder: str | None = None, successor_of: str | None = None,
                 on_lost: Callable[[str, str | None], None] | None = None) -> None:
        self.redis = client
        self.queues = list(queues)
        self.ttl = ttl
        self.holder = holder or holder_id()
        # ``docnum up`` restarts a crashed child only after it exited, and tells the new one
        # its slot (``--owner-instance``): a key held by that same slot is its dead
        # predecessor's, taken over at once instead of waiting for the key to expire.
        self.successor_of = successor_of
        self.on_lost = on_lost or _stop_this_worker
        self.held: list[str] = []
        self.lost: tuple[str, str | None] | None = None  # (queue, new holder) once lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)
        self._replace = client.register_script(_REPLACE)

    # -- start ----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take every shard or none; raise ``ShardOwned`` naming the first one held."""
        try:
            for queue in self.queues:
                key = owner_key(queue)
                if self.redis.set(key, self.holder, nx=True, ex=self.ttl):
                    self.held.append(queue)
                    continue
                current = _text(self.redis.get(key))
                if current is None and self.redis.set(key, self.holder, nx=True, ex=self.ttl):
                    self.held.append(queue)  # expired between SET and GET
                    continue
                if current is not None and self._is_predecessor(current) and \
                        self._replace(keys=[key], args=[current, self.holder, self.ttl]):
                    log.info("took over %s from this slot's previous process %s", queue,
                             current)
                    self.held.append(queue)
                    continue
                raise ShardOwned(queue, current or "another worker")
        except BaseException:
            self.release()
            raise

    def _is_predecessor(self, current: str) -> bool:
        return bool(self.successor_of) and current.rsplit(":", 1)[-1] == self.successor_of

    # -- heartbeat ------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="docnum-shard-ownership",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(self.ttl / 3.0, 0.5)
        wait = interval
        while not self._stop.wait(wait):
            try:
                lost = self.refresh()
            except redis.RedisError as exc:
                # Redis unreachable (or failing over): keep trying. Nobody else can take the
                # keys while Redis is down, and they outlive us by a whole TTL once it is back.
                log.warning("could not refresh shard ownership (%s); retrying", exc)
                wait = min(ERROR_RETRY_S, interval)
                continue
            wait = interval
            if lost:
                self.lost = lost
                queue, holder = lost
                log.error("shard %s is now owned by %s (this worker missed its heartbeat for "
                          "%d s); stopping so that the shard keeps one consumer", queue,
                          holder, self.ttl)
                self.on_lost(queue, holder)
                return

    def refresh(self) -> tuple[str, str | None] | None:
        """Extend every key; retake one that vanished. (queue, holder) of a key lost to
        another worker, else None."""
        for queue in self.held:
            key = owner_key(queue)
            if self._refresh(keys=[key], args=[self.holder, self.ttl]):
                continue
            if self.redis.set(key, self.holder, nx=True, ex=self.ttl):
                log.warning("ownership key of %s had vanished (Redis failover?); taken again",
                            queue)
                continue
            return queue, _text(self.redis.get(key))
        return None

    # -- stop -----------------------------------------------------------------------------
    def release(self) -> None:
        """Stop the heartbeat and delete the keys that are still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        for queue in list(self.held):
            try:
                self._release(keys=[owner_key(queue)], args=[self.holder])
            except redis.RedisError as exc:
                log.warning("could not release %s (%s); it expires in at most %d s", queue,
                            exc, self.ttl)
        self.held.clear()


def _stop_this_worker(_queue: str, _holder: str | None) -> None:
    # Celery's warm shutdown: finish the task in hand, stop consuming, exit.
    os.kill(os.getpid(), signal.SIGTERM)


def claim_shards(settings: Settings, queues: list[str],
                 instance: str | None = None) -> ShardOwnership | None:
    """Take the ownership keys of ``queues`` for this process and start the heartbeat.

    None on the embedded default (no Redis). Raises ``ShardOwned`` when another worker owns one
    of them, and ``redis.RedisError`` when the broker's Redis cannot be reached.
    """
    if not redis_urls.is_redis_url(settings.broker_url):
        log.info("shard ownership lock skipped: the broker is not Redis (embedded default)")
        return None
    client = redis_urls.redis_client(settings.broker_url,
                                     master_name=settings.redis_sentinel_master)
    ownership = ShardOwnership(client, queues, settings.shard_owner_ttl,
                               holder=holder_id(instance), successor_of=instance)
    ownership.acquire()
    ownership.start_heartbeat()
    log.info("owning %s as %s (lock TTL %d s)", ", ".join(queues), ownership.holder,
             settings.shard_owner_ttl)
    return ownership
