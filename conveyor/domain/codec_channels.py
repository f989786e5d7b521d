"""Channels in config as code: a project document's ``channels`` read, written and checked
(the rules themselves: conveyor/domain/channels.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conveyor.domain.channels import Channel, VersionRule, range_problem, tag_problem
from conveyor.domain.documents import DeployReleaseAction, PackageAction, Project, key
from conveyor.domain.errors import Problem
from conveyor.domain.reading import Path, Reader


def decode_channels(r: Reader) -> tuple[Channel, ...]:
    """A project document's ``channels``: ``[{name, lifecycle?, default?, description?,
    rules: [{package | step, range?, tag?}]}]``."""
    out = []
    for c_path, item in r.items("channels"):
        cr = Reader(item, c_path, r.problems, "a channel")
        rules = []
        for rule_path, rule in cr.items("rules"):
            rr = Reader(rule, rule_path, r.problems, "a version rule")
            rules.append(
                VersionRule(
                    package=rr.text("package"),
                    step=rr.text("step"),
                    range=rr.text("range"),
                    tag=rr.text("tag"),
                )
            )
            rr.finish()
        out.append(
            Channel(
                name=cr.text("name", required=True),
                lifecycle=cr.text("lifecycle"),
                default=cr.flag("default"),
                description=cr.text("description"),
                rules=tuple(rules),
            )
        )
        cr.finish()
    return tuple(out)


def encode_channels(channels: Iterable[Channel]) -> list[dict[str, Any]]:
    def compact(data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v not in ("", [], False)}

    return [
        compact(
            {
                "name": c.name,
                "description": c.description,
                "lifecycle": c.lifecycle,
                "default": c.default,
                "rules": [
                    compact({"package": r.package, "step": r.step, "range": r.range, "tag": r.tag})
                    for r in c.rules
                ],
            }
        )
        for c in channels
    ]


def channel_problems(project: Project, lifecycles: set[str], path: Path) -> list[Problem]:
    """What is wrong with a project's channels (``lifecycles``: the known lifecycles' keys)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    steps = {key(s.name): s for s in project.process.steps}
    packages = {key(p) for p in _packages(project)}
    defaults = [c.name for c in project.channels if c.default]
    if len(defaults) > 1:
        problems.append(
            Problem(
                (*path, "channels"),
                f"only one channel may be the default ({', '.join(defaults)} are)",
            )
        )
    for i, channel in enumerate(project.channels):
        at = (*path, "channels", i)
        if key(channel.name) in seen:
            problems.append(Problem((*at, "name"), f'"{channel.name}" is named twice'))
        seen.add(key(channel.name))
        if len(channel.name) > 100:
            problems.append(Problem((*at, "name"), "is at most 100 characters"))
        if channel.lifecycle and key(channel.lifecycle) not in lifecycles:
            problems.append(Problem((*at, "lifecycle"), f'no lifecycle "{channel.lifecycle}"'))
        for j, rule in enumerate(channel.rules):
            where = (*at, "rules", j)
            if not rule.package and not rule.step:
                problems.append(Problem(where, "name the package or the step the rule is for"))
            if rule.package and key(rule.package) not in packages:
                problems.append(
                    Problem(
                        (*where, "package"), f'{project.name} deploys no package "{rule.package}"'
                    )
                )
            if rule.step and key(rule.step) not in steps:
                problems.append(
                    Problem((*where, "step"), f'{project.name} has no step "{rule.step}"')
                )
            if not rule.range and not rule.tag:
                problems.append(Problem(where, "give a range, a tag, or both"))
            if rule.range and (why := range_problem(rule.range)):
                problems.append(Problem((*where, "range"), why))
            if rule.tag and (why := tag_problem(rule.tag)):
                problems.append(Problem((*where, "tag"), why))
    return problems


def _packages(project: Project) -> list[str]:
    """Package ids and child projects: what a rule's ``package`` may name."""
    out = []
    for step in project.process.steps:
        if isinstance(step.action, PackageAction):
            out.append(step.action.package)
        elif isinstance(step.action, DeployReleaseAction):
            out.append(step.action.project)
    return out
