"""The web UI, in a real browser (Debian's chromium driven by Playwright), against a real server.

The people of the story do their jobs in the browser: `dev` deploys Deploy All to Test and sees
no button for Staging or Production (and is refused when posting anyway); `ops` deploys to
Staging and sees it wait without being offered to approve; `qa` takes responsibility and
proceeds; `owner` proceeds; the task succeeds and the dashboard, already open, shows it;
`auditor` filters the audit log, exports it, verifies the chain and reads the evidence.
Screenshots of the main pages are kept in tests/artifacts/web/.

The stories build on each other and run in order, sharing one module-scoped set-up; a story
whose predecessor failed is skipped. SQLite only: the pages are the same on PostgreSQL (the
services below them run on both in the API and CLI tests), and a second run would double the
slowest module of the suite.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests import loopback
from tests.e2e.conftest import EXAMPLE, Server, describe

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"
PEOPLE = ("dev", "ops", "qa", "owner", "auditor")
COMPONENTS = {
    "Database": ("OctoPetShop.Database", "database"),
    "Shopping Cart Service": ("OctoPetShop.ShoppingCartService", "src/ShoppingCartService"),
    "Product Service": ("OctoPetShop.ProductService", "src/ProductService"),
    "Website": ("OctoPetShop.Web", "src/Web"),
}
RELEASE = "/projects/deploy-all/releases/1.0.0"
WAIT_MS = 60_000


def password(user: str) -> str:
    return f"{user}-correct-horse"


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """SQLite only (see the module's docstring): overrides the conftest's two databases."""
    return None


@dataclass
class Web:
    server: Server
    browser: Browser
    done: set[str] = field(default_factory=set)
    task: str = ""

    contexts: dict[str, BrowserContext] = field(default_factory=dict)

    def page(self, user: str, *, phone: bool = False) -> Page:
        """A new tab of ``user``'s own browser (own cookies), signed in through the sign-in form
        the first time (each sign-in costs a real argon2 check on the server)."""
        size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 860}
        context = self.contexts.get(user)
        if context is None:
            context = self.browser.new_context(base_url=self.server.url, accept_downloads=True)
            context.set_default_timeout(15_000)
            self.contexts[user] = context
            page = context.new_page()
            page.goto("/")
            expect(page).to_have_url(re.compile(r"/sign-in\?next=%2F$"))
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password(user))
            page.get_by_role("button", name="Sign in").click()
        else:
            page = context.new_page()
            page.goto("/")
        page.set_viewport_size(size)
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        return page

    def require(self, *stories: str) -> None:
        missing = [s for s in stories if s not in self.done]
        if missing:
            pytest.skip(f"{', '.join(missing)} did not complete")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")  # the window


def release_components(server: Server, build_key: str, out: Path) -> None:
    """What the build server does, with the CLI's own code run in this process (an interpreter
    per command would cost more than the commands): pack, push and release each component;
    each release then deploys by itself to Development."""

    def ok(*args: str) -> str:
        result = server.cli_in_process(*args, api_key=build_key)
        assert result.returncode == 0, describe(result)
        return result.stdout

    for project, (package_id, folder) in COMPONENTS.items():
        made = ok(
            "package", "pack", str(EXAMPLE.parent / folder), "--id", package_id,
            "--version", "1.0.0", "-o", str(out), "--output", "json",
        )  # fmt: skip
        ok("package", "push", json.loads(made)["path"])
        ok("release", "create", "--project", project, "--version", "1.0.0")
    admin = {"X-Api-Key": server.api_key}
    for row in server.get("/deployments?environment=Development").json():
        waited = loopback.get(
            f"{server.url}/api/v1/tasks/{row['task']}/wait",
            params={"timeout": 60},
            headers=admin,
            timeout=70,
        ).json()
        assert waited["state"] == "success", waited


@pytest.fixture(scope="module")
def web(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    applied = server.cli("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, describe(applied)
    admin = {"X-Api-Key": server.api_key}

    def set_password(user: str) -> None:
        response = httpx.put(
            f"{server.url}/api/v1/users/{user}/password",
            json={"password": password(user)},
            headers=admin,
            timeout=30,
        )
        assert response.status_code == 204, response.text

    with ThreadPoolExecutor(max_workers=len(PEOPLE)) as pool:
        list(pool.map(set_password, PEOPLE))
    build_key = server.api_key_for("build", in_process=True)
    release_components(server, build_key, tmp_path_factory.mktemp("packages"))
    created = server.cli(
        "release", "create", "--project", "Deploy All", "--version", "1.0.0",
        api_key=server.api_key_for("dev", in_process=True),
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield Web(server, browser)
        finally:
            browser.close()


def test_a_wrong_password_is_refused_with_a_sentence(web: Web) -> None:
    context = web.browser.new_context(base_url=web.server.url)
    page = context.new_page()
    page.goto("/sign-in")
    page.get_by_label("Username").fill("dev")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The username or password is wrong.")
    shot(page, "01-sign-in-refused")
    context.close()
    web.done.add("sign-in")


def test_dev_deploys_to_test_and_has_no_button_for_staging_or_production(web: Web) -> None:
    page = web.page("dev")
    page.goto(RELEASE)
    deploy = page.get_by_role("link", name=re.compile(r"^Deploy to "))
    expect(deploy).to_have_count(1)
    expect(deploy).to_have_text("Deploy to Test…")
    shot(page, "02-release-as-dev")
    deploy.click()
    plan = page.locator("table.plan tbody tr")
    expect(plan).to_have_count(8)
    expect(plan.filter(has_text="QA approval")).to_contain_text("Skip")
    expect(plan.filter(has_text="Deploy Database")).to_contain_text("Run")
    shot(page, "03-deploy-plan")
    page.get_by_role("button", name="Deploy to Test").click()
    expect(page.locator("#task-state")).to_have_text("Success", timeout=WAIT_MS)
    expect(page.locator("details.step-log").filter(has_text="Deploy Website")).to_be_visible()
    shot(page, "04-task-succeeded")

    # Staging: the plan page says why and offers no button ...
    page.goto(f"{RELEASE}/deploy?to=Staging")
    expect(page.get_by_role("alert")).to_contain_text("You may not deploy here")
    expect(page.get_by_role("button", name="Deploy to Staging")).to_have_count(0)
    # ... and a form made to post anyway is refused by the server, with the reason.
    page.goto(f"{RELEASE}/deploy?to=Test")
    page.locator("input[name=environment]").evaluate("e => e.value = 'Staging'")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Deploy to Test").click()
    assert posted.value.status == 403
    expect(page.locator(".message")).to_contain_text(
        "dev may not DeploymentCreate for project Deploy All in environment Staging"
    )
    shot(page, "05-refused")
    page.close()
    web.done.add("dev")


def test_ops_deploys_to_staging_sees_it_wait_and_cannot_approve(web: Web) -> None:
    web.require("dev")
    page = web.page("ops")
    page.goto(RELEASE)
    page.get_by_role("link", name="Promote to Staging…").click()
    expect(page.locator("table.plan tbody tr").filter(has_text="QA approval")).to_contain_text(
        "Run"
    )
    page.get_by_role("button", name="Deploy to Staging").click()
    expect(page.locator("#task-state")).to_have_text("Waiting", timeout=WAIT_MS)
    web.task = page.url
    panel = page.locator(".interruption")
    expect(panel).to_contain_text("QA approval")
    expect(panel).to_contain_text("Waiting for a member of QA.")
    expect(page.get_by_role("button", name="Proceed")).to_have_count(0)
    expect(page.get_by_role("button", name="Take responsibility")).to_have_count(0)
    shot(page, "06-waiting-as-ops")
    page.goto("/projects/deploy-all")
    shot(page, "06b-project-as-ops")
    page.goto("/projects/deploy-all/process")
    expect(page.locator("button", has_text="Save step 2")).to_have_count(1)  # in a closed <details>
    shot(page, "06c-process-as-ops")
    page.close()
    web.done.add("ops")


def test_qa_takes_responsibility_and_proceeds(web: Web) -> None:
    web.require("ops")
    page = web.page("qa")
    page.get_by_role("link", name="Waiting for me").click()
    shot(page, "07a-waiting-for-qa")
    page.get_by_role("link", name="QA approval").click()
    page.get_by_role("button", name="Take responsibility").click()
    expect(page.locator(".interruption .taken-by")).to_have_text("qa")
    page.get_by_label("Notes").fill("Regression suite green")
    shot(page, "07-qa-approval")
    page.get_by_role("button", name="Proceed").click()
    # The next approval is the Business Owner's: qa sees who must answer it, and no button.
    panel = page.locator(".interruption")
    expect(panel).to_contain_text("Business Owner approval", timeout=WAIT_MS)
    expect(panel).to_contain_text("Waiting for a member of Business Owner.")
    expect(page.get_by_role("button", name="Proceed")).to_have_count(0)
    page.close()
    web.done.add("qa")


def test_owner_proceeds_and_the_open_dashboard_shows_the_success(web: Web) -> None:
    web.require("qa")
    watcher = web.page("auditor")
    cell = watcher.locator("table.board tr", has_text="Deploy All").locator("td").nth(2)
    expect(cell).to_contain_text("Waiting")
    page = web.page("owner")
    page.get_by_role("link", name="Waiting for me").click()
    expect(page.get_by_role("link", name="QA approval")).to_have_count(0)
    page.get_by_role("link", name="Business Owner approval").click()
    page.get_by_label("Notes").fill("Go")
    page.get_by_role("button", name="Proceed").click()
    expect(page.locator("#task-state")).to_have_text("Success", timeout=WAIT_MS)
    children = page.locator("section", has_text="Child deployments").locator("tbody tr")
    expect(children).to_have_count(4)
    expect(children.filter(has_text="Success")).to_have_count(4)
    shot(page, "08-task-after-approvals")
    # The dashboard the auditor left open updated itself.
    expect(cell).to_contain_text("1.0.0", timeout=WAIT_MS)
    expect(cell).to_contain_text("Success", timeout=WAIT_MS)
    shot(watcher, "09-dashboard")
    page.close()
    watcher.close()
    web.done.add("owner")


def test_auditor_filters_exports_and_verifies_the_audit_log(web: Web) -> None:
    web.require("owner")
    page = web.page("auditor")
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Category").select_option("InterruptionSubmitted")
    page.get_by_label("Environment").select_option("Staging")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(re.compile(r"owner answered proceed to .*Business Owner"))
    expect(rows.nth(1)).to_contain_text(re.compile(r"qa answered proceed to .*QA approval"))
    page.get_by_role("link", name="Verify the chain now").click()
    expect(page.locator(".chain")).to_contain_text("Intact")
    shot(page, "10-audit-log")

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["actor"] for r in exported] == ["qa", "owner"], exported
    assert {r["category"] for r in exported} == {"InterruptionSubmitted"}
    with page.expect_download() as download:
        page.get_by_role("link", name="Export JSON Lines").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert [json.loads(line)["details"]["notes"] for line in lines] == [
        "Regression suite green",
        "Go",
    ]

    page.goto(RELEASE)
    expect(page.get_by_role("link", name=re.compile(r"^Deploy to "))).to_have_count(0)
    page.get_by_role("link", name="Evidence").click()
    approvals = page.locator(".approval")
    expect(approvals.filter(has_text="QA approval")).to_contain_text("qa (QA): proceed")
    expect(approvals.filter(has_text="Business Owner approval")).to_contain_text("owner")
    shot(page, "11-evidence")
    page.close()
    web.done.add("auditor")


def test_people_and_why_not(web: Web) -> None:
    page = web.page("auditor")
    page.get_by_role("link", name="People").click()
    page.get_by_role("link", name="Teams").click()
    expect(page.locator(".team", has_text="Developer")).to_contain_text("Project Deployer")
    shot(page, "12-teams")
    page.goto("/people/users/dev")
    page.get_by_label("Permission", exact=True).select_option("DeploymentCreate")
    page.get_by_label("Project", exact=True).select_option("Deploy All")
    page.get_by_label("Environment", exact=True).select_option("Staging")
    page.get_by_role("button", name="Explain").click()
    expect(page.locator(".explanation")).to_contain_text(
        "Not allowed. dev may not DeploymentCreate for project Deploy All in environment Staging"
    )
    shot(page, "13-why-not")
    page.close()


def test_dev_edits_a_component_process_and_a_stale_edit_is_refused(web: Web) -> None:
    page = web.page("dev")
    page.goto("/projects/deploy-all/process")
    expect(page.get_by_text("Read only")).to_be_visible()
    expect(page.locator("button", has_text="Save step")).to_have_count(0)
    page.goto("/projects/database/process")
    stale = web.page("dev")  # a second tab: the same form, read before the edit below
    stale.goto("/projects/database/process")
    page.get_by_text("Edit step 1").click()
    page.get_by_label("Timeout (seconds)").fill("600")
    page.get_by_role("button", name="Save step 1").click()
    expect(page.get_by_role("status")).to_have_text("The step was saved.")
    expect(page.locator("#step-0 dl.facts")).to_contain_text("600")
    shot(page, "14-process-as-dev")
    stale.get_by_text("Edit step 1").click()
    stale.get_by_label("Timeout (seconds)").fill("30")
    stale.get_by_role("button", name="Save step 1").click()
    expect(stale.get_by_role("alert")).to_contain_text("changed since you read it")
    stale.close()
    page.close()


def test_a_phone_sized_dashboard(web: Web) -> None:
    page = web.page("ops", phone=True)
    expect(page.locator("table.board")).to_be_visible()
    shot(page, "15-dashboard-phone")
    page.goto(web.task)
    shot(page, "16-task-phone")
    page.close()
