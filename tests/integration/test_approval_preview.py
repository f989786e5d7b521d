"""The approval preview: what a person approving a Deploy All release for an environment sees,
against what is in that environment now. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from conveyor.domain.errors import PermissionDenied
from conveyor.services import deployments, evidence, releases
from conveyor.services.approval_preview import preview
from conveyor.services.configfile import apply_text
from conveyor.services.core import Caller, Services
from tests.conftest import caller_of
from tests.ended import end

OLD_SECRET, NEW_SECRET = "old-secret-0451", "new-secret-8872"
COMPONENTS = ("Database", "Cart", "Products", "Website")

CONFIG = """
environments:
  - name: Dev
  - name: Staging
lifecycles:
  - name: Anywhere
    phases:
      - name: All
        environments: [Dev, Staging]
project_groups:
  - name: Shop
  - name: Orchestration
users:
  - username: qa
  - username: partial
teams:
  - name: QA
    members: [qa]
    roles:
      - role: Project Viewer
      - role: Approver
        environments: [Staging]
  - name: Partial
    members: [partial]
    roles:
      - role: Project Viewer
        projects: [Deploy All, Database, Cart, Products]
projects:
{projects}
  - name: Deploy All
    group: Orchestration
    lifecycle: Anywhere
    process:
      steps:
{children}
"""


def component(name: str, *, extra_step: bool = False, colour: str, secret: str) -> str:
    migrate = (
        """        - name: Migrate
          type: script
          script: echo migrate
"""
        if extra_step
        else ""
    )
    return f"""  - name: {name}
    group: Shop
    lifecycle: Anywhere
    process:
      steps:
        - name: Install
          type: script
          script: echo install {name}
{migrate}    variables:
      - name: Colour
        value: {colour}
      - name: Colour
        value: grey
        environments: [Dev]
      - name: ApiKey
        value: {secret}
        sensitive: true
"""


def config(*, database_step: bool = False, cart_colour: str = "blue", cart_secret: str = "") -> str:
    projects = "".join(
        component(
            name,
            extra_step=database_step and name == "Database",
            colour=cart_colour if name == "Cart" else "blue",
            secret=(cart_secret or OLD_SECRET) if name == "Cart" else OLD_SECRET,
        )
        for name in COMPONENTS
    )
    children = "".join(
        f"""        - name: Deploy {name}
          type: deploy_release
          project: {name}
          deployment_condition: if_newer
