"""The defects a newcomer met in the browser (issue 14, item 5), each pinned down in process on
both databases: required steps, unknown addresses, authorising before validating, cancelling,
ignored failures, titles, refusals as sentences and redirect after post. What needs layout (a
phone's width, a row kept open across a reload) is in tests/e2e/test_web_phone.py."""

from __future__ import annotations

import html
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from conveyor.engine.node import Node
from conveyor.services import deployments, interruptions, releases, tasks
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from conveyor.store import tables as t
from conveyor.web.pages import sentence
from tests.api.conftest import ClientFor
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.conftest import caller_of
from tests.integration.test_engine import finished

CONFIG = """
environments: [{name: Dev}, {name: Test}]
lifecycles:
  - name: Straight
    phases: [{name: Dev, environments: [Dev]}, {name: Test, environments: [Test]}]
project_groups: [{name: Apps}]
users:
  - {username: ops}
  - {username: qa}
  - {username: vic}
teams:
  - name: Operations
    members: [ops]
    roles: [{role: Project Deployer}, {role: Project Contributor}]
  - name: QA
    members: [qa]
    roles: [{role: Project Viewer}, {role: Approver}]
  - name: Visitors
    members: [vic]
    roles: [{role: Project Viewer}]
projects:
  - name: Web
    group: Apps
    lifecycle: Straight
    process:
      steps:
        - name: QA approval
          type: manual_intervention
          instructions: Look
          responsible_teams: [QA]
        - {name: Hello, type: script, script: echo hello}
  - name: Deploy All
    group: Apps
    lifecycle: Straight
    process:
      steps:
        - {name: Hello, type: script, script: echo hello}
"""
DEPLOY = "/projects/web/releases/0.0.1/deploy"


@pytest.fixture(autouse=True)
async def shop(services: Services, admin: Caller) -> None:
    await apply_text(services, admin, CONFIG)
    await releases.create_release(services, admin, "Web")
    await releases.create_release(services, admin, "Deploy All")
    for user in ("ops", "qa", "vic", "admin"):
        await set_password(services, system_caller(), user, PASSWORD)


@asynccontextmanager
async def signed_in(app: FastAPI, user: str) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as client:
        assert (await sign_in(client, user)).status_code == 303
        yield client


@pytest.fixture
async def engine(services: Services) -> AsyncIterator[Node]:
    node = Node(services, slots=2, name=f"test-{os.getpid()}")
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def test_a_required_step_offers_no_skip_and_its_box_shows_required(app: FastAPI) -> None:
    async with signed_in(app, "ops") as client:
        page = await client.get(DEPLOY, params={"to": "Dev"})
        assert page.status_code == 200
        assert 'name="skip" value="Hello"' in page.text
        assert 'name="skip" value="QA approval"' not in page.text
        assert re.search(r'id="required-1">Required<', page.text)
        # A form made to skip it anyway: the deploy page again, with the plan and the reason.
        form = {"csrf": form_token(page), "environment": "Dev", "action": "deploy"}
        refused = await client.post(DEPLOY, data=form | {"skip": "QA approval"})
        text = html.unescape(refused.text)
        assert refused.status_code == 422
        assert 'Step "QA approval" is required and cannot be skipped.' in text
        assert 'id="deploy-error"' in text and "The plan" in text
        process = await client.get("/projects/web/process")
        box = re.search(r'<input type="checkbox" id="s0-required"[^>]*>', process.text)
        assert box and "checked" in box.group(0) and "disabled" in box.group(0)
        assert "always, as the step has responsible teams" in process.text
        hello = re.search(r'<input type="checkbox" id="s1-required"[^>]*>', process.text)
        assert hello and "checked" not in hello.group(0) and "disabled" not in hello.group(0)
        # Saving the manual step's form (its box disabled, so not sent) keeps it required.
        version = re.search(r'name="version" value="(\d+)"', process.text)
        assert version
        saved = await client.post(
            "/projects/web/process",
            data={
                "csrf": form_token(process),
                "version": version.group(1),
                "step": "0",
                "op": "save",
                "name": "QA approval",
                "instructions": "Look again",
                "responsible_teams": "QA",
            },
        )
        assert saved.status_code == 303, saved.text
        again = await client.get(DEPLOY, params={"to": "Dev"})
        assert 'name="skip" value="QA approval"' not in again.text


