"""Config as code through the service layer: apply and export, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from conveyor.domain.audit import Category
from conveyor.domain.documents import Project
from conveyor.domain.errors import PermissionDenied, ValidationFailed
from conveyor.domain.model import Model
from conveyor.services.config import ConfigResult
from conveyor.services.configfile import apply_text, env_references, export_text
from conveyor.services.core import Caller, Services
from conveyor.store import tables as t
from conveyor.store.documents import load_model
from tests.conftest import caller_of

SECRET = "s3cret-Pa55word-xyz"

BASE = """\
environments:
  - name: Development
  - name: Test
  - name: Production
lifecycles:
  - name: Default
    phases:
      - name: Dev
        environments: [Development]
      - name: Test
        environments: [Test]
      - name: Prod
        environments: [Production]
project_groups:
  - name: Components
user_roles:
  - name: Database Process Editor
    permissions: [ProcessEdit, ProcessView, ProjectView]
users:
  - username: dev
    email: dev@example.com
projects:
  - name: Database
    group: Components
    lifecycle: Default
    process:
      steps:
        - name: Migrate
          type: script
          script: |
            echo migrate
            echo done
    variables:
      - name: ConnectionString
        value: ${env:DB_PASSWORD}
        sensitive: true
      - name: Port
        value: "5432"
  - name: Website
    group: Components
    lifecycle: Default
    process:
      steps:
        - name: Deploy
          type: script
          script: echo deploy
    variables:
      - name: Greeting
        value: hello
targets:
  - name: local-dev
    environments: [Development]
    roles: [web]
teams:
  - name: Developers
    members: [dev]
    roles:
      - role: Database Process Editor
        projects: [Database]
"""

DATABASE_ONLY = """\
projects:
  - name: Database
    group: Components
    lifecycle: Default
    process:
      steps:
        - name: Migrate
          type: script
          script: echo {script}
"""


def texts(result: ConfigResult) -> list[str]:
    return [c.render() for c in result.changes]


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the only line of ``text`` that holds ``marker``."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(lines) == 1, marker
    return lines[0]


async def model_of(services: Services) -> Model:
    """The stored configuration with its sensitive values decrypted (``load`` keeps them sealed)."""
    async with services.read() as session:
        return (await load_model(session, services.box)).model


async def events(services: Services) -> list[tuple[str, str, str]]:
    async with services.read() as session:
        rows = (
            await session.execute(
                select(t.events.c.category, t.events.c.message, t.events.c.details).order_by(
                    t.events.c.id
                )
            )
        ).all()
    return [(r.category, r.message, json.dumps(r.details)) for r in rows]


@pytest.fixture
async def applied(services: Services, admin: Caller) -> ConfigResult:
    return await apply_text(
        services, admin, BASE, secrets={"DB_PASSWORD": SECRET}, source="base.yaml"
    )


async def test_apply_creates_everything_and_lists_the_changes(
    services: Services, applied: ConfigResult
) -> None:
    rendered = texts(applied)
    for expected in (
        '+ environment "Development"',
        '+ lifecycle "Default"',
        '+ project group "Components"',
        '+ user role "Database Process Editor"',
        '+ user "dev"',
        '+ project "Database"',
        '+ target "local-dev"',
        '+ team "Developers"',
    ):
        assert expected in rendered
    assert any(r.startswith('~ project "Database" process') for r in rendered)
    model = await model_of(services)
    assert model.environment_names() == ["Development", "Test", "Production"]
    database = model.get("projects", "database")
    assert database.process.steps[0].action.body == "echo migrate\necho done\n"
    assert {v.name: v.value for v in database.variables} == {
        "ConnectionString": SECRET,
        "Port": "5432",
    }
    summaries = [m for c, m, _ in await events(services) if c == Category.CONFIG_APPLIED]
    assert summaries == [f"admin applied base.yaml: {len(applied.changes)} change(s)"]


async def test_second_apply_has_no_changes_and_writes_no_event(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    before = await events(services)
    again = await apply_text(services, admin, BASE, secrets={"DB_PASSWORD": SECRET})
    assert not again.changed
    assert await events(services) == before


async def test_export_then_apply_has_no_changes(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    exported = await export_text(services, admin)
    assert exported.startswith("# Conveyor configuration")
    assert "script: |\n" in exported  # multi-line scripts stay readable
    assert SECRET not in exported
    assert "Project Deployer" not in exported  # built-in roles are not exported
    result = await apply_text(services, admin, exported)
    assert texts(result) == []


async def test_export_shows_only_what_the_caller_may_view(
    services: Services, applied: ConfigResult
) -> None:
    dev = await caller_of(services, "dev")
    exported = await export_text(services, dev)
    # dev's only role holds ProjectView and ProcessView on Database: no environments,
    # no Website, no variables, no teams or users.
    assert "name: Database" in exported and "Migrate" in exported
    for hidden in ("Website", "environments:", "variables:", "teams:", "users:", "Port"):
        assert hidden not in exported


async def test_dry_run_lists_changes_and_writes_nothing(services: Services, admin: Caller) -> None:
    before = await events(services)
    result = await apply_text(services, admin, BASE, secrets={"DB_PASSWORD": SECRET}, dry_run=True)
    assert result.dry_run
    assert '+ project "Database"' in texts(result)
    model = await model_of(services)
    assert not model.has("projects", "Database")
    assert not model.environments
    assert await events(services) == before


async def test_partial_file_changes_one_project_and_leaves_the_rest(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    before = await model_of(services)
    partial = """\
