"""Engines, sessions and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only where a migration runs: it costs half a second at every start-up.
MIGRATIONS = Path(__file__).parent / "migrations"


def sync_url(url: str) -> str:
    """The driver Alembic uses: pysqlite for SQLite, psycopg (sync mode) for PostgreSQL."""
    return url.replace("sqlite+aiosqlite", "sqlite")


def async_url(url: str) -> str:
    if url.startswith("sqlite://"):
        return url.replace("sqlite://", "sqlite+aiosqlite://", 1)
    if url.startswith("postgresql://"):
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers work while the engine writes; the busy timeout makes writers queue
    # instead of failing; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (``None`` for PostgreSQL or in-memory)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[-1]
    return Path(path) if path and path != ":memory:" and "://" not in path else None


def make_private(path: Path, *, create: bool) -> None:
    """The database file 0600 (SQLite gives its -wal and -shm files the same mode), its folder
    0700 when we create it: it holds every user's hashes and the encrypted secrets."""
    if create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            part.chmod(0o600)


def create_engine_for(
    url: str, connections: int = 40, idle_in_transaction_seconds: float = 20.0
) -> AsyncEngine:
    url = async_url(url)
    if (path := sqlite_file(url)) is not None:
        make_private(path, create=False)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # Up to ``connections`` (CONVEYOR_DATABASE_CONNECTIONS): a node runs 100 tasks at once, and
    # several nodes share the database's max_connections (docs/operations.md, "Capacity").
    kept = min(10, connections)
    # A node frozen inside a transaction (SIGSTOP, a paused VM) would hold its row locks, and
    # with them the audit chain's head, for every other node until it thaws: PostgreSQL ends
    # such a session after the lease instead (its tasks are taken over by then anyway).
    idle_ms = max(1000, int(idle_in_transaction_seconds * 1000))
    return create_async_engine(
        url,
        pool_size=kept,
        max_overflow=connections - kept,
        pool_pre_ping=True,
        connect_args={"options": f"-c idle_in_transaction_session_timeout={idle_ms}"},
    )


def sessionmaker_for(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def _sync_engine(url: str) -> Engine:
    engine = create_engine(sync_url(url))
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Create the schema or bring it to the newest migration (idempotent), or to ``revision``."""
    if (path := sqlite_file(url)) is not None:
        make_private(path, create=True)
    from alembic import command

    _migrate(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str) -> None:
    """Back to ``revision``: for the tests of a migration's own upgrade."""
    from alembic import command

    _migrate(url, lambda cfg: command.downgrade(cfg, revision))


def _migrate(url: str, step: Callable[[Config], None]) -> None:
    engine = _sync_engine(url)
    try:
        with engine.begin() as connection:
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = connection
            step(cfg)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = _sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


async def upgrade_async(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
