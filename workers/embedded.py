"""The embedded default's broker: kombu's SQLAlchemy transport on a SQLite file, polled fast.

kombu hands ``broker_transport_options`` of this transport straight to ``create_engine``, so
its 1 s ``polling_interval`` cannot be set there; a subclass sets it instead.
"""
from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SqlAlchemyTransport

EMBEDDED_SCHEME = "docnumsqla"
POLLING_INTERVAL = 0.1  # seconds; ~100 ms latency on the dev default, a few idle queries/s


class FastPollingTransport(SqlAlchemyTransport):
    polling_interval = POLLING_INTERVAL


def register() -> None:
    TRANSPORT_ALIASES.setdefault(EMBEDDED_SCHEME, f"{__name__}:FastPollingTransport")


def broker_url(url: str) -> str:
    """Route the dev default's ``sqla+`` URL through the fast-polling transport."""
    if url.startswith("sqla+"):
        return f"{EMBEDDED_SCHEME}+{url[len('sqla+'):]}"
    return url
