"""Build information for `conveyor release create`, and releases for exactly what changed.

The CLI reads the repository (the server never sees it) and sends what it found: the commit a
release is built from and the commits since the project's previous release, only those that
touched its watch paths (all of them for a project without). ``--changed-since`` creates one
release per changed project, each pinned to the packages of ``--version`` that the build
server packed and pushed before; when one is missing nothing is created.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from conveyor.cli.changes import Detection, Project, detect, print_notes, short
from conveyor.cli.client import Client
from conveyor.cli.output import Failure, Format, emit_json, fail, say
from conveyor.domain.buildinfo import MAX_COMMITS, is_sha
from conveyor.domain.changes import matching
from conveyor.domain.documents import key
from conveyor.domain.errors import ValidationFailed
from conveyor.services.gitrepo import Repository

# Commits shown per project in text; JSON has them all.
SHOWN = 10


def _seg(value: str) -> str:
    return quote(value, safe="")


def _listed(repo: Repository, since: str | None, until: str, patterns: list[str]) -> list[Any]:
    touching = (lambda paths: bool(matching(patterns, paths))) if patterns else None
    return [c.as_dict() for c in repo.commits(since, until, MAX_COMMITS, touching)]


def collect_build(
    client: Client,
    project: str,
    *,
    commit: str | None,
    branch: str | None,
    build_url: str | None,
    commits_from: str | None,
    repo: str | None,
) -> tuple[dict[str, Any], list[str]]:
    """The build information of ``release create --commit …`` and notes on what it lacks.

    Reading the repository is required when ``--repo`` or ``--commits-from`` says so; with
    neither, a commit that cannot be read locally is recorded without its commit list."""
    build: dict[str, Any] = {"commit": commit, "branch": branch, "build_url": build_url}
    notes: list[str] = []
    if commits_from and not commit:
        raise Failure("bad_input", "--commits-from needs --commit: the commit the release is of")
    if not commit:
        return build, notes
    explicit = repo is not None or commits_from is not None
    try:
        repository = Repository.open(repo or ".")
        build["commit"] = repository.resolve(commit)
    except ValidationFailed as exc:
        if explicit or not is_sha(commit):
            raise
        notes.append(f"{exc.message}; the release records the commit without its commit list")
        return build, notes
    found = client.get("/changes/baselines", params={"project": project})[0]
    since = repository.resolve(commits_from) if commits_from else found["commit"]
    if since and not repository.has_commit(since):
        notes.append(
            f"the commit of {found['project']} {found['release']} ({short(since)}) is not in "
            "the repository (a shallow clone?): the release records no commit list"
        )
        return build, notes
    build["commits"] = _listed(repository, since, build["commit"], found["watch_paths"])
    return build, notes


def _packages(
    client: Client, project: Project, version: str, pins: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The packages of the project's release, and those of them missing from the feed."""
    process = client.get(f"/projects/{_seg(project.name)}/process")
    chosen: dict[str, str] = {}
    missing = []
    for step in process.get("steps", []):
        if step.get("type") != "package" or step.get("disabled"):
            continue
        package = step["package"]
        wanted = pins.get(key(package), version)
        chosen[package] = wanted
        try:
            client.get(f"/packages/{_seg(package)}/{_seg(wanted)}")
        except Failure as exc:
            if exc.code != "not_found":
                raise
            missing.append(f"{project.name} needs {package} {wanted}")
    return chosen, missing


def create_changed(
    client: Client,
    repository: Repository,
    *,
    since: str,
    until: str,
    version: str,
    pins: dict[str, str],
    notes: str,
    branch: str | None,
    build_url: str | None,
    channel: str | None = None,
) -> tuple[Detection, list[dict[str, Any]], list[str]]:
    """Create a release of every changed project; returns the detection, the releases made
    and notes. Checks every package first, so that a missing one creates nothing."""
    found = detect(client, repository, since, until)
    said = list(found.notes)
    todo = []
    for project in found.changed:
        if project.disabled:
            said.append(f"{project.name} changed but is disabled: no release made")
        else:
            todo.append(project)
    pinned = {key(k): v for k, v in pins.items()}
    packages: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    for project in todo:
        packages[project.name], lacking = _packages(client, project, version, pinned)
        missing += lacking
    if missing:
        raise Failure(
            "bad_input",
            f"{len(missing)} package(s) are not in the feed, so no release was created: "
            + "; ".join(missing)
            + ". Pack and push them first (conveyor package pack, conveyor package push)",
            missing=missing,
        )
    made: list[dict[str, Any]] = []
    for project in todo:
        build = {
            "commit": found.until,
            "branch": branch,
            "build_url": build_url,
            "commits": _listed(repository, project.since, found.until, project.watch_paths),
        }
        body: dict[str, Any] = {
            "version": version,
            "packages": packages[project.name],
            "notes": notes,
        }
        if channel:  # otherwise each project's release goes to the channel its versions fit
            body["channel"] = channel
        try:
            made.append(
                client.post(
                    f"/projects/{_seg(project.name)}/releases", json={**body, "build": build}
                )
            )
        except Failure as exc:
            if made:
                done = ", ".join(f"{r['project']} {r['version']}" for r in made)
                exc.message = f"{exc.message} (already created: {done})"
            raise
    return found, made, said


