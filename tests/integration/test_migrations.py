"""The migrations build exactly the models' indexes, and the audit trail is looked up by
counter key through its index (docs/operations.md runbooks, ``GET /audit?counter_key=``)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from docnum.shared.db import make_engine
from docnum.shared.migrate import downgrade, upgrade
from docnum.shared.models import Base

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
