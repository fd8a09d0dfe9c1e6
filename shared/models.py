"""Database schema: catalog, configs, counters, the ledger of issued numbers, and the audit trail.

Every table is utf8mb4 with a binary collation on MariaDB: codes and numbers are compared exactly
(Thai text, case), never by a locale's idea of "equal". The same models run on SQLite for the
embedded default. Migrations live in ``shared/migrations`` (Alembic).
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
TIMESTAMP = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# SHA-256 digests (row hashes, chain heads, Merkle roots) and Ed25519 signatures: fixed-size
# binary on MariaDB, a BLOB on SQLite.
HASH = LargeBinary(32).with_variant(mysql.BINARY(32), "mysql", "mariadb")
SIGNATURE = LargeBinary(64).with_variant(mysql.BINARY(64), "mysql", "mariadb")
TABLE_ARGS = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin", "mysql_engine": "InnoDB"}

# Longest canonical counter key: project + six "DIM=code" parts + period, codes <= 30 chars.
COUNTER_KEY_LEN = 300
NUMBER_LEN = 64  # rendered numbers are 10-50 chars; imports and overrides are checked too


class Base(DeclarativeBase):
    pass


class CatalogEntry(Base):
    __tablename__ = "catalog_entries"
    __table_args__ = (UniqueConstraint("kind", "code", name="uq_catalog_kind_code"), TABLE_ARGS)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(30))
    name: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class NumberingConfig(Base):
    __tablename__ = "numbering_configs"
    # ``type_key`` is correspondence_type or '' so that one project default is unique too
    # (a NULL in a unique key would allow any number of defaults).
    __table_args__ = (UniqueConstraint("project", "type_key", name="uq_config_project_type"),
                      TABLE_ARGS)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(30))
    correspondence_type: Mapped[str | None] = mapped_column(String(30), nullable=True)
    type_key: Mapped[str] = mapped_column(String(30))
    template: Mapped[str] = mapped_column(String(100))
    reset: Mapped[str] = mapped_column(String(16))
    fiscal_year_start_month: Mapped[int] = mapped_column(Integer, default=10)
    sequence_start: Mapped[int] = mapped_column(BigInteger, default=1)
    counter_scope: Mapped[list | None] = mapped_column(JSON, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class ConfigHistory(Base):
    __tablename__ = "config_history"
    __table_args__ = (UniqueConstraint("config_id", "version", name="uq_history_version"),
                      TABLE_ARGS)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("numbering_configs.id"))
    version: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(100))
    reset: Mapped[str] = mapped_column(String(16))
    fiscal_year_start_month: Mapped[int] = mapped_column(Integer)
    sequence_start: Mapped[int] = mapped_column(BigInteger)
    counter_scope: Mapped[list | None] = mapped_column(JSON, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean)
    changed_by: Mapped[str] = mapped_column(String(255))
    changed_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    change_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Counter(Base):
    """One row per counter key. ``last_sequence`` is the last sequence handed out (or skipped to).

    The row also holds the heads of the counter's two hash chains (its ledger rows and its audit
    rows, docs/verification.md): they move under the row lock the allocation takes anyway.
    """

    __tablename__ = "counters"
    __table_args__ = (Index("ix_counters_project", "project"), TABLE_ARGS)

    counter_key: Mapped[str] = mapped_column(String(COUNTER_KEY_LEN), primary_key=True)
    project: Mapped[str] = mapped_column(String(30))
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    capacity: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    ledger_length: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    ledger_head: Mapped[bytes | None] = mapped_column(HASH, nullable=True)
    audit_length: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    audit_head: Mapped[bytes | None] = mapped_column(HASH, nullable=True)


class IssuedNumber(Base):
    """The ledger: every sequence ever handed out, whatever became of it. Rows are never deleted."""

    __tablename__ = "document_numbers"
    __table_args__ = (
        UniqueConstraint("project", "document_number", name="uq_number_per_project"),
        UniqueConstraint("counter_key", "sequence", name="uq_counter_sequence"),
        UniqueConstraint("request_id", name="uq_number_request"),
        UniqueConstraint("reservation_token", name="uq_number_reservation"),
        Index("ix_numbers_document_number", "document_number"),
        Index("ix_numbers_state_expiry", "state", "reservation_expires_at"),
        Index("ix_numbers_chain", "counter_key", "chain_pos"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    document_number: Mapped[str] = mapped_column(String(NUMBER_LEN))
    project: Mapped[str] = mapped_column(String(30))
    counter_key: Mapped[str | None] = mapped_column(String(COUNTER_KEY_LEN), nullable=True)
    sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    config_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    config_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    template: Mapped[str | None] = mapped_column(String(100), nullable=True)
    correspondence_type: Mapped[str | None] = mapped_column(String(30), nullable=True)
    originator: Mapped[str | None] = mapped_column(String(30), nullable=True)
    recipient: Mapped[str | None] = mapped_column(String(30), nullable=True)
    sub_type: Mapped[str | None] = mapped_column(String(30), nullable=True)
    rfa_type: Mapped[str | None] = mapped_column(String(30), nullable=True)
    discipline: Mapped[str | None] = mapped_column(String(30), nullable=True)
    revision: Mapped[str | None] = mapped_column(String(30), nullable=True)
    document_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    document_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_id: Mapped[str] = mapped_column(String(64))
    idempotency_client: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idempotency_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issued_by: Mapped[str] = mapped_column(String(255))
    issued_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    reservation_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reservation_expires_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, nullable=True)
    state_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    state_changed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state_changed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(NUMBER_LEN), nullable=True)
    replaces: Mapped[str | None] = mapped_column(String(NUMBER_LEN), nullable=True)
    # Position in its counter's ledger chain (1, 2, ...) and SHA-256 of the previous row's hash
    # and this row's canonical encoding (docs/verification.md).
    chain_pos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    row_hash: Mapped[bytes | None] = mapped_column(HASH, nullable=True)


class _AuditColumns:
    """Columns shared by the live audit table and its archive (SQLAlchemy copies mixin columns)."""

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    operation: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(255), nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    counter_key: Mapped[str | None] = mapped_column(String(COUNTER_KEY_LEN), nullable=True)
    document_number: Mapped[str | None] = mapped_column(String(NUMBER_LEN), nullable=True)
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    lock_wait_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    fallback_used: Mapped[str] = mapped_column(String(16), default="NONE")
    success: Mapped[bool] = mapped_column(Boolean)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    chain_pos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    row_hash: Mapped[bytes | None] = mapped_column(HASH, nullable=True)


class AuditRow(_AuditColumns, Base):
    """Append-only. One row per operation (docs/reference.md#the-ledger)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_created", "created_at"),
        Index("ix_audit_number", "document_number"),
        Index("ix_audit_request", "request_id"),
        Index("ix_audit_operation", "operation"),
        Index("ix_audit_counter_key", "counter_key", "chain_pos"),
        TABLE_ARGS,
    )


