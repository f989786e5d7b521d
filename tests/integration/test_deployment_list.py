"""The deployment list: keyset pages that are always full for a person who sees only some
projects, filters, and the same visibility rule as the dashboard. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import update

from conveyor.domain.errors import ValidationFailed
from conveyor.services import deployment_views, deployments, releases
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from tests.conftest import caller_of

PROJECTS = ("Alpha", "Beta", "Gamma", "Delta")
ENVIRONMENTS = ("Dev", "Prod")
ROUNDS = 5

# Partial sees deployments of Alpha and Gamma everywhere and of Delta in Prod only. Through
# Release Creator it may view Beta and every environment, but not Beta's deployments: the
# dashboard used to show them (it decided by ProjectView and EnvironmentView) while the list
# hid them (DeploymentView).
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
  - name: Apps
users:
  - username: partial
teams:
  - name: Some
    members: [partial]
    roles:
      - role: Project Viewer
        projects: [Alpha, Gamma]
  - name: Delta in Prod
    members: [partial]
    roles:
      - role: Project Viewer
        projects: [Delta]
        environments: [Prod]
  - name: Beta releases
    members: [partial]
    roles:
      - role: Release Creator
        projects: [Beta]
projects:
{projects}
"""
VISIBLE = {("Alpha", "Dev"), ("Alpha", "Prod"), ("Gamma", "Dev"), ("Gamma", "Prod")} | {
    ("Delta", "Prod")
}


def _project(name: str) -> str:
    return f"""  - name: {name}
    group: Apps
    lifecycle: Anywhere
    process:
      steps:
        - name: Say
          type: script
          script: echo hi
"""


@pytest.fixture
async def history(services: Services, admin: Caller) -> list[dict[str, Any]]:
    """ROUNDS deployments of every project to every environment, interleaved, as the admin
    lists them (newest first): the first round ended in success, the rest queued."""
    config = CONFIG.format(projects="".join(_project(p) for p in PROJECTS))
    await apply_text(services, admin, config)
    versions = {p: (await releases.create_release(services, admin, p)).version for p in PROJECTS}
    pairs = list(itertools.product(PROJECTS, ENVIRONMENTS))
    for project, env in pairs:
        await deployments.deploy(services, admin, project, versions[project], env)
    # The list reads the state column; how the engine gets there is tested elsewhere, so the
    # first round is marked ended here rather than run.
    async with services.tx(admin) as tx:
        await tx.session.execute(update(t.deployments).values(state="success"))
    for _, (project, env) in itertools.product(range(ROUNDS - 1), pairs):
        await deployments.deploy(services, admin, project, versions[project], env)
    everything = await deployment_views.list_deployments(services, admin, limit=1000)
    assert len(everything) == ROUNDS * len(pairs)
    return everything


async def _all_pages(services: Services, caller: Caller, size: int, **filters: Any) -> list[list]:
    pages: list[list[dict[str, Any]]] = []
    before = None
    while True:
        page = await deployment_views.list_deployments(
            services, caller, limit=size, before=before, **filters
        )
        if not page:
            return pages
        pages.append(page)
        before = int(page[-1]["id"].split("-")[1])


def _number(row: dict[str, Any]) -> int:
    return int(row["id"].split("-")[1])


@pytest.mark.parametrize("size", [1, 3, 7])
async def test_every_page_is_full_with_no_gaps_and_no_duplicates(
    services: Services, history: list[dict[str, Any]], size: int
) -> None:
    partial = await caller_of(services, "partial")
    expected = [r for r in history if (r["project"], r["environment"]) in VISIBLE]
    assert 0 < len(expected) < len(history)

    pages = await _all_pages(services, partial, size)

    # Hidden deployments sit between visible ones on every page; filtering after LIMIT (as it
    # was) returned short pages, and a short page read as the end of the list.
    assert all(len(page) == size for page in pages[:-1]), [len(p) for p in pages]
    shown = [row for page in pages for row in page]
    assert [r["id"] for r in shown] == [r["id"] for r in expected]
    assert len({r["id"] for r in shown}) == len(shown)
    assert [_number(r) for r in shown] == sorted((_number(r) for r in shown), reverse=True)


async def test_filters_combine_with_visibility(
    services: Services, history: list[dict[str, Any]]
) -> None:
    partial = await caller_of(services, "partial")

    delta = [r for page in await _all_pages(services, partial, 2, project="Delta") for r in page]
    assert {r["environment"] for r in delta} == {"Prod"}
    assert len(delta) == ROUNDS

    dev = [r for page in await _all_pages(services, partial, 4, environment="dev") for r in page]
    assert {r["project"] for r in dev} == {"Alpha", "Gamma"}
    assert len(dev) == 2 * ROUNDS

    succeeded = await deployment_views.list_deployments(services, partial, state="Success")
    assert {(r["project"], r["environment"]) for r in succeeded} == VISIBLE
    assert len(succeeded) == len(VISIBLE)
    queued = await deployment_views.list_deployments(
        services, partial, state="queued", project="Alpha", limit=1000
    )
    assert len(queued) == 2 * (ROUNDS - 1)
    assert {r["state"] for r in queued} == {"queued"}

    # A project the person may not see deployments of gives an empty list, not its rows.
    assert await deployment_views.list_deployments(services, partial, project="Beta") == []


async def test_an_unknown_state_says_which_states_exist(
    services: Services, history: list[dict[str, Any]]
) -> None:
    partial = await caller_of(services, "partial")
    with pytest.raises(ValidationFailed) as refused:
        await deployment_views.list_deployments(services, partial, state="done")
    assert "'done' is not a deployment state" in str(refused.value)
    assert "timed_out" in str(refused.value)


async def test_the_dashboard_and_the_list_agree_on_what_is_visible(
    services: Services, history: list[dict[str, Any]]
) -> None:
    partial = await caller_of(services, "partial")

    board = await deployment_views.dashboard(services, partial)
    listed = await deployment_views.list_deployments(services, partial, limit=1000)

    cells = {(c["project"], c["environment"]) for c in board["cells"]}
    assert cells == {(r["project"], r["environment"]) for r in listed} == VISIBLE
    # Beta is a project Partial may view (a row), but none of its deployments (no cells).
    assert "Beta" in board["projects"]
    assert set(board["environments"]) == set(ENVIRONMENTS)
    # Each cell is the newest deployment of its pair, as the list shows it.
    newest = {}
    for row in listed:
        newest.setdefault((row["project"], row["environment"]), row["id"])
    assert {(c["project"], c["environment"]): c["deployment"] for c in board["cells"]} == newest
