"""Time is injected so that periods, expiries and audit timestamps are testable."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock for tests: stays where it is put."""

    def __init__(self, instant: datetime) -> None:
        self.instant = instant

    def now(self) -> datetime:
        return self.instant


def to_db(instant: datetime) -> datetime:
    """DATETIME columns hold naive UTC."""
    return instant.astimezone(UTC).replace(tzinfo=None)


def from_db(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with microseconds and a Z, the one timestamp format of the API."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