class AuditArchiveRow(_AuditColumns, Base):
    """Audit rows older than two years, moved here by maintenance; never deleted (7-year retention).

    Rows keep the id they had in ``audit_log``, so one id names one operation forever.
    """

    __tablename__ = "audit_log_archive"
    __table_args__ = (
        Index("ix_audit_archive_created", "created_at"),
        Index("ix_audit_archive_number", "document_number"),
        Index("ix_audit_archive_request", "request_id"),
        Index("ix_audit_archive_counter_key", "counter_key", "chain_pos"),
        TABLE_ARGS,
    )


class ResetRequest(Base):
    __tablename__ = "reset_requests"
    __table_args__ = (TABLE_ARGS,)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    config_id: Mapped[int] = mapped_column(ForeignKey("numbering_configs.id"))
    counter_key: Mapped[str] = mapped_column(String(COUNTER_KEY_LEN))
    new_last_sequence: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24))
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    executed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, nullable=True)


class ResetApproval(Base):
    __tablename__ = "reset_approvals"
    __table_args__ = (UniqueConstraint("reset_request_id", "approver", name="uq_reset_approver"),
                      TABLE_ARGS)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    reset_request_id: Mapped[int] = mapped_column(ForeignKey("reset_requests.id"))
    approver: Mapped[str] = mapped_column(String(255))
    approved_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class MaintenanceLock(Base):
    """Guards periodic jobs so that overlapping runs cannot double up (one row per job)."""

    __tablename__ = "maintenance_locks"
    __table_args__ = (TABLE_ARGS,)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, nullable=True)


class RequestRecord(Base):
    """Accepted requests of the embedded default (production keeps these in Redis, with a TTL).

    It lets an Idempotency-Key retry join a request still queued, and answers "queued".
    """

    __tablename__ = "request_registry"
    __table_args__ = (Index("ix_request_registry_expires", "expires_at"), TABLE_ARGS)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    counter_key: Mapped[str] = mapped_column(String(COUNTER_KEY_LEN))
    submitted_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class ChainHead(Base):
    """Heads of the chains that have no counter row: ledger and audit rows without a counter key
    (legacy numbers, catalog and config changes). ``kind`` is ``ledger`` or ``audit``.

    Only administration writes these rows, so their lock is never on the issuing path.
    """

    __tablename__ = "chain_heads"
    __table_args__ = (TABLE_ARGS,)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger, default=0)
    head: Mapped[bytes | None] = mapped_column(HASH, nullable=True)


class Checkpoint(Base):
    """A signed statement: the Merkle root of the first ``tree_size`` leaves of the log of chain
    heads (``checkpoint_leaves``), signed with the deployment's Ed25519 key."""

    __tablename__ = "checkpoints"
    __table_args__ = (TABLE_ARGS,)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(HASH)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    key_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[bytes] = mapped_column(SIGNATURE)


class CheckpointLeaf(Base):
    """The append-only log the checkpoints sign: one leaf per chain head recorded (and one per
    1,024 rows of a chain, so that a receipt's chain stays short)."""

    __tablename__ = "checkpoint_leaves"
    __table_args__ = (Index("ix_leaves_chain", "kind", "counter_key", "length"), TABLE_ARGS)

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    checkpoint_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    counter_key: Mapped[str | None] = mapped_column(String(COUNTER_KEY_LEN), nullable=True)
    length: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[bytes] = mapped_column(HASH)
    leaf_hash: Mapped[bytes] = mapped_column(HASH)


class ChainBackfill(Base):
    """Rows that were chained by a migration after they were written: the first checkpoint
    after it says so in its (signed) note."""

    __tablename__ = "chain_backfills"
    __table_args__ = (TABLE_ARGS,)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    ledger_rows: Mapped[int] = mapped_column(BigInteger)
    audit_rows: Mapped[int] = mapped_column(BigInteger)
    chains: Mapped[int] = mapped_column(BigInteger)
    checkpoint_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
