"""Build information of a package version: the build that made it (branch, number, link), the
version control commit and the commits it was built from. Build servers push it (Octopus's
``build-information`` or Conveyor's own API); a release that pins package versions takes its
build from theirs. Pure rules: checking what is pushed, and what a release makes of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from conveyor.domain.buildinfo import (
    AUTHOR_MAX,
    BRANCH_MAX,
    MAX_COMMITS,
    MESSAGE_MAX,
    URL,
    URL_MAX,
    commit_time,
    is_sha,
)
from conveyor.domain.errors import Problem, ValidationFailed

# The text fields, each a column of its own; what Octopus calls them.
TEXT_FIELDS: Mapping[str, str] = {
    "branch": "Branch",
    "build_environment": "BuildEnvironment",
    "build_number": "BuildNumber",
    "build_url": "BuildUrl",
    "vcs_type": "VcsType",
    "vcs_root": "VcsRoot",
    "vcs_commit": "VcsCommitNumber",
}
TEXT_MAX = 500
LONG_FIELDS = frozenset({"build_url", "vcs_root"})  # up to URL_MAX
COMMIT_ID_MAX = 100
COMMIT_FIELDS = ("id", "sha", "comment", "message", "author", "timestamp", "link")

FAIL = "FailIfExists"
OVERWRITE = "OverwriteExisting"
IGNORE = "IgnoreIfExists"
# Octopus's names, and the short ones Conveyor's API also takes.
MODES: Mapping[str, str] = {
    "failifexists": FAIL,
    "fail": FAIL,
    "overwriteexisting": OVERWRITE,
    "overwrite": OVERWRITE,
    "ignoreifexists": IGNORE,
    "ignore": IGNORE,
}


@dataclass(frozen=True)
class Record:
    """Build information as stored: text fields (None when not given) and the commits, each
    ``{id, comment}`` with ``author``, ``timestamp`` (ISO 8601, UTC) and ``link`` when known."""

    branch: str | None = None
    build_environment: str | None = None
    build_number: str | None = None
    build_url: str | None = None
    vcs_type: str | None = None
    vcs_root: str | None = None
    vcs_commit: str | None = None
    commits: tuple[Mapping[str, str], ...] = field(default_factory=tuple)

    def columns(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in TEXT_FIELDS},
            "commits": [dict(c) for c in self.commits],
        }

    def as_dict(self) -> dict[str, Any]:
        return self.columns()


def record_of(row: Mapping[str, Any]) -> Record:
    """A stored row (or anything with the columns) as a Record."""
    commits = row.get("commits") or []
    return Record(
        **{name: row.get(name) for name in TEXT_FIELDS},
        commits=tuple(dict(c) for c in commits if isinstance(c, Mapping)),
    )


def overwrite_mode(value: str | None) -> str:
    """``fail`` / ``overwrite`` / ``ignore`` or Octopus's names (any case); fail when absent."""
    if value is None or not value.strip():
        return FAIL
    found = MODES.get(value.strip().lower())
    if found is None:
        raise ValidationFailed(
            Problem(
                ("mode",),
                f'"{value}" is not an overwrite mode; use fail, overwrite or ignore '
                f"({FAIL}, {OVERWRITE}, {IGNORE})",
            )
        )
    return found


