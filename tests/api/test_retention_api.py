"""Retention through the API and the browser, in process on both databases: the plan for
administrators and auditors (refused to a scoped viewer), applying it (administrators only),
and the /retention page with its navigation link and its Apply button."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from conveyor.services import releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.users import set_password
from tests.api.conftest import ClientFor, UserFactory
from tests.api.test_web import PASSWORD, browser, form_token, sign_in

CONFIG = """
environments:
  - name: Dev
lifecycles:
  - name: Short
    release_retention: {keep: 2, unit: items}
    phases:
      - name: Development
        environments: [Dev]
project_groups:
  - name: Shop
projects:
  - name: Web
    group: Shop
    lifecycle: Short
    process:
      steps:
        - name: Say
          type: script
          script: echo hi
"""


async def _four_releases(services: Services, admin: Caller) -> None:
    await apply_text(services, admin, CONFIG)
    for minor in range(4):
        await releases.create_release(services, admin, "Web", version=f"1.0.{minor}")


async def test_the_plan_for_administrators_and_auditors_and_applying_it_by_api_and_page(
    app: FastAPI,
    services: Services,
    admin: Caller,
    client: httpx.AsyncClient,
    client_for: ClientFor,
    user_with: UserFactory,
) -> None:
    await _four_releases(services, admin)
    plan = (await client.get("/retention/plan")).json()
    assert plan["counts"] == {"releases": 2, "deployments": 0, "task_logs": 0, "packages": 0}
    assert [(r["project"], r["version"]) for r in plan["releases"]] == [
        ("Web", "1.0.0"),
        ("Web", "1.0.1"),
    ]
    assert plan["releases"][0]["reason"].startswith("deployed nowhere")
    [short] = [p for p in plan["policies"] if p["lifecycle"] == "Short"]
    assert short["releases"] == {"keep": 2, "unit": "items", "text": "the last 2 releases"}
    assert short["projects"] == ["Web"] and plan["last_run"] is None

    auditor = client_for(await user_with("auditor", [{"role": "Auditor"}]))
    assert (await auditor.get("/retention/plan")).json()["counts"]["releases"] == 2
    refused = await auditor.post("/retention/apply")
    assert refused.status_code == 403, refused.text
    scoped = client_for(
        await user_with("devonly", [{"role": "Project Viewer", "environments": ["Dev"]}])
    )
    denied = await scoped.get("/retention/plan")
    assert denied.status_code == 403 and "Auditor" in denied.json()["detail"], denied.text

    done = (await client.post("/retention/apply")).json()
    assert done["ran"] and done["counts"]["releases"] == 2, done
    after = (await client.get("/retention/plan")).json()
    assert after["counts"]["releases"] == 0
    assert after["last_run"]["counts"]["releases"] == 2
    listed = (await client.get("/projects/web/releases")).json()
    assert [r["version"] for r in listed] == ["1.0.3", "1.0.2"]

    # The page: the same plan, and its Apply button (two more releases to let go).
    for minor in (4, 5):
        await releases.create_release(services, admin, "Web", version=f"1.0.{minor}")
    await user_with("boss", [{"role": "System Administrator"}])
    await user_with("viewer", [{"role": "Project Viewer", "environments": ["Dev"]}])
    for name in ("boss", "viewer"):
        await set_password(services, system_caller(), name, PASSWORD)
    async with browser(app) as boss, browser(app) as viewer:
        assert (await sign_in(boss, "boss")).status_code == 303
        assert (await sign_in(viewer, "viewer")).status_code == 303
        page = await boss.get("/retention")
        assert page.status_code == 200, page.text
        for said in ("Would be deleted now", "1.0.2", "deployed nowhere", "the last 2 releases"):
            assert said in page.text, said
        assert 'href="/retention"' in (await boss.get("/")).text  # the navigation link
        applied = await boss.post("/retention/apply", data={"csrf": form_token(page)})
        assert applied.status_code == 303, applied.text
        after = await boss.get(applied.headers["location"])
        assert "The retention policies were applied." in after.text
        assert "Nothing: every policy keeps everything there is." in after.text

        assert 'href="/retention"' not in (await viewer.get("/")).text
        assert (await viewer.get("/retention")).status_code == 403


INHERITED = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Two
    release_retention: {keep: 10}
    task_log_retention: {keep: 5}
    phases:
      - name: Development
        environments: [Dev]
        release_retention: {keep: 2}
      - name: Production
        environments: [Prod]
"""


async def test_the_page_says_where_each_phases_policy_comes_from(
    app: FastAPI, services: Services, admin: Caller, user_with: UserFactory
) -> None:
    await apply_text(services, admin, INHERITED)
    await user_with("boss", [{"role": "System Administrator"}])
    await set_password(services, system_caller(), "boss", PASSWORD)
    async with browser(app) as boss:
        assert (await sign_in(boss, "boss")).status_code == 303
        page = await boss.get("/retention")
        assert page.status_code == 200, page.text
        rows = page.text.split("<td>Production</td>", 1)[1].split("</tr>", 1)[0]
        # Production has no policy of its own: Development's releases, the lifecycle's logs.
        assert 'the last 2 releases <span class="muted">(Development\'s)</span>' in rows, rows
        assert 'the last 5 deployments <span class="muted">(the lifecycle\'s)</span>' in rows
