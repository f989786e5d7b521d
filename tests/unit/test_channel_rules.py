"""Channels as pure rules: version ranges in NuGet/Octopus notation, pre-release tag patterns,
and which channel a new release goes to (conveyor/domain/channels.py)."""

from __future__ import annotations

import pytest

from conveyor.domain import channels as ch
from conveyor.domain.codec import decode, encode
from conveyor.domain.codec_channels import channel_problems
from conveyor.domain.documents import PackageAction, Process, Project, Step
from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.versions import Version


def inside(range_text: str, version: str) -> bool:
    return Version(version) in ch.parse_range(range_text)


@pytest.mark.parametrize(
    ("range_text", "version", "expected"),
    [
        ("[1.0,2.0)", "1.0", True),  # inclusive low
        ("[1.0,2.0)", "1.0.0.0", True),  # missing parts count as 0
        ("[1.0,2.0)", "1.9.99", True),
        ("[1.0,2.0)", "2.0.0", False),  # exclusive high
        ("[1.0,2.0)", "2.0.0-beta.1", True),  # a pre-release of 2.0 sorts below it
        ("[1.0,2.0)", "0.9", False),
        ("(1.0,2.0]", "1.0", False),  # exclusive low
        ("(1.0,2.0]", "1.0.1", True),
        ("(1.0,2.0]", "2.0", True),  # inclusive high
        ("[1.0,)", "99.0", True),  # open high
        ("(,2.0]", "0.0.1", True),  # open low
        ("(,2.0]", "2.0.1", False),
        ("[1.4]", "1.4.0", True),  # exactly
        ("[1.4]", "1.4.1", False),
        ("1.0", "1.0", True),  # a bare version: that or higher
        ("1.0", "7.3.1", True),
        ("1.0", "0.9.9", False),
        (" [1.4.0 , 1.5.0) ", "1.4.7", True),  # spaces are allowed
    ],
)
def test_ranges(range_text: str, version: str, expected: bool) -> None:
    assert inside(range_text, version) is expected