def without_credentials(url: str) -> str:
    """A URL without the user and password it may carry (``https://token@host/…``): a build
    server's repository address must not put a token into the database, the API or the log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------- Conveyor's own API


def from_api(data: Any) -> Record:
    """``{branch, build_number, build_url, build_environment, vcs_type, vcs_root, vcs_commit,
    commits: [{id or sha, comment or message, author, timestamp, link}]}`` checked; raises
    ValidationFailed naming every field that is wrong."""
    if data is None:
        return Record()
    if not isinstance(data, dict):
        raise ValidationFailed(
            Problem((), "must be an object: branch, build_number, build_url, vcs_commit, commits…")
        )
    problems: list[Problem] = []
    unknown = sorted(str(k) for k in set(data) - set(TEXT_FIELDS) - {"commits"})
    if unknown:
        problems.append(
            Problem(
                (),
                f"has unknown fields {', '.join(unknown)}: build information has "
                f"{', '.join(TEXT_FIELDS)} and commits",
            )
        )
    values: dict[str, str | None] = {}
    for name in TEXT_FIELDS:
        values[name] = _api_text(data.get(name), name, problems)
    url = values["build_url"]
    if url and not URL.fullmatch(url):
        problems.append(Problem(("build_url",), f'"{url}" is not an http(s) URL'))
    if url:
        values["build_url"] = without_credentials(url)
    if values["vcs_root"]:
        values["vcs_root"] = without_credentials(values["vcs_root"])
    commits = _api_commits(data.get("commits"), problems)
    if problems:
        raise ValidationFailed(problems)
    return Record(**values, commits=tuple(commits))


def _api_text(value: Any, name: str, problems: list[Problem]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(Problem((name,), "must be text"))
        return None
    text = str(value).strip()
    limit = URL_MAX if name in LONG_FIELDS else TEXT_MAX
    if len(text) > limit:
        problems.append(Problem((name,), f"is {len(text)} characters long; at most {limit}"))
        return None
    return text or None


def _api_commits(value: Any, problems: list[Problem]) -> list[dict[str, str]]:
    path: tuple[str | int, ...] = ("commits",)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(path, "must be a list of {id, comment, author, timestamp, link}"))
        return []
    if len(value) > MAX_COMMITS:
        problems.append(
            Problem(path, f"has {len(value)} commits; at most {MAX_COMMITS}: send the newest")
        )
        return []
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        here = (*path, i)
        if not isinstance(item, dict):
            problems.append(Problem(here, "must be an object: {id, comment, author, timestamp}"))
            continue
        unknown = sorted(str(k) for k in set(item) - set(COMMIT_FIELDS))
        if unknown:
            problems.append(
                Problem(
                    here,
                    f"has unknown fields {', '.join(unknown)}: a commit has id (or sha), comment "
                    "(or message), author, timestamp and link",
                )
            )
        ident = item.get("id", item.get("sha"))
        if not isinstance(ident, str | int) or isinstance(ident, bool) or not str(ident).strip():
            problems.append(Problem((*here, "id"), "is required: the commit's id (its SHA)"))
            continue
        ident = str(ident).strip()
        if len(ident) > COMMIT_ID_MAX:
            problems.append(Problem((*here, "id"), f"is longer than {COMMIT_ID_MAX} characters"))
            continue
        commit = {"id": ident}
        comment = item.get("comment", item.get("message"))
        author = item.get("author")
        texts = (("comment", comment, MESSAGE_MAX), ("author", author, AUTHOR_MAX))
        for name, text, limit in texts:
            if text is None:
                continue
            if not isinstance(text, str):
                problems.append(Problem((*here, name), "must be text"))
            elif text.strip():
                commit[name] = _trim(text.strip(), limit)
        when = item.get("timestamp")
        if when not in (None, ""):
            found = commit_time(when)
            if found is None:
                problems.append(
                    Problem(
                        (*here, "timestamp"),
                        f'"{when}" is not a time: give ISO 8601 with its offset, such as '
                        "2026-11-30T09:15:00Z",
                    )
                )
            else:
                commit["timestamp"] = found
        link = item.get("link")
        if link not in (None, ""):
            if not isinstance(link, str) or len(link) > URL_MAX or not URL.fullmatch(link):
                problems.append(Problem((*here, "link"), f'"{link}" is not an http(s) URL'))
            else:
                commit["link"] = without_credentials(link)
        out.append(commit)
    return out


# ---------------------------------------------------------------- the Octopus API


def from_octopus(info: Mapping[str, Any]) -> Record:
    """``OctopusBuildInformation`` as ``octopus.normalise_build_information`` left it (bounded
    text, ``Commits[{Id, Comment}]``). Kept as pushed (the clients' own rules), less the
    credentials a URL may carry."""
    values: dict[str, str | None] = {}
    for name, octopus_name in TEXT_FIELDS.items():
        text = str(info.get(octopus_name) or "").strip()
        values[name] = text or None
    for name in ("build_url", "vcs_root"):
        if values[name]:
            values[name] = without_credentials(str(values[name]))
    commits = []
    for c in info.get("Commits") or []:
        ident = str(c.get("Id") or "").strip()[:COMMIT_ID_MAX]
        if not ident:
            continue
        commit = {"id": ident}
        if c.get("Comment"):
            commit["comment"] = str(c["Comment"])
        commits.append(commit)
    return Record(**values, commits=tuple(commits))


def octopus_info(record: Record) -> dict[str, Any]:
    """The record in Octopus's names (``PackageVersionBuildInformation``'s fields)."""
    out: dict[str, Any] = {
        octopus_name: getattr(record, name) or "" for name, octopus_name in TEXT_FIELDS.items()
    }
    out["Commits"] = [
        {"Id": c.get("id", ""), "Comment": c.get("comment", ""), "LinkUrl": c.get("link", "")}
        for c in record.commits
    ]
    return out


# ---------------------------------------------------------------- audit and releases


def summary(record: Record) -> dict[str, Any]:
    """What the audit event keeps: the build and how many commits, not the commits."""
    return {
        **{name: getattr(record, name) for name in TEXT_FIELDS if getattr(record, name)},
        "commits": len(record.commits),
    }


def release_build(records: Iterable[Record]) -> dict[str, Any]:
    """One build for a release from the build information of the packages it pins (in the
    release's order): the first package's commit, branch and build link that Conveyor can use
    (a hex SHA, an http(s) link), and the commits of all of them, each once, with their times.
    What Conveyor cannot use (an id that is not a SHA) is left out."""
    build: dict[str, Any] = {}
    commits: list[dict[str, str]] = []
    seen: set[str] = set()
    for record in records:
        if "commit" not in build and is_sha(record.vcs_commit):
            build["commit"] = str(record.vcs_commit).lower()
        branch = (record.branch or "").strip().removeprefix("refs/heads/")
        if branch and "branch" not in build:
            build["branch"] = branch[:BRANCH_MAX]
        url = (record.build_url or "").strip()
        if url and "build_url" not in build and len(url) <= URL_MAX and URL.fullmatch(url):
            build["build_url"] = url
        for c in record.commits:
            sha = c.get("id")
            if not is_sha(sha) or str(sha).lower() in seen:
                continue
            seen.add(str(sha).lower())
            commit = {
                "sha": str(sha).lower(),
                "author": _trim(str(c.get("author") or ""), AUTHOR_MAX),
                "message": _trim(str(c.get("comment") or ""), MESSAGE_MAX),
            }
            if c.get("timestamp"):
                commit["timestamp"] = str(c["timestamp"])
            commits.append(commit)
    if commits:
        build["commits"] = commits[:MAX_COMMITS]
    return build


def has_own_build(build: Mapping[str, Any] | None) -> bool:
    """A release brings its own build when it names a commit or commits (``--commit``)."""
    return bool(build and (build.get("commit") or build.get("commits")))


def with_packages(own: Mapping[str, Any], from_packages: Mapping[str, Any]) -> dict[str, Any]:
    """The build of a release: its own when it names a commit, else its packages' (with the
    branch and build link it gave, where it gave them)."""
    if has_own_build(own) or not from_packages:
        return dict(own)
    out = dict(from_packages)
    for name in ("branch", "build_url"):
        if own.get(name):
            out[name] = own[name]
    return out
