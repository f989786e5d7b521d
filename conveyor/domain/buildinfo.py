"""Build information on a release: the commit it was built from, the branch and build that made
it, and the commits it brings. Checked and bounded on the way in (it comes from build servers),
and compared between releases to say what a deployment brings to an environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.domain.versions import Version

FIELDS = ("commit", "branch", "build_url", "commits")
# One release's list, and what a plan shows for one project: enough for any real build, and a
# bound on what a build server can make the server store.
MAX_COMMITS = 1000
MESSAGE_MAX = 1000
AUTHOR_MAX = 200
BRANCH_MAX = 255
URL_MAX = 2000
SHA = re.compile(r"[0-9a-fA-F]{7,64}")
# Only web links: the URL is shown as a link, and a javascript: URL there would run.
URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)


def is_sha(value: object) -> bool:
    return isinstance(value, str) and SHA.fullmatch(value) is not None


def _trim(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _sha(value: Any, path: tuple[str | int, ...], problems: list[Problem]) -> str | None:
    if value is None or value == "":
        return None
    if not is_sha(value):
        problems.append(
            Problem(path, f'"{value}" is not a commit id: give its hex SHA (7 to 64 characters)')
        )
        return None
    return str(value).lower()


def commit_time(value: Any) -> str | None:
    """A commit's time as ISO 8601 in UTC (``2026-11-30T09:15:00Z``); None for text that is no
    time with its offset (a time without one could be any hour)."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: Any, path: tuple[str | int, ...], problems: list[Problem]) -> str | None:
    if value is None or value == "":
        return None
    found = commit_time(value)
    if found is None:
        problems.append(
            Problem(
                path,
                f'"{value}" is not a time: give ISO 8601 with its offset, such as '
                "2026-11-30T09:15:00Z",
            )
        )
    return found


def _text(value: Any, path: tuple[str | int, ...], limit: int, problems: list[Problem]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(Problem(path, "must be text"))
        return ""
    return _trim(value, limit)


def _commits(value: Any, problems: list[Problem]) -> list[dict[str, str]]:
    path: tuple[str | int, ...] = ("build", "commits")
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(path, "must be a list of {sha, author, message, timestamp}"))
        return []
    if len(value) > MAX_COMMITS:
        problems.append(
            Problem(path, f"has {len(value)} commits; at most {MAX_COMMITS}: send the newest")
        )
        return []
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        here = (*path, i)
        if not isinstance(item, dict):
            problems.append(Problem(here, "must be an object with sha, author and message"))
            continue
        unknown = sorted(set(item) - {"sha", "author", "message", "timestamp"})
        if unknown:
            problems.append(Problem(here, f"has unknown fields: {', '.join(map(str, unknown))}"))
        sha = _sha(item.get("sha"), (*here, "sha"), problems)
        if sha is None:
            if not item.get("sha"):
                problems.append(Problem((*here, "sha"), "is required"))
            continue
        if sha in seen:
            continue
        seen.add(sha)
        commit = {
            "sha": sha,
            "author": _text(item.get("author"), (*here, "author"), AUTHOR_MAX, problems),
            "message": _text(item.get("message"), (*here, "message"), MESSAGE_MAX, problems),
        }
        # When it was committed (lead time reads it), only where it is known.
        when = _time(item.get("timestamp"), (*here, "timestamp"), problems)
        if when:
            commit["timestamp"] = when
        out.append(commit)
    return out


def normalise_build(data: Any) -> dict[str, Any]:
    """``{"commit", "branch", "build_url", "commits"}`` checked, trimmed and complete, or ``{}``
    for none. Raises ``ValidationFailed`` naming every field that is wrong."""
    if data is None or data == {}:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed(
            Problem(("build",), "must be an object with commit, branch, build_url and commits")
        )
    problems: list[Problem] = []
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        problems.append(
            Problem(
                ("build",),
                f"has unknown fields {', '.join(map(str, unknown))}: "
                f"build information has {', '.join(FIELDS)}",
            )
        )
    commit = _sha(data.get("commit"), ("build", "commit"), problems)
    branch = _text(data.get("branch"), ("build", "branch"), BRANCH_MAX, problems)
    url = _text(data.get("build_url"), ("build", "build_url"), URL_MAX, problems)
    if url and not URL.fullmatch(url):
        problems.append(Problem(("build", "build_url"), f'"{url}" is not an http(s) URL'))
    commits = _commits(data.get("commits"), problems)
    if problems:
        raise ValidationFailed(problems)
    return {
        "commit": commit,
        "branch": branch or None,
        "build_url": url or None,
        "commits": commits,
    }


@dataclass
class Brought:
    """What deploying ``release`` brings where ``current`` is: the commits of every release
    after ``current`` up to ``release`` (newest first), the releases they came from, and those
    releases that recorded no commits (so the list may be incomplete)."""

    release: str
    current: str | None
    commits: list[dict[str, str]] = field(default_factory=list)
    releases: list[str] = field(default_factory=list)
    without_commits: list[str] = field(default_factory=list)
    # The environment has a newer release: deploying this one takes commits away.
    rollback: bool = False
    truncated: bool = False


def brought(
    releases: Iterable[tuple[str, Mapping[str, Any]]],
    current: str | None,
    release: str,
    limit: int = MAX_COMMITS,
) -> Brought:
    """``releases`` are one project's (version, build) pairs, in any order; the commits of
    those up to ``current`` count as there already."""
    high = Version(release)
    low = Version(current) if current else None
    if low is not None and low > high:
        return Brought(release, current, rollback=True)
    chosen = sorted(
        ((Version(v), v, b) for v, b in releases if (low is None or Version(v) > low)),
        key=lambda item: item[0],
        reverse=True,
    )
    result = Brought(release, current)
    # What the environment has already: the commits of the releases up to the current one.
    seen = {
        str(c.get("sha"))
        for v, b in releases
        if low is not None and Version(v) <= low and isinstance(b, Mapping)
        for c in b.get("commits") or []
        if isinstance(c, Mapping)
    }
    for parsed, version, build in chosen:
        if parsed > high:
            continue
        result.releases.append(version)
        commits = (build.get("commits") or []) if isinstance(build, Mapping) else []
        if not commits:
            result.without_commits.append(version)
        for commit in commits:
            sha = commit.get("sha") if isinstance(commit, Mapping) else None
            if not sha or sha in seen:
                continue
            seen.add(sha)
            if len(result.commits) >= limit:
                result.truncated = True
                break
            result.commits.append(
                {
                    "sha": sha,
                    "author": commit.get("author", ""),
                    "message": commit.get("message", ""),
                    "release": version,
                }
            )
    return result
