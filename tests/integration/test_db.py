"""``run_in_transaction``: a real MariaDB deadlock is retried; an unreachable database is 503."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from docnum.shared.catalog import upsert_entry
from docnum.shared.clock import SystemClock
from docnum.shared.db import make_engine, run_in_transaction, transaction
from docnum.shared.errors import DocnumError
from docnum.shared.models import CatalogEntry


def _lock(session: Session, code: str) -> CatalogEntry:
    return session.scalar(select(CatalogEntry).where(CatalogEntry.kind == "organization",
                                                     CatalogEntry.code == code)
                          .with_for_update())


def test_a_deadlock_victim_runs_again_and_both_commit(engine):
    with transaction(engine) as session:
        for code in ("A", "B"):
            upsert_entry(session, "organization", code, code, True, SystemClock().now())
    both_hold_one = threading.Barrier(2, timeout=10)
    runs = {"A": 0, "B": 0}
    errors: list[BaseException] = []

    def work(first: str, second: str) -> None:
        def locked_in_order(session: Session) -> None:
            runs[first] += 1
            _lock(session, first)
            if runs[first] == 1:  # the first run waits until the other holds its first row
                both_hold_one.wait()
            _lock(session, second).name = f"renamed by {first}"

        try:
            run_in_transaction(engine, locked_in_order)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=("A", "B")),
               threading.Thread(target=work, args=("B", "A"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    # Each transaction waits for a row the other holds: MariaDB rolls one back (1213) and
    # run_in_transaction runs that one again once the other has committed.
    assert sorted(runs.values()) == [1, 2]
    with transaction(engine) as session:
        names = {e.code: e.name for e in session.scalars(select(CatalogEntry))}
    assert names == {"A": "renamed by B", "B": "renamed by A"}


def test_an_unreachable_database_is_service_busy():
    dead = make_engine("mysql+mysqldb://root@127.0.0.1:1/nothing", pool_size=1)
    try:
        with pytest.raises(DocnumError) as err:
            run_in_transaction(dead, lambda session: session.execute(text("SELECT 1")))
    finally:
        dead.dispose()
    assert err.value.code == "SERVICE_BUSY" and err.value.retry_after == 5


def test_a_domain_error_rolls_back_and_is_not_retried(engine):
    runs = []

    def refuse(session: Session) -> None:
        runs.append(1)
        upsert_entry(session, "organization", "C", "C", True, SystemClock().now())
        raise DocnumError("CONFLICT", "no")

    with pytest.raises(DocnumError):
        run_in_transaction(engine, refuse)
    assert runs == [1]
    with transaction(engine) as session:
        assert session.scalar(select(CatalogEntry)) is None
