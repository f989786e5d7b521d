"""The pages of issue 14, item 4, in a real browser, on SQLite and PostgreSQL (collected, with
their server and set-up, in tests/e2e/test_web_manage.py): environments (what
each project has in each), lifecycles (phases, what each environment holds; linked from the
navigation), targets of an environment, the package feed (versions, the releases that pinned
each; a pinned version is kept, an unpinned one deleted), project settings (edited by `dev`, read
only for `qa`, refused when posted by hand), the deployments list's filters (project,
environment, state, who) with durations, the audit log (a readable before/after diff, times to
the second, older and newer pages) and the navigation's count of what waits for `qa`.

The set-up deploys for real (``deployments``): Shop 1.0.0 (pinning Shop.Web 1.0.0) succeeds in
Test and waits for QA in Staging, Broken fails in Test. The in-process tests
(tests/api/test_pages_web.py) cover the wording and the queries; these prove the pages work in a
browser on both databases.
"""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests import loopback
from tests.api.test_packages_api import zip_bytes
from tests.e2e.conftest import Server, describe
from tests.e2e.web_site import Site

PACKAGE = zip_bytes({"index.html": b"<h1>Shop</h1>"})


def deployments(server: Server) -> None:
    """Packages pushed, a release pinned, deployments made: Shop 1.0.0 succeeded in Test and
    waits for QA in Staging, Broken failed in Test."""
    admin = {"X-Api-Key": server.api_key}

    def push(version: str) -> None:
        pushed = loopback.post(
            f"{server.url}/api/v1/packages",
            files={"file": (f"Shop.Web.{version}.zip", PACKAGE, "application/zip")},
            headers=admin,
            timeout=30,
        )
        assert pushed.status_code == 201, pushed.text

    def ok(*args: str, api_key: str | None = None) -> None:
        done = server.cli_in_process(*args, api_key=api_key)
        assert done.returncode == 0, describe(done)

    def ended(project: str) -> dict[str, Any]:
        """The deployment of ``project`` to Test once it ended (the server waits for it)."""
        row = next(
            r for r in server.get("/deployments?environment=Test").json() if r["project"] == project
        )
        waited = loopback.get(
            f"{server.url}/api/v1/tasks/{row['task']}/wait",
            params={"timeout": 60},
            headers=admin,
            timeout=70,
        ).json()
        assert isinstance(waited, dict), waited
        return waited

    push("1.0.0")
    ok("release", "create", "--project", "Shop", "--version", "1.0.0")
    ok("release", "create", "--project", "Broken", "--version", "1.0.0")
    push("1.0.1")  # pinned by no release
    ops = server.api_key_for("ops", in_process=True)
    deploy = ("release", "deploy", "--version", "1.0.0", "--to")
    ok(*deploy, "Test", "--project", "Broken", api_key=ops)
    ok(*deploy, "Test", "--project", "Shop", api_key=ops)
    shop = ended("Shop")
    assert shop["state"] == "success", shop
    ok(*deploy, "Staging", "--project", "Shop", api_key=ops)
    broken = ended("Broken")
    assert broken["state"] == "failed", broken


def test_environments_lifecycles_and_targets(site: Site) -> None:
    page = site.page("ops")
    page.goto("/environments")
    test = page.locator("#env-test")
    expect(test.locator("tr", has_text="Shop")).to_contain_text("Success")
    expect(test.locator("tr", has_text="Broken")).to_contain_text("Failed")
    expect(page.locator("#env-staging tr", has_text="Shop")).to_contain_text("Waiting")
    site.shot(page, "environments")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Lifecycles").click()
    expect(page.get_by_role("heading", name="Lifecycles")).to_be_visible()
    lifecycle = page.locator("#lifecycle-path")
    expect(lifecycle).to_contain_text("Used by: Shop, Broken")
    phases = lifecycle.locator("tbody tr")
    expect(phases).to_have_count(2)
    expect(phases.nth(0)).to_contain_text("Test")
    expect(phases.nth(0)).to_contain_text("Required")
    expect(phases.nth(0)).to_contain_text("Shop 1.0.0 Success")
    expect(phases.nth(1)).to_contain_text("Shop 1.0.0 Waiting")
    site.shot(page, "lifecycles")
    phases.nth(0).get_by_role("link", name="Test").click()
    page.locator("#env-test").get_by_role("link", name="Targets in Test").click()
    expect(page.locator("tr", has_text="web-1").first).to_be_visible()


