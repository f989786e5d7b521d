"""GET /api/v1/nodes and the Nodes page: every node with its heartbeat, slots and running tasks,
for administrators only. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI

from conveyor.services import deployments, nodes, queue, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller, utcnow
from conveyor.services.users import set_password
from tests.api.conftest import ClientFor, UserFactory
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, sign_in

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev]
project_groups:
  - name: Apps
projects:
  - name: Api
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Say
          type: script
          script: echo hi
"""


async def two_nodes(services: Services, admin: Caller) -> str:
    """node-a alive and running one task (claimed as a node claims it); node-b silent for two
    minutes. Returns the running task's id."""
    await apply_text(services, admin, CONFIG)
    release = await releases.create_release(services, admin, "Api")
    queued = await deployments.deploy(services, admin, "Api", release.version, "Dev")
    services.clock = lambda: utcnow() - timedelta(minutes=2)
    await nodes.heartbeat(services, "node-b", 2, starting=True)
    services.clock = utcnow
    await nodes.heartbeat(services, "node-a", 4, starting=True)
    await nodes.heartbeat(services, "node-a", 4)
    claimed = await queue.claim(services, "node-a", timedelta(seconds=30))
    assert claimed is not None and claimed.task_id == queued.task_id
    return str(queued.as_dict()["task"])


async def test_administrators_see_each_node_its_heartbeat_slots_and_running_tasks(
    services: Services, admin: Caller, client: httpx.AsyncClient
) -> None:
    task = await two_nodes(services, admin)

    response = await client.get("/nodes")

    assert response.status_code == 200, response.text
    found = {n["name"]: n for n in response.json()}
    assert list(found) == ["node-a", "node-b"]  # alive first
    a, b = found["node-a"], found["node-b"]
    assert (a["slots"], a["running"], a["tasks"], a["alive"]) == (4, 1, [task], True)
    assert (b["slots"], b["running"], b["tasks"], b["alive"]) == (2, 0, [], False)
    assert a["heartbeat"] > b["heartbeat"]
    assert a["started"] <= a["heartbeat"]


async def test_a_heartbeat_keeps_the_start_and_moves_the_heartbeat(services: Services) -> None:
    services.clock = lambda: utcnow() - timedelta(minutes=5)
    await nodes.heartbeat(services, "node-a", 4, starting=True)
    services.clock = utcnow
    await nodes.heartbeat(services, "node-a", 8)

    (status,) = await nodes.node_statuses(services)
    assert status.slots == 8
    assert status.heartbeat - status.started >= timedelta(minutes=4)
    assert status.alive(utcnow())


async def test_nodes_are_for_administrators_only(
    services: Services, client_for: ClientFor, user_with: UserFactory
) -> None:
    await nodes.heartbeat(services, "node-a", 4, starting=True)
    viewer = await user_with("viewer", [{"role": "Project Viewer"}])
    refused = await client_for(viewer).get("/nodes")

    body = assert_problem(refused, 403, "permission_denied")
    assert "AdministerSystem" in body["message"]
    assert "node-a" not in refused.text


async def test_the_nodes_page_is_linked_for_administrators_only(
    app: FastAPI, services: Services, admin: Caller, user_with: UserFactory
) -> None:
    task = await two_nodes(services, admin)
    await set_password(services, system_caller(), "admin", PASSWORD)
    await user_with("viewer", [{"role": "Project Viewer"}])
    await set_password(services, system_caller(), "viewer", PASSWORD)

    async with browser(app) as web:
        await sign_in(web, "admin")
        home = await web.get("/")
        assert 'href="/nodes"' in home.text
        page = await web.get("/nodes")
        assert page.status_code == 200, page.text
        assert "node-a" in page.text and "node-b" in page.text
        assert "1 of 4 slots" in page.text and "Gone" in page.text
        assert f'href="/tasks/{task.rsplit("-", 1)[1]}"' in page.text

    async with browser(app) as web:
        await sign_in(web, "viewer")
        assert 'href="/nodes"' not in (await web.get("/")).text
        refused = await web.get("/nodes")
        assert refused.status_code == 403
        assert "node-a" not in refused.text
