"""Accessibility of the web UI in a real browser (Debian's chromium), on SQLite and PostgreSQL.

axe-core (tests/e2e/axe.py) runs inside each main page, as the person who uses it (the pages of
people, teams, processes, variables and settings as `admin`, with their forms), its folded
<details> opened first, and finds no serious or critical violation; `qa` takes and proceeds an
approval with the keyboard alone, and `owner` approves a release ahead of time the same way, each
control showing where the focus is.

This module (like test_web_manage.py, for people, processes and the new pages) takes the
browser through PostgreSQL as well as SQLite: it opens every main page, answers an
interruption and approves a release ahead of time on each database, so a page whose queries
work on one database only fails here. The longer stories (test_web.py and its
neighbours) stay on SQLite: a second run of them would add about half a minute for the same
pages. axe itself runs on the SQLite run only (the markup does not depend on the database).
Screenshots of every page (the visible part of the window) are kept from the SQLite run in
tests/artifacts/web/access-sqlite-*.png. axe.min.js is given to each person's browser once, as
a script every page of it runs first (tests/e2e/axe.py), not sent again for each page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from tests import loopback
from tests.e2e.axe import Violation, add_axe, violations
from tests.e2e.conftest import Server, describe
from tests.e2e.test_web import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, password

pytestmark = pytest.mark.e2e

PEOPLE = ("dev", "ops", "qa", "owner", "auditor")
RELEASE = "/projects/shop/releases/1.0.0"
# A small shop: Staging waits for QA in the task (the approval panel), Production asks the
# Business Owner to approve each release ahead of time (the approve page).
CONFIG = """
environments:
  - name: Test
  - name: Staging
  - name: Production
    checks:
      - approval:
          teams: [Business Owner]
          fields: [{name: Ticket, pattern: "^CHG-[0-9]+$"}]
lifecycles:
  - name: Path
    phases:
      - {name: Test, environments: [Test]}
      - {name: Staging, environments: [Staging]}
      - {name: Production, environments: [Production]}
project_groups: [{name: Shop}]
users:
  - {username: dev}
  - {username: ops}
  - {username: qa}
  - {username: owner}
  - {username: auditor}
teams:
  - name: Developer
    members: [dev]
    roles:
      - {role: Project Viewer}
      - {role: Project Deployer, environments: [Test]}
  - name: Operations
    members: [ops]
    roles:
      - {role: Project Viewer}
      - {role: Release Creator}
      - {role: Project Deployer}
      - {role: Environment Viewer}
  - name: QA
    members: [qa]
    roles: [{role: Approver, environments: [Staging, Production]}]
  - name: Business Owner
    members: [owner]
    roles: [{role: Approver, environments: [Staging, Production]}]
  - name: Auditor
    members: [auditor]
    roles: [{role: Auditor}]
targets:
  - name: web-1
    environments: [Test, Staging, Production]
    roles: [web]
projects:
  - name: Shop
    group: Shop
    lifecycle: Path
    process:
      steps:
        - name: QA approval
          type: manual_intervention
          instructions: Check the test results, then proceed or abort.
          responsible_teams: [QA]
          environments: [Staging]
        - name: Ship
          type: script
          target_roles: [web]
          script: echo shipped
    variables:
      - {name: Greeting, value: hello, environments: [Test]}
      - {name: Token, value: not-shown, sensitive: true}