# ---------------------------------------------------------------- showing it


def print_build(build: dict[str, Any]) -> None:
    """The build information of ``release show``."""
    if not build:
        return
    if build.get("commit"):
        branch = f" on {build['branch']}" if build.get("branch") else ""
        say(f"  built from {build['commit']}{branch}")
    elif build.get("branch"):
        say(f"  branch {build['branch']}")
    if build.get("build_url"):
        say(f"  build {build['build_url']}")
    commits = build.get("commits") or []
    if commits:
        say(f"  commits ({len(commits)}):")
        for c in commits:
            say(f"    {_commit_line(c)}")


def _commit_line(commit: dict[str, Any]) -> str:
    subject = (commit.get("message") or "").splitlines()
    author = commit.get("author") or ""
    return f"{commit['sha'][:10]} {subject[0] if subject else ''}" + (
        f" ({author})" if author else ""
    )


def print_plan_changes(plan: dict[str, Any]) -> None:
    """The plan's "what this deployment brings", against what is current in the environment."""
    entries = plan.get("changes") or []
    if not entries:
        return
    say(f"What this deployment brings (against what is current in {plan['environment']}):")
    for e in entries:
        current = e["current"] or "(nothing yet)"
        if e["rollback"]:
            say(f"  {e['project']} {current} -> {e['release']}: a rollback, it brings no commit")
            continue
        if e["current"] == e["release"]:
            say(f"  {e['project']} {e['release']}: already current")
            continue
        count = len(e["commits"])
        plural = "s" if count != 1 else ""
        say(f"  {e['project']} {current} -> {e['release']}: {count} commit{plural}")
        for c in e["commits"][:SHOWN]:
            say(f"    {_commit_line(c)}")
        if count > SHOWN:
            say(f"    … and {count - SHOWN} more (--output json lists them all)")
        if e["without_commits"]:
            say(f"    (no commits recorded on {', '.join(e['without_commits'])})")


def print_created(made: list[dict[str, Any]], found: Detection, output: Format) -> None:
    from conveyor.cli.releases import release_json, release_text

    if output == Format.JSON:
        emit_json([release_json(r) for r in made])
        return
    if not made:
        say(f"No project changed up to {short(found.until)}: no release created.")
        return
    for release in made:
        commits = len(release.get("build", {}).get("commits") or [])
        say(
            f"Created {release['project']} {release['version']} ({release['id']}) "
            f"from {short(found.until)}, {commits} commit{'s' if commits != 1 else ''}"
        )
        release_text(release)
        for auto in release.get("automatic_deployments") or []:
            if "error" in auto:
                say(f"Could not deploy automatically to {auto['environment']}: {auto['error']}")
            elif "skipped" in auto:  # a pin holds another release there
                say(f"Not deploying automatically to {auto['environment']}: {auto['skipped']}")
            else:
                say(f"Deploying automatically to {auto['environment']}: task {auto['task']}")


def release_changed(
    *,
    since: str,
    until: str,
    repo: str | None,
    version: str | None,
    conflicting: dict[str, Any],
    package: list[str] | None,
    notes: str,
    branch: str | None,
    build_url: str | None,
    server: str | None,
    api_key: str | None,
    output: Format,
    channel: str | None = None,
) -> None:
    """``release create --changed-since``: the command's whole run."""
    from conveyor.cli.releases import parse_pairs
    from conveyor.cli.remote import run

    given = [flag for flag, value in conflicting.items() if value]
    if given:
        fail(
            Failure(
                "bad_input",
                "--changed-since releases each changed project at --until: "
                f"leave out {', '.join(given)}",
            ),
            output,
        )
    if not version:
        fail(
            Failure(
                "bad_input",
                "--changed-since needs --version: the version of the releases, and of the "
                "packages the build pushed for them",
            ),
            output,
        )

    def work() -> tuple[Detection, list[dict[str, Any]], list[str]]:
        pins = parse_pairs(package, "--package")
        repository = Repository.open(repo or ".")
        with Client(server, api_key) as client:
            return create_changed(
                client,
                repository,
                since=since,
                until=until,
                version=version,
                pins=pins,
                notes=notes,
                branch=branch,
                build_url=build_url,
                channel=channel,
            )

    found, made, said = run(output, work)
    print_notes(said)
    print_created(made, found, output)
