"""Creating a release in a real browser (Debian's chromium), against a real server: `dev` creates
Deploy All with the form's suggestions, on a phone-sized screen, and deploys it to Test through
the plan page. The in-process page tests (tests/api/test_release_web.py) cover the choices and
every move on both databases; this one proves the form works in a browser end to end.
SQLite only, as tests/e2e/test_web.py explains. Screenshots go to tests/artifacts/web/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.e2e.conftest import EXAMPLE, Server, describe
from tests.e2e.test_web import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, password, release_components, shot

pytestmark = pytest.mark.e2e
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def e2e_database() -> None:
    """SQLite only (see the module's docstring): overrides the conftest's two databases."""
    return None


@pytest.fixture(scope="module")
def chromium(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    applied = server.cli("apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, describe(applied)
    response = httpx.put(
        f"{server.url}/api/v1/users/dev/password",
        json={"password": password("dev")},
        headers={"X-Api-Key": server.api_key},
        timeout=30,
    )
    assert response.status_code == 204, response.text
    build_key = server.api_key_for("build", in_process=True)
    release_components(server, build_key, tmp_path_factory.mktemp("packages"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def test_dev_creates_deploy_all_on_a_phone_and_deploys_it_to_test(
    server: Server, chromium: Browser
) -> None:
    context = chromium.new_context(base_url=server.url, viewport=PHONE)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto("/sign-in?next=/projects/deploy-all")
    page.get_by_label("Username").fill("dev")
    page.get_by_label("Password").fill(password("dev"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Deploy All")).to_be_visible()
    # The components the build server deployed to Development: dev may promote each to Test.
    page.goto("/")
    expect(page.get_by_role("link", name="Promote to Test…")).to_have_count(4)
    shot(page, "20-dashboard-phone")
    page.goto("/projects/deploy-all")
    page.get_by_role("link", name="Create a release…").click()
    # The suggested version is release create's own default; whatever it is, it is kept.
    version = page.get_by_label("Version").input_value()
    assert version, "a version is suggested"
    expect(page.get_by_label("Database for the step")).to_have_value("Database:1.0.0")
    page.get_by_label("Notes").fill("The first train")
    # Nothing scrolls sideways on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "21-new-release-phone")
    page.get_by_role("button", name="Create release").click()
    expect(page).to_have_url(
        re.compile(rf"/projects/deploy-all/releases/{re.escape(version)}\?done=created$")
    )
    expect(page.locator("#release-created")).to_be_visible()
    expect(page.locator(".notes")).to_have_text("The first train")
    page.get_by_role("link", name="Deploy to Test…").click()
    page.get_by_role("button", name="Deploy to Test").click()
    expect(page.locator("#task-state")).to_have_text("Success", timeout=WAIT_MS)
    # The finished task offers the next moves dev may make: Test only.
    expect(page.get_by_role("link", name="Redeploy to Test…")).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Promote"))).to_have_count(0)
    shot(page, "22-deploy-all-deployed")
    page.get_by_role("link", name=version, exact=True).first.click()
    expect(page.locator("[data-move]")).to_have_text(["Redeploy to Test…"])
    shot(page, "23-release-moves")
    context.close()
