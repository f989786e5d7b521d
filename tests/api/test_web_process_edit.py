"""Editing processes and variables in the browser, in process, on both databases (issue 14,
item 3): adding a step of each type at a position, reordering and removing steps, who may
remove an approval, variables with environment scope and write-only sensitive values, the
optimistic version check, and a process's history with its diff and revert.

The Octo Pet Shop's people: dev edits the component projects (not Deploy All), ops owns Deploy
All, qa and the auditor only read.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from conveyor.services import documents
from conveyor.services.config import load
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.services.users import set_password
from conveyor.store.documents import reveal
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.conftest import EXAMPLE

Person = Callable[[str], Awaitable[httpx.AsyncClient]]
SECRET = "s3cret-Value-never-shown"


@pytest.fixture
async def shop(services: Services, admin: Caller) -> None:
    await apply_text(services, admin, EXAMPLE.read_text(encoding="utf-8"))
    for person in ("dev", "qa", "ops", "auditor"):
        await set_password(services, admin, person, PASSWORD)


@pytest.fixture
async def as_person(app: FastAPI, shop: None) -> AsyncIterator[Person]:
    opened: dict[str, httpx.AsyncClient] = {}

    async def signed(user: str) -> httpx.AsyncClient:
        if user not in opened:
            client = browser(app)
            assert (await sign_in(client, user)).status_code == 303
            opened[user] = client
        return opened[user]

    yield signed
    for client in opened.values():
        await client.aclose()


def version_of(page: httpx.Response) -> str:
    found = re.search(r'name="version" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def text_of(page: httpx.Response) -> str:
    return html.unescape(page.text)


async def steps_of(services: Services, admin: Caller, project: str) -> list[tuple[str, str]]:
    process = await documents.get_process(services, admin, project)
    return [(s["name"], s["type"]) for s in process["steps"]]


NEW_STEPS = {
    "script": {"name": "Warm the cache", "script": "echo warm"},
    "package": {"name": "Deploy tools", "package": "OctoPetShop.Tools", "target_roles": "tools"},
    "manual_intervention": {
        "name": "DBA sign-off",
        "instructions": "Check the migration plan.",
        "responsible_teams": "QA",
    },
    "notification": {
        "name": "Tell QA",
        "to_teams": "QA",
        "subject": "Database deployed",
        "body": "It is done.",
    },
    "deploy_release": {"name": "Deploy Website too", "project": "Website"},
}


async def test_adding_a_step_of_each_type_at_a_position_then_moving_and_removing(
    as_person: Person, services: Services, admin: Caller
) -> None:
    dev = await as_person("dev")
    page = await dev.get("/projects/database/process")
    assert "Add a step" in page.text and "Deploy a release" in page.text
    for step_type, fields in NEW_STEPS.items():
        form_page = await dev.get(f"/projects/database/process/new?type={step_type}&at=0")
        assert form_page.status_code == 200, form_page.text
        data = {"csrf": form_token(form_page), "version": version_of(form_page), "at": "0"}
        added = await dev.post(
            "/projects/database/process/new", data={**data, "type": step_type, **fields}
        )
        assert added.status_code == 303, text_of(added)
        assert added.headers["location"] == "/projects/database/process?done=added"
    names = [name for name, _ in await steps_of(services, admin, "Database")]
    # Each was put first, so they come in the reverse order, before the step there was.
    assert names == [f["name"] for f in reversed(NEW_STEPS.values())] + ["Deploy database"]
    types = dict(await steps_of(services, admin, "Database"))
    assert types["DBA sign-off"] == "manual_intervention" and types["Tell QA"] == "notification"

    # At the end; a refused form is shown again at its own address with what was typed.
    page = await dev.get("/projects/database/process/new?type=script")
    bad = await dev.post(
        "/projects/database/process/new",
        data={
            "csrf": form_token(page),
            "version": version_of(page),
            "type": "script",
            "at": "6",
            "name": "",
            "script": "echo typed",
        },
    )
    assert bad.status_code == 422 and "must not be empty" in text_of(bad)
    assert "echo typed" in bad.text and 'value="6" selected' in bad.text
    # Each problem named by the form's own label, not by the document's path (steps[6].name).
    assert "Name: must not be empty." in text_of(bad) and "steps[" not in bad.text
    page = await dev.get("/projects/database/process/new?type=manual_intervention&at=0")
    untold = await dev.post(
        "/projects/database/process/new",
        data={
            "csrf": form_token(page),
            "version": version_of(page),
            "type": "manual_intervention",
            "at": "0",
            "name": "Look",
            "responsible_teams": "QA",
        },
    )
    assert untold.status_code == 422, text_of(untold)
    assert "Instructions: must not be empty." in text_of(untold), text_of(untold)
    assert "steps[" not in untold.text
    bad_type = await dev.get("/projects/database/process/new?type=teleport")
    assert bad_type.status_code == 422 and "choose the type" in text_of(bad_type).lower()

    page = await dev.get("/projects/database/process")
    token, version = form_token(page), version_of(page)
    moved = await dev.post(
        "/projects/database/process/steps/5/move",
        data={"csrf": token, "version": version, "direction": "up"},
    )
    assert moved.status_code == 303
    names = [name for name, _ in await steps_of(services, admin, "Database")]
    assert names[4:] == ["Deploy database", "Warm the cache"]
    page = await dev.get("/projects/database/process")
    removed = await dev.post(
        "/projects/database/process/steps/0/remove",
        data={"csrf": form_token(page), "version": version_of(page)},
    )
    assert removed.status_code == 303
    assert "Deploy Website too" not in [n for n, _ in await steps_of(services, admin, "Database")]


async def test_an_approval_is_removed_only_by_those_who_may_edit_that_process(
    as_person: Person, services: Services, admin: Caller
) -> None:
    before = await steps_of(services, admin, "Deploy All")
    qa_step = [name for name, _ in before].index("QA approval")
    dev = await as_person("dev")
    page = await dev.get("/projects/deploy-all/process")
    assert "Remove step" not in page.text and "Add a step" not in page.text
    version = str((await documents.get_process(services, admin, "Deploy All"))["version"])
    refused = await dev.post(
        f"/projects/deploy-all/process/steps/{qa_step}/remove",
        data={"csrf": form_token(page), "version": version},
    )
    assert refused.status_code == 403 and "dev may not ProcessEdit" in text_of(refused)
    assert (await dev.get("/projects/deploy-all/process/new?type=script")).status_code == 403
    adding = await dev.post(
        "/projects/deploy-all/process/new",
        data={"csrf": form_token(page), "type": "script", "name": ""},
    )
    # Authorised before validating: refused, not told that the name is missing.
    assert adding.status_code == 403 and "must not be empty" not in adding.text
    assert await steps_of(services, admin, "Deploy All") == before

    ops = await as_person("ops")
    page = await ops.get("/projects/deploy-all/process")
    removed = await ops.post(
        f"/projects/deploy-all/process/steps/{qa_step}/remove",
        data={"csrf": form_token(page), "version": version_of(page)},
    )
    assert removed.status_code == 303
    assert "QA approval" not in [n for n, _ in await steps_of(services, admin, "Deploy All")]
    history = await ops.get("/projects/deploy-all/process/history")
    assert '<span class="who">ops</span>' in history.text, history.text


async def variable_form(client: httpx.AsyncClient, **fields: str | list[str]) -> httpx.Response:
    page = await client.get("/projects/database/variables")
    data = {"csrf": form_token(page), "version": version_of(page), **fields}
    return await client.post("/projects/database/variables", data=data)


async def stored(services: Services, project: str) -> list[tuple[str, str, bool, tuple[str, ...]]]:
    model = (await load(services)).model
    return [
        (v.name, reveal(services.box, v.value), v.sensitive, v.environments)
        for v in model.get("projects", project).variables
    ]


async def test_variables_are_edited_with_scope_and_sensitive_values_are_write_only(
    as_person: Person, services: Services, admin: Caller
) -> None:
    dev = await as_person("dev")
    added = await variable_form(
        dev, name="LogLevel", value="debug", environments=["Development", "Test"]
    )
    assert added.status_code == 303 and added.headers["location"].endswith("done=added")
    added = await variable_form(dev, name="DbPassword", value=SECRET, sensitive="1")
    assert added.status_code == 303
    assert await stored(services, "Database") == [
        ("LogLevel", "debug", False, ("Development", "Test")),
        ("DbPassword", SECRET, True, ()),
    ]
    page = await dev.get("/projects/database/variables")
    assert SECRET not in page.text and "Sensitive: set" in page.text
    assert "set: leave empty to keep it" in page.text

    # Rescoped and renamed, the sensitive value kept by leaving the field empty.
    kept = await variable_form(
        dev, variable="1", name="DbPassword", value="", sensitive="1", environments=["Production"]
    )
    assert kept.status_code == 303
    assert (await stored(services, "Database"))[1] == ("DbPassword", SECRET, True, ("Production",))
    # Made non-sensitive, it does not keep (and so show) the secret.
    plain = await variable_form(dev, variable="1", name="DbPassword", value="")
    assert plain.status_code == 303
    assert (await stored(services, "Database"))[1] == ("DbPassword", "", False, ())
    await variable_form(dev, variable="1", name="DbPassword", value=SECRET, sensitive="1")
    cleared = await variable_form(
        dev, variable="1", name="DbPassword", value="", sensitive="1", clear="1"
    )
    assert cleared.status_code == 303
    assert (await stored(services, "Database"))[1] == ("DbPassword", "", True, ())
    assert "Sensitive: not set" in (await dev.get("/projects/database/variables")).text

    # A refused form is shown again with what was typed, except a sensitive value.
    refused = await variable_form(dev, name="", value="typed-secret-value", sensitive="1")
    assert refused.status_code == 422 and "typed-secret-value" not in refused.text

    # A stale edit (the variables changed since the page was read) is refused with a sentence.
    page = await dev.get("/projects/database/variables")
    data = {"csrf": form_token(page), "version": version_of(page), "variable": "0"}
    first = await dev.post(
        "/projects/database/variables", data={**data, "name": "LogLevel", "value": "info"}
    )
    assert first.status_code == 303
    stale = await dev.post(
        "/projects/database/variables", data={**data, "name": "LogLevel", "value": "warn"}
    )
    assert stale.status_code == 409
    assert "changed since you read them: reload them" in text_of(stale)
    assert (await stored(services, "Database"))[0][1] == "info"

    removed = await variable_form(dev, variable="0", op="remove")
    assert removed.status_code == 303
    assert [v[0] for v in await stored(services, "Database")] == ["DbPassword"]

    # No page and no audit event ever held the secret.
    await variable_form(dev, variable="0", name="DbPassword", value=SECRET, sensitive="1")
    audit = await (await as_person("ops")).get("/audit")
    for text in (audit.text, (await dev.get("/projects/database/variables")).text):
        assert SECRET not in text


async def test_a_viewer_reads_variables_and_is_refused_each_edit(
    as_person: Person, services: Services, admin: Caller
) -> None:
    dev = await as_person("dev")
    await variable_form(dev, name="DbPassword", value=SECRET, sensitive="1")
    # qa may not even read them; the auditor reads them (never a secret) and may not edit.
    assert (await (await as_person("qa")).get("/projects/database/variables")).status_code == 403
    auditor = await as_person("auditor")
    page = await auditor.get("/projects/database/variables")
    assert page.status_code == 200 and "Sensitive: set" in page.text and SECRET not in page.text
    assert "Edit variables" not in page.text and "Read only" in page.text
    refused = await auditor.post(
        "/projects/database/variables",
        data={"csrf": form_token(page), "variable": "new", "name": ""},
    )
    assert refused.status_code == 403 and "auditor may not VariableEdit" in text_of(refused)
    assert len(await stored(services, "Database")) == 1


async def test_history_lists_versions_shows_a_diff_and_reverts(
    as_person: Person, services: Services, admin: Caller
) -> None:
    dev = await as_person("dev")
    start = await documents.get_process(services, admin, "Database")
    page = await dev.get("/projects/database/process/new?type=script")
    await dev.post(
        "/projects/database/process/new",
        data={
            "csrf": form_token(page),
            "version": version_of(page),
            "type": "script",
            "name": "Smoke test",
            "script": "echo smoke",
        },
    )
    page = await dev.get("/projects/database/process")
    form = {"csrf": form_token(page), "version": version_of(page), "name": "Smoke test"}
    form |= {"script": "curl -f http://localhost/health", "syntax": "bash", "timeout": "60"}
    assert (await dev.post("/projects/database/process/steps/1", data=form)).status_code == 303

    history = await dev.get("/projects/database/process/history")
    assert history.status_code == 200
    now = start["version"] + 2
    rows = re.findall(r'<span class="version">(\d+)</span>', history.text)
    assert rows == [str(now), str(now - 1), str(now - 2)], history.text
    assert '<span class="who">dev</span>' in history.text
    assert '<span class="who">admin</span>' in history.text
    assert "Revert to version" in history.text

    diff = await dev.get(f"/projects/database/process/history?from={now - 2}&to={now}")
    assert "Smoke test</strong>: added" in diff.text
    diff = await dev.get(f"/projects/database/process/history?from={now - 1}&to={now}")
    shown = text_of(diff)
    assert "Smoke test</strong>: changed" in shown
    assert "<del>echo smoke</del> → <ins>curl -f http://localhost/health</ins>" in shown
    assert "<del>(none)</del> → <ins>60</ins>" in shown
    missing = await dev.get("/projects/database/process/history?from=999&to=1")
    assert missing.status_code == 404 and "not kept" in text_of(missing)

    # A viewer reads the history, but may not revert.
    qa = await as_person("qa")
    seen = await qa.get("/projects/database/process/history")
    assert seen.status_code == 200 and "Revert to version" not in seen.text
    refused = await qa.post(
        "/projects/database/process/history",
        data={"csrf": form_token(seen), "revert": str(now - 2), "version": str(now)},
    )
    assert refused.status_code == 403 and "qa may not ProcessEdit" in text_of(refused)

    token = form_token(history)
    reverted = await dev.post(
        "/projects/database/process/history",
        data={"csrf": token, "revert": str(now - 2), "version": str(now)},
    )
    assert reverted.status_code == 303 and reverted.headers["location"].endswith("done=reverted")
    after = await documents.get_process(services, admin, "Database")
    assert after["steps"] == start["steps"] and after["version"] == now + 1
    # The same form again is stale: the process moved on.
    again = await dev.post(
        "/projects/database/process/history",
        data={"csrf": token, "revert": str(now - 2), "version": str(now)},
    )
    assert again.status_code == 409 and "changed since you read it" in text_of(again)
    history = await dev.get("/projects/database/process/history")
    assert re.findall(r'<span class="version">(\d+)</span>', history.text)[0] == str(now + 1)


async def test_the_api_checks_the_variables_version_when_one_is_sent(
    client: httpx.AsyncClient, shop: None
) -> None:
    read = (await client.get("/projects/Database/variables")).json()
    assert read["variables"] == [] and read["version"]
    first = {"version": read["version"], "variables": [{"name": "A", "value": "1"}]}
    assert (await client.put("/projects/Database/variables", json=first)).status_code == 200
    stale = await client.put("/projects/Database/variables", json=first)
    assert stale.status_code == 409 and "changed since you read them" in stale.json()["message"]
    # Without a version the edit replaces the variables as before.
    blind = {"variables": [{"name": "A", "value": "2"}]}
    assert (await client.put("/projects/Database/variables", json=blind)).status_code == 200