def test_the_feed_keeps_a_pinned_version_and_deletes_another(site: Site) -> None:
    page = site.page("admin")
    page.goto("/packages")
    rows = page.locator("#package-shop-web tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("1.0.1")
    expect(rows.nth(0)).to_contain_text("no release")
    expect(rows.nth(1)).to_contain_text("1.0.0")
    expect(rows.nth(1)).to_contain_text("Shop 1.0.0")
    expect(rows.nth(1)).to_contain_text("kept: pinned")
    expect(rows.nth(1).get_by_role("button")).to_have_count(0)
    site.shot(page, "packages")
    # Posted by hand (no button is offered): kept, and the page says why.
    refused = site.post("admin", "/packages/delete", {"package": "Shop.Web", "version": "1.0.0"})
    assert refused.status == 303, refused.text()
    page.goto(refused.headers["location"])
    expect(page.get_by_role("alert")).to_have_text(
        "Shop.Web 1.0.0 was not deleted: Shop 1.0.0 pinned it, and a release deploys exactly "
        "the package versions it pinned."
    )
    site.shot(page, "packages-kept")
    page.get_by_role("button", name="Delete Shop.Web 1.0.1").click()
    expect(page.get_by_role("status")).to_have_text("Deleted Shop.Web 1.0.1.")
    expect(rows).to_have_count(1)
    versions = site.server.get("/packages?package_id=Shop.Web").json()
    assert [v["version"] for v in versions] == ["1.0.0"], versions


def test_project_settings_edited_by_dev_and_read_only_for_qa(site: Site) -> None:
    page = site.page("qa")
    page.goto("/projects/shop")
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Settings").click()
    expect(page.get_by_label("Description")).to_be_disabled()
    expect(page.get_by_role("button", name="Save settings")).to_have_count(0)
    refused = site.post("qa", "/projects/shop/settings", {"name": "Shop", "description": "x"})
    assert refused.status == 403, refused.text()

    page = site.page("dev")
    page.goto("/projects/shop/settings")
    page.get_by_label("Description").fill("The pet shop.")
    page.get_by_label("Watch paths").fill("src/shop/**")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_have_text("Saved: the change is in the audit log.")
    expect(page.get_by_label("Description")).to_have_value("The pet shop.")
    site.shot(page, "project-settings")
    project = site.server.get("/projects/shop").json()
    assert project["description"] == "The pet shop.", project
    assert project["watch_paths"] == ["src/shop/**"], project


def test_the_deployments_list_filters_and_says_how_long_each_took(site: Site) -> None:
    page = site.page("ops")
    page.goto("/tasks")
    rows = page.locator("section.panel tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Project").select_option("Shop")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/tasks\?project=Shop"))
    expect(rows).to_have_count(2)
    page.get_by_label("Environment").select_option("Test")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Success")
    expect(rows.first.locator("td.duration")).to_have_text(re.compile(r"^\d+s$|^\d+m \d+s$"))
    page.goto("/tasks")
    page.get_by_label("State").select_option("failed")
    page.get_by_label("Queued by").fill("ops")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Broken")
    expect(page.get_by_label("State")).to_have_value("failed")  # kept in the form
    site.shot(page, "deployments-filtered")
    page.get_by_label("Queued by").fill("dev")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No deployment matches.")).to_be_visible()
    page.goto("/tasks?state=nonsense")
    expect(page.get_by_role("main")).to_contain_text("success")  # the states, named


def test_the_audit_log_reads_as_a_diff_to_the_second_and_pages_both_ways(site: Site) -> None:
    page = site.page("auditor")
    page.goto("/audit?category=DocumentModified&project=Shop")
    change = page.locator("table.events > tbody > tr", has_text="description").first
    diff = change.locator("table.diff")
    expect(diff.locator("tr", has_text="description")).to_contain_text("The shop.")
    expect(diff.locator("tr", has_text="description")).to_contain_text("The pet shop.")
    expect(change.locator("td").first).to_have_text(re.compile(r"\d{2}:\d{2}:\d{2} UTC"))
    site.shot(page, "audit-diff")
    page.goto("/audit")
    expect(page.get_by_role("link", name="← Newer")).to_have_count(0)
    first = page.locator("table.events > tbody > tr").first.locator("td .hint").first.inner_text()
    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(re.compile(r"before="))
    expect(page.locator("table.events > tbody")).not_to_contain_text(first)
    site.shot(page, "audit-older")
    page.get_by_role("link", name="← Newer").click()
    expect(page).to_have_url(re.compile(r"after="))
    expect(page.locator("table.events > tbody > tr").last).to_be_visible()
    page.get_by_role("link", name="⇤ Newest").click()
    expect(page.locator("table.events > tbody > tr").first).to_contain_text(first)


def test_qa_sees_a_count_of_what_waits_for_them_and_dev_none(site: Site) -> None:
    page = site.page("qa")
    page.goto("/")
    waiting = page.get_by_role("navigation", name="Main").get_by_role("link", name="Waiting for me")
    expect(waiting.locator(".count")).to_have_text("1 waiting")
    site.shot(page, "qa-waiting-count")
    waiting.click()
    expect(page.get_by_role("link", name="QA approval")).to_be_visible()
    dev = site.page("dev")
    dev.goto("/")
    link = dev.get_by_role("navigation", name="Main").get_by_role("link", name="Waiting for me")
    expect(link.locator(".count")).to_have_count(0)
