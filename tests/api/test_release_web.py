"""Creating and moving releases in the browser, in process, on both databases (issue 14, item 1).

The Octo Pet Shop with its people: the new-release form suggests the next version, preselects
the highest child releases and package versions from the feed; creating with another child and
notes works; each person sees only the moves (promote, redeploy, retry, roll back) they may
make, and each move leads to the plan page of the right release and environment; the server
refuses whoever may not. Deployments end by the dashboard projection's own rule (no engine:
running deployments is tested elsewhere; here only where releases are matters).
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from conveyor.domain.runtime import TaskState
from conveyor.services import deployments, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.packages import push_package
from conveyor.services.users import set_password
from conveyor.store import tables as t
from tests.api.test_packages_api import zip_bytes
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.conftest import EXAMPLE
from tests.ended import end

COMPONENTS = {
    "Database": "OctoPetShop.Database",
    "Shopping Cart Service": "OctoPetShop.ShoppingCartService",
    "Product Service": "OctoPetShop.ProductService",
    "Website": "OctoPetShop.Web",
}
DEPLOY_ALL = "/projects/deploy-all"
PLAN = re.compile(r"/releases/([^/]+)/deploy\?to=(\w+)$")
MOVE = re.compile(r'data-move="(\w+)" href="([^"]+)">([^<]+)</a>')


@pytest.fixture
async def shop(services: Services, admin: Caller) -> None:
    """The example; every component's package at 1.0.0 and 1.0.1 in the feed; Database has
    releases 1.0.0 and 1.0.1, the other components 1.0.0; Deploy All 1.0.0 (Database 1.0.1)."""
    await apply_text(services, admin, EXAMPLE.read_text(encoding="utf-8"))
    for person in ("dev", "qa", "ops"):
        await set_password(services, admin, person, PASSWORD)
    for package in COMPONENTS.values():
        for version in ("1.0.0", "1.0.1"):
            await push_package(
                services,
                admin,
                _chunks(zip_bytes({"README": version.encode()})),
                file_name=f"{package}.{version}.zip",
            )
    await releases.create_release(
        services, admin, "Database", version="1.0.0", packages={COMPONENTS["Database"]: "1.0.0"}
    )
    await releases.create_release(services, admin, "Database", version="1.0.1")
    for project in ("Shopping Cart Service", "Product Service", "Website"):
        await releases.create_release(services, admin, project, version="1.0.0")
    await releases.create_release(services, admin, "Deploy All", version="1.0.0")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def ended(
    services: Services, admin: Caller, project: str, version: str, env: str, state: TaskState
) -> str:
    """Deploy and end the deployment with ``state``, through the projection's own rule; the
    task's public id."""
    queued = await deployments.deploy(services, admin, project, version, env)
    await end(services, admin, queued, version, state)
    return str(queued.as_dict()["task"]).rsplit("-", 1)[-1]


Person = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def as_person(app: FastAPI) -> AsyncIterator[Person]:
    """A signed-in browser per person, made on first use."""
    opened: dict[str, httpx.AsyncClient] = {}

    async def signed(user: str) -> httpx.AsyncClient:
        if user not in opened:
            client = browser(app)
            signed_in = await sign_in(client, user)
            assert signed_in.status_code == 303, signed_in.text
            opened[user] = client
        return opened[user]

    yield signed
    for client in opened.values():
        await client.aclose()


def moves(page: httpx.Response) -> dict[str, str]:
    """The moves a page offers: label -> link (the dashboard's and the pages' alike)."""
    return {html.unescape(label): html.unescape(href) for _, href, label in MOVE.findall(page.text)}


def selected(page: httpx.Response, name: str) -> list[str]:
    """The values preselected in the page's selects called ``name``."""
    found = re.findall(r'<select id="[^"]+" name="([^"]+)">(.*?)</select>', page.text, re.S)
    return [
        html.unescape(value)
        for field, options in found
        if field == name
        for value in re.findall(r'<option value="([^"]+)" selected>', options)
    ]


