"""The Octopus Deploy API as its official clients use it: the pure rules of the translation.

Build servers that talk to Octopus (the `octopus` CLI, the GitHub Actions built on the npm
package ``@octopusdeploy/api-client``) work against Conveyor unchanged
(docs/octopus-compatibility.md).
What they send is turned into Conveyor's own requests here, and Conveyor's answers into the
shapes they read: task states, collections, the package selection of a release, build
information. Everything else (permissions, lifecycles, the audit log) stays Conveyor's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conveyor.domain.buildinfo import MAX_COMMITS, MESSAGE_MAX, URL, is_sha
from conveyor.domain.documents import key
from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.packages import split_file_name
from conveyor.domain.versions import Version, is_valid_version

# Strict semver, and not below 2022.3.5512: the clients refuse to create releases and
# deployments through an older server (``semver.lt``), and a non-semver value breaks them.
SERVER_VERSION = "2025.1.0"
API_VERSION = "3.0.0"
# One space: Conveyor has no spaces, and the clients need one named "Default".
SPACE_ID = "Spaces-1"
SPACE_NAME = "Default"
BUILT_IN_FEED_ID = "feeds-builtin"
BUILT_IN_FEED_NAME = "Octopus Server (built-in)"
# The channel every project without channels has (conveyor.domain.channels).
DEFAULT_CHANNEL = "Default"
CHANNEL_ID = re.compile(r"Channels-(\d+)(?:-([a-z0-9]+(?:-[a-z0-9]+)*))?", re.IGNORECASE)
# What the clients send for "all of them", and the page size when they send nothing.
TAKE_ALL = 2_147_483_647
DEFAULT_TAKE = 30
CAPABILITIES = ("GetAllSpacesRequest",)

TASK_STATES: Mapping[str, str] = {
    "queued": "Queued",
    "executing": "Executing",
    # A task waiting for a person runs, as far as Octopus is concerned, with an interruption.
    "waiting": "Executing",
    "success": "Success",
    "failed": "Failed",
    "canceled": "Canceled",
    "timed_out": "TimedOut",
}
ENDED = frozenset({"success", "failed", "canceled", "timed_out"})
# Octopus task state names (any case) -> Conveyor's, for the ``taskState`` filter.
STATE_FILTERS: Mapping[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "executing": ("executing", "waiting"),
    "cancelling": ("executing", "waiting"),
    "success": ("success",),
    "failed": ("failed",),
    "canceled": ("canceled",),
    "timedout": ("timed_out",),
}
OVERWRITE_MODES = ("FailIfExists", "OverwriteExisting", "IgnoreIfExists")


def channel_id(project_id: int, channel: str = DEFAULT_CHANNEL) -> str:
    """A channel's id: ``Channels-<project number>`` for a channel named "Default" (every
    project without channels has one), ``Channels-<project number>-<its name's slug>`` for
    another. Stable while the channel keeps its name, which is how a release names it."""
    slug = key(channel)
    return (
        f"Channels-{project_id}"
        if slug == key(DEFAULT_CHANNEL)
        else f"Channels-{project_id}-{slug}"
    )


def split_channel_id(ref: str) -> tuple[int, str] | None:
    """``Channels-3-hotfix`` -> ``(3, "hotfix")``, ``Channels-3`` -> ``(3, "default")``: the
    project's number and the channel's key; None if ``ref`` is not a channel id."""
    found = CHANNEL_ID.fullmatch(ref.strip())
    if found is None:
        return None
    return int(found[1]), (found[2] or key(DEFAULT_CHANNEL)).lower()


def task_state(state: str, cancel_requested: bool = False) -> str:
    """Conveyor's task state as Octopus names it; a cancel asked of a running task is
    ``Cancelling`` until the task has stopped."""
    if cancel_requested and state not in ENDED:
        return "Cancelling"
    return TASK_STATES.get(state, "Queued")


def is_completed(state: str) -> bool:
    return state in ENDED


def state_filter(value: str) -> tuple[str, ...]:
    """``taskState=Executing`` -> Conveyor's states it covers; ValidationFailed for others."""
    found = STATE_FILTERS.get(value.strip().lower())
    if found is None:
        names = ", ".join(sorted({task_state(s) for s in TASK_STATES} | {"Cancelling"}))
        raise ValidationFailed(
            Problem(("taskState",), f'"{value}" is not a task state; use one of: {names}')
        )
    return found


