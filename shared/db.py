"""Engines and transactions for MariaDB (production) and SQLite (embedded default)."""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import MySQLdb
from MySQLdb.constants import CLIENT
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from docnum.shared import metrics
from docnum.shared.errors import DocnumError

log = logging.getLogger(__name__)

T = TypeVar("T")

# MariaDB error numbers that mean "try the transaction again" (deadlock, lock wait timeout).
RETRYABLE_MYSQL_ERRORS = {1213, 1205}
# ... and those that mean "the database is not reachable right now".
UNREACHABLE_MYSQL_ERRORS = {2002, 2003, 2005, 2006, 2013, 2055, 1040, 1053, 1927, 4031}
# How often run_in_transaction tries one piece of work before answering SERVICE_BUSY.
TRANSACTION_ATTEMPTS = 5

# An allocation transaction is idle between its two round trips for milliseconds. One idle for
# longer belongs to a worker frozen (SIGSTOP, a paused VM) or cut off mid-transaction: MariaDB
# then ends the session (rolled back, counter row locks released) after this many seconds,
# instead of keeping the locks until the connection dies (for a frozen process or a silent
# partition: wait_timeout, hours) while the worker that adopted its shards waits on them.
IDLE_TRANSACTION_TIMEOUT_S = 5
UNKNOWN_SYSTEM_VARIABLE = 1193

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions defer it).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # SQLite has no SELECT ... FOR UPDATE: take the write lock at BEGIN instead, so the
        # counter read-advance-write is serialised exactly like the MariaDB row lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True,
                multi_statements: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_timeout=30)
        _configure_sqlite(engine)
        return engine
    connect_args: dict = {}
    if url.startswith(("mysql", "mariadb")):
        connect_args = {"connect_timeout": 5, "charset": "utf8mb4"}
        if multi_statements:
            # A connection cut mid-query (no FIN, no RST) would otherwise wait for the kernel's
            # keepalive (hours); mysqlclient tries a read three times, so ~30 s in all.
            connect_args.update(read_timeout=10, write_timeout=10)
            # FOUND_ROWS is the flag SQLAlchemy's mysqlclient dialect sets itself (rowcount =
            # matched rows); a client_flag given here replaces it, so it is repeated.
            connect_args["client_flag"] = CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
    engine = create_engine(
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
    if "client_flag" in connect_args:
        _multi_statement_engines.add(engine)
        event.listen(engine, "connect", _end_abandoned_transactions)
    return engine


def _end_abandoned_transactions(dbapi_conn: object, _record: object) -> None:
    """``idle_transaction_timeout`` on an allocation connection (IDLE_TRANSACTION_TIMEOUT_S)."""
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"SET SESSION idle_transaction_timeout = {IDLE_TRANSACTION_TIMEOUT_S}")
    except MySQLdb.OperationalError as exc:
        if exc.args[0] != UNKNOWN_SYSTEM_VARIABLE:  # a server without it (not MariaDB)
            raise
    finally:
        cursor.close()


_multi_statement_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def takes_multi_statements(engine: Engine) -> bool:
    """Whether ``engine``'s connections run several statements in one query (MariaDB only)."""
    return engine in _multi_statement_engines


def engine_key(url: str, pre_ping: bool = True, multi_statements: bool = False) -> str:
    return f"{url}#pre_ping={pre_ping}#multi={multi_statements}"


def allocation_engine(url: str) -> Engine:
    """The engine numbers are allocated on (shard workers, the API's DB-only path).

    No pre-ping (a round trip per transaction): a connection found dead fails its transaction
    as "database unreachable" instead, which the caller retries on a fresh pool. Multi-statement
    queries on MariaDB: a batch's writes and COMMIT travel in one round trip (shared/sqlbatch.py).
    """
    return get_engine(url, pre_ping=False, multi_statements=True)


def get_engine(url: str, *, pre_ping: bool = True, multi_statements: bool = False) -> Engine:
    """One engine (and pool) per URL per process, its pool counted in
    ``docnum_db_connection_pool_usage`` (every engine of every process: the API's, the
    DB-only path's, the shard workers' and the maintenance worker's).

    The shard workers' allocation path asks for ``pre_ping=False``: the ping is a round trip
    per transaction, and a connection found dead instead fails its transaction as "database
    unreachable", which the worker retries after 0.25 s on a fresh pool (SQLAlchemy discards
    the whole pool on a disconnect).
    """
    key = engine_key(url, pre_ping, multi_statements)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, pre_ping=pre_ping,
                                                 multi_statements=multi_statements)
            metrics.track_pool(engine)
        return engine


_identities: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def ledger_identity(engine: Engine) -> str:
    """Which database this engine writes to, as the server itself names it.

    The front door stamps it on every allocation message and a worker serves only messages
    for its own ledger: two deployments sharing one Redis by mistake (staging and production,
    say) would otherwise serve each other's requests from the wrong ledger. Asked once per
    engine (it is on every message's path).
    """
    identity = _identities.get(engine)
    if identity is None:
        if engine.dialect.name in ("mysql", "mariadb"):
            with engine.connect() as conn:
                identity = conn.exec_driver_sql(
                    "SELECT CONCAT(@@hostname, ':', @@port, '/', DATABASE())").scalar_one()
        else:
            identity = f"sqlite:{engine.url.database}"
        _identities[engine] = identity
    return identity


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


def database_reachable(url: str, timeout_s: int = 2) -> bool:
    """``SELECT 1`` over a fresh connection (never a pooled one, which may be the very
    connection that is stuck), bounded by ``timeout_s``."""
    connect_args: dict = {}
    if url.startswith(("mysql", "mariadb")):
        connect_args = {"connect_timeout": timeout_s, "read_timeout": timeout_s,
                        "charset": "utf8mb4"}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not reachable"
        return False
    finally:
        engine.dispose()


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



def run_in_transaction(engine: Engine, work: Callable[[Session], T], *,
                       attempts: int = TRANSACTION_ATTEMPTS) -> T:
    """Run ``work(session)`` in one transaction and return its result.

    Retried, with exponential backoff (0.1 s, 0.2 s, ... at most 1 s), on a deadlock (1213), a
    lock wait timeout (1205) and a unique-key race (IntegrityError: another transaction
    inserted what ``work`` checked for; the retry sees that row and answers with a proper
    code). ``work`` therefore runs from the start again and must not keep state between runs.
    An unreachable database is 503 ``SERVICE_BUSY`` at once, and so is contention that outlasts
    ``attempts``. A DocnumError raised by ``work`` rolls everything back and propagates as is.
    """
    attempt = 0
    while True:
        try:
            with transaction(engine) as session:
                return work(session)
        except IntegrityError as exc:
            error: Exception = exc
        except DBAPIError as exc:
            if is_unreachable(exc):
                raise service_busy() from exc
            if not is_retryable(exc):
                raise
            error = exc
        attempt += 1
        if attempt >= attempts:
            log.error("transaction failed after %d attempts: %s", attempt, error)
            raise DocnumError("SERVICE_BUSY", "the ledger is too contended; try again shortly",
                              retry_after=2) from error
        time.sleep(min(0.05 * 2 ** attempt, 1.0))
