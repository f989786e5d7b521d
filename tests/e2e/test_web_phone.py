"""The pages in a real browser where layout matters (issue 14, item 5): every page fits a phone
390 px wide (a table in .table-wrap scrolls on its own, the page never sideways), the step
form's boxes are boxes, and a task's step row opened by the person stays open when the page
renders itself again. Against `conveyor demo` (the README's first command), on SQLite: the
layout is the same whatever the database. The in-process checks are in
tests/api/test_web_defects.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests import loopback
from tests.e2e.conftest import (
    START_TIMEOUT,
    free_port,
    read_log,
    run_conveyor,
    stop,
    wait_for_api,
)
from tests.e2e.test_demo import DEMO_USERS, printed_passwords, start_demo
from tests.e2e.test_web import CHROMIUM, CHROMIUM_ARGS, shot

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}
# What scrolls sideways, and the element that sticks out furthest (outside any .table-wrap).
WIDEST = """() => {
  const width = document.documentElement.clientWidth;
  let worst = null;
  for (const e of document.querySelectorAll("body *")) {
    const right = e.getBoundingClientRect().right;
    if (right <= width + 1 || e.closest(".table-wrap, pre.log")) continue;
    if (!worst || right > worst.right) worst = {right, what: e.outerHTML.slice(0, 160)};
  }
  return {scroll: document.documentElement.scrollWidth, worst};
}"""

OPEN_ALL = "document.querySelectorAll('details').forEach(d => d.open = true)"


@dataclass
class Demo:
    url: str
    api_key: str
    passwords: dict[str, str]
    task: str  # a finished deployment of Deploy All
    waiting: str  # one waiting for QA


def cli(demo_url: str, api_key: str, *args: str) -> str:
    env = {"CONVEYOR_SERVER": demo_url, "CONVEYOR_API_KEY": api_key}
    done = run_conveyor((*args, "--output", "json"), env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("phone")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, log = start_demo(tmp, tmp / "demo", port)
    try:
        wait_for_api(url, proc, log, START_TIMEOUT)
        deadline = time.monotonic() + 5
        while set(printed_passwords(log)) != set(DEMO_USERS) and time.monotonic() < deadline:
            time.sleep(0.1)
        key = re.search(r"CONVEYOR_API_KEY=(\S+)", read_log(log))
        assert key, read_log(log)
        wait_for_components(url, key[1])
        # The demo made Deploy All 1.0.0 from the components' first releases.
        deploy = ("release", "deploy", "--project", "Deploy All", "--version", "1.0.0")
        tested = json.loads(cli(url, key[1], *deploy, "--to", "Test", "--wait"))
        staging = json.loads(cli(url, key[1], *deploy, "--to", "Staging"))
        yield Demo(url, key[1], printed_passwords(log), tested["task"], staging["task"])
    finally:
        stop(proc)


def wait_for_components(url: str, api_key: str) -> None:
    """The demo deploys the four components to Development as it starts: until they ended."""
    headers = {"X-Api-Key": api_key}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = loopback.get(f"{url}/api/v1/deployments", headers=headers, timeout=10).json()
        if len(rows) >= 4 and all(r["state"] in ("success", "failed") for r in rows):
            return
        time.sleep(0.3)
    pytest.fail("the demo's first deployments did not end")


def signed_in(browser_page: Page, user: str, password: str) -> Page:
    browser_page.goto("/sign-in")
    browser_page.get_by_label("Username").fill(user)
    browser_page.get_by_label("Password").fill(password)
    browser_page.get_by_role("button", name="Sign in").click()
    expect(browser_page.get_by_role("heading", name="Dashboard")).to_be_visible()
    return browser_page


def test_every_page_fits_a_phone_and_an_opened_step_stays_open(demo: Demo) -> None:
    number = demo.task.rsplit("-", 1)[-1]
    waiting = demo.waiting.rsplit("-", 1)[-1]
    release = "/projects/deploy-all/releases/1.0.0"
    pages = [
        "/",
        "/projects",
        "/projects/database",
        "/projects/deploy-all",
        "/projects/deploy-all/process",
        "/projects/deploy-all/variables",
        "/projects/deploy-all/releases/new",
        release,
        f"{release}/deploy?to=Staging",
        f"{release}/approve?to=Production",
        f"{release}/evidence",
        "/tasks",
        f"/tasks/{number}",
        f"/tasks/{waiting}",
        "/interruptions",
        "/audit",
        "/people",
        "/people/users/ops",
        "/permissions/report",
        "/targets",
        "/nodes",
        "/account",
        "/nope",
        # The pages of issue 14: people, processes and variables, the pages that were missing.
        "/environments",
        "/lifecycles",
        "/packages",
        "/projects/database/settings",
        "/projects/database/variables",
        "/projects/database/process/new?type=manual_intervention&at=0",
        "/projects/deploy-all/process/history",
        "/tasks?project=Database&state=success",
        "/people/teams/developer",
        "/people/users/dev",
        # The pages of issue 16: the insights' charts and tables, retention's plan.
        "/insights",
        "/retention",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(base_url=demo.url, viewport=PHONE)
            context.set_default_timeout(15_000)
            page = signed_in(context.new_page(), "admin", demo.passwords["admin"])
            wide = {}
            for path in pages:
                page.goto(path)
                if not path.startswith("/tasks/"):  # the forms folded in <details> fit too
                    page.evaluate(OPEN_ALL)
                measured = page.evaluate(WIDEST)
                if measured["scroll"] > PHONE["width"]:
                    wide[path] = measured
            shot(page, "phone-404")
            assert not wide, wide

            # The step form's boxes are boxes, not 900 px bars (here: a wide window).
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto("/projects/deploy-all/process")
            page.get_by_text("Edit step 2").click()
            required = page.locator("#s1-required")
            expect(required).to_be_checked()
            expect(required).to_be_disabled()
            box = required.bounding_box()
            assert box and box["width"] < 40, box
            disabled = page.locator("#s1-disabled").bounding_box()
            assert disabled and disabled["width"] < 40, disabled

            # A step row opened by the person stays open when the page renders again.
            page.set_viewport_size(PHONE)
            page.goto(f"/tasks/{number}")
            row = page.locator("#log-step-3")
            expect(row).not_to_have_attribute("open", "")
            expect(row.locator("summary .disclosure")).to_be_visible()
            row.locator(".step-title").click()  # not the child task's link in the row
            expect(row).to_have_attribute("open", "")
            page.reload()
            expect(page.locator("#log-step-3")).to_have_attribute("open", "")
            shot(page, "phone-task-open-step")
            page.locator("#log-step-3 .step-title").click()
            page.reload()
            expect(page.locator("#log-step-3")).not_to_have_attribute("open", "")
            context.close()
        finally:
            browser.close()
