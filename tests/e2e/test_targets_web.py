"""The targets page in a real browser (Debian's chromium driven by Playwright), against a real
server: each environment's targets with their health and last deployment, the workers by pool,
and "Check now" for those who may check (and only for them).

SQLite only: the page reads the same services as `conveyor target list`, which the integration
tests run on both databases.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from tests.e2e.conftest import Server, describe
from tests.e2e.test_web import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

PEOPLE = ("ops", "watcher")

CONFIG = """
environments:
  - name: Dev
  - name: Prod
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Prod]
project_groups:
  - name: Web
users:
  - username: ops
  - username: watcher
teams:
  - name: Dev operators
    members: [ops]
    roles:
      - role: Environment Manager
        environments: [Dev]
      - role: Project Viewer
  - name: Watchers
    members: [watcher]
    roles:
      - role: Environment Viewer
      - role: Project Viewer
targets:
  - name: web-1
    environments: [Dev]
    roles: [web]
  - name: web-2
    environments: [Dev]
    roles: [web]
  - name: db-1
    kind: ssh
    environments: [Dev]
    roles: [web]
    host: 127.0.0.1
    port: {port}
    user: deploy
    private_key: ${{env:DB_KEY}}
    host_key: {host_key}
  - name: prod-web
    environments: [Prod]
    roles: [web]
  - name: build-1
    kind: agent
    pool: builders
projects:
  - name: Site
    group: Web
    lifecycle: Anywhere
    process:
      steps:
        - name: Roll
          type: script
          target_roles: [web]
          unhealthy_targets: skip
          script: 'echo "ran on #{{Conveyor.Target.Name}}"'
"""


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """SQLite only (see the module's docstring): overrides the conftest's two databases."""
    return None


def password(user: str) -> str:
    return f"{user}-correct-horse"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Web:
    server: Server
    browser: Browser
    contexts: dict[str, BrowserContext] = field(default_factory=dict)

    def page(self, user: str) -> Page:
        """A new tab of ``user``'s own browser, signed in through the form the first time."""
        context = self.contexts.get(user)
        if context is None:
            context = self.browser.new_context(base_url=self.server.url)
            context.set_default_timeout(15_000)
            self.contexts[user] = context
            page = context.new_page()
            page.goto("/sign-in")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password(user))
            page.get_by_role("button", name="Sign in").click()
        else:
            page = context.new_page()
            page.goto("/")
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")  # the window


@pytest.fixture(scope="module")
def web(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    keys = tmp_path_factory.mktemp("keys")
    for name in ("user", "host"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True
        )
    host_key = " ".join((keys / "host.pub").read_text().split()[:2])
    config = server.tmp / "targets-web.yaml"
    config.write_text(CONFIG.format(port=closed_port(), host_key=host_key))
    env = {"DB_KEY": (keys / "user").read_text()}
    applied = server.cli("apply", "-f", str(config), env=env)
    assert applied.returncode == 0, describe(applied)

    def set_password(user: str) -> None:
        response = httpx.put(
            f"{server.url}/api/v1/users/{user}/password",
            json={"password": password(user)},
            headers={"X-Api-Key": server.api_key},
            timeout=30,
        )
        assert response.status_code == 204, response.text

    with ThreadPoolExecutor(max_workers=len(PEOPLE)) as pool:
        list(pool.map(set_password, PEOPLE))
    # Checked once (db-1 is found unhealthy), then Site deployed to the healthy ones.
    checked = server.cli("target", "check")
    assert checked.returncode == 1, describe(checked)
    server.ok("release", "create", "--project", "Site", "--version", "1.0.0")
    server.ok(
        "release", "deploy", "--project", "Site", "--version", "1.0.0", "--to", "Dev", "--wait"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield Web(server, browser)
        finally:
            browser.close()


def row(page: Page, section: str, target: str) -> Locator:
    panel = page.locator("section.panel").filter(
        has=page.get_by_role("heading", name=section, exact=True)
    )
    return panel.locator(f'tr[data-target="{target}"]')


def test_ops_sees_dev_health_and_last_deployment_and_checks_a_target_now(web: Web) -> None:
    page = web.page("ops")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Targets").click()
    expect(page).to_have_url(re.compile(r"/targets$"))
    expect(page.get_by_role("heading", name="Targets", exact=True)).to_be_visible()
    # ops manages Dev only: no Prod section; the workers have theirs, by pool.
    expect(page.get_by_role("heading", name="Dev", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Prod", exact=True)).to_have_count(0)
    expect(page.get_by_role("heading", name="Workers: pool builders")).to_be_visible()

    web_1 = row(page, "Dev", "web-1")
    expect(web_1.locator(".badge").first).to_have_text("Healthy")
    expect(web_1).to_contain_text("free")
    expect(web_1).to_contain_text("Site 1.0.0")
    expect(web_1).to_contain_text("Success")
    db_1 = row(page, "Dev", "db-1")
    expect(db_1).to_contain_text("Unhealthy")
    expect(db_1).to_contain_text("cannot connect to db-1")
    expect(db_1.locator("td").nth(6)).to_have_text("none")  # Site 1.0.0 left it out
    build_1 = row(page, "Workers: pool builders", "build-1")
    expect(build_1).to_contain_text("Unhealthy")
    expect(build_1).to_contain_text("no agent has enrolled for build-1")
    shot(page, "targets-as-ops")

    before = web_1.locator("time").get_attribute("datetime")
    page.get_by_role("button", name="Check web-1 now").click()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Checked"))
    web_1 = row(page, "Dev", "web-1")
    expect(web_1.locator(".badge").first).to_have_text("Healthy")
    after = web_1.locator("time").get_attribute("datetime")
    assert after and before and after > before, (before, after)


def test_a_viewer_sees_every_environment_and_no_check_button(web: Web) -> None:
    page = web.page("watcher")
    page.goto("/targets")
    expect(page.get_by_role("heading", name="Dev", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Prod", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Check"))).to_have_count(0)
    # One environment's page.
    page.get_by_role("navigation", name="Environments").get_by_role("link", name="Prod").click()
    expect(page).to_have_url(re.compile(r"/targets\?environment=Prod$"))
    expect(page.get_by_role("heading", name="Dev", exact=True)).to_have_count(0)
    expect(row(page, "Prod", "prod-web")).to_contain_text("Healthy")
    shot(page, "targets-prod-as-viewer")
