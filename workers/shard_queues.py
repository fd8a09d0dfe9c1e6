"""Shard queues as reliable queues on Redis: a message is never held only in transit.

The front door pushes each allocation message on its shard's list (``LPUSH docnum.shard.N``,
Celery's own message format: api/frontdoor/publisher.py). A shard worker takes messages with
``LMOVE queue processing RIGHT LEFT``: in the same step a message leaves the queue it enters
the shard's processing list, ``docnum:shard-processing:docnum.shard.N``, and it leaves that list
only after its answers are stored (``ack``). Whatever happens between those two steps — the
worker is killed, frozen, cut off from Redis while the reply to its ``BLMOVE`` is in flight —
the message is still in the processing list, and the next consumer of the shard (the same
worker after a reconnect, its restarted successor, or a worker that adopted the shard) serves
it before anything else. Serving a message twice is harmless: the ledger's unique request id
makes the second allocation return the number the first one issued.

Kombu's own Redis consumer (``BRPOP``) records a message as unacknowledged only after it has
received it, so a message popped while the connection dies exists nowhere; and its unacked
messages return only after a visibility timeout (docs/reliability.md).

One consumer per shard serves that shard's processing list, so anything found in it at the
start of a take is not being served by anyone else (shard ownership: workers/ownership.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import redis

PROCESSING_PREFIX = "docnum:shard-processing:"
DEAD_LETTER_PREFIX = "docnum:shard-dead:"

# KEYS: queue1, processing1, queue2, processing2, …  ARGV[1]: most messages per shard.
# Tops each processing list up from its queue and returns, per shard, the oldest messages of
# its processing list (leftovers of an earlier consumer included), newest first.
_TAKE = """
local limit = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS, 2 do
  local queue, processing = KEYS[i], KEYS[i + 1]
  local held = redis.call('LLEN', processing)
  while held < limit do
    if not redis.call('LMOVE', queue, processing, 'RIGHT', 'LEFT') then break end
    held = held + 1
  end
  out[#out + 1] = redis.call('LRANGE', processing, -limit, -1)
end
return out
"""


def processing_key(queue: str) -> str:
    return PROCESSING_PREFIX + queue


def dead_letter_key(queue: str) -> str:
    return DEAD_LETTER_PREFIX + queue


@dataclass(frozen=True)
class Taken:
    """One message taken from a shard: its queue and its exact bytes (the ack removes them)."""

    queue: str
    raw: bytes


class ShardQueues:
    """The Redis operations of the reliable shard queues, on the broker's Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._take = client.register_script(_TAKE)

    def take(self, queues: list[str], limit: int) -> list[Taken]:
        """Up to ``limit`` messages per shard, oldest first, moved to the processing lists."""
        if not queues:
            return []
        keys = [key for queue in queues for key in (queue, processing_key(queue))]
        taken: list[Taken] = []
        for queue, raws in zip(queues, self._take(keys=keys, args=[limit]), strict=True):
            taken.extend(Taken(queue, raw) for raw in reversed(raws))
        return taken

    def wait(self, queue: str, timeout: float) -> bool:
        """Block until a message arrives on ``queue`` (at most ``timeout`` seconds) and move it
        to the processing list at once; True when one was moved."""
        return self.redis.blmove(queue, processing_key(queue), timeout, "RIGHT", "LEFT") \
            is not None

    @staticmethod
    def ack(pipe: redis.client.Pipeline, message: Taken) -> None:
        """Queue the removal of an answered message on ``pipe`` (the caller executes it)."""
        pipe.lrem(processing_key(message.queue), -1, message.raw)

    def dead_letter(self, message: Taken) -> None:
        """Set aside a message nobody can serve (undecodable, or not an allocation)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(dead_letter_key(message.queue), message.raw)
            pipe.lrem(processing_key(message.queue), -1, message.raw)
            pipe.execute()

    def depth(self, queue: str) -> tuple[int, int]:
        """(waiting, being served) messages of a shard."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(queue)
            pipe.llen(processing_key(queue))
            waiting, processing = pipe.execute()
        return int(waiting), int(processing)
