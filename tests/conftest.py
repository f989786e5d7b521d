"""Shared fixtures: a fresh database per test, on SQLite and (when configured) PostgreSQL.

PostgreSQL tests create their own database named after the test run, so runs never collide,
and drop it at the end. When CONVEYOR_TEST_POSTGRES_URL is unset they are skipped with a
visible notice in the summary.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conveyor.engine.sandbox import status as sandbox_status
from conveyor.services.core import Caller, Services, bootstrap
from conveyor.services.users import initialise
from conveyor.settings import Settings
from conveyor.store.db import upgrade

# Scripts run in the bubblewrap sandbox (docs/security.md). Where this machine cannot provide it,
# the rest of the suite runs them unsandboxed and the sandbox tests skip (fail under CI).
SANDBOX = sandbox_status(Settings(allow_unsandboxed_scripts=False))
if not SANDBOX.usable:
    os.environ.setdefault("CONVEYOR_ALLOW_UNSANDBOXED_SCRIPTS", "true")


def require_sandbox() -> None:
    """Skip a sandbox test visibly where bubblewrap is unusable; in CI, fail it instead."""
    if SANDBOX.usable:
        return
    message = f"sandbox tests need a usable bubblewrap: {SANDBOX.reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


POSTGRES_URL = os.environ.get("CONVEYOR_TEST_POSTGRES_URL")
SKIP_PG = "PostgreSQL tests skipped: set CONVEYOR_TEST_POSTGRES_URL to run them"


def _pg_admin_url() -> str:
    assert POSTGRES_URL
    url = make_url(POSTGRES_URL)
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database per test session; each test gets its own schema-free copy by
    truncation-free isolation: a fresh database per test would be slow, so tests get a fresh
    database from a template."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    name = f"conveyor_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    template_url = (
        make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    )
    upgrade(template_url)
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname LIKE :prefix"
                ),
                {"prefix": f"{name}%"},
            )
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                {"prefix": f"{name}%"},
            ).all()
            for (db,) in rows:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}"'))
        admin.dispose()


def _fresh_pg_database(template: str) -> str:
    name = f"{template}_{secrets.token_hex(4)}"
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin.dispose()
    return make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating every time would be slow)."""
    path = tmp_path_factory.mktemp("template") / "conveyor.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_work_database(pg_database: str) -> str:
    """One migrated PostgreSQL database for in-process tests, emptied before each test."""
    return _fresh_pg_database(pg_database)


# Emptying the tables between tests, as TRUNCATE ... RESTART IDENTITY would, but ~8x faster:
# TRUNCATE replaces every table's files (about 150 ms for the schema), while DELETE of the few
# rows a test leaves costs almost nothing. Foreign keys are not checked while emptying
# (replica role), so the order of the tables and cycles between them do not matter.
BIG_TABLE_ROWS = 10_000
RESTART_SEQUENCES = """
SELECT setval(format('%I.%I', schemaname, sequencename), start_value, false)
FROM pg_sequences WHERE schemaname = current_schema()
"""


def _truncate(url: str) -> None:
    from conveyor.store.tables import metadata

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            big = [
                table.name
                for table in metadata.sorted_tables
                if conn.execute(text(f'DELETE FROM "{table.name}"')).rowcount > BIG_TABLE_ROWS
            ]
            if big:  # thousands of dead rows would slow the next tests' scans: drop the files
                # CASCADE: a table that others reference (events <- event_documents) can only be
                # truncated with them; every table is empty by now, so it drops nothing more.
                names = ", ".join(f'"{name}"' for name in big)
                conn.execute(text(f"TRUNCATE {names} CASCADE"))
            conn.execute(text(RESTART_SEQUENCES))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "conveyor.db"
        shutil.copyfile(template, path)
        return f"sqlite+aiosqlite:///{path}"
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    url: str = request.getfixturevalue("pg_work_database")
    _truncate(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The test suite's throwaway users need no expensive hashing (a real server refuses this).
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        run_engine=False,
        insecure_fast_password_hashing=True,
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = bootstrap(settings)
    await initialise(svc)
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture
async def admin(services: Services) -> Caller:
    from conveyor.services.access import caller_for_user, get_user

    async with services.read() as session:
        return await caller_for_user(session, await get_user(session, "admin"))


async def caller_of(services: Services, username: str) -> Caller:
    from conveyor.services.access import caller_for_user, get_user

    async with services.read() as session:
        return await caller_for_user(session, await get_user(session, username))


def pytest_report_header(config: Any) -> list[str]:
    sandbox = "usable" if SANDBOX.usable else f"NOT usable ({SANDBOX.reason}); scripts unsandboxed"
    if POSTGRES_URL:
        return ["PostgreSQL: tests run on SQLite and PostgreSQL", f"Script sandbox: {sandbox}"]
    return ["PostgreSQL: NOT configured; " + SKIP_PG, f"Script sandbox: {sandbox}"]


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "octopetshop" / "conveyor.yaml"
