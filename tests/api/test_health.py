"""/healthz and /readyz on SQLite and PostgreSQL: ready when the database answers and its
migrations are at this version's head; 503 with the reason when they are behind, when the
database was never initialised, or when it cannot be reached. /healthz never asks the database."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from conveyor.api.app import create_app
from conveyor.services.core import bootstrap
from conveyor.settings import Settings
from conveyor.store.db import head_revision, sync_url
from tests.conftest import POSTGRES_URL, SKIP_PG, _fresh_pg_database


async def _probe(settings: Settings, path: str) -> httpx.Response:
    services = bootstrap(settings)
    try:
        app = create_app(settings, services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://conveyor.test") as c:
            return await c.get(path)
    finally:
        await services.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database of this test's own (its schema version is changed by the test)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp_path / "conveyor.db")
        yield f"sqlite+aiosqlite:///{tmp_path / 'conveyor.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    yield _fresh_pg_database(request.getfixturevalue("pg_database"))


def _set_schema(url: str, revision: str | None) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            if revision is None:
                conn.execute(text("DROP TABLE alembic_version"))
            else:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        engine.dispose()


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=url, run_engine=False)


async def test_ready_when_the_schema_is_current(own_database: str, tmp_path: Path) -> None:
    ready = await _probe(_settings(tmp_path, own_database), "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema"] == head_revision()


async def test_not_ready_when_the_database_is_behind_on_migrations(
    own_database: str, tmp_path: Path
) -> None:
    head = head_revision()
    assert head is not None
    behind = f"{int(head) - 1:04d}"
    _set_schema(own_database, behind)

    found = await _probe(_settings(tmp_path, own_database), "/readyz")

    assert found.status_code == 503
    body = found.json()
    assert body["status"] == "not ready"
    assert body["schema"] == behind and body["expected_schema"] == head
    assert f"at migration {behind}" in body["reason"] and "conveyor admin init" in body["reason"]


async def test_not_ready_when_the_database_was_never_initialised(
    own_database: str, tmp_path: Path
) -> None:
    _set_schema(own_database, None)
    found = await _probe(_settings(tmp_path, own_database), "/readyz")
    assert found.status_code == 503
    assert "not initialised" in found.json()["reason"]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////nonexistent-folder/for/conveyor.db",
        "postgresql+psycopg://conveyor:hunter2-secret@127.0.0.1:9/conveyor",
    ],
    ids=["sqlite", "postgres"],
)
async def test_not_ready_when_the_database_cannot_be_reached(url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path, url)

    found = await _probe(settings, "/readyz")
    alive = await _probe(settings, "/healthz")

    assert found.status_code == 503
    assert "cannot be reached" in found.json()["reason"]
    assert "hunter2" not in found.text and "127.0.0.1" not in found.text
    assert alive.status_code == 200 and alive.json()["status"] == "ok"
