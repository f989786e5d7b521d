"""The lifecycles of a project's channels, as pure rules: where its releases may go, where a
step may be scoped, which environments an unscoped variable reaches (and so whose
VariableEdit an edit needs), and the Octopus ids of its channels."""

from __future__ import annotations

from dataclasses import replace

from conveyor.domain import channels as ch
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.diff import diff, needs
from conveyor.domain.documents import (
    DeployReleaseAction,
    Environment,
    Lifecycle,
    PackageAction,
    Phase,
    Process,
    Project,
    ProjectGroup,
    ScriptAction,
    Step,
    Variable,
)
from conveyor.domain.model import Model
from conveyor.domain.validation import validate

NORMAL = Lifecycle(
    "Normal", (Phase("Dev", ("Dev",)), Phase("Test", ("Test",)), Phase("Prod", ("Prod",)))
)
EXPRESS = Lifecycle("Express", (Phase("Patch", ("Patch",)), Phase("Prod", ("Prod",))))
PERMISSIONS = [p.value for p in perms.Permission]


def web(*scoped: str) -> Project:
    smoke = Step("Smoke test", ScriptAction("echo ok"), environments=scoped)
    return Project(
        "Web",
        "Apps",
        "Normal",
        process=Process((smoke,)),
        channels=(
            ch.Channel("Main", default=True),
            ch.Channel("Hotfix", lifecycle="express"),
            ch.Channel("Urgent", lifecycle="Express"),
        ),
    )


def model(project: Project) -> Model:
    envs = tuple(Environment(n) for n in ("Dev", "Test", "Patch", "Prod", "Sandbox"))
    return Model(
        environments=envs,
        lifecycles=(NORMAL, EXPRESS),
        project_groups=(ProjectGroup("Apps"),),
        projects=(project,),
    )


def test_a_release_may_reach_the_environments_of_every_channel_lifecycle() -> None:
    found = model(web())
    assert ch.reachable(web(), found.lifecycle_environments) == ["Dev", "Test", "Prod", "Patch"]
    assert ch.channels_by_lifecycle(web()) == {"express": ("Hotfix", "Urgent")}
    plain = Project("Api", "Apps", "Normal")
    assert ch.reachable(plain, found.lifecycle_environments) == ["Dev", "Test", "Prod"]


def test_a_step_is_scoped_where_some_lifecycle_of_the_project_goes() -> None:
    assert validate(model(web("Patch", "Prod")), PERMISSIONS) == []
    [problem] = validate(model(web("Sandbox")), PERMISSIONS)
    assert problem.message == (
        'environment "Sandbox" is not in lifecycle "Normal" of this project, '
        'nor in lifecycle "express" of its channels "Hotfix", "Urgent"'
    )
    # Without channels of their own lifecycle, the message is as before.
    alone = replace(web("Patch"), channels=())
    [problem] = validate(model(alone), PERMISSIONS)
    assert problem.message == 'environment "Patch" is not in lifecycle "Normal" of this project'


def test_an_unscoped_variable_edit_needs_variable_edit_where_a_channel_goes() -> None:
    before = model(web())
    after = before.with_doc("projects", replace(web(), variables=(Variable("Colour", "blue"),)))
    [change] = diff(before, after)
    scopes = {n.environment for n in needs(change, before, after)}
    assert scopes == {"Dev", "Test", "Prod", "Patch"}


def test_each_channel_has_its_own_octopus_id() -> None:
    assert octopus.channel_id(3) == "Channels-3"
    assert octopus.channel_id(3, "Default") == "Channels-3"
    assert octopus.channel_id(3, "Hot Fix") == "Channels-3-hot-fix"
    assert octopus.split_channel_id("Channels-3-hot-fix") == (3, "hot-fix")
    assert octopus.split_channel_id("channels-3") == (3, "default")
    for wrong in ("Channels-", "Channels-x", "Projects-3", "Channels-3-", "Channels-3--a"):
        assert octopus.split_channel_id(wrong) is None


def test_a_rule_constrains_the_steps_that_ship_its_package_or_child() -> None:
    steps = (
        Step("Install", PackageAction("Web")),
        Step("Install again", PackageAction("web")),
        Step("Deploy Api", DeployReleaseAction("Api")),
    )
    project = Project("All", "Apps", "Normal", process=Process(steps))
    assert ch.rule_steps(project, ch.VersionRule(package="Web")) == ("Install", "Install again")
    assert ch.rule_steps(project, ch.VersionRule(package="api")) == ("Deploy Api",)
    assert ch.rule_steps(project, ch.VersionRule(step="Install")) == ("Install",)
    assert ch.rule_steps(project, ch.VersionRule(package="Nothing")) == ()