def split_ids(values: Iterable[str]) -> list[str]:
    """``ids=a,b`` (the clients join a list with commas) and repeated ``ids``: each id once,
    in the order given."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def matches_partial(name: str, partial: str | None) -> bool:
    """``partialName``: a case-insensitive substring (the clients then pick the exact name)."""
    return not partial or partial.casefold() in name.casefold()


def overwrite_mode(value: str | None) -> str:
    """``overwriteMode`` as Octopus spells it (any case); FailIfExists when absent."""
    if not value:
        return "FailIfExists"
    for mode in OVERWRITE_MODES:
        if mode.lower() == value.strip().lower():
            return mode
    raise ValidationFailed(
        Problem(
            ("overwriteMode",),
            f'"{value}" is not an overwrite mode; use one of: {", ".join(OVERWRITE_MODES)}',
        )
    )


def page_bounds(skip: int | None, take: int | None) -> tuple[int, int]:
    """``skip`` and ``take`` as given, or the defaults; never negative."""
    start = max(skip or 0, 0)
    size = DEFAULT_TAKE if take is None else max(take, 0)
    return start, size


def collection(
    item_type: str, items: Sequence[Any], skip: int | None, take: int | None, path: str
) -> dict[str, Any]:
    """One page of ``items`` (all of them, already filtered) as an Octopus resource collection."""
    start, size = page_bounds(skip, take)
    page = list(items[start : start + size]) if size else []
    total = len(items)
    per_page = min(size, TAKE_ALL) or 1
    pages = max((total + per_page - 1) // per_page, 1)
    return {
        "ItemType": item_type,
        "TotalResults": total,
        "ItemsPerPage": size,
        "NumberOfPages": pages,
        "LastPageNumber": pages - 1,
        "Items": page,
        "Links": {
            "Self": f"{path}?skip={start}&take={size}",
            "Template": path + "{?skip,take,ids,partialName}",
            "Page.All": f"{path}?skip=0&take={TAKE_ALL}",
            "Page.Current": f"{path}?skip={start}&take={size}",
            "Page.Last": f"{path}?skip={(pages - 1) * per_page}&take={size}",
        },
    }


def error_body(message: str, errors: Sequence[str] = ()) -> dict[str, Any]:
    """What the clients read from a failed request: the message, then each error on a line."""
    return {"ErrorMessage": message, "Errors": list(errors)}


# ---------------------------------------------------------------- releases: package versions


def select_packages(
    steps: Sequence[tuple[str, str]],
    default_version: str | None,
    selections: Sequence[str],
) -> dict[str, str]:
    """The version of each package a release pins, from create-release's ``PackageVersion``
    (every package) and ``Packages`` (``StepName:Version``, ``PackageID:Version`` or
    ``StepName:PackageName:Version``; ``*`` for any step or package). ``steps`` are the
    project's package steps as (step name, package id). Later and more specific entries win;
    Conveyor pins one version per package, so two steps of one package take one version."""
    problems: list[Problem] = []
    chosen: dict[str, str] = {}
    if default_version:
        for _, package in steps:
            chosen[key(package)] = default_version
    parsed: list[tuple[int, str, str, str, str]] = []  # (specificity, step, package, version, raw)
    for raw in selections:
        parts = [p.strip() for p in raw.split(":")]
        if len(parts) == 2 and all(parts):
            step, package, version = parts[0], parts[0], parts[1]
            specificity = 0 if parts[0] == "*" else 1
            parsed.append((specificity, step, package, version, raw))
        elif len(parts) == 3 and all(parts):
            step, package, version = parts
            specificity = (step != "*") + (package != "*")
            parsed.append((specificity, step, package, version, raw))
        else:
            problems.append(
                Problem(
                    ("Packages",),
                    f'"{raw}" must look like StepName:Version, PackageID:Version or '
                    "StepName:PackageName:Version",
                )
            )
    for specificity, step, package, version, raw in sorted(parsed, key=lambda p: p[0]):
        two_part = raw.count(":") == 1
        matched = [
            pkg
            for step_name, pkg in steps
            if _selected(step, package, step_name, pkg, two_part=two_part, wild=specificity == 0)
        ]
        if not matched:
            known = ", ".join(f"{s} ({p})" for s, p in steps) or "none"
            problems.append(
                Problem(
                    ("Packages",),
                    f'"{raw}" names no package step of the project (its package steps: {known})',
                )
            )
            continue
        for pkg in matched:
            chosen[key(pkg)] = version
    if problems:
        raise ValidationFailed(problems)
    return {pkg: chosen[key(pkg)] for _, pkg in steps if key(pkg) in chosen}


def _selected(
    step: str, package: str, step_name: str, pkg: str, *, two_part: bool, wild: bool
) -> bool:
    if wild:
        return True
    if two_part:  # the one name is a step's or a package's
        return key(step) in (key(step_name), key(pkg))
    return (step == "*" or key(step) == key(step_name)) and (
        package == "*" or key(package) == key(pkg)
    )


# ---------------------------------------------------------------- packages and build information


def package_reference(ref: str) -> tuple[str, str] | None:
    """Octopus's id of a built-in feed package, ``packages-Hello.1.0.0`` -> (id, version)."""
    head, sep, rest = ref.partition("-")
    if not sep or head.lower() != "packages" or not rest:
        return None
    named = split_file_name(rest + ".zip")
    return (named[0], named[1]) if named else None