projects:
  - name: Website
    group: Components
    lifecycle: Default
    process:
      steps:
        - name: Deploy
          type: script
          script: echo deploy v2
"""
    result = await apply_text(services, admin, partial)
    assert [c.render().splitlines()[0] for c in result.changes] == ['~ project "Website" process']
    after = await model_of(services)
    website = after.get("projects", "Website")
    assert website.process.steps[0].action.body == "echo deploy v2"
    assert website.process.version == before.get("projects", "Website").process.version + 1
    # variables were not in the file: kept
    assert website.variables == before.get("projects", "Website").variables
    assert after.get("projects", "Database") == before.get("projects", "Database")
    for kind in ("environments", "lifecycles", "teams", "users", "targets", "user_roles"):
        assert after.docs(kind) == before.docs(kind)


async def test_environment_order_follows_the_file_and_keeps_the_others(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    swapped = "environments:\n  - name: Test\n  - name: Development\n"
    result = await apply_text(services, admin, swapped)
    assert [c.aspect for c in result.changes] == ["order"]
    names = (await model_of(services)).environment_names()
    assert names == ["Test", "Development", "Production"]
    inserted = "environments:\n  - name: Development\n  - name: Staging\n  - name: Production\n"
    await apply_text(services, admin, inserted)
    names = (await model_of(services)).environment_names()
    assert names == ["Test", "Development", "Staging", "Production"]
    assert not (await apply_text(services, admin, inserted)).changed
    assert not (await apply_text(services, admin, swapped)).changed


async def test_prune_deletes_only_unmentioned_documents_of_mentioned_kinds(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    extra = "environments:\n  - name: Sandbox\nproject_groups:\n  - name: Spare\n"
    await apply_text(services, admin, extra)
    pruning = """\
environments:
  - name: Development
  - name: Test
  - name: Production
users: []
user_roles:
  - name: Database Process Editor
    permissions: [ProcessEdit, ProcessView, ProjectView]
"""
    result = await apply_text(services, admin, pruning, prune=True)
    assert sorted(texts(result)) == [
        '- environment "Sandbox"',
        '~ user "dev"\n    active: (none) -> false',
    ]
    model = await model_of(services)
    assert not model.has("environments", "Sandbox")
    assert model.has("project_groups", "Spare")  # kind not in the file: left alone
    assert model.get("user_roles", "Project Deployer").built_in  # built-in: never pruned
    assert model.get("users", "admin").active  # the caller: never pruned
    assert not model.get("users", "dev").active  # users are deactivated, not deleted
    assert not (await apply_text(services, admin, pruning, prune=True)).changed


async def test_invalid_file_lists_every_problem_with_line_and_path_and_changes_nothing(
    services: Services, admin: Caller
) -> None:
    bad = """\
environments:
  - name: Development
  - name: Test
  - name: test                                  # duplicate
lifecycles:
  - name: Twice
    phases:
      - name: A
        environments: [Development]
      - name: B
        environments: [Development]             # twice
  - name: Short
    phases:
      - name: Dev
        environments: [Development]
project_groups:
  - name: G