async def test_an_unknown_address_is_a_page_for_browsers_and_problem_json_for_the_api(
    app: FastAPI,
) -> None:
    async with browser(app) as client:
        page = await client.get("/nope", headers={"Accept": "text/html,*/*;q=0.8"})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert (
            "There is no page at this address." in page.text and "<h1>Not found</h1>" in page.text
        )
        assert "content-security-policy" in page.headers
        assert_problem(await client.get("/nope"), 404, "not_found")
        api = await client.get("/api/v1/nope", headers={"Accept": "text/html"})
        assert_problem(api, 404, "not_found")
        icon = await client.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.startswith("<svg")
        static = await client.get("/static/favicon.svg")
        assert static.status_code == 200
    async with signed_in(app, "vic") as client:
        assert 'rel="icon" href="/static/favicon.svg"' in (await client.get("/")).text
        signed = await client.get("/nope", headers={"Accept": "text/html"})
        assert signed.status_code == 404 and ">vic</a>" in signed.text  # the navigation is there


async def test_who_may_not_edit_is_refused_before_the_form_is_checked(
    app: FastAPI, services: Services, client_for: ClientFor, client: httpx.AsyncClient
) -> None:
    empty_step = {"op": "save", "step": "0", "version": "0", "name": ""}
    async with signed_in(app, "vic") as viewer:
        token = form_token(await viewer.get("/projects/web/process"))
        for path, form in (
            ("/projects/web/process", empty_step),
            ("/projects/web/process/steps/0", empty_step),
            ("/projects/web/process", {**empty_step, "fields": "not | a | question | line"}),
        ):
            refused = await viewer.post(path, data={"csrf": token, **form})
            assert refused.status_code == 403, (path, refused.text)
            assert "vic may not ProcessEdit" in refused.text and "must not be empty" not in (
                refused.text
            )
    # Over the API: the process, the variables and a document, each invalid as sent.
    vic = client_for(await create_api_key(services, system_caller(), "vic", "t"))
    bad_process = {"version": 0, "steps": [{"name": "", "type": "script"}]}
    bad_variables = {"variables": [{"name": ""}]}
    bad_environment = {"name": "", "guided_failure": "maybe"}
    for method, path, body in (
        ("PUT", "/projects/web/process", bad_process),
        ("PUT", "/projects/web/process", {"steps": []}),  # no version at all
        ("PUT", "/projects/web/variables", bad_variables),
        ("PUT", "/environments/dev", bad_environment),
    ):
        assert_problem(await vic.request(method, path, json=body), 403, "permission_denied")
        # The administrator, who may edit, is told what is wrong.
        assert_problem(await client.request(method, path, json=body), 422, "validation_failed")


async def queued_task(services: Services) -> str:
    ops = await caller_of(services, "ops")
    queued = await deployments.deploy(services, ops, "Web", "0.0.1", "Dev")
    return str(queued.as_dict()["task"])


async def test_cancelling_asks_to_be_sure_and_the_task_says_who_canceled(
    app: FastAPI, services: Services, admin: Caller, engine: Node
) -> None:
    task = await queued_task(services)
    assert (await finished(services, admin, task))["state"] == "waiting"
    number = task.rsplit("-", 1)[-1]
    async with signed_in(app, "ops") as client:
        page = await client.get(f"/tasks/{number}")
        assert re.search(r'<input type="checkbox" name="sure" value="yes" required>', page.text)
        form = {"csrf": form_token(page)}
        unsure = await client.post(f"/tasks/{number}/cancel", data=form)
        assert unsure.status_code == 303
        assert unsure.headers["location"] == f"/tasks/{number}?cancel=unconfirmed"
        assert (await tasks.get_task(services, admin, task))["state"] == "waiting"
        asked = await client.get(unsure.headers["location"])
        assert "Tick “I am sure” to cancel the task." in asked.text
        sure = await client.post(f"/tasks/{number}/cancel", data=form | {"sure": "yes"})
        assert sure.status_code == 303 and sure.headers["location"] == f"/tasks/{number}"
        assert (await finished(services, admin, task, waiting=False))["state"] == "canceled"
        after = await client.get(f"/tasks/{number}")
        assert re.search(r"Canceled by ops at \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", after.text)
        assert 'name="sure"' not in after.text  # nothing left to cancel
    shown = await tasks.get_task(services, admin, task)
    assert shown["state"] == "canceled" and shown["canceled_by"] == "ops"
    assert shown["canceled_at"]
    other = await queued_task(services)
    assert (await tasks.get_task(services, admin, other))["canceled_by"] is None


