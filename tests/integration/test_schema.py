"""The migrations build exactly the schema `conveyor/store/tables.py` declares, on SQLite and
PostgreSQL: a table, column, index or key added to one and not the other fails here, before an
upgraded installation meets a query the other expects."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conveyor.store.db import _sync_engine
from conveyor.store.tables import metadata


def test_the_migrated_database_matches_the_declared_tables(database_url: str) -> None:
    engine = _sync_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()
    assert differences == []