def offered(page: httpx.Response, name: str) -> list[str]:
    found = re.findall(r'<select id="[^"]+" name="([^"]+)">(.*?)</select>', page.text, re.S)
    return [
        html.unescape(value)
        for field, options in found
        if field == name
        for value in re.findall(r'<option value="([^"]+)"', options)
    ]


async def test_the_form_suggests_the_next_version_and_the_highest_children_and_packages(
    shop: None, as_person: Person
) -> None:
    ops = await as_person("ops")
    project = await ops.get(DEPLOY_ALL)
    assert 'href="/projects/deploy-all/releases/new"' in project.text
    form = await ops.get(f"{DEPLOY_ALL}/releases/new")
    assert form.status_code == 200, form.text
    assert 'name="version" value="1.0.1"' in form.text  # the next patch after 1.0.0
    # Each child at its highest release, any of its releases offered.
    assert selected(form, "child") == [
        "Database:1.0.1",
        "Shopping Cart Service:1.0.0",
        "Product Service:1.0.0",
        "Website:1.0.0",
    ]
    assert offered(form, "child")[:2] == ["Database:1.0.1", "Database:1.0.0"]
    # A component's form offers its package's versions from the feed, the highest chosen.
    database = await ops.get("/projects/database/releases/new")
    assert 'name="version" value="1.0.2"' in database.text
    assert offered(database, "package") == [
        "OctoPetShop.Database:1.0.1",
        "OctoPetShop.Database:1.0.0",
    ]
    assert selected(database, "package") == ["OctoPetShop.Database:1.0.1"]


