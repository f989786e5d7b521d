"""The approval preview over HTTP and as a page: what the QA approver sees before approving the
Deploy All train for Staging. On SQLite and PostgreSQL."""

from __future__ import annotations

import html

import httpx
import pytest
from fastapi import FastAPI

from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, sign_in
from tests.integration.test_approval_preview import NEW_SECRET, OLD_SECRET, make_train

PREVIEW = "/projects/deploy-all/releases/1.1.0/approval-preview"


@pytest.fixture(autouse=True)
async def train(services: Services, admin: Caller) -> None:
    await make_train(services, admin)


async def test_the_api_answers_the_preview_without_any_secret(
    client: httpx.AsyncClient, services: Services
) -> None:
    answer = await client.get(PREVIEW, params={"environment": "Staging"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(c["project"], c["change"]) for c in body["children"]] == [
        ("Database", "newer"),
        ("Cart", "newer"),
        ("Products", "older"),
        ("Website", "same"),
    ]
    assert OLD_SECRET not in answer.text and NEW_SECRET not in answer.text
    missing = await client.get(PREVIEW, params={"environment": "Moon"})
    assert_problem(missing, 404, "not_found")
    partial = await create_api_key(services, system_caller(), "partial", "test")
    refused = await client.get(
        "/projects/website/releases/1.0.0/approval-preview",
        params={"environment": "Staging"},
        headers={"X-Api-Key": partial},
    )
    assert_problem(refused, 403, "permission_denied")


async def test_the_approve_page_shows_the_qa_approver_what_they_approve(
    app: FastAPI, services: Services
) -> None:
    await set_password(services, system_caller(), "qa", PASSWORD)
    async with browser(app) as client:
        assert (await sign_in(client, "qa")).status_code == 303
        page = await client.get("/projects/deploy-all/releases/1.1.0/approve?to=Staging")
        unsaid = await client.get("/projects/deploy-all/releases/1.1.0/approve")
    assert unsaid.status_code == 422 and "which environment" in unsaid.text
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert "Approve Deploy All 1.1.0 for Staging" in text
    assert "The autumn train" in text
    for child in ("Database", "Cart", "Products", "Website"):
        assert f'<th scope="row">{child}' in text
    assert "older (a rollback)" in text
    assert "Change b" in text and "Change d" in text  # commits since what is in Staging
    assert "step added" in text and "Migrate" in text
    assert "sensitive: changed" in text
    # QA may view releases, not variables: which changed, not their values.
    assert "values not shown" in text and "green" not in text
    assert OLD_SECRET not in text and NEW_SECRET not in text
    assert 'class="table-wrap"' in text and "Traceback" not in text
