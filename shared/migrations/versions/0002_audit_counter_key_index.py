"""index audit rows by counter key

Revision ID: 0002_audit_counter_key
Revises: 0001
Create Date: 2026-12-01

The runbooks, ``GET /audit?counter_key=`` and the console's gaps and history pages look audit
rows up by counter key; without an index each such query scans the whole trail. InnoDB builds a
secondary index online (no table lock), so this runs under load.
"""
from __future__ import annotations

from alembic import op

revision = '0002_audit_counter_key'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_counter_key', ['counter_key'], unique=False)
    with op.batch_alter_table('audit_log_archive', schema=None) as batch_op:
        batch_op.create_index('ix_audit_archive_counter_key', ['counter_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log_archive', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_archive_counter_key')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_counter_key')
