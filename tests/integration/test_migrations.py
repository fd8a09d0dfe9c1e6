"""The Alembic migrations build exactly the schema the models describe (on MariaDB), and the
audit trail is looked up by counter key through its index (docs/operations.md runbooks,
``GET /audit?counter_key=``)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, Table, create_engine, text

from docnum.shared.db import make_engine
from docnum.shared.migrate import downgrade, upgrade
from docnum.shared.models import Base
from tests.conftest import throwaway_database

INDEX_CHANGES = ("add_index", "remove_index")


def index_drift(engine) -> list:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [d for d in diff if d[0] in INDEX_CHANGES]


def test_migrated_mariadb_has_the_models_indexes(engine):
    assert index_drift(engine) == []
    with engine.connect() as conn:
        for table in ("audit_log", "audit_log_archive"):
            plan = conn.execute(text(
                f"EXPLAIN SELECT id FROM {table} WHERE counter_key = 'LCBP3|Y2025'")).mappings()
            keys = [row["possible_keys"] or "" for row in plan]
            assert any("counter_key" in k for k in keys), (table, keys)


def test_the_index_migration_goes_both_ways_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        assert index_drift(engine) == []
        downgrade(url, "0001")
        with engine.connect() as conn:
            names = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list('audit_log')")}
        assert "ix_audit_counter_key" not in names and "ix_audit_created" in names
        upgrade(url)
        assert index_drift(engine) == []
    finally:
        engine.dispose()


def schema_differences(database_url: str, metadata: MetaData) -> list:
    """What ``alembic revision --autogenerate`` would write: tables, columns, types, nullability,
    server defaults, indexes and unique constraints that differ between the database and
    ``metadata``."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                             "compare_server_default": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def test_migrations_at_head_match_the_models(server_db_url):
    with throwaway_database(server_db_url, "docnum_schema") as url:
        assert schema_differences(url, Base.metadata) == []
        # The comparison sees drift: a column the models had but the migrations lacked.
        drifted = MetaData()
        for table in Base.metadata.sorted_tables:
            table.to_metadata(drifted)
        Table("counters", drifted, Column("note", String(20)), extend_existing=True)
        assert [d[0] for d in schema_differences(url, drifted)] == ["add_column"]