@pytest.mark.parametrize(
    ("range_text", "says"),
    [
        ("", "not valid"),
        ("[1.0", "not valid"),
        ("1.0)", "not valid"),
        ("(1.0)", "square brackets"),
        ("[,]", "at least one bound"),
        ("[2.0,1.0]", "holds no version"),
        ("[1.0,1.0)", "holds no version"),
        ("[1.0,2.0,3.0]", "not valid"),
        ("[1.x,2.0)", "1.x"),
    ],
)
def test_bad_ranges_say_what_to_write(range_text: str, says: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        ch.parse_range(range_text)
    assert says in caught.value.message
    assert ch.range_problem(range_text) is not None


@pytest.mark.parametrize(
    ("tag", "version", "expected"),
    [
        ("^$", "1.0.0", True),
        ("^$", "1.0.0-beta.1", False),
        ("^beta", "2.0.0-beta.3", True),
        ("^beta", "2.0.0-rc.1", False),
        ("^beta", "2.0.0", False),
        ("^(?!beta).+", "2.0.0-rc.1", True),
        ("^(?!beta).+", "2.0.0-beta", False),
        ("", "2.0.0-anything", True),
    ],
)
def test_tags_match_the_prerelease_part(tag: str, version: str, expected: bool) -> None:
    assert ch.satisfies(ch.VersionRule(package="Web", tag=tag), version) is expected


def test_a_rule_needs_both_its_range_and_its_tag() -> None:
    rule = ch.VersionRule(package="Web", range="[1.4,1.5)", tag="^$")
    assert ch.satisfies(rule, "1.4.2")
    assert not ch.satisfies(rule, "1.4.2-fix.1")
    assert not ch.satisfies(rule, "1.5.0")
    assert rule.describe() == "range [1.4,1.5) and tag ^$"
    assert ch.tag_problem("^(") is not None


def _project(*channels: ch.Channel) -> Project:
    step = Step("Install", PackageAction(package="Web"))
    return Project(
        "Shop", "Apps", "Normal", process=Process(steps=(step,)), channels=tuple(channels)
    )


HOTFIX = ch.Channel(
    "Hotfix", lifecycle="Fast", rules=(ch.VersionRule(package="Web", range="[1.4,1.5)", tag="^$"),)
)
BETA = ch.Channel("Beta", rules=(ch.VersionRule(step="Install", tag="^beta"),))
MAIN = ch.Channel("Main", default=True, rules=(ch.VersionRule(package="web", tag="^$"),))
FEED = ("2.0.0-beta.2", "1.9.0", "1.4.3", "1.4.2")


def _feed(*versions: str, pinned: bool = False) -> ch.Subject:
    return ch.Subject("Web", ("Install",), versions, pinned=pinned)


def test_a_project_without_channels_has_the_default_one() -> None:
    project = _project()
    assert [c.name for c in ch.channels_of(project)] == ["Default"]
    fit = ch.choose(project, [_feed(*FEED)])
    assert fit.channel.name == "Default"
    assert fit.version_of(_feed(*FEED)) == "2.0.0-beta.2"  # no rules: the highest
    assert ch.lifecycle_of(project, "Default") == "Normal"


def test_the_default_channel_is_tried_first_and_takes_its_highest() -> None:
    project = _project(HOTFIX, BETA, MAIN)
    fit = ch.choose(project, [_feed(*FEED)])
    assert fit.channel.name == "Main"
    assert fit.version_of(_feed(*FEED)) == "1.9.0"  # not the beta


def test_a_pinned_version_picks_the_channel_it_fits() -> None:
    project = _project(HOTFIX, BETA, MAIN)
    assert ch.choose(project, [_feed("2.0.0-beta.2", pinned=True)]).channel.name == "Beta"
    # 1.4.3 fits Main (the default, tried first) as well as Hotfix.
    assert ch.choose(project, [_feed("1.4.3", pinned=True)]).channel.name == "Main"


def test_an_explicit_channel_takes_the_highest_it_allows() -> None:
    project = _project(HOTFIX, BETA, MAIN)
    fit = ch.choose(project, [_feed(*FEED)], "hotfix")
    assert fit.channel.name == "Hotfix"
    assert fit.version_of(_feed(*FEED)) == "1.4.3"  # a hotfix line never picks 2.0.0-beta
    assert ch.lifecycle_of(project, "Hotfix") == "Fast"
    assert ch.lifecycle_of(project, "Main") == "Normal"
    assert ch.lifecycle_of(project, "Gone") == "Normal"


def test_an_explicit_channel_refuses_naming_channel_package_version_and_rule() -> None:
    project = _project(HOTFIX, BETA, MAIN)
    with pytest.raises(ValidationFailed) as caught:
        ch.choose(project, [_feed("1.9.0", pinned=True)], "Hotfix")
    assert caught.value.problems == [
        Problem(
            ("channel",),
            'channel "Hotfix": Web 1.9.0 does not satisfy its rule range [1.4,1.5) and tag ^$',
        )
    ]
    with pytest.raises(ValidationFailed, match=r'no channel "Nightly" .*Hotfix, Beta, Main'):
        ch.choose(project, [_feed(*FEED)], "Nightly")


def test_no_channel_fits_then_every_refusal_is_named() -> None:
    project = _project(HOTFIX, BETA, MAIN)
    with pytest.raises(ValidationFailed) as caught:
        ch.choose(project, [_feed("2.0.0-rc.1", pinned=True)])
    message = caught.value.message
    assert message.startswith("no channel of Shop accepts these versions")
    for name in ("Main", "Hotfix", "Beta"):
        assert f'channel "{name}": Web 2.0.0-rc.1 does not satisfy' in message
    with pytest.raises(ValidationFailed, match=r"no version of Web satisfies .*highest, 1\.9\.0"):
        ch.choose(project, [_feed("1.9.0", "1.8.0")], "Hotfix")


def test_a_child_with_the_same_channel_offers_only_its_releases() -> None:
    parent = ch.Channel("Hotfix")
    child = ch.Subject(
        "Website",
        ("Deploy Website",),
        ("2.0.0", "1.4.3", "1.4.2"),
        child=True,
        channel_of={"2.0.0": "Default", "1.4.3": "Hotfix", "1.4.2": "Hotfix"},
        child_channels=frozenset({"default", "hotfix"}),
    )
    assert ch.fit(parent, [child]).version_of(child) == "1.4.3"
    assert ch.fit(ch.Channel("Default"), [child]).version_of(child) == "2.0.0"
    assert ch.fit(ch.Channel("Other"), [child]).version_of(child) == "2.0.0"
    assert ch.highest_within(parent, child) == "1.4.3"


def test_channels_round_trip_and_validate() -> None:
    data = {
        "name": "Shop",
        "group": "Apps",
        "lifecycle": "Normal",
        "process": {"steps": [{"name": "Install", "type": "package", "package": "Web"}]},
        "channels": [
            {"name": "Main", "default": True, "rules": [{"package": "Web", "tag": "^$"}]},
            {
                "name": "Hotfix",
                "lifecycle": "Fast",
                "rules": [{"step": "Install", "range": "[1.4,1.5)", "tag": "^$"}],
            },
        ],
    }
    problems: list[Problem] = []
    project = decode("projects", data, ("projects", 0), problems)
    assert problems == [] and isinstance(project, Project)
    assert encode("projects", project) == data
    assert channel_problems(project, {"normal", "fast"}, ("projects", "Shop")) == []

    bad = Project(
        "Shop",
        "Apps",
        "Normal",
        process=project.process,
        channels=(
            ch.Channel("A", default=True, lifecycle="Nope"),
            ch.Channel("a", default=True, rules=(ch.VersionRule(range="[2,1]", tag="("),)),
            ch.Channel("B", rules=(ch.VersionRule(package="Db", step="Other", range="1.0"),)),
        ),
    )
    said = [p.message for p in channel_problems(bad, {"normal"}, ("projects", "Shop"))]
    assert any("only one channel may be the default" in m for m in said)
    assert any('"a" is named twice' in m for m in said)
    assert any('no lifecycle "Nope"' in m for m in said)
    assert any("name the package or the step" in m for m in said)
    assert any("holds no version" in m for m in said)
    assert any("not a valid regular expression" in m for m in said)
    assert any('deploys no package "Db"' in m for m in said)
    assert any('has no step "Other"' in m for m in said)
