"""Channels: the lines a project releases on (a hotfix line 1.4.x beside 2.0 betas), each with
version rules, an optional lifecycle of its own, and one default (docs/deployments.md).

A rule constrains the versions of a package (``package``), or of what one step ships
(``step``: a package step's package, or a ``deploy_release`` step's child release), by a range
in NuGet/Octopus interval notation and a regular expression over the pre-release part
(``^$``: no pre-release; ``^beta``). Creating a release picks the first channel, the default
first, whose rules the versions satisfy; "the highest version" of anything left unchosen is
the highest the channel allows. A project without channels has one: ``Default``, no rules.

Pure: no I/O. ``conveyor.services.releases`` gathers the versions and asks ``choose``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.versions import Version

if TYPE_CHECKING:  # documents.py imports this module
    from conveyor.domain.documents import Project

DEFAULT_CHANNEL = "Default"
RANGE_EXAMPLE = "like [1.0,2.0), (,2.0], [1.4.0,1.5.0), [1.0] (exactly) or 1.0 (1.0 or higher)"


def _key(name: str) -> str:
    from conveyor.domain.documents import key

    return key(name)


@dataclass(frozen=True)
class VersionRule:
    """Versions of ``package`` (a package id, or a child project) or of what ``step`` ships
    must lie in ``range`` and have a pre-release part that ``tag`` matches (``re.search``);
    an empty range or tag accepts anything."""

    package: str = ""
    step: str = ""
    range: str = ""
    tag: str = ""

    def describe(self) -> str:
        what = []
        if self.range:
            what.append(f"range {self.range}")
        if self.tag:
            what.append(f"tag {self.tag}")
        return " and ".join(what) or "any version"


@dataclass(frozen=True)
class Channel:
    name: str
    # Empty: the project's lifecycle.
    lifecycle: str = ""
    default: bool = False
    description: str = ""
    rules: tuple[VersionRule, ...] = field(default=())


# ---------------------------------------------------------------- ranges


@dataclass(frozen=True)
class VersionRange:
    low: Version | None = None
    low_inclusive: bool = True
    high: Version | None = None
    high_inclusive: bool = False

    def __contains__(self, version: Version) -> bool:
        if self.low is not None and (
            version < self.low or (version == self.low and not self.low_inclusive)
        ):
            return False
        return self.high is None or (
            version < self.high or (version == self.high and self.high_inclusive)
        )


def _bound(text: str, whole: str) -> Version | None:
    text = text.strip()
    if not text:
        return None
    try:
        return Version(text)
    except ValidationFailed as exc:
        raise ValidationFailed(f'version range "{whole}": {exc.message}') from exc


def parse_range(text: str) -> VersionRange:
    """NuGet/Octopus interval notation: ``[`` ``]`` include a bound, ``(`` ``)`` exclude it,
    an empty side is open; ``[1.0]`` is exactly 1.0 and a bare ``1.0`` means 1.0 or higher."""
    whole = text
    text = text.strip()
    bad = f'version range "{whole}" is not valid: write it {RANGE_EXAMPLE}'
    if not text:
        raise ValidationFailed(bad)
    if text[0] not in "[(":
        if text[-1] in "])" or "," in text:
            raise ValidationFailed(bad)
        return VersionRange(low=_bound(text, whole))
    if len(text) < 3 or text[-1] not in "])":
        raise ValidationFailed(bad)
    low_inclusive, high_inclusive = text[0] == "[", text[-1] == "]"
    inner = text[1:-1]
    if "," not in inner:
        exact = _bound(inner, whole)
        if exact is None or not (low_inclusive and high_inclusive):
            raise ValidationFailed(f"{bad}; one version alone needs square brackets: [1.0]")
        return VersionRange(exact, True, exact, True)
    low_text, _, high_text = inner.partition(",")
    if "," in high_text:
        raise ValidationFailed(bad)
    low, high = _bound(low_text, whole), _bound(high_text, whole)
    if low is None and high is None:
        raise ValidationFailed(f"{bad}; give at least one bound")
    if (
        low is not None
        and high is not None
        and (low > high or (low == high and not (low_inclusive and high_inclusive)))
    ):
        raise ValidationFailed(f'version range "{whole}" holds no version at all')
    return VersionRange(low, low_inclusive, high, high_inclusive)


def range_problem(text: str) -> str | None:
    try:
        parse_range(text)
    except ValidationFailed as exc:
        return exc.message
    return None


def tag_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f'tag "{pattern}" is not a valid regular expression: {exc}'
    return None


def prerelease_of(version: Version) -> str:
    return ".".join(version.prerelease)


def satisfies(rule: VersionRule, version: str) -> bool:
    parsed = Version(version)
    if rule.range and parsed not in parse_range(rule.range):
        return False
    return not rule.tag or re.search(rule.tag, prerelease_of(parsed)) is not None


def first_broken(rules: Iterable[VersionRule], version: str) -> VersionRule | None:
    return next((r for r in rules if not satisfies(r, version)), None)


# ---------------------------------------------------------------- a project's channels


def channels_of(project: Project) -> tuple[Channel, ...]:
    return project.channels or (Channel(DEFAULT_CHANNEL, default=True),)


def default_channel(project: Project) -> Channel:
    """The one marked default, else the first."""
    channels = channels_of(project)
    return next((c for c in channels if c.default), channels[0])


def find_channel(project: Project, name: str) -> Channel | None:
    wanted = _key(name)
    return next((c for c in channels_of(project) if _key(c.name) == wanted), None)


def lifecycle_of(project: Project, channel: str) -> str:
    """The lifecycle that governs a release of ``channel`` (one since removed: the project's)."""
    found = find_channel(project, channel)
    return found.lifecycle if found is not None and found.lifecycle else project.lifecycle


def lifecycles_of(project: Project) -> tuple[str, ...]:
    """Every lifecycle the project's releases may follow, the project's first."""
    out = [project.lifecycle]
    for c in channels_of(project):
        if c.lifecycle and _key(c.lifecycle) not in {_key(n) for n in out}:
            out.append(c.lifecycle)
    return tuple(out)


def reachable(project: Project, environments_of: Callable[[str], Iterable[str]]) -> list[str]:
    """The environments a release of the project may reach: those of its lifecycle and of its
    channels' (``environments_of`` a lifecycle's), each once, the project's lifecycle's first."""
    seen: set[str] = set()
    out: list[str] = []
    for lifecycle in lifecycles_of(project):
        for env in environments_of(lifecycle):
            if _key(env) not in seen:
                seen.add(_key(env))
                out.append(env)
    return out


def channels_by_lifecycle(project: Project) -> dict[str, tuple[str, ...]]:
    """The channels with a lifecycle of their own other than the project's, by that lifecycle
    (as first written): what a message names beside the project's lifecycle."""
    out: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for c in channels_of(project):
        if c.lifecycle and _key(c.lifecycle) != _key(project.lifecycle):
            name = names.setdefault(_key(c.lifecycle), c.lifecycle)
            out.setdefault(name, []).append(c.name)
    return {lifecycle: tuple(channels) for lifecycle, channels in out.items()}


def in_order(project: Project) -> tuple[Channel, ...]:
    """The order ``choose`` tries them: the default, then the rest as written."""
    first = default_channel(project)
    return (first, *(c for c in channels_of(project) if c is not first))


def rule_steps(project: Project, rule: VersionRule) -> tuple[str, ...]:
    """The steps a rule constrains: its ``step``, or each step that ships its ``package`` (a
    package step of that package, a ``deploy_release`` step of that child project)."""
    from conveyor.domain.documents import DeployReleaseAction, PackageAction

    if rule.step:
        return (rule.step,)
    wanted = _key(rule.package)
    return tuple(
        s.name
        for s in project.process.steps
        if (isinstance(s.action, PackageAction) and _key(s.action.package) == wanted)
        or (isinstance(s.action, DeployReleaseAction) and _key(s.action.project) == wanted)
    )


# ---------------------------------------------------------------- choosing


@dataclass(frozen=True)
class Subject:
    """Something a release ships a version of: a package (its id, the steps that deploy it)
    or a child project (its ``deploy_release`` step)."""

    name: str
    steps: tuple[str, ...]
    versions: tuple[str, ...]  # the candidates, highest first; only the pinned one when pinned
    pinned: bool = False
    child: bool = False
    # Child releases: version -> the child's channel, and the child project's channels; a
    # child with a channel of the parent's channel's name offers only that channel's releases.
    channel_of: Mapping[str, str] = field(default_factory=dict)
    child_channels: frozenset[str] = frozenset()

    @property
    def ident(self) -> tuple[str, tuple[str, ...]]:
        return self.name, self.steps


def rules_for(channel: Channel, subject: Subject) -> tuple[VersionRule, ...]:
    steps = {_key(s) for s in subject.steps}
    return tuple(
        r
        for r in channel.rules
        if (r.package and _key(r.package) == _key(subject.name))
        or (r.step and _key(r.step) in steps)
    )


@dataclass(frozen=True)
class Fit:
    channel: Channel
    versions: dict[tuple[str, tuple[str, ...]], str]  # Subject.ident -> version
    refusals: tuple[str, ...] = ()

    def version_of(self, subject: Subject) -> str:
        return self.versions[subject.ident]


def _offered(channel: Channel, subject: Subject) -> tuple[str, ...]:
    if subject.pinned or _key(channel.name) not in subject.child_channels:
        return subject.versions
    mine = _key(channel.name)
    return tuple(v for v in subject.versions if _key(subject.channel_of.get(v, "")) == mine)


def fit(channel: Channel, subjects: Iterable[Subject]) -> Fit:
    """The versions ``channel`` takes (the pinned ones if its rules allow them, otherwise the
    highest its rules allow), or why not: channel, package, version and rule."""
    chosen: dict[tuple[str, tuple[str, ...]], str] = {}
    refusals: list[str] = []
    for subject in subjects:
        if not subject.versions:
            continue
        rules = rules_for(channel, subject)
        offered = _offered(channel, subject)
        best = next((v for v in offered if first_broken(rules, v) is None), None)
        if best is not None:
            chosen[subject.ident] = best
            continue
        where = f'channel "{channel.name}"'
        if not offered:
            refusals.append(f"{where}: {subject.name} has no release in the {channel.name} channel")
            continue
        top = offered[0]
        broken = first_broken(rules, top)
        assert broken is not None
        if subject.pinned:
            refusals.append(
                f"{where}: {subject.name} {top} does not satisfy its rule {broken.describe()}"
            )
        else:
            refusals.append(
                f"{where}: no version of {subject.name} satisfies its rule {broken.describe()} "
                f"(the highest, {top}, does not)"
            )
    return Fit(channel, chosen, tuple(refusals))


def choose(project: Project, subjects: Iterable[Subject], wanted: str | None = None) -> Fit:
    """The channel a new release goes to: ``wanted`` (its rules checked), or the first whose
    rules the versions satisfy, the default first. Refuses naming every rule that failed."""
    subjects = tuple(subjects)
    if wanted is not None and wanted.strip():
        channel = find_channel(project, wanted)
        if channel is None:
            names = ", ".join(c.name for c in channels_of(project))
            raise ValidationFailed(
                Problem(
                    ("channel",),
                    f'{project.name} has no channel "{wanted}" (its channels: {names})',
                )
            )
        result = fit(channel, subjects)
        if result.refusals:
            raise ValidationFailed([Problem(("channel",), r) for r in result.refusals])
        return result
    tried = [fit(c, subjects) for c in in_order(project)]
    for result in tried:
        if not result.refusals:
            return result
    problems = [Problem(("channel",), r) for result in tried for r in result.refusals]
    if len(tried) == 1:
        raise ValidationFailed(problems)
    raise ValidationFailed(
        problems,
        f"no channel of {project.name} accepts these versions: "
        + "; ".join(p.message for p in problems),
    )


def highest_within(channel: Channel, subject: Subject) -> str | None:
    """What ``fit`` would pick for one subject (the new-release form's preselection)."""
    return fit(channel, (subject,)).versions.get(subject.ident)
