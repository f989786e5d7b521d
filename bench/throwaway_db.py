"""A PostgreSQL database made for one benchmark run and dropped after it (beside the bench
scripts, which run as `python bench/NAME.py`, so they import it by its bare name)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def pg_database(server_url: str, prefix: str) -> tuple[str, Callable[[], None]]:
    """A new database on ``server_url``: its URL, and the function that drops it."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    admin_url = make_url(server_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.set(database=name).render_as_string(hide_password=False), drop
