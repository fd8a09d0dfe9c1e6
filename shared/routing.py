"""Which shard queue serves a counter key.

A stable hash (blake2b, not the per-process salted ``hash()``) so every API process and every
restart sends one counter key to the same queue, where exactly one consumer serves it in order.
"""
from __future__ import annotations

from hashlib import blake2b

SHARD_QUEUE_PREFIX = "docnum.shard."
MAINTENANCE_QUEUE = "docnum.maintenance"
# The Celery task name of an allocation message (a list of requests for one shard).
ALLOCATE_TASK = "docnum.allocate"


def shard_for(counter_key: str, shards: int) -> int:
    digest = blake2b(counter_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def shard_queue(shard: int) -> str:
    return f"{SHARD_QUEUE_PREFIX}{shard}"


def queue_for(counter_key: str, shards: int) -> str:
    return shard_queue(shard_for(counter_key, shards))


def all_shard_queues(shards: int) -> list[str]:
    return [shard_queue(i) for i in range(shards)]
