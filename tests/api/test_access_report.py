"""Who may deploy where: GET /api/v1/permissions/report and its page, on the Octo Pet Shop.

Both databases: the report is computed from the stored configuration, and must say what
`permissions explain` (the enforcing evaluation) says for the same person and cell.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import create_api_key, set_password
from tests.api.conftest import ClientFor, UserFactory
from tests.api.helpers import assert_problem
from tests.api.test_web import PASSWORD, browser, sign_in
from tests.conftest import EXAMPLE

PEOPLE = ("admin", "dev", "qa", "owner", "auditor", "ops", "build")


def with_production_check() -> str:
    """The example, with Production asking QA and Business Owner to approve every deployment."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for env in data["environments"]:
        if env["name"] == "Production":
            env["checks"] = [{"approval": {"teams": [{"team": "QA"}, {"team": "Business Owner"}]}}]
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
async def shop(services: Services, admin: Caller) -> None:
    result = await apply_text(services, admin, with_production_check())
    assert result.changed


async def key_of(services: Services, username: str) -> str:
    return await create_api_key(services, system_caller(), username, "test")


def row(rows: list[dict[str, Any]], project: str, environment: str) -> dict[str, Any]:
    [found] = [r for r in rows if r["project"] == project and r["environment"] == environment]
    return found


async def test_the_auditor_reads_who_may_deploy_and_approve_each_project_where(
    shop: None, services: Services, client_for: ClientFor
) -> None:
    auditor = client_for(await key_of(services, "auditor"))
    response = await auditor.get("/permissions/report")
    assert response.status_code == 200, response.text
    rows = response.json()
    # Four components through four environments, Deploy All through three.
    assert len(rows) == 4 * 4 + 3
    assert {"project", "environment", "deployers", "approvers"} <= set(rows[0])

    prod = row(rows, "Deploy All", "Production")
    assert {(d["user"], d["team"], d["role"]) for d in prod["deployers"]} == {
        ("admin", "Administrators", "System Administrator"),
        ("ops", "Operations", "Project Deployer"),
    }
    assert {(a["user"], a["team"], a["role"], a["via"]) for a in prod["approvers"]} == {
        ("qa", "QA", "Approver", 'manual intervention "QA approval", as QA'),
        ("qa", "QA", "Approver", "approval check of Production, as QA"),
        ("owner", "Business Owner", "Approver", "approval check of Production, as Business Owner"),
        (
            "owner",
            "Business Owner",
            "Approver",
            'manual intervention "Business Owner approval", as Business Owner',
        ),
    }
    assert prod["deploy_and_approve"] == []
    # A component has no manual step, but the environment check applies to it.
    website = row(rows, "Website", "Production")
    assert {a["via"] for a in website["approvers"]} == {
        "approval check of Production, as QA",
        "approval check of Production, as Business Owner",
    }
    test = row(rows, "Website", "Test")
    assert {d["user"] for d in test["deployers"]} == {"admin", "dev", "ops"}
    assert test["approvers"] == [] and test["gates"] == []
    assert {d["user"] for d in row(rows, "Website", "Development")["deployers"]} == {
        "admin",
        "build",
        "dev",
        "ops",
    }


async def test_csv_by_query_or_accept_header_one_line_per_duty(
    shop: None, services: Services, client_for: ClientFor
) -> None:
    auditor = client_for(await key_of(services, "auditor"))
    by_query = await auditor.get("/permissions/report", params={"format": "csv"})
    by_accept = await auditor.get("/permissions/report", headers={"Accept": "text/csv"})
    for response in (by_query, by_accept):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
    assert by_query.text == by_accept.text
    lines = list(csv.reader(io.StringIO(by_query.text)))
    assert lines[0] == ["project", "environment", "duty", "user", "team", "role", "via"]
    assert ["Deploy All", "Production", "deploy", "ops", "Operations", "Project Deployer", ""] in (
        lines
    )
    assert [
        "Deploy All",
        "Staging",
        "approve",
        "qa",
        "QA",
        "Approver",
        'manual intervention "QA approval", as QA',
    ] in lines
    rows = (await auditor.get("/permissions/report")).json()
    entries = sum(len(r["deployers"]) + len(r["approvers"]) for r in rows)
    assert len(lines) == 1 + entries