projects:
  - name: A
    group: G
    lifecycle: Missing                          # unknown lifecycle
  - name: B
    group: G
    lifecycle: Short
    colour: blue                                # unknown key
  - name: C
    group: G
    lifecycle: Short
    process:
      steps:
        - name: Deploy
          type: script
          script: echo
          environments: [Test]                  # outside lifecycle
        - name: Child
          type: deploy_release
          project: D                            # cycle C
  - name: D
    group: G
    lifecycle: Short
    process:
      steps:
        - name: Parent
          type: deploy_release
          project: C                            # cycle D
"""
    before = await events(services)
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, bad)
    found = {(p.line, p.where): p.message for p in caught.value.problems}
    expected = {
        "# duplicate": "environments[2]",
        "# twice": "lifecycles[Twice].phases[B].environments[0]",
        "# unknown lifecycle": "projects[A].lifecycle",
        "# unknown key": "projects[B].colour",
        "# outside lifecycle": "projects[C].process.steps[Deploy].environments[0]",
    }
    for marker, where in expected.items():
        assert (line_of(bad, marker), where) in found, (marker, sorted(found))
    cycle = [p for p in caught.value.problems if "form a cycle" in p.message]
    assert len(cycle) == 1
    assert cycle[0].line in (line_of(bad, "# cycle C"), line_of(bad, "# cycle D"))
    assert len(caught.value.problems) == 6
    assert all(p.line is not None for p in caught.value.problems)
    assert "line 4: environments[2]" in str(caught.value)
    assert not (await model_of(services)).environments
    assert await events(services) == before


async def test_problems_in_stored_documents_have_no_line(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    # Pruning the custom role breaks the stored team Developers, which the file does not hold.
    text = "user_roles: []\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text, prune=True)
    [problem] = caught.value.problems
    assert problem.where == "teams[Developers].roles[0].role"
    assert problem.line is None


async def test_yaml_syntax_error_names_the_line(services: Services, admin: Caller) -> None:
    text = "environments:\n  - name: Development\n  - name: [Test\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text)
    [problem] = caught.value.problems
    assert problem.line is not None and problem.line >= 3
    assert "not valid YAML" in problem.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- name: Development\n", "expected a mapping"),
        ("enviroments:\n  - name: Development\n", "is not a kind of document"),
        ("environments: Development\n", "must be a list"),
    ],
)
async def test_file_shape_problems(
    services: Services, admin: Caller, text: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text)
    [problem] = caught.value.problems
    assert message in problem.message
    assert problem.line == 1


async def test_unquoted_substitution_after_a_space_is_refused(
    services: Services, admin: Caller
) -> None:
    text = "environments:\n  - name: Development\n    description: for #{Team} only\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text)
    [problem] = caught.value.problems
    assert (problem.line, problem.where) == (3, "environments[Development].description")
    assert "quote" in problem.message


def test_env_references_lists_names_in_order_once() -> None:
    text = """\
# ${env:IN_A_COMMENT} is not a value
projects:
  - name: ${env:B}
    variables:
      - {name: x, value: "${env:A}-${env:B}"}
      - {name: y, value: "$${env:ESCAPED}"}
      - {name: z, value: "${env:C}"}
"""
    assert env_references(text) == ["B", "A", "C"]


async def test_env_references_are_resolved_and_never_shown(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    rotated = SECRET + "-rotated"
    text = """\
projects:
  - name: Database
    group: Components
    lifecycle: Default
    variables:
      - name: ConnectionString
        value: ${env:DB_PASSWORD}
        sensitive: true
      - name: Port
        value: "5432"
      - name: Literal
        value: "$${env:NOT_SUBSTITUTED}"
