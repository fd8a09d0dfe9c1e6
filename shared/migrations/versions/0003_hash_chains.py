"""hash chains, chain heads, checkpoints; chains computed for the rows already there

Revision ID: 0003
Revises: 0002_audit_counter_key
Create Date: 2026-12-01

Every ledger and audit row gets its place on its chain (``chain_pos``) and its ``row_hash``
(docs/verification.md); the counters hold the heads. Rows written before this revision are
chained here, in id order per chain, and a ``chain_backfills`` row records how many: the first
checkpoint signed afterwards says so in its note, so nobody mistakes a chain computed after the
fact for one kept since the first number.
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from docnum.shared import chain

revision = '0003'
down_revision = '0002_audit_counter_key'
branch_labels = None
depends_on = None

HASH = sa.LargeBinary(length=32).with_variant(mysql.BINARY(32), 'mysql', 'mariadb')
SIGNATURE = sa.LargeBinary(length=64).with_variant(mysql.BINARY(64), 'mysql', 'mariadb')
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')
TABLE = dict(mysql_charset='utf8mb4', mysql_collate='utf8mb4_bin', mysql_engine='InnoDB')
BATCH = 2000


def upgrade() -> None:
    for table in ('document_numbers', 'audit_log', 'audit_log_archive'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('chain_pos', sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column('row_hash', HASH, nullable=True))
    with op.batch_alter_table('document_numbers', schema=None) as batch_op:
        batch_op.create_index('ix_numbers_chain', ['counter_key', 'chain_pos'], unique=False)
    # The audit trail's counter-key index gains the chain position: one index serves the
    # look-ups by counter key and the walk of a chain in order.
    for table, index in (('audit_log', 'ix_audit_counter_key'),
                         ('audit_log_archive', 'ix_audit_archive_counter_key')):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
            batch_op.create_index(index, ['counter_key', 'chain_pos'], unique=False)
    with op.batch_alter_table('counters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ledger_length', sa.BigInteger(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('ledger_head', HASH, nullable=True))
        batch_op.add_column(sa.Column('audit_length', sa.BigInteger(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('audit_head', HASH, nullable=True))

    op.create_table('chain_heads',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('head', HASH, nullable=True),
    sa.PrimaryKeyConstraint('kind'),
    **TABLE
    )
    op.create_table('checkpoints',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('tree_size', sa.BigInteger(), nullable=False),
    sa.Column('root_hash', HASH, nullable=False),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('note', sa.JSON(), nullable=False),
    sa.Column('signature', SIGNATURE, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    **TABLE
    )
    op.create_table('checkpoint_leaves',
    sa.Column('leaf_index', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('checkpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('counter_key', sa.String(length=300), nullable=True),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('head', HASH, nullable=False),
    sa.Column('leaf_hash', HASH, nullable=False),
    sa.PrimaryKeyConstraint('leaf_index'),
    **TABLE
    )
    with op.batch_alter_table('checkpoint_leaves', schema=None) as batch_op:
        batch_op.create_index('ix_leaves_chain', ['kind', 'counter_key', 'length'], unique=False)
    op.create_table('chain_backfills',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('ledger_rows', sa.BigInteger(), nullable=False),
    sa.Column('audit_rows', sa.BigInteger(), nullable=False),
    sa.Column('chains', sa.BigInteger(), nullable=False),
    sa.Column('checkpoint_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    **TABLE
    )
    _backfill(op.get_bind())


# ----------------------------------------------------------------------------- the backfill
# Tables as this revision knows them (not the models, which later revisions may change).

def _table(name: str, *columns: sa.Column) -> sa.TableClause:
    return sa.table(name, sa.column('id', sa.BigInteger()), sa.column('chain_pos', sa.BigInteger()),
                    sa.column('row_hash', HASH), *columns)


_STRING = ('document_number', 'project', 'counter_key', 'source', 'template',
           'correspondence_type', 'originator', 'recipient', 'sub_type', 'rfa_type',
           'discipline', 'revision', 'request_id', 'issued_by', 'replaces')
LEDGER = _table('document_numbers', *[sa.column(name, sa.String()) for name in _STRING],
                sa.column('sequence', sa.BigInteger()), sa.column('config_id', sa.BigInteger()),
                sa.column('config_version', sa.Integer()), sa.column('document_date', sa.Date()),
                sa.column('issued_at', TIMESTAMP))


def _audit(name: str) -> sa.TableClause:
    strings = ('operation', 'actor', 'client_ip', 'user_agent', 'request_id', 'counter_key',
               'document_number', 'fallback_used', 'error_code')
    return _table(name, *[sa.column(n, sa.String()) for n in strings],
                  sa.column('before', sa.JSON()), sa.column('after', sa.JSON()),
                  sa.column('lock_wait_ms', sa.Integer()), sa.column('duration_ms', sa.Integer()),
                  sa.column('retry_count', sa.Integer()), sa.column('success', sa.Boolean()),
                  sa.column('created_at', TIMESTAMP))


def _chain_table(connection: sa.Connection, table: sa.TableClause, kind: str,
                 heads: dict[str | None, chain.Head]) -> int:
    """Chain every row of ``table`` in id order onto ``heads``; returns the rows chained."""
    encode = chain.ENCODERS[kind]
    fields = [c for c in table.c if c.name not in ('chain_pos', 'row_hash')]
    stamp = (sa.update(table).where(table.c.id == sa.bindparam('b_id'))
             .values(chain_pos=sa.bindparam('b_pos'), row_hash=sa.bindparam('b_hash')))
    last_id, total = 0, 0
    while True:
        rows = connection.execute(sa.select(*fields).where(table.c.id > last_id)
                                  .order_by(table.c.id).limit(BATCH)).mappings().all()
        if not rows:
            return total
        updates = []
        for row in rows:
            values = dict(row)
            head = heads.setdefault(values['counter_key'], chain.Head())
            head.length += 1
            values['chain_pos'] = head.length
            head.hash = chain.link(head.hash, encode(values))
            updates.append({'b_id': values['id'], 'b_pos': head.length, 'b_hash': head.hash})
        connection.execute(stamp, updates)
        last_id, total = rows[-1]['id'], total + len(rows)


def _backfill(connection: sa.Connection) -> None:
    ledger: dict[str | None, chain.Head] = {}
    audit: dict[str | None, chain.Head] = {}
    ledger_rows = _chain_table(connection, LEDGER, chain.LEDGER, ledger)
    # Archived rows are the older ones: they come first on their chains.
    audit_rows = (_chain_table(connection, _audit('audit_log_archive'), chain.AUDIT, audit)
                  + _chain_table(connection, _audit('audit_log'), chain.AUDIT, audit))
    if not ledger_rows and not audit_rows:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    counters = sa.table('counters', sa.column('counter_key', sa.String()),
                        sa.column('project', sa.String()),
                        sa.column('last_sequence', sa.BigInteger()),
                        sa.column('capacity', sa.BigInteger()), sa.column('updated_at', TIMESTAMP),
                        sa.column('ledger_length', sa.BigInteger()), sa.column('ledger_head', HASH),
                        sa.column('audit_length', sa.BigInteger()), sa.column('audit_head', HASH))
    keys = sorted(k for k in set(ledger) | set(audit) if k is not None)
    existing = set(connection.execute(sa.select(counters.c.counter_key)).scalars())
    # Failure records of a counter that never issued anything have no counter row: one is made
    # to hold their chain's head, empty (capacity 0 until the allocator first uses it).
    orphans = [k for k in keys if k not in existing]
    if orphans:
        connection.execute(sa.insert(counters), [
            {'counter_key': k, 'project': k.split('|', 1)[0], 'last_sequence': 0,
             'capacity': 0, 'updated_at': now, 'ledger_length': 0, 'ledger_head': None,
             'audit_length': 0, 'audit_head': None} for k in orphans])
    if keys:
        connection.execute(
            sa.update(counters).where(counters.c.counter_key == sa.bindparam('b_key'))
            .values(ledger_length=sa.bindparam('b_ll'), ledger_head=sa.bindparam('b_lh'),
                    audit_length=sa.bindparam('b_al'), audit_head=sa.bindparam('b_ah')),
            [{'b_key': k, 'b_ll': ledger.get(k, chain.Head()).length,
              'b_lh': ledger.get(k, chain.Head()).stored(),
              'b_al': audit.get(k, chain.Head()).length,
              'b_ah': audit.get(k, chain.Head()).stored()} for k in keys])
    heads = sa.table('chain_heads', sa.column('kind', sa.String()),
                     sa.column('length', sa.BigInteger()), sa.column('head', HASH))
    keyless = [{'kind': kind, 'length': found[None].length, 'head': found[None].stored()}
               for kind, found in ((chain.LEDGER, ledger), (chain.AUDIT, audit))
               if None in found]
    if keyless:
        connection.execute(sa.insert(heads), keyless)
    backfills = sa.table('chain_backfills', sa.column('created_at', TIMESTAMP),
                         sa.column('ledger_rows', sa.BigInteger()),
                         sa.column('audit_rows', sa.BigInteger()),
                         sa.column('chains', sa.BigInteger()))
    connection.execute(sa.insert(backfills).values(
        created_at=now, ledger_rows=ledger_rows, audit_rows=audit_rows,
        chains=len(ledger) + len(audit)))


def downgrade() -> None:
    op.drop_table('chain_backfills')
    with op.batch_alter_table('checkpoint_leaves', schema=None) as batch_op:
        batch_op.drop_index('ix_leaves_chain')
    op.drop_table('checkpoint_leaves')
    op.drop_table('checkpoints')
    op.drop_table('chain_heads')
    with op.batch_alter_table('counters', schema=None) as batch_op:
        for name in ('audit_head', 'audit_length', 'ledger_head', 'ledger_length'):
            batch_op.drop_column(name)
    for table, index in (('audit_log_archive', 'ix_audit_archive_counter_key'),
                         ('audit_log', 'ix_audit_counter_key')):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
            batch_op.create_index(index, ['counter_key'], unique=False)
    with op.batch_alter_table('document_numbers', schema=None) as batch_op:
        batch_op.drop_index('ix_numbers_chain')
    for table in ('audit_log_archive', 'audit_log', 'document_numbers'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('row_hash')
            batch_op.drop_column('chain_pos')