BUILD_TEXT_MAX = 500
BUILD_FIELDS = (
    "Branch",
    "BuildEnvironment",
    "BuildNumber",
    "BuildUrl",
    "VcsCommitNumber",
    "VcsRoot",
    "VcsType",
)


def normalise_build_information(data: Any) -> dict[str, Any]:
    """``OctopusBuildInformation`` as a build server pushes it, checked and bounded: the text
    fields, and ``Commits`` as ``[{Id, Comment}]`` (at most 1000, comments trimmed)."""
    if data is None:
        return {"Commits": []}
    if not isinstance(data, dict):
        raise ValidationFailed(
            Problem(("OctopusBuildInformation",), "must be an object (Branch, BuildUrl, Commits…)")
        )
    problems: list[Problem] = []
    out: dict[str, Any] = {}
    for name in BUILD_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str | int):
            problems.append(Problem(("OctopusBuildInformation", name), "must be text"))
            continue
        text = str(value).strip()
        out[name] = text if len(text) <= BUILD_TEXT_MAX else text[: BUILD_TEXT_MAX - 1] + "…"
    commits = data.get("Commits") or []
    if not isinstance(commits, list):
        problems.append(Problem(("OctopusBuildInformation", "Commits"), "must be a list"))
        commits = []
    if len(commits) > MAX_COMMITS:
        problems.append(
            Problem(
                ("OctopusBuildInformation", "Commits"),
                f"has {len(commits)} commits; at most {MAX_COMMITS}: send the newest",
            )
        )
        commits = []
    out["Commits"] = []
    for i, commit in enumerate(commits):
        if not isinstance(commit, dict) or not isinstance(commit.get("Id", ""), str):
            problems.append(
                Problem(("OctopusBuildInformation", "Commits", i), "must be {Id, Comment}")
            )
            continue
        comment = str(commit.get("Comment") or "").strip()
        if len(comment) > MESSAGE_MAX:
            comment = comment[: MESSAGE_MAX - 1] + "…"
        out["Commits"].append({"Id": str(commit.get("Id") or "").strip(), "Comment": comment})
    if problems:
        raise ValidationFailed(problems)
    return out


def conveyor_build(info: Mapping[str, Any]) -> dict[str, Any]:
    """Pushed build information as a release's build (``commit``, ``branch``, ``build_url``,
    ``commits``): what Conveyor's change detection and plans read. What Conveyor cannot use (a
    commit id that is not a hex SHA, a link that is not http(s)) is left out, not refused: the
    build server pushed it already."""
    build: dict[str, Any] = {}
    commit = info.get("VcsCommitNumber")
    if is_sha(commit):
        build["commit"] = str(commit).lower()
    branch = str(info.get("Branch") or "").strip().removeprefix("refs/heads/")
    if branch:
        build["branch"] = branch[:255]
    url = str(info.get("BuildUrl") or "").strip()
    if url and URL.fullmatch(url):
        build["build_url"] = url
    commits = [
        {"sha": c["Id"].lower(), "author": "", "message": c.get("Comment", "")}
        for c in info.get("Commits") or []
        if is_sha(c.get("Id"))
    ]
    if commits:
        build["commits"] = commits[:MAX_COMMITS]
    return build


def version_identity(text: str) -> str:
    """One text for every spelling of a version's precedence: ``1.0`` and ``1.0.0.0`` are
    ``1.0.0.0``. Raises ValidationFailed for text that is no version."""
    version = Version(text)
    padded = version.release + (0,) * (4 - len(version.release))
    numbers = ".".join(str(n) for n in padded)
    return numbers + ("-" + ".".join(version.prerelease) if version.prerelease else "")


def same_version(left: str, right: str) -> bool:
    """Versions compare by precedence (1.0.0 is 1.0.0.0); text that is no version never matches."""
    return is_valid_version(left) and is_valid_version(right) and Version(left) == Version(right)