"""
    result = await apply_text(services, admin, text, secrets={"DB_PASSWORD": rotated})
    assert [c.aspect for c in result.changes] == ["variables"]
    assert rotated not in "\n".join(texts(result))
    assert rotated not in repr(result)
    values = {
        v.name: v.value for v in (await model_of(services)).get("projects", "Database").variables
    }
    assert values["ConnectionString"] == rotated
    assert values["Literal"] == "${env:NOT_SUBSTITUTED}"
    for _, message, details in await events(services):
        assert SECRET not in message and SECRET not in details
        assert rotated not in message and rotated not in details
    # export escapes the literal so that applying the export gives it back
    exported = await export_text(services, admin)
    assert "$${env:NOT_SUBSTITUTED}" in exported
    assert not (await apply_text(services, admin, exported)).changed


async def test_missing_env_reference_is_a_problem_at_its_line(
    services: Services, admin: Caller
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, BASE, secrets={})
    [problem] = caught.value.problems
    assert problem.message == "environment variable DB_PASSWORD is not set"
    assert problem.line == line_of(BASE, "${env:DB_PASSWORD}")
    assert problem.where == "projects[Database].variables[0].value"


async def test_substituted_values_never_appear_in_problems(
    services: Services, admin: Caller
) -> None:
    text = "users:\n  - username: someone\n    email: ${env:MAIL}\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text, secrets={"MAIL": SECRET})
    assert SECRET not in str(caught.value)
    assert caught.value.problems[0].line == 3


async def test_sensitive_variable_without_value_keeps_the_stored_value(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    text = """\
projects:
  - name: Database
    group: Components
    lifecycle: Default
    variables:
      - name: ConnectionString
        sensitive: true
      - name: Port
        value: "5432"
"""
    assert not (await apply_text(services, admin, text)).changed
    database = (await model_of(services)).get("projects", "Database")
    assert database.variables[0].value == SECRET
    new = text + "      - name: ApiKey\n        sensitive: true\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, new)
    [problem] = caught.value.problems
    assert problem.message == ("sensitive variable ApiKey needs a value: use value: ${env:NAME}")
    assert problem.line == line_of(new, "name: ApiKey")


async def test_process_version_is_not_part_of_a_file(
    services: Services, admin: Caller, applied: ConfigResult
) -> None:
    text = DATABASE_ONLY.format(script="v2").replace(
        "    process:\n", "    process:\n      version: 7\n"
    )
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text)
    [problem] = caught.value.problems
    assert problem.where == "projects[Database].process.version"
    assert problem.line == line_of(text, "version: 7")


async def test_a_process_editor_may_apply_a_file_with_only_their_process(
    services: Services, applied: ConfigResult
) -> None:
    dev = await caller_of(services, "dev")
    result = await apply_text(services, dev, DATABASE_ONLY.format(script="v2"))
    assert [c.render().splitlines()[0] for c in result.changes] == ['~ project "Database" process']
    database = (await model_of(services)).get("projects", "Database")
    assert isinstance(database, Project)
    assert database.process.steps[0].action.body == "echo v2"


async def test_a_process_editor_is_refused_a_file_that_also_changes_an_environment(
    services: Services, applied: ConfigResult
) -> None:
    dev = await caller_of(services, "dev")
    before = await model_of(services)
    text = DATABASE_ONLY.format(script="v3") + (
        "environments:\n  - name: Test\n    description: changed by dev\n"
    )
    with pytest.raises(PermissionDenied) as caught:
        await apply_text(services, dev, text)
    assert "EnvironmentEdit" in caught.value.message
    assert "ProcessEdit" not in caught.value.message
    assert await model_of(services) == before  # nothing written, the process neither
    denied = [m for c, m, _ in await events(services) if c == Category.ACCESS_DENIED]
    assert denied and "EnvironmentEdit" in denied[-1]


async def test_built_in_roles_may_be_listed_only_unchanged(
    services: Services, admin: Caller
) -> None:
    deployer = (await model_of(services)).get("user_roles", "Project Deployer")
    unchanged = "user_roles:\n  - name: project deployer\n    permissions: [{}]\n".format(
        ", ".join(reversed(deployer.permissions))
    )
    assert not (await apply_text(services, admin, unchanged)).changed
    changed = "user_roles:\n  - name: Project Deployer\n    permissions: [ProjectView]\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, changed)
    [problem] = caught.value.problems
    assert problem.message == (
        'user role "Project Deployer" is built in and cannot be changed; '
        "create a custom role instead"
    )
    assert problem.line == 2
    custom = "user_roles:\n  - name: Mine\n    built_in: true\n    permissions: [ProjectView]\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, custom)
    assert caught.value.problems[0].where == "user_roles[Mine].built_in"


async def test_users_in_files_never_carry_passwords(services: Services, admin: Caller) -> None:
    text = "users:\n  - username: eve\n    password: hunter22\n"
    with pytest.raises(ValidationFailed) as caught:
        await apply_text(services, admin, text)
    [problem] = caught.value.problems
    assert (problem.line, problem.where) == (3, "users[eve].password")
    assert "hunter22" not in str(caught.value)
