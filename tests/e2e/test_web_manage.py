"""What issue 14 added to the web UI, in a real browser, on SQLite and PostgreSQL: people and
access (tests/e2e/web_manage_people.py), processes and variables (web_manage_processes.py) and
the pages that were missing (web_manage_pages.py).

Their tests are collected here so that one server per database, one chromium and one sign-in of
each person serve all three: a server, a set-up and five argon2 sign-ins each would cost more
than the pages they check. The shop below is what each of the three needs, together: `dev` may
deploy to Test and edit the projects of Shop, `qa` approves in Staging, `ops` deploys and creates
releases and may edit only Train, `auditor` reads everything. The tests run in this order (people,
processes, pages); each part changes only what its own checks read. Screenshots, from the SQLite
run: tests/artifacts/web/manage-sqlite-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser

from tests.e2e import web_manage_pages as pages
from tests.e2e import web_manage_people as people
from tests.e2e import web_manage_processes as processes
from tests.e2e.conftest import Server
from tests.e2e.web_site import Site, apply, chromium, off_the_loop, passwords_and_sessions

# The tests of the three parts, collected here in the order they run.
test_admin_adds_a_person_who_must_choose_their_own_password = (
    people.test_admin_adds_a_person_who_must_choose_their_own_password
)
test_admin_adds_a_service_account_whose_key_is_shown_once_and_works = (
    people.test_admin_adds_a_service_account_whose_key_is_shown_once_and_works
)
test_admin_resets_a_password_then_deactivates_and_reactivates = (
    people.test_admin_resets_a_password_then_deactivates_and_reactivates
)
test_admin_changes_team_membership_and_the_scope_of_a_role = (
    people.test_admin_changes_team_membership_and_the_scope_of_a_role
)
test_others_are_offered_no_control_and_refused_when_posting = (
    people.test_others_are_offered_no_control_and_refused_when_posting
)
test_the_audit_log_shows_who_changed_people_and_who_was_refused = (
    people.test_the_audit_log_shows_who_changed_people_and_who_was_refused
)
test_dev_adds_a_step_of_each_type = processes.test_dev_adds_a_step_of_each_type
test_dev_edits_a_scoped_variable_and_sets_a_sensitive_value = (
    processes.test_dev_edits_a_scoped_variable_and_sets_a_sensitive_value
)
test_dev_compares_two_versions_and_reverts = processes.test_dev_compares_two_versions_and_reverts
test_who_may_not_edit_reads_without_controls_and_is_refused = (
    processes.test_who_may_not_edit_reads_without_controls_and_is_refused
)
test_environments_lifecycles_and_targets = pages.test_environments_lifecycles_and_targets
test_the_feed_keeps_a_pinned_version_and_deletes_another = (
    pages.test_the_feed_keeps_a_pinned_version_and_deletes_another
)
test_project_settings_edited_by_dev_and_read_only_for_qa = (
    pages.test_project_settings_edited_by_dev_and_read_only_for_qa
)
test_the_deployments_list_filters_and_says_how_long_each_took = (
    pages.test_the_deployments_list_filters_and_says_how_long_each_took
)
test_the_audit_log_reads_as_a_diff_to_the_second_and_pages_both_ways = (
    pages.test_the_audit_log_reads_as_a_diff_to_the_second_and_pages_both_ways
)
test_qa_sees_a_count_of_what_waits_for_them_and_dev_none = (
    pages.test_qa_sees_a_count_of_what_waits_for_them_and_dev_none
)

pytestmark = pytest.mark.e2e

PEOPLE = ("dev", "qa", "ops", "auditor")
# Developer's second role is Project Deployer (the people part changes its scope); Path, with
# its two phases, is used by Shop and Broken only (the pages part reads it); the projects the
# processes part edits follow To production.
CONFIG = """
environments: [{name: Test}, {name: Staging}, {name: Production}]
lifecycles:
  - name: Path
    description: Test first, then Staging.
    phases: [{name: Test, environments: [Test]}, {name: Staging, environments: [Staging]}]
  - name: To production
    phases:
      - {name: Test, environments: [Test]}
      - {name: Staging, environments: [Staging]}
      - {name: Production, environments: [Production]}
project_groups: [{name: Shop}, {name: Orchestration}]
users: [{username: dev}, {username: qa}, {username: ops}, {username: auditor}]
teams:
  - name: Developer
    members: [dev]
    roles:
      - {role: Project Viewer}
      - {role: Project Deployer, environments: [Test]}
      - {role: Project Contributor, project_groups: [Shop]}
  - name: QA
    members: [qa]
    roles: [{role: Project Viewer}, {role: Approver, environments: [Staging]}]
  - name: Operations
    members: [ops]
    roles:
      - {role: Project Viewer}
      - {role: Release Creator}
      - {role: Project Deployer}
      - {role: Environment Viewer}
      - {role: Project Contributor, projects: [Train]}
  - name: Auditor
    members: [auditor]
    roles: [{role: Auditor}]
targets:
  - {name: web-1, environments: [Test, Staging], roles: [web]}
projects:
  - name: Shop
    group: Shop
    lifecycle: Path
    description: The shop.
    process:
      steps:
        - {name: Ship, type: package, package: Shop.Web, target_roles: [web]}
        - name: QA approval
          type: manual_intervention
          instructions: Check the shop.
          responsible_teams: [QA]
          environments: [Staging]
  - name: Broken
    group: Shop
    lifecycle: Path
    process: {steps: [{name: Fail, type: script, script: exit 3}]}
  - name: Web
    group: Shop
    lifecycle: To production
    process:
      steps:
        - {name: Build site, type: script, script: echo built}
    variables:
      - {name: Greeting, value: hello}
  - name: Api
    group: Shop
    lifecycle: To production
    process: {steps: [{name: Start, type: script, script: echo started}]}
  - name: Train
    group: Orchestration
    lifecycle: To production
    process: {steps: []}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def prepare(server: Server) -> dict[str, dict[str, str]]:
    """The shop applied and deployed (``pages.deployments``) while, in another thread, everyone is
    given a password and signed in: each person's cookies."""
    apply(server, CONFIG, "manage")
    with ThreadPoolExecutor(max_workers=1) as pool:
        signed_in = pool.submit(passwords_and_sessions, server, ("admin", *PEOPLE))
        pages.deployments(server)
        return signed_in.result()


@pytest.fixture(scope="module")
def site(server: Server, browser: Browser) -> Iterator[Site]:
    site = Site("manage", server, browser, off_the_loop(lambda: prepare(server)))
    yield site
    site.close()
