"""Number lifecycle after issue: confirm, cancel, expire, void and replace (SPEC §4)."""
from __future__ import annotations

from sqlalchemy.engine import Engine

from shared.clock import Clock


def expire_overdue(engine: Engine, clock: Clock) -> dict:
    """Mark RESERVED numbers past their expiry EXPIRED (one audit row each)."""
    raise NotImplementedError("issue 3")
