"""A batch's writes as ONE multi-statement query on MariaDB, and the raw connection it runs on.

Under database latency the round trips, not the CPU, bound how many batches a shard worker
serves: a transaction that locks the counters, inserts ledger and audit rows, advances the
counters and commits costs five round trips through SQLAlchemy (one per statement). MariaDB
takes several statements in one query when the connection allows it (``CLIENT.MULTI_STATEMENTS``),
so the allocation's first attempt sends the lock, then everything else with its COMMIT: two
round trips (``shared/allocation.py``, ``allocate_many``).

Values travel as parameters that the driver (mysqlclient) escapes, exactly as for a single
statement; the statement text is built here from the tables' own column names, never from input.
Only the allocation engine (``docnum.shared.db.allocation_engine``) enables multi-statement
queries.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError


def _value(table: Table, name: str, value: Any) -> Any:
    if value is not None and isinstance(table.c[name].type, JSON):
        # As SQLAlchemy's JSON type would store it (its default serializer is json.dumps).
        return json.dumps(value)
    return value


def _columns(table: Table, rows: list[dict]) -> list[str]:
    """The columns to write: those the rows name, plus columns with a Python-side default."""
    names = list(rows[0])
    for column in table.columns:
        default = column.default
        if column.name not in names and default is not None and default.is_scalar:
            names.append(column.name)
    return names


def _row_values(table: Table, names: list[str], row: dict) -> list[Any]:
    values = []
    for name in names:
        if name in row:
            values.append(_value(table, name, row[name]))
        else:
            values.append(table.c[name].default.arg)
    return values


def _quoted(name: str) -> str:
    return f"`{name}`"  # ``before`` and ``after`` are reserved words


def insert_sql(table: Table, rows: list[dict]) -> tuple[str, list[Any]]:
    """``INSERT INTO table (…) VALUES (…), (…)`` for ``rows`` (all with the same keys)."""
    names = _columns(table, rows)
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    sql = (f"INSERT INTO {_quoted(table.name)} ({', '.join(map(_quoted, names))}) VALUES "
           + ", ".join([placeholders] * len(rows)))
    params: list[Any] = []
    for row in rows:
        params.extend(_row_values(table, names, row))
    return sql, params


def upsert_sql(table: Table, rows: list[dict], update: list[str]) -> tuple[str, list[Any]]:
    """``insert_sql`` plus ``ON DUPLICATE KEY UPDATE`` of the ``update`` columns."""
    sql, params = insert_sql(table, rows)
    assignments = ", ".join(f"{_quoted(name)} = VALUES({_quoted(name)})" for name in update)
    return f"{sql} ON DUPLICATE KEY UPDATE {assignments}", params


def lock_sql(table: Table, columns: list[str], key: str, keys: list[str]) -> tuple[str, list]:
    """``SELECT columns … WHERE key IN (keys) ORDER BY key FOR UPDATE``: rows locked in key
    order, the same order for every transaction."""
    sql = (f"SELECT {', '.join(map(_quoted, columns))} FROM {_quoted(table.name)} "
           f"WHERE {_quoted(key)} IN ({', '.join(['%s'] * len(keys))}) "
           f"ORDER BY {_quoted(key)} FOR UPDATE")
    return sql, list(keys)


class RawCursor:
    """A DBAPI cursor inside one transaction that this code commits itself."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def rows(self, sql: str, params: list) -> list[tuple]:
        self._cursor.execute(sql, params)
        return list(self._cursor.fetchall())

    def execute(self, sql: str, params: list) -> None:
        self._cursor.execute(sql, params)

    def execute_and_commit(self, statements: list[tuple[str, list]]) -> None:
        """Every statement and the COMMIT in one query (one round trip)."""
        sql = ";\n".join([text for text, _ in statements] + ["COMMIT"])
        params = [value for _, values in statements for value in values]
        self._cursor.execute(sql, params)
        while self._cursor.nextset():  # each statement's result must be read to see its error
            pass


@contextmanager
def raw_transaction(engine: Engine) -> Iterator[RawCursor]:
    """A pooled DBAPI connection; rolled back on any error, errors raised as SQLAlchemy's.

    The body must end the transaction itself (``execute_and_commit``). Errors come out as
    ``sqlalchemy.exc.DBAPIError`` subclasses (IntegrityError, OperationalError, …), with
    ``connection_invalidated`` set when the connection is dead, so callers handle them exactly
    like errors of a Session.
    """
    dialect = engine.dialect
    try:
        raw = engine.raw_connection()
    except dialect.loaded_dbapi.Error as exc:  # a connect attempt that failed
        raise DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=dialect.is_disconnect(exc, None, None),
                                  dialect=dialect) from exc
    cursor = None
    try:
        cursor = raw.cursor()
        yield RawCursor(cursor)
    except dialect.loaded_dbapi.Error as exc:
        invalidated = dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
        if invalidated:
            raw.invalidate(exc)
        else:
            try:
                raw.rollback()
            except dialect.loaded_dbapi.Error:
                raw.invalidate(exc)
                invalidated = True
        raise DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                  connection_invalidated=invalidated,
                                  dialect=dialect) from exc
    except BaseException:
        try:
            raw.rollback()
        except dialect.loaded_dbapi.Error:
            raw.invalidate()
        raise
    finally:
        if cursor is not None:
            try:
                cursor.close()
            except dialect.loaded_dbapi.Error:
                pass
        raw.close()