async def test_an_ignored_failure_is_marked_and_step_rows_show_they_open(
    app: FastAPI, services: Services
) -> None:
    task = await queued_task(services)
    number = int(task.rsplit("-", 1)[-1])
    async with services.write() as session:
        await session.execute(
            update(t.task_steps)
            .where(t.task_steps.c.task_id == number, t.task_steps.c.idx == 1)
            .values(state="success", reason="failure ignored by qa: flaky")
        )
        await session.execute(
            update(t.task_steps)
            .where(t.task_steps.c.task_id == number, t.task_steps.c.idx == 0)
            .values(state="success", reason="proceeded by qa")
        )
    async with signed_in(app, "ops") as client:
        page = await client.get(f"/tasks/{number}")
    step = re.search(r'id="log-step-1".*?</summary>', page.text, re.S)
    assert step and 'class="badge badge-ignored"' in step.group(0)
    assert "Failed, ignored" in step.group(0)
    first = re.search(r'id="log-step-0".*?</summary>', page.text, re.S)
    assert first and 'class="badge badge-success"' in first.group(0)
    # Every row says it opens: a disclosure marker in each summary.
    summaries = re.findall(r"<summary>(.*?)</summary>", page.text, re.S)
    assert len(summaries) == 3 and all('class="disclosure"' in s for s in summaries)


async def test_titles_phases_and_refusals_read_as_sentences(
    app: FastAPI, services: Services, admin: Caller
) -> None:
    ops = await caller_of(services, "ops")
    queued = await deployments.deploy(services, ops, "Deploy All", "0.0.1", "Dev")
    described = await tasks.get_task(services, admin, queued.as_dict()["task"])
    assert described["description"] == "Deploy All 0.0.1 to Dev"
    web = await tasks.get_task(services, admin, await queued_task(services))
    assert web["description"] == "Deploy Web 0.0.1 to Dev"
    async with signed_in(app, "ops") as client:
        page = await client.get("/projects/deploy-all/releases/0.0.1/deploy?to=Test")
        assert "<h1>Deploy All 0.0.1 to Test</h1>" in page.text
        assert "Deploy Deploy" not in page.text
        assert "<title>Deploy All 0.0.1 to Test · Conveyor</title>" in page.text
        # Nothing in Dev yet: Dev is the phase the release goes to next, not where it is.
        release = await client.get("/projects/web/releases/0.0.1")
        phases = re.findall(
            r'<span class="phase-name">(\w+)</span> <span class="hint">(\w+)', release.text
        )
        assert phases == [("Dev", "next"), ("Test", "later")]
    assert (
        sentence('~ project "Web" variables: dev may not VariableEdit for project Web')
        == 'Changing the variables of project "Web": dev may not VariableEdit for project Web.'
    )
    assert sentence('2 changes are not allowed: + environment "X": no; - project "Y": no') == (
        '2 changes are not allowed: creating environment "X": no; deleting project "Y": no.'
    )