"""
        for name in COMPONENTS
    )
    return CONFIG.format(projects=projects, children=children)


def build(*shas: str) -> dict[str, Any]:
    commits = [{"sha": sha * 40, "author": "Dana", "message": f"Change {sha}"} for sha in shas]
    return {"commit": shas[-1] * 40, "commits": commits}


async def succeeded(services: Services, admin: Caller, project: str, version: str) -> None:
    """Deploy to Staging and record the deployment as successful through the dashboard's own
    projection rule (running the engine is tested elsewhere; here only "current" matters)."""
    queued = await deployments.deploy(services, admin, project, version, "Staging")
    await end(services, admin, queued, version)


@pytest.fixture
async def train(services: Services, admin: Caller) -> None:
    await make_train(services, admin)


async def make_train(services: Services, admin: Caller) -> None:
    """Deploy All 1.0.0 (every child at 1.0.0) is in Staging. Since then: Database gained a
    step, Cart's colour and its sensitive API key changed; Deploy All 1.1.0 pins Database and
    Cart 1.1.0 (newer), Products 0.9.0 (older) and Website 1.0.0 (the same)."""
    await apply_text(services, admin, config())
    await releases.create_release(services, admin, "Products", version="0.9.0", build=build("9"))
    for name in COMPONENTS:
        await releases.create_release(services, admin, name, version="1.0.0", build=build("a"))
    await releases.create_release(services, admin, "Deploy All", version="1.0.0")
    for name in (*COMPONENTS, "Deploy All"):
        await succeeded(services, admin, name, "1.0.0")
    await apply_text(
        services, admin, config(database_step=True, cart_colour="green", cart_secret=NEW_SECRET)
    )
    await releases.create_release(
        services, admin, "Database", version="1.1.0", build=build("b", "c")
    )
    await releases.create_release(services, admin, "Cart", version="1.1.0", build=build("d"))
    await releases.create_release(
        services,
        admin,
        "Deploy All",
        version="1.1.0",
        notes="The autumn train",
        children={"Database": "1.1.0", "Cart": "1.1.0", "Products": "0.9.0", "Website": "1.0.0"},
    )


def by_project(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["project"]: i for i in items}


@pytest.mark.usefixtures("train")
async def test_the_preview_lists_exactly_what_changed_since_the_release_in_the_environment(
    services: Services, admin: Caller
) -> None:
    started = time.perf_counter()
    seen = await preview(services, admin, "deploy-all", "1.1.0", "staging")
    elapsed = time.perf_counter() - started

    assert seen["release"]["project"] == "Deploy All"
    assert (seen["release"]["version"], seen["release"]["notes"]) == ("1.1.0", "The autumn train")
    assert (seen["environment"], seen["current"]) == ("Staging", "1.0.0")
    assert [(c["project"], c["version"], c["current"], c["change"]) for c in seen["children"]] == [
        ("Database", "1.1.0", "1.0.0", "newer"),
        ("Cart", "1.1.0", "1.0.0", "newer"),
        ("Products", "0.9.0", "1.0.0", "older"),
        ("Website", "1.0.0", "1.0.0", "same"),
    ]
    assert {c["condition"] for c in seen["children"]} == {"if_newer"}
    assert seen["left_out"] == []

    commits = by_project(seen["commits"])
    assert [c["sha"][0] for c in commits["Database"]["commits"]] == ["b", "c"]
    assert [c["sha"][0] for c in commits["Cart"]["commits"]] == ["d"]
    assert commits["Products"]["rollback"] and not commits["Products"]["commits"]
    assert commits["Website"]["commits"] == [] and commits["Deploy All"]["commits"] == []

    projects = by_project(seen["projects"])
    assert projects["Database"]["process"] == {
        "steps": [{"name": "Migrate", "change": "added", "fields": []}],
        "order": None,
    }
    assert projects["Database"]["variables"] == []
    assert projects["Cart"]["process"] == {"steps": [], "order": None}
    assert projects["Cart"]["variables"] == [
        {
            "name": "ApiKey",
            "scope": [],
            "change": "changed",
            "sensitive": True,
            "before": None,
            "after": None,
        },
        {
            "name": "Colour",
            "scope": [],
            "change": "changed",
            "sensitive": False,
            "before": "blue",
            "after": "green",
        },
    ]
    assert projects["Cart"]["variable_values"] is None
    for unchanged in ("Deploy All", "Products", "Website"):
        entry = projects[unchanged]
        assert entry["process"]["steps"] == [] and entry["variables"] == [], unchanged
    # A sensitive value appears nowhere, neither before nor after.
    text = json.dumps(seen)
    assert OLD_SECRET not in text and NEW_SECRET not in text
    # Bounded: a train of four children answers in tens of milliseconds (generous on CI).
    assert elapsed < 0.5, elapsed


@pytest.mark.usefixtures("train")
async def test_a_child_the_caller_may_not_view_is_left_out_saying_so(services: Services) -> None:
    partial = await caller_of(services, "partial")
    seen = await preview(services, partial, "Deploy All", "1.1.0", "Staging")
    assert [c["project"] for c in seen["children"]] == ["Database", "Cart", "Products"]
    # Website's releases are not the partial user's to see: left out, saying so.
    assert seen["left_out"] == [
        {"project": "Website", "reason": "you may not view its releases (ReleaseView)"}
    ]
    assert "Website" not in {p["project"] for p in seen["projects"] + seen["commits"]}
    # Project Viewer does not include VariableView: which variables changed, not their values.
    cart = by_project(seen["projects"])["Cart"]
    assert [(v["name"], v["change"]) for v in cart["variables"]] == [
        ("ApiKey", "changed"),
        ("Colour", "changed"),
    ]
    assert all(v["before"] is None and v["after"] is None for v in cart["variables"])
    assert "VariableView" in cart["variable_values"]
    assert "blue" not in json.dumps(cart)
    # Without ReleaseView on the release itself, nothing at all.
    with pytest.raises(PermissionDenied):
        await preview(services, partial, "Website", "1.0.0", "Staging")


@pytest.mark.usefixtures("train")
async def test_an_environment_with_nothing_deployed_shows_everything_as_new(
    services: Services, admin: Caller
) -> None:
    seen = await preview(services, admin, "Deploy All", "1.1.0", "Dev")
    assert seen["current"] is None
    assert {c["change"] for c in seen["children"]} == {"new"}
    assert all(c["current"] is None for c in seen["children"])
    projects = by_project(seen["projects"])
    assert [(s["name"], s["change"]) for s in projects["Database"]["process"]["steps"]] == [
        ("Install", "added"),
        ("Migrate", "added"),
    ]
    assert [(v["name"], v["scope"], v["change"]) for v in projects["Cart"]["variables"]] == [
        ("ApiKey", [], "added"),
        ("Colour", [], "added"),
        ("Colour", ["Dev"], "added"),
    ]
    assert projects["Cart"]["variables"][1]["after"] == "green"
    # Every release up to this one brings its commits (newest first).
    database = by_project(seen["commits"])["Database"]
    assert [c["sha"][0] for c in database["commits"]] == ["b", "c", "a"]
    assert database["current"] is None
    assert NEW_SECRET not in json.dumps(seen)


@pytest.mark.usefixtures("train")
async def test_evidence_still_lists_variable_changes_by_name_and_scope(
    services: Services, admin: Caller
) -> None:
    """The evidence compares releases with the same function; its answer is unchanged."""
    proof = await evidence.release_evidence(services, admin, "Cart", "1.1.0")
    assert proof["changes"]["variables"] == [
        {"name": "ApiKey [all]", "change": "changed"},
        {"name": "Colour [all]", "change": "changed"},
    ]
    assert NEW_SECRET not in json.dumps(proof, default=str)


@pytest.mark.usefixtures("train")
async def test_a_changed_step_shows_which_fields_changed_and_a_new_order(
    services: Services, admin: Caller
) -> None:
    await succeeded(services, admin, "Database", "1.1.0")
    moved = config(database_step=True, cart_colour="green", cart_secret=NEW_SECRET)
    moved = moved.replace("script: echo install Database", "script: echo install it twice")
    # Migrate now runs before Install.
    install = (
        "        - name: Install\n          type: script\n          script: echo install it twice\n"
    )
    migrate = "        - name: Migrate\n          type: script\n          script: echo migrate\n"
    assert install + migrate in moved
    await apply_text(services, admin, moved.replace(install + migrate, migrate + install))
    await releases.create_release(services, admin, "Database", version="1.2.0")

    seen = await preview(services, admin, "Database", "1.2.0", "Staging")

    assert seen["children"] == [] and seen["current"] == "1.1.0"
    [database] = seen["projects"]
    assert database["process"] == {
        "steps": [
            {
                "name": "Install",
                "change": "changed",
                "fields": [
                    {
                        "field": "script",
                        "before": "echo install Database",
                        "after": "echo install it twice",
                    }
                ],
            }
        ],
        "order": {"before": ["Install", "Migrate"], "after": ["Migrate", "Install"]},
    }


@pytest.mark.usefixtures("train")
async def test_the_terminal_shows_the_preview_the_cli_prints_before_confirming(
    services: Services, admin: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    from conveyor.cli.approval_preview import print_preview

    print_preview(await preview(services, admin, "Deploy All", "1.1.0", "Staging"))
    text = capsys.readouterr().out
    assert "Approve Deploy All 1.1.0 for Staging (now there: 1.0.0)" in text
    assert "older (a rollback)" in text
    assert "Database 1.0.0 -> 1.1.0: 2" in text
    assert "step added: Migrate" in text
    assert "variable ApiKey [all]: sensitive, changed" in text
    assert "variable Colour [all] changed: blue -> green" in text
    assert OLD_SECRET not in text and NEW_SECRET not in text


@pytest.mark.usefixtures("train")
async def test_the_approvers_of_the_environment_see_the_values_they_approve(
    services: Services, admin: Caller
) -> None:
    qa = await caller_of(services, "qa")
    before = await preview(services, qa, "Deploy All", "1.1.0", "Staging")
    cart = by_project(before["projects"])["Cart"]
    assert "VariableView" in cart["variable_values"] and "blue" not in json.dumps(cart)
    # Staging asks QA to approve the orchestrator: QA now sees what it approves (but never a
    # sensitive value).
    checks = "environments:\n  - {name: Staging, checks: [{approval: {teams: [QA]}}]}\n"
    await apply_text(services, admin, checks)
    seen = await preview(services, qa, "Deploy All", "1.1.0", "Staging")
    cart = by_project(seen["projects"])["Cart"]
    assert cart["variable_values"] is None
    colour = next(v for v in cart["variables"] if v["name"] == "Colour")
    assert (colour["before"], colour["after"]) == ("blue", "green")
    assert OLD_SECRET not in json.dumps(seen) and NEW_SECRET not in json.dumps(seen)
    # Someone who is not among the approvers still sees only the names.
    partial = await caller_of(services, "partial")
    hidden = by_project(
        (await preview(services, partial, "Deploy All", "1.1.0", "Staging"))["projects"]
    )
    assert hidden["Cart"]["variable_values"] is not None
