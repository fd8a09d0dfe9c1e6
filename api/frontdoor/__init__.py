"""The queue client: how the API hands an issuing request to the shard workers and gets its answer.

- ``door``: ``FrontDoor`` accepts a request once (Idempotency-Key → request id), queues it, and
  serves it on the DB-only path when Redis is unreachable.
- ``request_store``: the accepted request's record and its answer (Redis, or SQL on the
  embedded fallback).
- ``coalescer``: requests for one shard that arrive together leave as one message.
- ``publisher``: one ``LPUSH`` per message in Celery's own message format.
- ``waiter``: one listener per process that hands each answer to the thread waiting for it.
- ``health``: what the front door knows about Redis and the database right now.

The HTTP views (``api/routes_issuing.py``) call ``FrontDoor``; nothing here knows about Flask.
"""
from docnum.api.frontdoor.door import Answer, FrontDoor
from docnum.api.frontdoor.health import DatabaseProbe, RedisHealth

__all__ = ["Answer", "DatabaseProbe", "FrontDoor", "RedisHealth"]