async def test_creating_with_another_child_and_notes(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    dev = await as_person("dev")
    form = await dev.get(f"{DEPLOY_ALL}/releases/new")
    fields = {
        "csrf": form_token(form),
        "version": "1.0.1",
        "notes": "Database held back at 1.0.0",
        "child": [
            "Database:1.0.0",
            "Shopping Cart Service:1.0.0",
            "Product Service:1.0.0",
            "Website:1.0.0",
        ],
    }
    created = await dev.post(f"{DEPLOY_ALL}/releases/new", data=fields)
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/projects/deploy-all/releases/1.0.1?done=created"
    page = await dev.get(created.headers["location"])
    assert "Release 1.0.1 of Deploy All was created." in page.text
    assert "Database held back at 1.0.0" in page.text
    made = await releases.get_release(services, admin, "Deploy All", "1.0.1")
    assert made.as_dict()["children"]["Database"] == "1.0.0" and made.created_by == "dev"
    # The same version again: the form comes back with a sentence and what was typed.
    again = await dev.post(f"{DEPLOY_ALL}/releases/new", data=fields)
    assert again.status_code == 409
    assert "Deploy All already has release 1.0.1." in again.text
    assert "Database held back at 1.0.0" in again.text
    assert selected(again, "child")[0] == "Database:1.0.0"
    wrong = await dev.post(f"{DEPLOY_ALL}/releases/new", data={**fields, "version": "1.0.x"})
    assert wrong.status_code == 422 and 'version "1.0.x" is not valid' in html.unescape(wrong.text)


async def test_who_may_not_create_is_refused(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    qa = await as_person("qa")
    assert "/releases/new" not in (await qa.get(DEPLOY_ALL)).text
    page = await qa.get(f"{DEPLOY_ALL}/releases/new")
    assert page.status_code == 403
    assert "qa may not ReleaseCreate for project Deploy All" in page.text
    token = form_token(await qa.get("/"))
    # Refused before the form is read: an empty form is a 403, not a list of field errors.
    posted = await qa.post(f"{DEPLOY_ALL}/releases/new", data={"csrf": token})
    assert posted.status_code == 403 and "Traceback" not in posted.text
    assert len(await releases.list_releases(services, admin, "Deploy All")) == 1


async def test_each_person_sees_the_moves_they_may_make(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    await ended(services, admin, "Deploy All", "1.0.0", "Test", TaskState.SUCCESS)
    release = f"{DEPLOY_ALL}/releases/1.0.0"
    seen = {}
    for person in ("dev", "qa", "ops"):
        client = await as_person(person)
        seen[person] = (moves(await client.get(release)), moves(await client.get("/")))
    plan = f"{release}/deploy?to="
    assert seen["ops"][0] == {
        "Promote to Staging…": plan + "Staging",
        "Redeploy to Test…": plan + "Test",
    }
    assert seen["dev"][0] == {"Redeploy to Test…": plan + "Test"}  # Test only
    # A move is the one button for its environment: no "Deploy to" beside it.
    ops_page = (await (await as_person("ops")).get(release)).text
    assert "Deploy to Staging…" not in ops_page and "Deploy to Test…" not in ops_page
    assert seen["qa"][0] == {}
    # The dashboard's Deploy All cell in Test: only ops may promote it.
    assert seen["ops"][1] == {"Promote to Staging…": plan + "Staging"}
    assert seen["dev"][1] == {} and seen["qa"][1] == {}
    # And the server refuses dev anyway, with a sentence.
    dev = await as_person("dev")
    page = await dev.get(plan + "Staging")
    refused = await dev.post(
        f"{release}/deploy",
        data={"csrf": form_token(page), "environment": "Staging", "action": "deploy"},
    )
    assert refused.status_code == 403
    assert "dev may not DeploymentCreate for project Deploy All in environment Staging" in (
        refused.text
    )


async def test_promote_redeploy_retry_and_roll_back_lead_to_the_plan(
    shop: None, services: Services, admin: Caller, as_person: Person
) -> None:
    ok, failed = TaskState.SUCCESS, TaskState.FAILED
    await ended(services, admin, "Database", "1.0.0", "Development", ok)
    current = await ended(services, admin, "Database", "1.0.1", "Development", ok)
    broken = await ended(services, admin, "Database", "1.0.1", "Test", failed)
    await ended(services, admin, "Website", "1.0.0", "Development", ok)
    ops = await as_person("ops")
    base = "/projects/database/releases"
    on_release = moves(await ops.get(f"{base}/1.0.1"))
    assert on_release == {
        "Redeploy to Development…": f"{base}/1.0.1/deploy?to=Development",
        "Roll back to 1.0.0 in Development…": f"{base}/1.0.0/deploy?to=Development",
        "Retry in Test…": f"{base}/1.0.1/deploy?to=Test",
    }  # no promotion: 1.0.1 has gone to Test already
    assert moves(await ops.get(f"/tasks/{broken}")) == {
        "Retry in Test…": f"{base}/1.0.1/deploy?to=Test"
    }
    assert set(moves(await ops.get(f"/tasks/{current}"))) == {
        "Redeploy to Development…",
        "Roll back to 1.0.0 in Development…",
    }
    board = moves(await ops.get("/"))
    assert board == {
        "Retry in Test…": f"{base}/1.0.1/deploy?to=Test",
        "Promote to Test…": "/projects/website/releases/1.0.0/deploy?to=Test",
    }
    # Each lands on the plan page of that release and environment, nothing queued yet.
    for label, link in {**on_release, **board}.items():
        plan = await ops.get(link)
        assert plan.status_code == 200, (label, plan.text)
        version, env = PLAN.findall(link)[0]
        assert f'/releases/{version}/deploy"' in plan.text, label
        assert f'name="environment" value="{env}"' in plan.text, label
        assert ('id="rollback"' in plan.text) == label.startswith("Roll back"), label
    async with services.read() as session:
        queued = (
            await session.execute(select(t.deployments).where(t.deployments.c.state == "queued"))
        ).all()
    assert queued == []
