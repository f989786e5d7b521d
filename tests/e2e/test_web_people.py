"""People administered in a real browser on a phone (issue 14, item 2): the administrator adds a
person on a 390 px screen, copies the password shown once, and the new person's first sign-in
asks for a password of their own before anything else; the people, person and team pages fit
the phone with their forms. Against `conveyor demo`, on SQLite (the in-process tests in
tests/api/test_people_web.py cover each action and refusal on both databases)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.e2e.conftest import START_TIMEOUT, free_port, stop, wait_for_api
from tests.e2e.test_demo import DEMO_USERS, printed_passwords, start_demo
from tests.e2e.test_web import CHROMIUM, CHROMIUM_ARGS, shot
from tests.e2e.test_web_phone import PHONE, WIDEST, signed_in

pytestmark = pytest.mark.e2e


def test_a_person_added_on_a_phone_chooses_their_own_password_first(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc, log = start_demo(tmp_path, tmp_path / "demo", port)
    try:
        wait_for_api(url, proc, log, START_TIMEOUT)
        deadline = time.monotonic() + 5
        while set(printed_passwords(log)) != set(DEMO_USERS) and time.monotonic() < deadline:
            time.sleep(0.1)
        admin_password = printed_passwords(log)["admin"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                admin = browser.new_context(base_url=url, viewport=PHONE)
                admin.set_default_timeout(15_000)
                page = signed_in(admin.new_page(), "admin", admin_password)
                page.goto("/people")
                page.get_by_label("Username").fill("erin")
                page.get_by_label("Display name").fill("Erin Engineer")
                page.get_by_role("button", name="Add", exact=True).click()
                expect(page.get_by_text("shown only this once")).to_be_visible()
                password = page.locator("code.secret").inner_text()
                shot(page, "people-added-on-phone")
                page.reload()
                expect(page.locator("code.secret")).to_have_count(0)
                wide = {}
                for path in ("/people", "/people/users/erin", "/people/teams/developer"):
                    page.goto(path)
                    measured = page.evaluate(WIDEST)
                    if measured["scroll"] > PHONE["width"]:
                        wide[path] = measured
                page.get_by_text("Change the scope of Project Deployer").first.click()
                shot(page, "people-team-on-phone")
                assert not wide, wide

                erin = browser.new_context(base_url=url, viewport=PHONE).new_page()
                erin.goto("/projects")
                erin.get_by_label("Username").fill("erin")
                erin.get_by_label("Password").fill(password)
                erin.get_by_role("button", name="Sign in").click()
                expect(erin.get_by_role("heading", name="Choose a new password")).to_be_visible()
                assert erin.evaluate(WIDEST)["scroll"] <= PHONE["width"]
                erin.locator("#new_password").fill("erins-own-password")
                erin.locator("#confirm_password").fill("erins-own-password")
                erin.get_by_role("button", name="Save and go on").click()
                expect(erin.get_by_role("heading", name="Projects")).to_be_visible()
            finally:
                browser.close()
    finally:
        stop(proc)
