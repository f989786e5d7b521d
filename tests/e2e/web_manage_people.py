"""People and access administered in a real browser (issue 14, item 2), on SQLite and PostgreSQL
(these tests are collected, with their server and set-up, in tests/e2e/test_web_manage.py).

`admin` adds a person (the password shown once; the person must choose their own at their first
sign-in, and is made to) and a service account (its API key shown once, and working), sets a
password again, deactivates and reactivates the person (their session ends; sign-in refused in
between), adds them to a team and removes them from it, and changes the scope of a team's role.
`dev`, `qa`, `ops` and `auditor` are offered none of these controls, and each form posted by hand
is refused (403); `auditor` reads all of it in the audit log. The in-process page tests
(tests/api/test_people_web.py) cover each refusal's wording; these prove the pages work in a
browser on both databases.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests import loopback
from tests.e2e.web_site import Site, sign_in

OTHERS = ("dev", "qa", "ops", "auditor")


def signed_out(page: Page) -> None:
    page.goto("/people")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_admin_adds_a_person_who_must_choose_their_own_password(site: Site) -> None:
    page = site.page("admin")
    page.goto("/people")
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Display name").fill("Erin Engineer")
    expect(page.get_by_label("A person must choose their own password")).to_be_checked()
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page).to_have_url(f"{site.server.url}/people/users/erin?done=created")
    expect(page.locator("#shown-once")).to_contain_text("shown only this once")
    expect(page.locator("#shown-once")).to_contain_text("They must choose their own")
    first = page.locator("code.secret").inner_text()
    account = page.get_by_role("region", name="Account")
    expect(account).to_contain_text("Password: set; must be changed at the next sign-in.")
    site.shot(page, "person-added")
    page.reload()  # shown once
    expect(page.locator("code.secret")).to_have_count(0)

    erin = site.page("erin")
    erin.goto("/projects")
    erin.get_by_label("Username").fill("erin")
    erin.get_by_label("Password").fill(first)
    erin.get_by_role("button", name="Sign in").click()
    expect(erin.get_by_role("heading", name="Choose a new password")).to_be_visible()
    erin.goto("/people")  # every page leads back here until it is done
    expect(erin.get_by_role("heading", name="Choose a new password")).to_be_visible()
    site.shot(erin, "must-choose-a-password")
    erin.locator("#new_password").fill("erins-own-password")
    erin.locator("#confirm_password").fill("erins-own-password")
    erin.get_by_role("button", name="Save and go on").click()
    expect(erin.get_by_role("heading", name="People and access")).to_be_visible()
    site.facts["erin"] = "erins-own-password"


def test_admin_adds_a_service_account_whose_key_is_shown_once_and_works(site: Site) -> None:
    page = site.page("admin")
    page.goto("/people")
    page.get_by_label("Username").fill("robot")
    page.get_by_label("A service account").check()
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#shown-once")).to_contain_text("The API key of robot")
    api_key = page.locator("code.secret").inner_text()
    expect(page.get_by_text("Service account", exact=False).first).to_be_visible()
    expect(page.get_by_role("button", name="Set a new password")).to_have_count(0)
    site.shot(page, "service-account-added")
    page.reload()
    expect(page.locator("code.secret")).to_have_count(0)
    me = loopback.get(f"{site.server.url}/api/v1/me", headers={"X-Api-Key": api_key}, timeout=30)
    assert me.status_code == 200 and me.json()["username"] == "robot", me.text


def test_admin_resets_a_password_then_deactivates_and_reactivates(site: Site) -> None:
    if "erin" not in site.facts:
        pytest.skip("erin was not added")
    page = site.page("admin")
    page.goto("/people/users/erin")
    box = page.get_by_label("They must choose their own at their next sign-in")
    box.uncheck()
    page.get_by_role("button", name="Set a new password").click()
    expect(page.locator("#shown-once")).to_contain_text("The password of erin")
    expect(page.locator("#shown-once")).not_to_contain_text("They must choose")
    given = page.locator("code.secret").inner_text()
    site.shot(page, "password-set")
    erin = site.page("erin")
    signed_out(erin)  # a new password ends the person's web sessions
    sign_in(site.server, "erin", given)  # and works, with nothing to change first

    page.get_by_role("button", name="Deactivate erin").click()
    expect(page.get_by_text("Inactive: refused everything")).to_be_visible()
    site.shot(page, "deactivated")
    with loopback.client(base_url=site.server.url, timeout=30) as client:
        form = client.get("/sign-in")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        refused = client.post(
            "/sign-in", data={"csrf": token, "username": "erin", "password": given, "next": "/"}
        )
        assert refused.status_code != 303, refused.text
    page.get_by_role("button", name="Reactivate erin").click()
    expect(page.get_by_role("button", name="Deactivate erin")).to_be_visible()
    sign_in(site.server, "erin", given)
    site.facts["erin"] = given


def test_admin_changes_team_membership_and_the_scope_of_a_role(site: Site) -> None:
    if "erin" not in site.facts:
        pytest.skip("erin was not added")
    page = site.page("admin")
    page.goto("/people/users/erin")
    page.get_by_label("Add to").select_option("Developer")
    page.get_by_role("button", name="Add to the team").click()
    expect(page.locator("ul.member-of")).to_contain_text("Developer")
    assert "erin" in site.server.get("/teams/developer").json()["members"]

    page.get_by_role("link", name="Developer").first.click()
    expect(page.get_by_role("heading", name="Team Developer")).to_be_visible()
    page.get_by_role("button", name="Remove erin from Developer").click()
    expect(page.get_by_role("status")).to_contain_text("erin: Removed from the team.")
    assert "erin" not in site.server.get("/teams/developer").json()["members"]

    page.get_by_text("Change the scope of Project Deployer").click()
    scope = page.locator("#r1-environments")
    expect(scope.get_by_label("Test")).to_be_checked()
    scope.get_by_label("Staging").check()
    page.get_by_role("button", name="Save the scope of Project Deployer").click()
    expect(page.get_by_role("status")).to_contain_text("The role's scope was saved.")
    expect(page.locator(".team-role").nth(1)).to_contain_text("Environments: Test, Staging.")
    site.shot(page, "team-scope-saved")
    roles = site.server.get("/teams/developer").json()["roles"]
    assert roles[1]["role"] == "Project Deployer"
    assert sorted(roles[1]["environments"]) == ["Staging", "Test"], roles


REFUSED = [
    ("/people/users", {"username": "mallory"}),
    ("/people/users/erin/password", {"must_change": "1"}),
    ("/people/users/erin/active", {"active": "0"}),
    ("/people/users/erin/teams", {"team": "Operations", "member": "1"}),
    ("/people/teams/developer/members", {"username": "erin", "member": "1"}),
    ("/people/teams/developer/roles/1", {"role": "Project Deployer"}),
    ("/people/teams/developer/roles", {"role": "Project Viewer"}),
]


@pytest.mark.parametrize("user", OTHERS)
def test_others_are_offered_no_control_and_refused_when_posting(site: Site, user: str) -> None:
    if "erin" not in site.facts:
        pytest.skip("erin was not added")
    page = site.page(user)
    page.goto("/people")
    expect(page.get_by_role("heading", name="People and access")).to_be_visible()
    expect(page.get_by_role("heading", name="Add a person")).to_have_count(0)
    page.goto("/people/users/erin")
    for control in ("Set a new password", "Deactivate erin", "Add to the team"):
        expect(page.get_by_role("button", name=control)).to_have_count(0)
    page.goto("/people/teams/developer")
    expect(page.get_by_role("heading", name="Team Developer")).to_be_visible()
    expect(page.get_by_text("Change the scope of")).to_have_count(0)
    expect(page.get_by_role("button", name="Add to the team")).to_have_count(0)
    for path, form in REFUSED:
        answer = site.post(user, path, form)
        assert answer.status == 403, f"{user} POST {path}: {answer.status} {answer.text()[:300]}"
        assert "may not" in answer.text(), answer.text()
    if user == "dev":  # the refusal as a browser shows it: a page that says why
        page.set_content(site.post(user, "/people/users/erin/active", {"active": "0"}).text())
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        site.shot(page, f"refused-{user}")
    assert site.server.get("/users/erin").json().get("active", True), "still active"
    assert "mallory" not in str(site.server.get("/users").json())


def test_the_audit_log_shows_who_changed_people_and_who_was_refused(site: Site) -> None:
    page = site.page("auditor")
    page.goto("/audit?user=admin")
    events = page.locator("table.events > tbody")
    for said in ("erin", "robot", "Developer"):
        expect(events).to_contain_text(said)
    expect(events.locator("tr", has_text="PasswordChanged").first).to_be_visible()
    site.shot(page, "audit-admin")
    page.goto("/audit?category=AccessDenied")
    expect(events).to_contain_text("dev")
    expect(events).to_contain_text("UserEdit")
    site.shot(page, "audit-refusals")
