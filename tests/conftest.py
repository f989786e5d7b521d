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
from concurrent.futures import Future, ThreadPoolExecutor
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
        conn.execute(text(NO_WAITING_FOR_THE_DISK.format(name=name)))
    template_url = (
        make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    )
    upgrade(template_url)
    try:
        yield name
    finally:
        SPARE_DATABASES.settle()
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


def _create_from(template: str) -> str:
    name = f"{template}_{secrets.token_hex(4)}"
    _admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    _admin_sql(NO_WAITING_FOR_THE_DISK.format(name=name))
    return name


# The tests' databases do not wait for the disk at each commit: a commit then costs ~3 ms here
# instead of ~13 ms, over the thousands the suite makes. What is lost is only what PostgreSQL
# itself would lose if *it* crashed (the last moments of commits), which no test does: the
# crash tests kill Conveyor's processes, and every commit stays atomic and visible to the
# others at once. The setting belongs to each database (a copy does not inherit it).
NO_WAITING_FOR_THE_DISK = 'ALTER DATABASE "{name}" SET synchronous_commit = off'


def _admin_sql(statement: str) -> None:
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


class _SpareDatabases:
    """PostgreSQL databases for the tests that need one of their own, made and dropped off the
    tests' path: CREATE DATABASE and DROP DATABASE each take about a second here (PostgreSQL
    writes and syncs whole files), paid by every e2e module, cluster and second server; and
    dropping them all at the end kept a worker busy for over 40 s after its last test. One
    thread makes the next database from the template while a test runs, and drops a test's
    database once the test is done with it."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="test-databases")
        self._next: dict[str, Future[str]] = {}
        self._drops: list[Future[None]] = []

    def take(self, template: str) -> str:
        ready = self._next.pop(template, None)
        name = ready.result() if ready is not None else _create_from(template)
        self._next[template] = self._thread.submit(_create_from, template)
        return make_url(_pg_admin_url()).set(database=name).render_as_string(hide_password=False)

    def drop_soon(self, url: str) -> None:
        # FORCE: a server a test killed may leave its connections for a moment.
        statement = f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'
        self._drops.append(self._thread.submit(_admin_sql, statement))

    def settle(self) -> None:
        """Before the session drops what is left: wait for the thread's work (errors surface)."""
        for future in [*self._next.values(), *self._drops]:
            future.result()
        self._next.clear()
        self._drops.clear()


SPARE_DATABASES = _SpareDatabases()


def _fresh_pg_database(template: str) -> str:
    """An empty, migrated database of the test's own (drop it with `drop_pg_database_soon`)."""
    return SPARE_DATABASES.take(template)


def drop_pg_database_soon(url: str) -> None:
    SPARE_DATABASES.drop_soon(url)


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
