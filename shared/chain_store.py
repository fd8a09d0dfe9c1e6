"""Writing ledger and audit rows onto their hash chains (docs/verification.md).

Every writer outside the allocator's batch (lifecycle, administration, catalog and config
changes, failure records) appends through ``append``: it locks the heads of the chains its rows
go to (the counter rows, in key order, as the allocator does; ``chain_heads`` for rows without a
counter key), stamps the rows, inserts them and moves the heads, all in the caller's
transaction. The allocator's batch does the same with the counter rows it has locked already
(``chain.stamp_batch`` in ``shared/allocation.py``).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session

from docnum.shared import chain
from docnum.shared.models import AuditRow, ChainHead, Counter, IssuedNumber

_counters = Counter.__table__
_heads = ChainHead.__table__
_LOCK_HEADS = (select(_counters.c.counter_key, _counters.c.ledger_length,
                      _counters.c.ledger_head, _counters.c.audit_length, _counters.c.audit_head)
               .where(_counters.c.counter_key.in_(bindparam("keys", expanding=True)))
               .order_by(_counters.c.counter_key).with_for_update())
_WRITE_HEADS = (update(_counters).where(_counters.c.counter_key == bindparam("key"))
                .values(ledger_length=bindparam("new_ledger_length"),
                        ledger_head=bindparam("new_ledger_head"),
                        audit_length=bindparam("new_audit_length"),
                        audit_head=bindparam("new_audit_head")))
# Ledger before audit, the order in which a writer that appends a ledger row and then writes
# its audit row (a manual override of a legacy number) takes them: no lock cycle.
_LOCK_KEYLESS = (select(_heads.c.kind, _heads.c.length, _heads.c.head)
                 .where(_heads.c.kind.in_(bindparam("kinds", expanding=True)))
                 .order_by(_heads.c.kind.desc()).with_for_update())
_WRITE_KEYLESS = (update(_heads).where(_heads.c.kind == bindparam("the_kind"))
                  .values(length=bindparam("the_length"), head=bindparam("the_head")))
_CHUNK = 1000


class MissingCounter(RuntimeError):
    """A row names a counter key that has no counter row: a caller must create it first."""


def append(session: Session, *, ledger: Sequence[dict] = (), audit: Sequence[dict] = ()) -> None:
    """Chain and insert ``ledger`` and ``audit`` rows (dicts of column values) in the caller's
    transaction. Fills in each row's ``chain_pos`` and ``row_hash``."""
    if not ledger and not audit:
        return
    ledger_heads, audit_heads = lock_heads(
        session, {r["counter_key"] for r in ledger}, {r["counter_key"] for r in audit})
    chain.stamp(ledger, chain.LEDGER, ledger_heads)
    chain.stamp(audit, chain.AUDIT, audit_heads)
    connection = session.connection()
    for table, rows in ((IssuedNumber.__table__, ledger), (AuditRow.__table__, audit)):
        for i in range(0, len(rows), _CHUNK):
            connection.execute(table.insert(), list(rows[i:i + _CHUNK]))
    write_heads(session, ledger_heads, audit_heads)


def lock_heads(session: Session, ledger_keys: Iterable[str | None],
               audit_keys: Iterable[str | None]
               ) -> tuple[dict[str | None, chain.Head], dict[str | None, chain.Head]]:
    """Lock and read the heads of the chains of these counter keys (None: the keyless chain).

    A counter row holds both of its heads, so both come back for every key; the keyless heads
    only for the kinds asked for. ``write_heads`` writes back exactly what came back.
    """
    ledger_keys, audit_keys = set(ledger_keys), set(audit_keys)
    keyed = sorted(k for k in ledger_keys | audit_keys if k is not None)
    ledger: dict[str | None, chain.Head] = {}
    audit: dict[str | None, chain.Head] = {}
    if keyed:
        found = {row.counter_key: row
                 for row in session.connection().execute(_LOCK_HEADS, {"keys": keyed})}
        missing = [k for k in keyed if k not in found]
        if missing:
            raise MissingCounter(f"no counter row for {', '.join(missing)}")
        for key in keyed:
            ledger[key] = chain.Head.of(found[key].ledger_length, found[key].ledger_head)
            audit[key] = chain.Head.of(found[key].audit_length, found[key].audit_head)
    kinds = [kind for kind, keys in ((chain.AUDIT, audit_keys), (chain.LEDGER, ledger_keys))
             if None in keys]
    if kinds:
        for kind, head in _lock_keyless(session, kinds).items():
            (ledger if kind == chain.LEDGER else audit)[None] = head
    return ledger, audit


def _lock_keyless(session: Session, kinds: list[str]) -> dict[str, chain.Head]:
    connection = session.connection()
    found = {row.kind: row for row in connection.execute(_LOCK_KEYLESS, {"kinds": kinds})}
    missing = [kind for kind in kinds if kind not in found]
    if missing:  # first use: create the rows (a row another transaction created stays)
        rows = [{"kind": kind, "length": 0, "head": None} for kind in missing]
        if session.get_bind().dialect.name in ("mysql", "mariadb"):
            stmt = mysql.insert(ChainHead).prefix_with("IGNORE")
        else:
            stmt = sqlite.insert(ChainHead).on_conflict_do_nothing()
        connection.execute(stmt, rows)
        found.update({row.kind: row for row in connection.execute(
            _LOCK_KEYLESS, {"kinds": missing})})
    return {kind: chain.Head.of(found[kind].length, found[kind].head) for kind in kinds}


def write_heads(session: Session, ledger: dict[str | None, chain.Head],
                audit: dict[str | None, chain.Head]) -> None:
    """Store the heads ``lock_heads`` returned (and ``stamp`` advanced)."""
    connection = session.connection()
    keyed = sorted(k for k in ledger if k is not None)
    if keyed:
        connection.execute(_WRITE_HEADS, [
            {"key": key, **{f"new_{name}": value for name, value in
                            chain.head_columns(ledger[key], audit[key]).items()}}
            for key in keyed])
    for kind, heads in ((chain.LEDGER, ledger), (chain.AUDIT, audit)):
        if None in heads:
            head = heads[None]
            connection.execute(_WRITE_KEYLESS, {"the_kind": kind, "the_length": head.length,
                                                "the_head": head.stored()})


__all__ = ["MissingCounter", "append", "lock_heads", "write_heads"]
