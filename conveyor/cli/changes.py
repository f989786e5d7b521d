"""`conveyor changes`: which projects the commits of a git repository concern.

The files changed between two commits (read locally with git) are matched against each
project's watch paths (read from the server), which are relative to the folder ``--repo``
names: the top of the repository, or the folder inside it that holds the application (the
example's ``examples/octopetshop``). ``--since last-release`` starts each project at
the commit recorded on its newest release, so a change whose build or release failed is still
reported by the next run; ``--since last-deployed:ENV`` at the commit of the release current in
ENV. Without ``--since``, the ``--until`` commit alone is shown (a merge against its first
parent: what merging brought).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Failure, Format, emit_json, err, say
from conveyor.services.gitrepo import Repository

T = TypeVar("T")

LAST_RELEASE = "last-release"
LAST_DEPLOYED = "last-deployed:"

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="A revision, last-release (each project's newest release) or last-deployed:ENV; "
        "omitted: the --until commit alone",
    ),
]
UntilOpt = Annotated[str, typer.Option("--until", help="A revision")]
RepoOpt = Annotated[
    str,
    typer.Option(
        "--repo",
        help="The folder of the git repository that watch paths are relative to "
        "(its top, or a folder inside it)",
    ),
]


def _run(fmt: Format, work: Callable[[], T]) -> T:
    from conveyor.cli.main import run

    return run(fmt, work)


def short(sha: str | None) -> str:
    return sha[:10] if sha else "the empty tree"


@dataclass
class Project:
    """One project as change detection sees it: its watch paths and where it starts."""

    name: str
    watch_paths: list[str]
    disabled: bool = False
    since: str | None = None  # the commit compared from; None: nothing (every file counts)
    release: str | None = None  # the release that commit was recorded on (last-* modes)
    from_scratch: str = ""  # why there is no commit to start from (last-* modes)
    files: list[str] = field(default_factory=list)


@dataclass
class Detection:
    since: str | None  # as reported: a commit, last-release, last-deployed:ENV
    until: str
    mode: str  # "revision", "commit" (--since omitted), "release", "deployed"
    environment: str | None
    projects: list[Project]
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[Project]:
        return [p for p in self.projects if p.files]

    def as_json(self) -> dict[str, Any]:
        changed = self.changed
        return {
            "since": self.since,
            "until": self.until,
            "projects": [p.name for p in changed],
            "files": {p.name: p.files for p in changed},
        }


def _projects(client: Client) -> list[Project]:
    docs = client.get("/projects")
    return [
        Project(d["name"], list(d.get("watch_paths") or []), bool(d.get("disabled"))) for d in docs
    ]


def _baselines(client: Client, environment: str | None, notes: list[str]) -> list[Project]:
    params = {"environment": environment} if environment else {}
    out = []
    for item in client.get("/changes/baselines", params=params):
        project = Project(item["project"], list(item["watch_paths"]), bool(item["disabled"]))
        project.since, project.release = item["commit"], item["release"]
        if project.watch_paths and not project.since:
            project.from_scratch = item["reason"]
        out.append(project)
    return out


def detect(client: Client, repo: Repository, since: str | None, until: str) -> Detection:
    """What changed, per project; raises ``Failure``/``ValidationFailed`` for bad input."""
    from conveyor.domain.changes import matching  # pathspec: only for the commands that match

    until_sha = repo.resolve(until)
    notes: list[str] = []
    environment = None
    reported: str | None
    if since == LAST_RELEASE:
        mode, reported = "release", since
        projects = _baselines(client, None, notes)
    elif since is not None and since.startswith(LAST_DEPLOYED):
        environment = since[len(LAST_DEPLOYED) :].strip()
        if not environment:
            raise Failure("bad_input", "--since last-deployed:ENV needs an environment name")
        mode, reported = "deployed", since
        projects = _baselines(client, environment, notes)
    else:
        base = repo.resolve(since) if since is not None else repo.first_parent(until_sha)
        mode, reported = ("revision" if since is not None else "commit"), base
        projects = _projects(client)
        for project in projects:
            project.since = base
    watched = [p for p in projects if p.watch_paths]
    missing = [p for p in watched if p.since and not repo.has_commit(p.since)]
    if missing:
        listed = ", ".join(f"{p.name} {p.release} ({short(p.since)})" for p in missing)
        raise Failure(
            "bad_input",
            f"the commits these releases were built from are not in the repository at "
            f"{repo.folder.resolve()}: {listed}. Fetch the whole history (actions/checkout "
            "fetch-depth: 0, GIT_DEPTH: 0, or git fetch --unshallow)",
        )
    diffs: dict[str | None, list[str]] = {}
    for project in watched:
        if project.since not in diffs:
            changes = repo.changed_files(project.since, until_sha)
            diffs[project.since] = repo.relative([path for c in changes for path in c.paths])
        project.files = matching(
            project.watch_paths, diffs[project.since], f"the watch paths of {project.name}"
        )
    notes.extend(scratch_note(p, repo) for p in watched if p.from_scratch)
    return Detection(reported, until_sha, mode, environment, projects, notes)


def scratch_note(project: Project, repo: Repository) -> str:
    """Why a project with no commit to start from changed, or why it did not after all (its
    watch paths match no file: they are relative to the ``--repo`` folder)."""
    if project.files:
        return f"{project.name}: {project.from_scratch}, so every file it watches counts as changed"
    return (
        f"{project.name}: {project.from_scratch}, so every file it watches would count as "
        f"changed, but no file in {repo.folder.resolve()} matches its watch paths "
        f"({', '.join(project.watch_paths)}): they are relative to the folder --repo names"
    )


def print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _heading(found: Detection, until: str) -> str:
    at = f"{short(found.until)} ({until})" if until != found.until else short(found.until)
    if found.mode == "release":
        return f"Up to {at}, each project since the commit of its newest release:"
    if found.mode == "deployed":
        return f"Up to {at}, each project since its release current in {found.environment}:"
    if found.mode == "commit":
        base = f"its first parent {short(found.since)}" if found.since else "nothing (a root)"
        return f"Commit {at}, compared with {base}:"
    return f"From {short(found.since)} to {at}:"


def print_detection(found: Detection, until: str) -> None:
    say(_heading(found, until))
    for p in found.changed:
        origin = ""
        if found.mode in ("release", "deployed"):
            origin = f" (since {p.release}, {short(p.since)})" if p.since else " (from scratch)"
        count = len(p.files)
        say(f"  {p.name}{origin}: {count} file{'s' if count != 1 else ''}")
        for path in p.files:
            say(f"    {path}")
    unchanged = [p.name for p in found.projects if p.watch_paths and not p.files]
    if not found.changed:
        say("  No project changed.")
    if unchanged:
        say(f"Unchanged: {', '.join(unchanged)}")
    unwatched = [p.name for p in found.projects if not p.watch_paths]
    if unwatched:
        say(f"Without watch paths (never changed by commits): {', '.join(unwatched)}")


def changes(
    since: SinceOpt = None,
    until: UntilOpt = "HEAD",
    repo: RepoOpt = ".",
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Which projects the commits between two revisions concern, and their changed files."""

    def work() -> Detection:
        repository = Repository.open(repo)
        with Client(server, api_key) as client:
            return detect(client, repository, since, until)

    found = _run(output, work)
    print_notes(found.notes)
    if output == Format.JSON:
        emit_json(found.as_json())
        return
    print_detection(found, until)
