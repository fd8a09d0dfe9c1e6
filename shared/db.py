"""Engines and transactions for MariaDB (production) and SQLite (embedded default)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from docnum.shared import metrics
from docnum.shared.errors import DocnumError

# MariaDB error numbers that mean "try the transaction again" (deadlock, lock wait timeout).
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
# ... and those that mean "the database is not reachable right now".
UNREACHABLE_MYSQL_ERRORS = {2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927, 4031}

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions defer it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # SQLite has no SELECT ... FOR UPDATE: take the write lock at BEGIN instead, so the
        # counter read-advance-write is serialised exactly like the MariaDB row lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_timeout=30)
        _configure_sqlite(engine)
        return engine
    connect_args = {}
    if url.startswith(("mysql", "mariadb")):
        connect_args = {"connect_timeout": 5, "charset": "utf8mb4"}
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_timeout=10,
        pool_recycle=3600,
        pool_pre_ping=pre_ping,
        # Every use is an explicit transaction that ends in COMMIT or ROLLBACK, so the pool's
        # own ROLLBACK on check-in would only cost a round trip per transaction.
        pool_reset_on_return=None,
        connect_args=connect_args,
    )


def engine_key(url: str, pre_ping: bool = True) -> str:
    return f"{url}#pre_ping={pre_ping}"


def get_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """One engine (and pool) per URL per process, its pool counted in
    ``docnum_db_connection_pool_usage`` (every engine of every process: the API's, the
    DB-only path's, the shard workers' and the maintenance worker's).

    The shard workers' allocation path asks for ``pre_ping=False``: the ping is a round trip
    per transaction, and a connection found dead instead fails its transaction as "database
    unreachable", which the worker retries after 0.25 s on a fresh pool (SQLAlchemy discards
    the whole pool on a disconnect).
    """
    key = engine_key(url, pre_ping)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, pre_ping=pre_ping)
            metrics.track_pool(engine)
        return engine


_identities: dict[str, str] = {}


def ledger_identity(engine: Engine) -> str:
    """Which database this engine writes to, as the server itself names it.

    The front door stamps it on every allocation message and a worker serves only messages
    for its own ledger: two deployments sharing one Redis by mistake (staging and production,
    say) would otherwise serve each other's requests from the wrong ledger.
    """
    key = str(engine.url)
    if key not in _identities:
        if engine.dialect.name in ("mysql", "mariadb"):
            with engine.connect() as conn:
                _identities[key] = conn.exec_driver_sql(
                    "SELECT CONCAT(@@hostname, ':', @@port, '/', DATABASE())").scalar_one()
        else:
            _identities[key] = f"sqlite:{engine.url.database}"
    return _identities[key]


def dispose_engines(url: str | None = None) -> None:
    """Drop pooled connections (of one URL, or all), e.g. before its database is dropped."""
    with _lock:
        for key in [k for k in _engines if url is None or k.startswith(f"{url}#")]:
            _engines.pop(key).dispose()


def mysql_error_number(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", None)
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and mysql_error_number(exc) in RETRYABLE_MYSQL_ERRORS


def is_unreachable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    number = mysql_error_number(exc)
    if number in UNREACHABLE_MYSQL_ERRORS:
        return True
    return isinstance(exc, OperationalError) and number is None and "unable to open" in str(exc)


def service_busy(retry_after: int = 5) -> DocnumError:
    return DocnumError("SERVICE_BUSY", "the database cannot be reached; try again shortly",
                       retry_after=retry_after)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session inside one transaction: commit on success, roll back on any error."""
    session = Session(engine, expire_on_commit=False)
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
