"""The Alembic migrations build exactly the schema the models describe (on MariaDB)."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, Table, create_engine

from docnum.shared.models import Base
from tests.conftest import throwaway_database


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
