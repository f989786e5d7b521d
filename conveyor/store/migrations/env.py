"""Alembic environment: run with a connection handed over by conveyor.store.db.upgrade."""

from alembic import context
from sqlalchemy import create_engine

from conveyor.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # `alembic` invoked by hand, e.g. to autogenerate a migration
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
