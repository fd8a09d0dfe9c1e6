"""Maintenance work run by beat on the maintenance queue (operations guide §5.3)."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from shared.clock import Clock


def archive_audit(engine: Engine, clock: Clock) -> dict:
    raise NotImplementedError("issue 4")


def optimize_tables(engine: Engine) -> dict:
    raise NotImplementedError("issue 4")


def refresh_utilization(engine: Engine) -> dict:
    raise NotImplementedError("issue 4")


def cleanup_idempotency(engine: Engine, clock: Clock) -> dict:
    raise NotImplementedError("issue 4")
