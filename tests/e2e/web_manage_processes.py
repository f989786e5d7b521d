"""Processes and variables edited in a real browser (issue 14, item 3), on SQLite and PostgreSQL
(these tests are collected, with their server and set-up, in tests/e2e/test_web_manage.py).

`dev` adds a step of each of the five types to a process they may edit, edits a variable scoped
to an environment and sets a sensitive value (write-only: the page says "set", never shows it),
reads the process's history, compares two versions and reverts to an earlier one. `ops` (who
may view that project but edit only another) and `auditor` read the same pages without any of
those controls, and what they post by hand is refused (403) before the form is looked at. The
in-process tests (tests/api/test_web_process_edit.py) cover each field and refusal; these prove
the forms work in a browser on both databases.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.web_site import Site

SECRET = "s3cret-never-shown"
# Each type's form as dev fills it in: (type as the list names it, {label: value}).
STEPS = [
    ("Script", {"Name": "Smoke test", "Script": "echo smoke"}),
    ("Deploy a package", {"Name": "Ship site", "Package": "Shop.Web", "Target roles": "web"}),
    (
        "Manual intervention",
        {"Name": "QA sign-off", "Instructions": "Check the site.", "Responsible teams": "QA"},
    ),
    (
        "Notification",
        {"Name": "Tell ops", "To teams": "Operations", "Subject": "Shipped", "Body": "Done."},
    ),
    ("Deploy a release", {"Name": "Deploy the API", "Project": "Api"}),
]


def process_version(site: Site) -> int:
    version: int = site.server.get("/projects/web/process").json()["version"]
    return version


def test_dev_adds_a_step_of_each_type(site: Site) -> None:
    page = site.page("dev")
    page.goto("/projects/web/process")
    for number, (kind, fields) in enumerate(STEPS, start=2):
        # The process page's "Add a step" form: type and position, then that type's form.
        # (After the first, the page the form leads to is opened straight away: its address.)
        if number == 2:
            page.get_by_label("Type").select_option(label=kind)
            page.get_by_label("Position").select_option(label="At the end")
            page.get_by_role("button", name="Next: the step's fields").click()
            expect(page).to_have_url(re.compile(r"/process/new\?type=script&at=1$"))
        else:
            option = page.get_by_label("Type").locator("option", has_text=kind)
            value = option.get_attribute("value")
            page.goto(f"/projects/web/process/new?type={value}&at={number - 1}")
        expect(page.get_by_role("heading", name=f"Add a step: {kind}")).to_be_visible()
        form = page.locator("form", has=page.get_by_role("button", name="Add the step"))
        for label, value in fields.items():
            form.get_by_label(label, exact=True).fill(value)
        if number == 2:
            site.shot(page, "new-step-form")
        page.get_by_role("button", name="Add the step").click()
        expect(page).to_have_url(f"{site.server.url}/projects/web/process?done=added")
        step = page.locator(f"#step-{number - 1}")
        expect(step.get_by_role("heading", level=3)).to_have_text(f"{number} {fields['Name']}")
        expect(step.locator(".tag").first).to_have_text(kind)
    site.shot(page, "process-with-every-type")
    steps = site.server.get("/projects/web/process").json()["steps"]
    assert [s["type"] for s in steps] == [
        "script",
        "script",
        "package",
        "manual_intervention",
        "notification",
        "deploy_release",
    ], steps
    assert steps[3]["responsible_teams"] == ["QA"] and steps[5]["project"] == "Api", steps
    site.facts["steps"] = True


def test_dev_edits_a_scoped_variable_and_sets_a_sensitive_value(site: Site) -> None:
    page = site.page("dev")
    page.goto("/projects/web/variables")
    page.get_by_text("Edit Greeting").click()
    form = page.locator("#variable-0 details form")
    form.get_by_label("Value").fill("hello staging")
    form.get_by_label("Staging").check()
    form.get_by_role("button", name="Save Greeting").click()
    expect(page.get_by_role("status")).to_be_visible()
    row = page.locator("table tbody tr", has_text="Greeting")
    expect(row).to_contain_text("hello staging")
    expect(row).to_contain_text("Staging")

    add = page.locator("form", has=page.get_by_role("button", name="Add the variable"))
    add.get_by_label("Name").fill("ApiToken")
    add.get_by_label("Sensitive").check()
    add.get_by_label("Value").fill(SECRET)
    add.get_by_label("Production").check()
    add.get_by_role("button", name="Add the variable").click()
    row = page.locator("table tbody tr", has_text="ApiToken")
    expect(row).to_contain_text("Sensitive: set")
    expect(row).to_contain_text("Production")
    site.shot(page, "variables-edited")
    assert SECRET not in page.content()
    page.get_by_text("Edit ApiToken").click()
    edit = page.locator("#variable-1 details form")
    expect(edit.locator('input[name="value"]')).to_have_value("")  # write-only
    expect(edit).to_contain_text("set: leave empty to keep it")
    assert SECRET not in page.content()
    stored = site.server.get("/projects/web/variables").json()
    variables = stored["variables"] if isinstance(stored, dict) else stored
    token = next(v for v in variables if v["name"] == "ApiToken")
    assert token["sensitive"] and token.get("value") != SECRET, token
    greeting = next(v for v in variables if v["name"] == "Greeting")
    assert greeting["value"] == "hello staging", greeting
    assert greeting["environments"] == ["Staging"] or greeting.get("scope"), greeting


def test_dev_compares_two_versions_and_reverts(site: Site) -> None:
    if "steps" not in site.facts:
        pytest.skip("the steps were not added")
    page = site.page("dev")
    page.goto("/projects/web/process")
    page.get_by_role("link", name="History: versions, differences, revert").click()
    now = process_version(site)
    expect(page.get_by_role("heading", name="Process history")).to_contain_text(f"version {now}")
    expect(page.locator("ol.history > li")).to_have_count(now)
    expect(page.locator("ol.history > li").first).to_contain_text("By dev")
    page.get_by_label("From version", exact=True).select_option(str(now - 2))
    page.get_by_label("To version", exact=True).select_option(str(now))
    page.get_by_role("button", name="Show the differences").click()
    diff = page.locator("ul.diff")
    expect(diff).to_contain_text("Tell ops: added")
    expect(diff).to_contain_text("Deploy the API: added")
    site.shot(page, "history-compared")
    page.get_by_role("button", name=f"Revert to version {now - 2}").click()
    expect(page).to_have_url(f"{site.server.url}/projects/web/process?done=reverted")
    steps = site.server.get("/projects/web/process").json()
    assert steps["version"] == now + 1
    assert [s["name"] for s in steps["steps"]][-1] == "QA sign-off", steps
    page.goto("/projects/web/process/history")
    expect(page.locator("ol.history > li").first).to_contain_text("By dev")
    site.shot(page, "history-reverted")


def no_edit_controls(page: Page) -> None:
    expect(page.get_by_role("heading", name="Add a step")).to_have_count(0)
    expect(page.get_by_text("Edit step 1")).to_have_count(0)
    expect(page.get_by_role("button", name="Remove step 1")).to_have_count(0)


REFUSED = [
    ("/projects/web/process/new", {"type": "script"}),  # incomplete: still a 403, not a 422
    ("/projects/web/process", {"step": "0", "op": "remove"}),
    ("/projects/web/process/history", {"revert": "1"}),
    ("/projects/web/variables", {"variable": "new", "name": "X"}),
]


@pytest.mark.parametrize("user", ["ops", "auditor"])
def test_who_may_not_edit_reads_without_controls_and_is_refused(site: Site, user: str) -> None:
    page = site.page(user)
    page.goto("/projects/web/process")
    expect(page.get_by_text("Read only: you may not edit this process")).to_be_visible()
    no_edit_controls(page)
    site.shot(page, f"process-read-only-{user}")
    page.goto("/projects/web/process/history")
    expect(page.get_by_role("heading", name="Process history")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Revert to version"))).to_have_count(0)
    shown = page.goto("/projects/web/process/new?type=script")
    assert shown is not None and shown.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    if user == "auditor":  # ops may not view the variables of Web at all
        page.goto("/projects/web/variables")
        expect(page.get_by_text("Read only: you may not edit these variables")).to_be_visible()
        expect(page.get_by_role("heading", name="Edit variables")).to_have_count(0)
        assert SECRET not in page.content()
    before = site.server.get("/projects/web/process").json()
    for path, form in REFUSED:
        answer = site.post(user, path, {**form, "version": str(before["version"])})
        assert answer.status == 403, f"{user} POST {path}: {answer.status} {answer.text()[:300]}"
    assert site.server.get("/projects/web/process").json() == before