async def test_forms_redirect_after_post_and_refusals_stay_at_the_pages_address(
    app: FastAPI, services: Services
) -> None:
    async with signed_in(app, "ops") as client:
        account = await client.get("/account")
        token = form_token(account)
        assert 'action="/account"' in account.text
        created = await client.post("/account/api-keys", data={"csrf": token, "name": "laptop"})
        assert created.status_code == 303 and created.headers["location"] == "/account?done=key"
        assert "API-" not in created.text
        shown = await client.get(created.headers["location"])
        key = re.search(r'id="new-key">(API-[0-9A-F]+)<', shown.text)
        assert key and "laptop" in shown.text
        # Shown once: not on the next visit, and the key works.
        assert 'id="new-key"' not in (await client.get("/account")).text
        using = browser(app)
        using.headers["X-Api-Key"] = key.group(1)
        async with using:
            assert (await using.get("/api/v1/me")).json()["username"] == "ops"
        differ = await client.post(
            "/account",
            data={
                "csrf": token,
                "current_password": PASSWORD,
                "new_password": "one-long-password",
                "confirm_password": "another-long-password",
            },
        )
        assert differ.status_code == 422 and "confirmation differ" in differ.text
        # The step forms post to the process page itself; a refused edit is shown there.
        process = await client.get("/projects/web/process")
        assert 'action="/projects/web/process/steps/' not in process.text
        assert process.text.count('action="/projects/web/process"') >= 4
        stale = await client.post(
            "/projects/web/process",
            data={"csrf": token, "version": "99", "step": "1", "op": "move", "direction": "up"},
        )
        assert stale.status_code == 409 and "changed since you read it" in stale.text
        assert "<h1>Web</h1>" in stale.text  # the process page, at its own address
        version = re.search(r'name="version" value="(\d+)"', process.text)
        assert version
        moved = await client.post(
            "/projects/web/process",
            data={
                "csrf": token,
                "version": version[1],
                "step": "1",
                "op": "move",
                "direction": "up",
            },
        )
        assert moved.status_code == 303
        assert moved.headers["location"] == "/projects/web/process?done=moved"


def _answer_form(page: str) -> Any:
    return re.search(r'<form method="post" action="(/tasks/\d+)" class="stack answer">', page)


async def test_an_answer_posts_to_the_task_page_and_a_refusal_shows_there(
    app: FastAPI, services: Services, admin: Caller, engine: Node
) -> None:
    task = await queued_task(services)
    assert (await finished(services, admin, task))["state"] == "waiting"
    [pending] = await interruptions.list_interruptions(services, admin, task=task)
    number = task.rsplit("-", 1)[-1]
    async with signed_in(app, "qa") as client:
        page = await client.get(f"/tasks/{number}")
        action = _answer_form(page.text)
        assert action and action.group(1) == f"/tasks/{number}"
        form = {"csrf": form_token(page), "interruption": pending["id"], "result": "nonsense"}
        refused = await client.post(action.group(1), data=form)
        assert refused.status_code == 422, refused.text
        assert "is not an answer" in html.unescape(refused.text)
        assert 'id="task"' in refused.text  # the task page, at its own address
        answered = await client.post(action.group(1), data=form | {"result": "proceed"})
        assert answered.status_code == 303 and answered.headers["location"] == f"/tasks/{number}"
        nothing = await client.post(f"/tasks/{number}", data={"csrf": form_token(page)})
        assert nothing.status_code == 303 and nothing.headers["location"] == f"/tasks/{number}"


async def test_aborting_asks_to_be_sure(
    app: FastAPI, services: Services, admin: Caller, engine: Node
) -> None:
    task = await queued_task(services)
    assert (await finished(services, admin, task))["state"] == "waiting"
    [pending] = await interruptions.list_interruptions(services, admin, task=task)
    number = task.rsplit("-", 1)[-1]
    async with signed_in(app, "qa") as client:
        page = await client.get(f"/tasks/{number}")
        assert re.search(r'data-confirm="Abort the deployment\?">Abort</button>', page.text)
        assert '<input type="checkbox" name="sure" value="yes"> I am sure I want to abort' in (
            page.text
        )
        form = {"csrf": form_token(page), "interruption": pending["id"], "result": "abort"}
        unsure = await client.post(f"/tasks/{number}", data=form | {"notes": "why"})
        assert unsure.status_code == 422
        text = html.unescape(unsure.text)
        assert "Your answer was not recorded: tick “I am sure” to abort" in text
        assert ">why</textarea>" in text  # the notes as typed
        still = await interruptions.list_interruptions(services, admin, task=task)
        assert [i["state"] for i in still] == ["pending"]
        sure = await client.post(f"/tasks/{number}", data=form | {"sure": "yes"})
        assert sure.status_code == 303
    ended = await finished(services, admin, task, waiting=False)
    assert ended["state"] == "failed"
    assert [
        i["result"] for i in await interruptions.list_interruptions(services, admin, task=task)
    ] == ["abort"]
