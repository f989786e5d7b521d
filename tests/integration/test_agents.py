"""Agents' enrolment, credentials, jobs and health through the services, on SQLite and
PostgreSQL: who may make a token, a token's single use and expiry, a revoked credential refused,
an agent confined to its own target's jobs, and the health `check` reports from its polls.
(tests/e2e/test_agents.py runs real agent processes against a real server.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from conveyor.domain.documents import Target
from conveyor.domain.errors import NotFound, PermissionDenied, Unauthenticated, ValidationFailed
from conveyor.engine.agents import AgentRunner
from conveyor.services import agents
from conveyor.services import documents as docs
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import add_user
from conveyor.store import tables as t
from tests.conftest import caller_of

CONFIG = """
environments:
  - name: Dev
targets:
  - name: Web
    kind: agent
    environments: [Dev]
    roles: [web]
  - name: Db
    kind: agent
    environments: [Dev]
    roles: [db]
  - name: Box
    environments: [Dev]
    roles: [box]
"""
MACHINE = {"hostname": "web-1", "os": "Linux 6.1", "version": "0.1.0", "free_disk_bytes": 5 << 30}


@pytest.fixture
async def configured(services: Services, admin: Caller) -> Services:
    await apply_text(services, admin, CONFIG)
    return services


async def enrolled(services: Services, admin: Caller, target: str) -> tuple[str, agents.Agent]:
    token = (await agents.create_token(services, admin, target))["token"]
    credential = (await agents.enrol(services, token, MACHINE))["credential"]
    return credential, await agents.authenticate(services, credential)


async def test_a_token_is_single_use_expires_and_is_never_stored_or_audited(
    configured: Services, admin: Caller
) -> None:
    services = configured
    made = await agents.create_token(services, admin, "web", "30m")
    token = made["token"]
    answer = await agents.enrol(services, token, MACHINE)
    assert answer["target"] == "Web" and answer["credential"].startswith("cva_")
    with pytest.raises(Unauthenticated, match="used already"):
        await agents.enrol(services, token, MACHINE)

    late = (await agents.create_token(services, admin, "Web"))["token"]  # 1 hour by default
    now = services.clock()
    services.clock = lambda: now + timedelta(hours=1, seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        await agents.enrol(services, late, MACHINE)
    with pytest.raises(Unauthenticated, match="not valid"):
        await agents.enrol(services, "cvt_made-up", MACHINE)

    stored = ""
    async with services.read() as session:
        for table in (t.agent_tokens, t.agents, t.events):
            for row in (await session.execute(select(table))).all():
                stored += " ".join(str(value) for value in row) + "\n"
    for secret in (token, late, answer["credential"]):
        assert secret not in stored
    assert "created an agent enrolment token for target Web" in stored
    assert "enrolled for target Web" in stored
    async with services.read() as session:
        categories = set((await session.execute(select(t.events.c.category))).scalars())
    assert {"AgentTokenCreated", "AgentEnrolled"} <= categories, categories


async def test_only_administrators_make_tokens_for_agent_targets_only(
    configured: Services, admin: Caller
) -> None:
    services = configured
    await add_user(services, system_caller(), "dev")
    await docs.create_document(
        services,
        system_caller(),
        "teams",
        {"name": "Devs", "members": ["dev"], "roles": [{"role": "Project Deployer"}]},
    )
    dev = await caller_of(services, "dev")
    with pytest.raises(PermissionDenied):
        await agents.create_token(services, dev, "Web")
    with pytest.raises(PermissionDenied):
        await agents.list_agents(services, dev)
    with pytest.raises(ValidationFailed, match="of kind local"):
        await agents.create_token(services, admin, "Box")
    with pytest.raises(NotFound):
        await agents.create_token(services, admin, "Nowhere")
    with pytest.raises(ValidationFailed, match="not a duration"):
        await agents.create_token(services, admin, "Web", "soon")


async def test_an_agent_gets_only_its_own_targets_jobs(configured: Services, admin: Caller) -> None:
    services = configured
    _, web = await enrolled(services, admin, "Web")
    _, db = await enrolled(services, admin, "Db")
    for_db = await agents.enqueue(services, "db", None, "script", {"script": "echo db"})
    assert await agents.claim(services, web) is None
    for_web = await agents.enqueue(services, "web", None, "script", {"script": "echo web"})
    job = await agents.claim(services, web)
    assert job is not None and job["id"] == for_web and job["script"] == "echo web"
    assert await agents.claim(services, web) is None  # taken once

    # Nor can it write into, finish or download through another target's job.
    with pytest.raises(NotFound):
        await agents.append_lines(services, web, for_db, [("info", "forged")])
    with pytest.raises(NotFound):
        await agents.finish(services, web, for_db, {"exit_code": 0})
    with pytest.raises(NotFound):
        await agents.job_package(services, web, for_db)
    claimed = await agents.claim(services, db)
    assert claimed is not None and claimed["id"] == for_db

    # The payload is encrypted at rest.
    async with services.read() as session:
        payloads = (await session.execute(select(t.agent_jobs.c.payload))).scalars().all()
    assert payloads and not any("echo" in p for p in payloads)


async def test_a_revoked_agent_is_refused_at_once_and_its_job_stops(
    configured: Services, admin: Caller
) -> None:
    services = configured
    credential, web = await enrolled(services, admin, "Web")
    job_id = await agents.enqueue(services, "web", None, "script", {"script": "sleep 60"})
    assert await agents.claim(services, web) is not None
    assert await agents.append_lines(services, web, job_id, [("info", "working")]) is False
    [row] = await agents.list_agents(services, admin)
    await agents.revoke(services, admin, row["id"])
    with pytest.raises(Unauthenticated, match="revoked"):
        await agents.authenticate(services, credential)
    state = await agents.job_state(services, job_id)
    assert state.state == agents.DONE and state.result == {
        "error": "the agent running this was revoked"
    }
    [listed] = await agents.list_agents(services, admin)
    assert listed["revoked"] and not listed["online"]


async def test_check_reports_an_agent_healthy_while_it_polls(
    configured: Services, admin: Caller
) -> None:
    services = configured
    runner = AgentRunner(services)
    web = Target("Web", ("Dev",), ("web",), kind="agent")
    unknown = await runner.check(web)
    assert not unknown.healthy and "no agent has enrolled for Web" in unknown.message

    _, agent = await enrolled(services, admin, "Web")
    await agents.heartbeat(services, agent, MACHINE)
    health = await runner.check(web)
    assert health.healthy
    assert (health.os, health.free_disk_bytes, health.agent_version) == (
        "Linux 6.1",
        5 << 30,
        "0.1.0",
    )

    now = services.clock()
    offline = services.settings.agent_offline_seconds
    services.clock = lambda: now + timedelta(seconds=offline + 1)
    gone = await runner.check(web)
    assert not gone.healthy and "last polled" in gone.message

    services.clock = lambda: now
    await agents.heartbeat(services, agent, {**MACHINE, "free_disk_bytes": 10 << 20})
    full = await runner.check(web)
    assert not full.healthy and "MiB free" in full.message


def test_the_agent_loads_none_of_the_servers_database_or_web_code() -> None:
    """`conveyor agent run` on a target machine needs no database driver, ORM or web server."""
    probe = (
        "import sys, conveyor.cli.main, conveyor.agent.main\n"
        "server = ('sqlalchemy', 'alembic', 'aiosqlite', 'psycopg', 'fastapi', 'uvicorn',\n"
        "          'conveyor.store', 'conveyor.services.core', 'conveyor.api')\n"
        "print(sorted(m for m in sys.modules if m.startswith(server)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


async def test_a_job_of_an_agent_that_restarted_mid_way_fails_instead_of_waiting(
    configured: Services, admin: Caller
) -> None:
    """A poll lists the jobs the agent still runs: one it took before it restarted is lost."""
    services = configured
    _, web = await enrolled(services, admin, "Web")
    kept = await agents.enqueue(services, "web", None, "script", {"script": "sleep 5"})
    lost = await agents.enqueue(services, "web", None, "script", {"script": "sleep 5"})
    assert await agents.claim(services, web) is not None
    assert await agents.claim(services, web) is not None
    await agents.abandon_others(services, web, [kept])
    assert (await agents.job_state(services, kept)).state == agents.RUNNING
    gone = await agents.job_state(services, lost)
    assert gone.state == agents.DONE
    assert gone.result == {"error": "the agent restarted while running this"}


def test_an_agent_that_never_enrolled_says_how_to(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conveyor.cli.main import app

    result = CliRunner().invoke(
        app,
        ["agent", "run", "--server", "http://127.0.0.1:9", "--work-dir", str(tmp_path / "a")],
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert "has not enrolled yet" in result.stderr and "--token" in result.stderr
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