"""


@dataclass
class Site:
    server: Server
    browser: Browser
    tested: str  # the finished deployment to Test: /tasks/...
    waiting: str  # the deployment to Staging that waits for QA: /tasks/...
    cookies: dict[str, dict[str, str]]  # each person's session, signed in through the form
    contexts: dict[str, BrowserContext] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return "postgres" if self.server.database_url else "sqlite"

    def page(self, user: str) -> Page:
        """A new tab of ``user``'s own browser, holding the session the sign-in form gave."""
        context = self.contexts.get(user)
        if context is None:
            context = self.browser.new_context(
                base_url=self.server.url, viewport={"width": 1280, "height": 860}
            )
            context.set_default_timeout(15_000)
            if self.database == "sqlite":  # where axe runs (see the module's docstring)
                add_axe(context)
            context.add_cookies(
                [
                    {"name": k, "value": v, "url": self.server.url}
                    for k, v in self.cookies[user].items()
                ]
            )
            # No live task stream: these tests look at markup and the keyboard (test_web.py
            # watches pages update themselves), so each page stays as loaded while it is checked.
            context.route(re.compile(r"/tasks/[^/]+/events"), lambda route: route.abort())
            self.contexts[user] = context
        return context.new_page()

    def shot(self, page: Page, name: str) -> None:
        """The window as ``page`` shows it, on the SQLite run (the same markup on both)."""
        if self.database != "sqlite":
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"access-{self.database}-{name}.png"
        page.screenshot(path=str(path), animations="disabled")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One browser for both databases' servers (each person gets a fresh context per server)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def prepare(server: Server) -> tuple[str, str, dict[str, dict[str, str]]]:
    """The shop applied, everyone signed in, 1.0.0 deployed to Test and waiting in Staging:
    the two deployments' pages and each person's cookies."""
    config = server.tmp / "access.yaml"
    config.write_text(CONFIG)
    applied = server.cli_in_process("apply", "-f", str(config))
    assert applied.returncode == 0, describe(applied)

    def sign_in(user: str) -> dict[str, str]:
        """A password for ``user``, then the sign-in form posted as a browser would: the
        argon2 checks side by side instead of one after the other (test_web.py types into it).
        The administrator signs in with the password `admin init` printed."""
        secret = server.admin_password if user == "admin" else password(user)
        if user != "admin":
            response = httpx.put(
                f"{server.url}/api/v1/users/{user}/password",
                json={"password": secret},
                headers={"X-Api-Key": server.api_key},
                timeout=30,
            )
            assert response.status_code == 204, response.text
        with loopback.client(base_url=server.url, timeout=30) as client:
            form = client.get("/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token, form.text
            signed = client.post(
                "/sign-in",
                data={"csrf": token[1], "username": user, "password": secret, "next": "/"},
            )
            assert signed.status_code == 303, signed.text
            return dict(client.cookies)

    everyone = (*PEOPLE, "admin")
    # Everyone signs in in other threads while the process is changed and the release made
    # and deployed here (the argon2 work on the server overlaps the deployments' waits).
    pool = ThreadPoolExecutor(max_workers=len(everyone))
    sessions = [pool.submit(sign_in, user) for user in everyone]
    try:
        tested, waiting = _deployments(server)
    finally:
        pool.shutdown(wait=True)
    cookies = dict(zip(everyone, (s.result() for s in sessions), strict=True))
    return tested, waiting, cookies


def _deployments(server: Server) -> tuple[str, str]:
    """A second version of the process; 1.0.0 deployed to Test (waited for) and to Staging."""
    # A second version of the process, for its history's comparison.
    process = server.get("/projects/shop/process").json()
    process["steps"][-1]["script"] = "echo shipped again"
    changed = httpx.put(
        f"{server.url}/api/v1/projects/shop/process",
        json=process,
        headers={"X-Api-Key": server.api_key},
        timeout=30,
    )
    assert changed.status_code == 200, changed.text
    ops = server.api_key_for("ops", in_process=True)

    def deploy(*args: str) -> str:
        done = server.cli_in_process(
            "release", "deploy", "--project", "Shop", "--version", "1.0.0", *args, api_key=ops
        )
        assert done.returncode == 0, describe(done)
        rows = server.get("/deployments?project=Shop").json()
        return f"/tasks/{rows[0]['task']}"

    made = server.cli_in_process("release", "create", "--project", "Shop", "--version", "1.0.0")
    assert made.returncode == 0, describe(made)
    return deploy("--to", "Test", "--wait"), deploy("--to", "Staging")


@pytest.fixture(scope="module")
def site(server: Server, chromium: Browser) -> Iterator[Site]:
    # In another thread: the CLI's own code runs its event loop, which may not nest in
    # Playwright's (already running here for the browser both databases share).
    with ThreadPoolExecutor(max_workers=1) as pool:
        tested, waiting, cookies = pool.submit(prepare, server).result()
    site = Site(server, chromium, tested, waiting, cookies)
    yield site
    for context in site.contexts.values():
        context.close()


# The main pages, each as the person who uses it: (person, address, screenshot name). A new
# page is checked by adding its line; {tested} and {waiting} are the two deployments' pages.
PAGES = [
    ("ops", "/", "dashboard"),
    ("ops", "/projects/shop", "project"),
    ("ops", RELEASE, "release"),
    ("ops", f"{RELEASE}/deploy?to=Staging", "deploy-plan"),
    ("ops", "{tested}", "task-finished"),
    ("ops", "{waiting}", "task-waiting-as-ops"),
    ("ops", "/targets", "targets"),
    ("qa", "/interruptions", "waiting-for-me"),
    ("qa", "{waiting}", "task-approval-panel"),
    ("owner", f"{RELEASE}/approve?to=Production", "approve"),
    ("auditor", "/audit", "audit"),
    ("auditor", "/people", "people"),
    ("auditor", "/permissions/report", "access-report"),
    # The pages of issue 14 (people, processes and variables, the missing pages), each as the
    # person who changes things there, so that its forms are checked too.
    ("ops", "/environments", "environments"),
    ("ops", "/lifecycles", "lifecycles"),
    ("ops", "/packages", "packages"),
    ("ops", "/tasks?project=Shop&state=success", "deployments-filtered"),
    ("ops", "/projects/shop/releases/new", "new-release"),
    ("admin", "/projects/shop/settings", "project-settings"),
    ("admin", "/people", "people-admin"),
    ("admin", "/people/users/dev", "person-admin"),
    ("admin", "/people/teams/developer", "team-admin"),
    ("admin", "/projects/shop/process", "process-edit"),
    ("admin", "/projects/shop/process/new?type=manual_intervention&at=0", "new-step"),
    ("admin", "/projects/shop/process/history?from=1&to=2", "process-history-diff"),
    ("admin", "/projects/shop/variables", "variables-edit"),
    ("auditor", "/projects/shop/variables", "variables-read"),
    # The pages of issue 16: the charts with their tables, and what retention would delete.
    ("auditor", "/insights", "insights"),
    ("admin", "/retention", "retention"),
]


def test_main_pages_have_no_serious_or_critical_violation(site: Site) -> None:
    # The markup does not depend on the database: axe looks at it once, on SQLite, and on
    # PostgreSQL each page is only shown (its queries run), saving axe's five seconds.
    check = site.database == "sqlite"
    found: list[Violation] = []
    signed_out = site.browser.new_page(base_url=site.server.url)
    signed_out.goto("/sign-in")
    found += violations(signed_out, "sign-in") if check else []
    signed_out.close()
    tabs: dict[str, Page] = {}  # one tab per person, as a person goes from page to page
    for user, address, name in PAGES:
        path = address.format(tested=site.tested, waiting=site.waiting)
        if user not in tabs:
            tabs[user] = site.page(user)
        page = tabs[user]
        response = page.goto(path)
        assert response is not None and response.status == 200, f"{user} {path}"
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        if name == "task-approval-panel":
            expect(page.get_by_role("button", name="Take responsibility")).to_be_visible()
        if check:  # the forms folded away in <details> are checked as well
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            found += violations(page, f"{name} ({user}, {path})")
        site.shot(page, name)
    for page in tabs.values():
        page.close()
    assert not found, "\n".join(str(v) for v in found)


def tab_to(page: Page, target: Locator, *, limit: int = 80) -> None:
    """Press Tab until ``target`` has the focus, and check that the focus shows on it."""
    target.wait_for()
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("e => e === document.activeElement"):
            break
    else:
        pytest.fail(f"{limit} presses of Tab never reached {target}")
    shown = target.evaluate(
        """e => {
            const style = getComputedStyle(e);
            return e.matches(":focus-visible") && style.outlineStyle !== "none"
                && parseFloat(style.outlineWidth) >= 2;
        }"""
    )
    assert shown, f"the focus on {target} is not visible"


def test_qa_takes_and_proceeds_an_approval_with_the_keyboard_alone(site: Site) -> None:
    page = site.page("qa")
    page.goto("/interruptions")
    tab_to(page, page.get_by_role("link", name="QA approval"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Deploy Shop 1.0.0 to Staging")).to_be_visible()
    tab_to(page, page.get_by_role("button", name="Take responsibility"))
    page.keyboard.press("Enter")
    expect(page.locator(".interruption .taken-by")).to_have_text("qa")
    notes = page.get_by_label("Notes")
    tab_to(page, notes)
    page.keyboard.type("Checked with the keyboard")
    proceed = page.get_by_role("button", name="Proceed")
    tab_to(page, proceed)
    site.shot(page, "keyboard-proceed-focused")
    page.keyboard.press("Space")
    expect(page.get_by_role("button", name="Proceed")).to_have_count(0)
    waited = loopback.get(
        f"{site.server.url}/api/v1{site.waiting}/wait",
        params={"timeout": 60},
        headers={"X-Api-Key": site.server.api_key},
        timeout=70,
    ).json()
    assert waited["state"] == "success", waited
    page.reload()
    expect(page.locator("#task-state")).to_have_text("Success")
    answers = site.server.get("/events?category=InterruptionSubmitted").json()
    assert "Checked with the keyboard" in str(answers), answers
    page.close()


def test_owner_approves_ahead_with_the_keyboard_alone(site: Site) -> None:
    page = site.page("owner")
    page.goto(RELEASE)
    tab_to(page, page.get_by_role("link", name="Review and approve for Production…"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text("for Production")
    ticket = page.get_by_label("Ticket")
    tab_to(page, ticket)
    page.keyboard.type("CHG-42")
    tab_to(page, page.get_by_label("Notes"))
    page.keyboard.type("Approved from the keyboard")
    approve = page.get_by_role("button", name="Approve for Production")
    tab_to(page, approve)
    site.shot(page, "keyboard-approve-focused")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Your approval was recorded.")
    row = page.locator("tr", has_text="Approved from the keyboard")
    expect(row).to_contain_text("owner")
    expect(row).to_contain_text("CHG-42")
    found = violations(page, "approve-after") if site.database == "sqlite" else []
    site.shot(page, "approve-after")
    page.close()
    assert not found, "\n".join(str(v) for v in found)
