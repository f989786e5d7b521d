"""Approving ahead of time over HTTP and in the pages (form, refusals, revoking), and the deploy
page's checks, start time and freeze field. On SQLite and PostgreSQL; the clock is the
services' own."""

from __future__ import annotations

import html

import httpx
import pytest
from fastapi import FastAPI

from conveyor.services import deployments, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, form_token, sign_in
from tests.conftest import caller_of
from tests.integration.test_governance import CONFIG, IN_FREEZE, WEDNESDAY_10

APPROVE = "/projects/web/releases/0.0.1/approve"


@pytest.fixture(autouse=True)
async def governed(services: Services, admin: Caller) -> None:
    services.clock = lambda: WEDNESDAY_10
    await apply_text(services, admin, CONFIG)
    ops = await caller_of(services, "ops")
    await releases.create_release(services, ops, "Web")
    for user in ("qa", "owner", "dev", "ops"):
        await set_password(services, system_caller(), user, PASSWORD)


async def test_the_api_gives_lists_and_revokes(
    client: httpx.AsyncClient, services: Services
) -> None:
    qa = {"X-Api-Key": await create_api_key(services, system_caller(), "qa", "t")}
    dev = {"X-Api-Key": await create_api_key(services, system_caller(), "dev", "t")}
    path = "/projects/web/releases/0.0.1/approvals"
    refused = await client.post(path, json={"environment": "Prod"}, headers=dev)
    assert_problem(refused, 403, "permission_denied")
    unanswered = await client.post(path, json={"environment": "Prod"}, headers=qa)
    assert_problem(unanswered, 422, "validation_failed")
    assert "Ticket" in unanswered.text
    given = await client.post(
        path, json={"environment": "Prod", "fields": {"Ticket": "CHG-5"}}, headers=qa
    )
    assert given.status_code == 201, given.text
    body = given.json()
    assert (body["user"], body["state"], body["fields"]) == ("qa", "valid", {"Ticket": "CHG-5"})
    listed = await client.get("/approvals", params={"project": "Web"}, headers=dev)
    assert [a["id"] for a in listed.json()] == [body["id"]]
    revoked = await client.post(f"/approvals/{body['id']}/revoke", headers=qa)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    unknown = await client.post("/approvals/Approvals-999/revoke", headers=qa)
    assert_problem(unknown, 404, "not_found")


async def test_the_approval_form_names_each_wrong_answer_then_records(app: FastAPI) -> None:
    async with browser(app) as client:
        assert (await sign_in(client, "qa")).status_code == 303
        page = await client.get(APPROVE, params={"to": "Prod"})
        assert page.status_code == 200 and "Approve for Prod" in page.text
        form = {"csrf": form_token(page), "environment": "Prod", "field.Ticket": "ticket 7"}
        wrong = await client.post(APPROVE, data=form)
        assert wrong.status_code == 422
        text = html.unescape(wrong.text)
        assert "Your approval was not recorded" in text and "Ticket must match" in text
        assert 'value="ticket 7"' in text  # what was typed stays
        form["field.Ticket"] = "CHG-77"
        form["notes"] = "all green"
        done = await client.post(APPROVE, data=form)
        assert done.status_code == 303
        after = await client.get(done.headers["location"])
        text = html.unescape(after.text)
        assert "Your approval was recorded." in text and "all green" in text
        assert "CHG-77" in text and "Approve for Prod" not in text
        assert "You approved it already" in text
        # Revoked from the page, the form is back.
        approval = text.split('action="/approvals/')[1].split("/revoke")[0]
        revoked = await client.post(
            f"/approvals/{approval}/revoke", data={"csrf": form_token(after)}
        )
        assert revoked.status_code == 303
        again = await client.get(revoked.headers["location"])
        assert "revoked" in again.text and "Approve for Prod" in again.text


async def test_who_may_not_approve_sees_why_and_no_form(app: FastAPI) -> None:
    async with browser(app) as client:
        assert (await sign_in(client, "dev")).status_code == 303
        page = await client.get(APPROVE, params={"to": "Prod"})
        text = html.unescape(page.text)
        assert "Only members of QA, Owners approve deployments to Prod" in text
        assert "Approve for Prod" not in text
        release = await client.get("/projects/web/releases/0.0.1")
        assert "Review and approve for Prod" in html.unescape(release.text)


async def test_the_deploy_page_shows_the_checks_and_takes_a_start_time(
    app: FastAPI, services: Services
) -> None:
    async with browser(app) as client:
        assert (await sign_in(client, "ops")).status_code == 303
        page = await client.get("/projects/web/releases/0.0.1/deploy", params={"to": "Prod"})
        text = html.unescape(page.text)
        assert "Prod's checks" in text and "waiting for 1 from QA, 1 from Owners" in text
        assert 'name="freeze_override"' not in text  # no freeze in force
        form = {
            "csrf": form_token(page),
            "environment": "Prod",
            "action": "deploy",
            "start_at": "2026-12-03T10:00",
        }
        queued = await client.post("/projects/web/releases/0.0.1/deploy", data=form)
        assert queued.status_code == 303, queued.text
        task = await client.get(queued.headers["location"])
        assert "queued to start at 2026-12-03 10:00 UTC" in html.unescape(task.text)
        form["start_at"] = "next week"
        bad = await client.post("/projects/web/releases/0.0.1/deploy", data=form)
        assert bad.status_code == 422 and "is not a time" in html.unescape(bad.text)
        services.clock = lambda: IN_FREEZE  # three weeks on: sign in again
        assert (await sign_in(client, "ops")).status_code == 303
        frozen = await client.get("/projects/web/releases/0.0.1/deploy", params={"to": "Prod"})
        assert 'name="freeze_override"' in frozen.text
        del form["start_at"]
        form["csrf"] = form_token(frozen)
        refused = await client.post("/projects/web/releases/0.0.1/deploy", data=form)
        assert refused.status_code == 409 and "frozen (Year end)" in html.unescape(refused.text)
        form["freeze_override"] = "hotfix INC-1"
        overridden = await client.post("/projects/web/releases/0.0.1/deploy", data=form)
        assert overridden.status_code == 303, overridden.text


async def test_waiting_for_me_lists_the_deployments_that_want_my_approval(
    app: FastAPI, services: Services
) -> None:
    ops = await caller_of(services, "ops")
    await deployments.deploy(services, ops, "Web", "0.0.1", "Prod")
    async with browser(app) as qa, browser(app) as owner, browser(app) as dev:
        for client, user in ((qa, "qa"), (owner, "owner"), (dev, "dev")):
            assert (await sign_in(client, user)).status_code == 303
        listed = html.unescape((await qa.get("/interruptions")).text)
        assert "For you to approve" in listed and "Web 0.0.1 to Prod" in listed
        assert "Queued by ops · you approve as QA" in listed
        assert "For you to approve" not in (await dev.get("/interruptions")).text
        page = await qa.get(APPROVE, params={"to": "Prod"})
        form = {"csrf": form_token(page), "environment": "Prod", "field.Ticket": "CHG-1"}
        assert (await qa.post(APPROVE, data=form)).status_code == 303
        assert "For you to approve" not in (await qa.get("/interruptions")).text
        assert "Web 0.0.1 to Prod" in (await owner.get("/interruptions")).text