async def test_the_answer_is_what_permissions_explain_says(
    shop: None, client: httpx.AsyncClient
) -> None:
    rows = (await client.get("/permissions/report")).json()
    for project, environment in (
        ("Deploy All", "Production"),
        ("Deploy All", "Test"),
        ("Database", "Staging"),
        ("Website", "Development"),
    ):
        cell = row(rows, project, environment)
        for user in PEOPLE:
            explained = (
                await client.get(
                    "/permissions/explain",
                    params={
                        "user": user,
                        "permission": "DeploymentCreate",
                        "project": project,
                        "environment": environment,
                    },
                )
            ).json()
            listed = [(d["team"], d["role"]) for d in cell["deployers"] if d["user"] == user]
            granted = [(g["team"], g["role"]) for g in explained["granted_by"]]
            assert bool(listed) == explained["allowed"], (project, environment, user)
            assert sorted(listed) == sorted(granted), (project, environment, user)


async def test_refused_without_team_and_role_views_and_rows_only_of_viewable_projects(
    shop: None, services: Services, client_for: ClientFor, user_with: UserFactory
) -> None:
    # The build server's role reads no teams or roles; a developer's Project Viewer does (it
    # holds TeamView and UserRoleView, as in Octopus), so a developer may read the report.
    build = client_for(await key_of(services, "build"))
    body = assert_problem(await build.get("/permissions/report"), 403, "permission_denied")
    assert "TeamView" in body["message"] and body["permission"] == "TeamView"
    dev = client_for(await key_of(services, "dev"))
    assert (await dev.get("/permissions/report")).status_code == 200

    # Teams and roles readable everywhere, but projects only in the Octo Pet Shop group.
    lead = client_for(
        await user_with("lead", [{"role": "Auditor", "project_groups": ["Octo Pet Shop"]}])
    )
    rows = (await lead.get("/permissions/report")).json()
    assert {r["project"] for r in rows} == {
        "Database",
        "Shopping Cart Service",
        "Product Service",
        "Website",
    }
    refused = await lead.get("/permissions/report", params={"project": "deploy-all"})
    assert "ProjectView" in assert_problem(refused, 403, "permission_denied")["message"]


async def test_filters_by_project_and_environment(shop: None, client: httpx.AsyncClient) -> None:
    one = await client.get(
        "/permissions/report", params={"project": "deploy-all", "environment": "staging"}
    )
    assert [(r["project"], r["environment"]) for r in one.json()] == [("Deploy All", "Staging")]
    by_env = (await client.get("/permissions/report", params={"environment": "Production"})).json()
    assert {r["environment"] for r in by_env} == {"Production"} and len(by_env) == 5
    assert_problem(
        await client.get("/permissions/report", params={"project": "nope"}), 404, "not_found"
    )
    assert (await client.get("/permissions/report", params={"format": "xml"})).status_code == 422


async def test_the_page_filters_without_script_and_offers_the_csv(
    shop: None, app: FastAPI, services: Services, user_with: UserFactory
) -> None:
    await user_with("nobody")
    for name in ("auditor", "nobody"):
        await set_password(services, system_caller(), name, PASSWORD)
    async with browser(app) as auditor:
        await sign_in(auditor, "auditor")
        home = await auditor.get("/")
        assert 'href="/permissions/report"' in home.text
        page = await auditor.get(
            "/permissions/report", params={"project": "Deploy All", "environment": "Production"}
        )
        assert page.status_code == 200, page.text
        text = page.text
        assert "Who may deploy where" in text and 'class="table-wrap"' in text
        assert "ops" in text and "Operations / Project Deployer" in text
        assert "approval check of Production, as QA" in text
        assert "Staging" not in text.split("<tbody>")[1]
        link = 'href="/permissions/report.csv?project=Deploy+All&amp;environment=Production"'
        assert link in text
        download = await auditor.get(
            "/permissions/report.csv", params={"project": "Deploy All", "environment": "Production"}
        )
        assert download.headers["content-type"].startswith("text/csv")
        assert download.text.startswith("project,environment,duty,user,team,role,via")
        assert "Staging" not in download.text
    async with browser(app) as nobody:
        await sign_in(nobody, "nobody")
        assert 'href="/permissions/report"' not in (await nobody.get("/")).text
        refused = await nobody.get("/permissions/report")
        assert refused.status_code == 403 and "TeamView" in refused.text
