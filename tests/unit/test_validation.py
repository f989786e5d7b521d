"""Validation of whole configurations, the codec, rename and diff: pure, no database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.domain import permissions as perms
from conveyor.domain.codec import decode, encode
from conveyor.domain.diff import diff, needs
from conveyor.domain.documents import (
    DeploymentCondition,
    DeployReleaseAction,
    Environment,
    Lifecycle,
    ManualInterventionAction,
    Phase,
    Process,
    Project,
    ProjectGroup,
    ScopedRole,
    ScriptAction,
    StartTrigger,
    Step,
    Team,
    User,
    UserRole,
    Variable,
)
from conveyor.domain.errors import Problem
from conveyor.domain.model import KINDS, Model, rename
from conveyor.domain.validation import validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "octopetshop" / "conveyor.yaml"
PERMISSIONS = [p.value for p in perms.Permission]
BUILT_IN = tuple(
    UserRole(r.name, tuple(p.value for p in r.permissions), built_in=True)
    for r in perms.BUILT_IN_ROLES
)


def example_model() -> Model:
    data = yaml.safe_load(EXAMPLE.read_text())
    problems: list[Problem] = []
    docs: dict[str, Any] = {}
    for kind in KINDS:
        docs[kind] = tuple(
            decode(kind, item, (kind, i), problems) for i, item in enumerate(data.get(kind, []))
        )
    assert not problems, problems
    docs["user_roles"] = BUILT_IN + docs["user_roles"]
    docs["users"] = (User("admin"), *docs["users"])
    docs["teams"] = (
        Team("Administrators", ("admin",), (ScopedRole("System Administrator"),)),
        *docs["teams"],
    )
    return Model(**docs)


def paths(problems: list[Problem]) -> list[str]:
    return [p.where for p in problems]


def step(name: str, **kw: Any) -> Step:
    return Step(name=name, action=kw.pop("action", ScriptAction(body="echo hi")), **kw)


def base(*projects: Project) -> Model:
    return Model(
        environments=(Environment("Dev"), Environment("Test"), Environment("Prod")),
        lifecycles=(
            Lifecycle("Main", (Phase("Dev", ("Dev",), ("Dev",)), Phase("Test", ("Test",)))),
        ),
        project_groups=(ProjectGroup("G"),),
        projects=projects,
    )


def test_the_example_is_valid() -> None:
    assert validate(example_model(), PERMISSIONS) == []


def test_codec_round_trips_every_document_of_the_example() -> None:
    model = example_model()
    for kind, doc in model.all_docs():
        problems: list[Problem] = []
        assert decode(kind, encode(kind, doc, with_secrets=True), (kind,), problems) == doc
        assert problems == []


def test_duplicate_names_compare_without_case() -> None:
    model = base()
    model = Model(**{**model.__dict__, "environments": (Environment("Dev"), Environment("dev"))})
    problems = validate(model, PERMISSIONS)
    assert any("more than one environment" in p.message for p in problems)


def test_references_to_missing_documents_name_the_field() -> None:
    project = Project("P", group="Nope", lifecycle="Missing")
    problems = validate(base(project), PERMISSIONS)
    assert "projects[P].group" in paths(problems)
    assert "projects[P].lifecycle" in paths(problems)


def test_lifecycle_naming_an_environment_twice_is_refused() -> None:
    model = base()
    twice = Lifecycle("Twice", (Phase("A", ("Dev",)), Phase("B", ("Dev", "Test"))))
    problems = validate(model.with_doc("lifecycles", twice), PERMISSIONS)
    assert [p.where for p in problems] == ["lifecycles[Twice].phases[B].environments[0]"]
    assert "already in phase" in problems[0].message


def test_step_scoped_outside_the_lifecycle_is_refused() -> None:
    project = Project("P", "G", "Main", process=Process((step("S", environments=("Prod",)),)))
    problems = validate(base(project), PERMISSIONS)
    assert paths(problems) == ["projects[P].process.steps[S].environments[0]"]
    assert "not in lifecycle" in problems[0].message


def test_deploy_release_cycle_is_refused_with_the_chain() -> None:
    def parent(name: str, child: str) -> Project:
        return Project(
            name, "G", "Main", process=Process((step("Deploy", action=DeployReleaseAction(child)),))
        )

    problems = validate(base(parent("A", "B"), parent("B", "C"), parent("C", "A")), PERMISSIONS)
    cycles = [p for p in problems if "cycle" in p.message]
    assert len(cycles) == 1
    assert "A -> B -> C -> A" in cycles[0].message or "B -> C -> A -> B" in cycles[0].message


def test_a_project_cannot_deploy_itself() -> None:
    project = Project(
        "A", "G", "Main", process=Process((step("D", action=DeployReleaseAction("A")),))
    )
    assert "cannot deploy itself" in validate(base(project), PERMISSIONS)[0].message


def test_first_step_cannot_start_with_previous_and_variable_condition_needs_expression() -> None:
    from conveyor.domain.documents import RunCondition

    project = Project(
        "P",
        "G",
        "Main",
        process=Process(
            (
                step("One", start=StartTrigger.WITH_PREVIOUS),
                step("Two", condition=RunCondition.VARIABLE),
            )
        ),
    )
    problems = validate(base(project), PERMISSIONS)
    assert set(paths(problems)) == {
        "projects[P].process.steps[One].start",
        "projects[P].process.steps[Two].condition_expression",
    }


def test_manual_intervention_teams_must_exist() -> None:
    mi = ManualInterventionAction("Approve", responsible_teams=("QA",))
    project = Project("P", "G", "Main", process=Process((step("Approve", action=mi),)))
    problems = validate(base(project), PERMISSIONS)
    assert paths(problems) == ["projects[P].process.steps[Approve].responsible_teams[0]"]


def test_unknown_permission_in_a_custom_role() -> None:
    model = base().with_doc("user_roles", UserRole("Custom", ("ProcessEdit", "FlyToMoon")))
    problems = validate(model, PERMISSIONS)
    assert paths(problems) == ["user_roles[Custom].permissions[1]"]


def test_nobody_left_to_administer_is_refused() -> None:
    model = example_model()
    without_admin_team = model.without("teams", "Administrators")
    assert any("AdministerSystem" in p.message for p in validate(without_admin_team, PERMISSIONS))


def test_rename_rewrites_every_reference() -> None:
    model = example_model()
    model = model.with_doc("environments", Environment("Pre-production"), previous_name="Staging")
    assert validate(model, PERMISSIONS) == []
    assert [e.name for e in model.environments][2] == "Pre-production"
    qa = model.get("teams", "QA")
    assert ("Pre-production") in qa.roles[1].environments
    deploy_all = model.get("projects", "Deploy All")
    assert "Pre-production" in deploy_all.process.steps[1].environments
    renamed = rename(model, "teams", "QA", "Quality").with_doc(
        "teams", Team("Quality", ("qa",)), previous_name="QA"
    )
    step_ = renamed.get("projects", "Deploy All").process.steps[1]
    assert step_.action.responsible_teams == ("Quality",)


def test_diff_names_the_permission_each_change_needs() -> None:
    current = example_model()
    database = current.get("projects", "Database")
    edited = current.with_doc(
        "projects",
        Project(
            database.name,
            database.group,
            database.lifecycle,
            watch_paths=database.watch_paths,
            process=Process((step("Migrate"),)),
            variables=(Variable("Secret", "s3cret", sensitive=True),),
        ),
    )
    changes = diff(current, edited)
    assert [(c.kind, c.name, c.aspect) for c in changes] == [
        ("projects", "Database", "process"),
        ("projects", "Database", "variables"),
    ]
    assert needs(changes[0], current, edited)[0].permission == "ProcessEdit"
    assert {n.permission for n in needs(changes[1], current, edited)} == {"VariableEdit"}
    assert "s3cret" not in str([c.as_dict() for c in changes])


def test_deploy_release_step_defaults() -> None:
    problems: list[Problem] = []
    s = decode(
        "projects",
        {
            "name": "X",
            "group": "G",
            "lifecycle": "Main",
            "process": {"steps": [{"name": "D", "type": "deploy_release", "project": "Y"}]},
        },
        ("projects",),
        problems,
    )
    assert problems == []
    assert s.process.steps[0].action.condition == DeploymentCondition.ALWAYS


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"name": "S", "type": "teleport"}, "steps[0].type"),
        ({"name": "S", "type": "script"}, "steps[0].script"),
        ({"name": "S", "type": "script", "script": "x", "timeout": -1}, "steps[0].timeout"),
        ({"name": "S", "type": "script", "script": "x", "colour": "red"}, "steps[0].colour"),
    ],
)
def test_step_decoding_problems_name_the_field(data: dict[str, Any], path: str) -> None:
    problems: list[Problem] = []
    decode(
        "projects",
        {"name": "X", "group": "G", "lifecycle": "L", "process": {"steps": [data]}},
        ("projects", 0),
        problems,
    )
    assert any(p.where.endswith(path) for p in problems), paths(problems)
