"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

# Column types shared by the tables: a BIGINT key that SQLite autoincrements as INTEGER, and
# microsecond DATETIMEs on MariaDB and MySQL (shared/models.py declares the same).
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(
    mysql.DATETIME(fsp=6), 'mysql')


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('counter_key', sa.String(length=300), nullable=True),
    sa.Column('document_number', sa.String(length=64), nullable=True),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('lock_wait_ms', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('fallback_used', sa.String(length=16), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_created', ['created_at'], unique=False)
        batch_op.create_index('ix_audit_number', ['document_number'], unique=False)
        batch_op.create_index('ix_audit_operation', ['operation'], unique=False)
        batch_op.create_index('ix_audit_request', ['request_id'], unique=False)

    op.create_table('audit_log_archive',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('client_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=255), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('counter_key', sa.String(length=300), nullable=True),
    sa.Column('document_number', sa.String(length=64), nullable=True),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.Column('after', sa.JSON(), nullable=True),
    sa.Column('lock_wait_ms', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('fallback_used', sa.String(length=16), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('audit_log_archive', schema=None) as batch_op:
        batch_op.create_index('ix_audit_archive_created', ['created_at'], unique=False)
        batch_op.create_index('ix_audit_archive_number', ['document_number'], unique=False)
        batch_op.create_index('ix_audit_archive_request', ['request_id'], unique=False)

    op.create_table('catalog_entries',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('code', sa.String(length=30), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('updated_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'code', name='uq_catalog_kind_code'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    op.create_table('counters',
    sa.Column('counter_key', sa.String(length=300), nullable=False),
    sa.Column('project', sa.String(length=30), nullable=False),
    sa.Column('last_sequence', sa.BigInteger(), nullable=False),
    sa.Column('capacity', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('counter_key'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('counters', schema=None) as batch_op:
        batch_op.create_index('ix_counters_project', ['project'], unique=False)

    op.create_table('document_numbers',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('document_number', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=30), nullable=False),
    sa.Column('counter_key', sa.String(length=300), nullable=True),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('config_id', sa.BigInteger(), nullable=True),
    sa.Column('config_version', sa.Integer(), nullable=True),
    sa.Column('template', sa.String(length=100), nullable=True),
    sa.Column('correspondence_type', sa.String(length=30), nullable=True),
    sa.Column('originator', sa.String(length=30), nullable=True),
    sa.Column('recipient', sa.String(length=30), nullable=True),
    sa.Column('sub_type', sa.String(length=30), nullable=True),
    sa.Column('rfa_type', sa.String(length=30), nullable=True),
    sa.Column('discipline', sa.String(length=30), nullable=True),
    sa.Column('revision', sa.String(length=30), nullable=True),
    sa.Column('document_date', sa.Date(), nullable=True),
    sa.Column('document_ref', sa.String(length=255), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('idempotency_client', sa.String(length=255), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('idempotency_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('issued_by', sa.String(length=255), nullable=False),
    sa.Column('issued_at', TIMESTAMP, nullable=False),
    sa.Column('reservation_token', sa.String(length=64), nullable=True),
    sa.Column('reservation_expires_at', TIMESTAMP, nullable=True),
    sa.Column('state_reason', sa.Text(), nullable=True),
    sa.Column('state_changed_by', sa.String(length=255), nullable=True),
    sa.Column('state_changed_at', TIMESTAMP, nullable=True),
    sa.Column('replaced_by', sa.String(length=64), nullable=True),
    sa.Column('replaces', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('counter_key', 'sequence', name='uq_counter_sequence'),
    sa.UniqueConstraint('project', 'document_number', name='uq_number_per_project'),
    sa.UniqueConstraint('request_id', name='uq_number_request'),
    sa.UniqueConstraint('reservation_token', name='uq_number_reservation'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('document_numbers', schema=None) as batch_op:
        batch_op.create_index('ix_numbers_document_number', ['document_number'], unique=False)
        batch_op.create_index('ix_numbers_state_expiry', ['state', 'reservation_expires_at'],
                              unique=False)

    op.create_table('maintenance_locks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=255), nullable=True),
    sa.Column('expires_at', TIMESTAMP, nullable=True),
    sa.PrimaryKeyConstraint('name'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    op.create_table('numbering_configs',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('project', sa.String(length=30), nullable=False),
    sa.Column('correspondence_type', sa.String(length=30), nullable=True),
    sa.Column('type_key', sa.String(length=30), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('reset', sa.String(length=16), nullable=False),
    sa.Column('fiscal_year_start_month', sa.Integer(), nullable=False),
    sa.Column('sequence_start', sa.BigInteger(), nullable=False),
    sa.Column('counter_scope', sa.JSON(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=False),
    sa.Column('created_at', TIMESTAMP, nullable=False),
    sa.Column('updated_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project', 'type_key', name='uq_config_project_type'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    op.create_table('request_registry',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('client', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('counter_key', sa.String(length=300), nullable=False),
    sa.Column('submitted_at', TIMESTAMP, nullable=False),
    sa.Column('expires_at', TIMESTAMP, nullable=False),
    sa.PrimaryKeyConstraint('request_id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('request_registry', schema=None) as batch_op:
        batch_op.create_index('ix_request_registry_expires', ['expires_at'], unique=False)

    op.create_table('config_history',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('config_id', ID, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('reset', sa.String(length=16), nullable=False),
    sa.Column('fiscal_year_start_month', sa.Integer(), nullable=False),
    sa.Column('sequence_start', sa.BigInteger(), nullable=False),
    sa.Column('counter_scope', sa.JSON(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('changed_by', sa.String(length=255), nullable=False),
    sa.Column('changed_at', TIMESTAMP, nullable=False),
    sa.Column('change_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['config_id'], ['numbering_configs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('config_id', 'version', name='uq_history_version'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    op.create_table('reset_requests',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('config_id', ID, nullable=False),
    sa.Column('counter_key', sa.String(length=300), nullable=False),
    sa.Column('new_last_sequence', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('requested_by', sa.String(length=255), nullable=False),
    sa.Column('requested_at', TIMESTAMP, nullable=False),
    sa.Column('executed_at', TIMESTAMP, nullable=True),
    sa.ForeignKeyConstraint(['config_id'], ['numbering_configs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )
    op.create_table('reset_approvals',
    sa.Column('id', ID, autoincrement=True, nullable=False),
    sa.Column('reset_request_id', ID, nullable=False),
    sa.Column('approver', sa.String(length=255), nullable=False),
    sa.Column('approved_at', TIMESTAMP, nullable=False),
    sa.ForeignKeyConstraint(['reset_request_id'], ['reset_requests.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('reset_request_id', 'approver', name='uq_reset_approver'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_bin',
    mysql_engine='InnoDB'
    )


def downgrade() -> None:
    op.drop_table('reset_approvals')
    op.drop_table('reset_requests')
    op.drop_table('config_history')
    with op.batch_alter_table('request_registry', schema=None) as batch_op:
        batch_op.drop_index('ix_request_registry_expires')

    op.drop_table('request_registry')
    op.drop_table('numbering_configs')
    op.drop_table('maintenance_locks')
    with op.batch_alter_table('document_numbers', schema=None) as batch_op:
        batch_op.drop_index('ix_numbers_state_expiry')
        batch_op.drop_index('ix_numbers_document_number')

    op.drop_table('document_numbers')
    with op.batch_alter_table('counters', schema=None) as batch_op:
        batch_op.drop_index('ix_counters_project')

    op.drop_table('counters')
    op.drop_table('catalog_entries')
    with op.batch_alter_table('audit_log_archive', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_archive_request')
        batch_op.drop_index('ix_audit_archive_number')
        batch_op.drop_index('ix_audit_archive_created')

    op.drop_table('audit_log_archive')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_request')
        batch_op.drop_index('ix_audit_operation')
        batch_op.drop_index('ix_audit_number')
        batch_op.drop_index('ix_audit_created')

    op.drop_table('audit_log')
