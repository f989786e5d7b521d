"""`conveyor release create|list|show|plan|deploy|promote`: make releases and ship them.

Remote commands of CLI.md. `conveyor.cli.audit` adds `release evidence` to ``release_app``;
`--wait` follows the task with `conveyor.cli.follow`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.follow import exit_by, follow_task
from conveyor.cli.output import Failure, Format, emit_json, fail, out, say
from conveyor.cli.remote import (
    ApiKeyOpt,
    OutputOpt,
    ServerOpt,
    fetch,
    new_table,
    run,
    seg,
    shown_as_json,
    when,
)
from conveyor.domain.errors import Problem, ValidationFailed

release_app = typer.Typer(help="Create, plan, deploy and promote releases.", no_args_is_help=True)

ProjectOpt = Annotated[str, typer.Option("--project", help="Project name or slug")]
VersionOpt = Annotated[str, typer.Option("--version", help="Release version")]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Follow the task and exit by its outcome (0 = success)")
]


def parse_pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["Database:1.0.1"]`` -> ``{"Database": "1.0.1"}`` (the last colon splits)."""
    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, version = value.rpartition(":")
        if not sep or not name.strip() or not version.strip():
            what = "ID:VERSION" if flag == "--package" else "PROJECT:VERSION"
            raise Failure("bad_input", f'{flag} "{value}" must look like {what}')
        pairs[name.strip()] = version.strip()
    return pairs


def release_json(release: dict[str, Any]) -> dict[str, Any]:
    """CLI.md's fields, and ``channel`` for a release of a channel other than "Default"."""
    shown = {
        "id": release["id"],
        "project": release["project"],
        "version": release["version"],
        "packages": release["packages"],
        "children": release["children"],
    }
    if release.get("channel", "Default") != "Default":
        shown["channel"] = release["channel"]
    return shown


def release_text(release: dict[str, Any]) -> None:
    for package, version in release["packages"].items():
        say(f"  package {package} {version}")
    for project, version in release["children"].items():
        say(f"  child   {project} {version}")


@release_app.command("create")
def release_create(
    project: Annotated[
        str | None, typer.Option("--project", help="Project name or slug (or --changed-since)")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Default: the next version after the highest")
    ] = None,
    package: Annotated[
        list[str] | None,
        typer.Option("--package", help="ID:VERSION (repeatable); default: the newest in the feed"),
    ] = None,
    child: Annotated[
        list[str] | None,
        typer.Option(
            "--child", help="PROJECT:VERSION (repeatable); default: the child's highest release"
        ),
    ] = None,
    notes: Annotated[str, typer.Option("--notes", help="Release notes")] = "",
    channel: Annotated[
        str | None,
        typer.Option(
            "--channel",
            help="The project's channel (its rules are checked); default: the first whose rules "
            "the versions satisfy, the default channel first",
        ),
    ] = None,
    commit: Annotated[
        str | None, typer.Option("--commit", help="Build information: the commit it is built from")
    ] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="Build information")] = None,
    build_url: Annotated[
        str | None, typer.Option("--build-url", help="Build information: the CI run's URL")
    ] = None,
    commits_from: Annotated[
        str | None,
        typer.Option(
            "--commits-from",
            help="List the commits after this revision (default: the previous release's commit)",
        ),
    ] = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="The folder of the git repository that watch paths are relative to "
            "(default: the current folder)",
        ),
    ] = None,
    changed_since: Annotated[
        str | None,
        typer.Option(
            "--changed-since",
            help="Release every project changed since REV (or last-release, last-deployed:ENV)",
        ),
    ] = None,
    until: Annotated[
        str, typer.Option("--until", help="With --changed-since: the revision released")
    ] = "HEAD",
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Create a release: a snapshot of the project's process and variables."""
    from conveyor.cli import builds
    from conveyor.cli.changes import print_notes

    if changed_since is not None:
        conflicting = {"--project": project, "--child": child, "--commit": commit}
        conflicting["--commits-from"] = commits_from
        builds.release_changed(
            since=changed_since,
            until=until,
            repo=repo,
            version=version,
            conflicting=conflicting,
            package=package,
            notes=notes,
            branch=branch,
            build_url=build_url,
            server=server,
            api_key=api_key,
            output=output,
            channel=channel,
        )
        return
    if not project:
        fail(Failure("bad_input", "--project is required (or --changed-since REV)"), output)

    def work() -> Any:
        body: dict[str, Any] = {
            "version": version,
            "packages": parse_pairs(package, "--package"),
            "children": parse_pairs(child, "--child"),
            "notes": notes,
        }
        if channel:
            body["channel"] = channel
        with Client(server, api_key) as client:
            if commit or branch or build_url or commits_from:
                body["build"], said = builds.collect_build(
                    client,
                    project,
                    commit=commit,
                    branch=branch,
                    build_url=build_url,
                    commits_from=commits_from,
                    repo=repo,
                )
                print_notes(said)
            return client.post(f"/projects/{seg(project)}/releases", json=body)

    release = run(output, work)
    if output == Format.JSON:
        emit_json(release_json(release))
        return
    say(f"Created {release['project']} {release['version']} ({release['id']})")
    if release.get("channel", "Default") != "Default":
        say(f"  channel {release['channel']}")
    release_text(release)
    for auto in release.get("automatic_deployments") or []:
        if "error" in auto:
            say(f"Could not deploy automatically to {auto['environment']}: {auto['error']}")
        elif "skipped" in auto:  # a pin holds another release there
            say(f"Not deploying automatically to {auto['environment']}: {auto['skipped']}")
        else:
            say(f"Deploying automatically to {auto['environment']}: task {auto['task']}")


@release_app.command("list")
def release_list(
    project: ProjectOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A project's releases, newest first."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get(f"/projects/{seg(project)}/releases")

    releases = run(output, work)
    if output == Format.JSON:
        emit_json(
            [
                release_json(r)
                | {"notes": r["notes"], "created": r["created"], "created_by": r["created_by"]}
                for r in releases
            ]
        )
        return
    if not releases:
        say(f"{project} has no releases yet.")
        return
    table = new_table("version", "created", "by", "packages / children", "notes")
    for r in releases:
        shipped = [f"{k} {v}" for k, v in {**r["packages"], **r["children"]}.items()]
        table.add_row(
            r["version"],
            when(r["created"], seconds=False),
            r["created_by"],
            ", ".join(shipped),
            (r["notes"] or "").splitlines()[0] if r["notes"] else "",
        )
    out.print(table)


@release_app.command("show")
def release_show(
    project: ProjectOpt,
    version: VersionOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """One release: what it ships."""
    release = fetch(output, server, api_key, f"/projects/{seg(project)}/releases/{seg(version)}")
    if shown_as_json(output, release):
        return
    say(f"{release['project']} {release['version']} ({release['id']})")
    say(f"  created {when(release['created'])} by {release['created_by']}")
    if release.get("channel", "Default") != "Default":
        say(f"  channel {release['channel']}")
    release_text(release)
    if release.get("notes"):
        say("  notes:")
        for line in release["notes"].splitlines():
            say(f"    {line}")
    from conveyor.cli.builds import print_build

    print_build(release.get("build") or {})


@release_app.command("plan")
def release_plan(
    project: ProjectOpt,
    version: VersionOpt,
    to: Annotated[str, typer.Option("--to", help="Environment")],
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="A step to skip (repeatable)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """What deploying the release to an environment would do now: each step, run or skip, why."""

    def work() -> Any:
        params: dict[str, Any] = {"to": to}
        if skip:
            params["skip"] = skip
        with Client(server, api_key) as client:
            return client.get(
                f"/projects/{seg(project)}/releases/{seg(version)}/plan", params=params
            )

    plan = run(output, work)
    if output == Format.JSON:
        emit_json(plan_json(plan))
        return
    channel = plan.get("channel", "Default")
    where = f" (channel {channel})" if channel != "Default" else ""
    say(f"Deploying {plan['project']} {plan['release']}{where} to {plan['environment']} would:")
    if plan.get("rollback"):
        say("This is a rollback: a newer release is current there.")
    table = new_table("#", "step", "action", "reason")
    for i, s in enumerate(plan["steps"], 1):
        number = f"{i}" + ("∥" if s.get("parallel_with_previous") else "")
        action = s["action"] + (" (rollback)" if s.get("rollback") else "")
        refused = f"; {s['refused']}" if s.get("refused") else ""
        table.add_row(number, s["name"], action, s["reason"] + refused)
    out.print(table)
    if plan.get("refused"):
        say(f"It would be refused: {plan['refused']}")
    if plan.get("checks"):
        checks = new_table("environment check", "state", "why")
        for check in plan["checks"]:
            checks.add_row(check["name"], check["state"], check["reason"])
        out.print(checks)
    if not plan["lifecycle"]["allowed"]:
        say(f"The lifecycle does not allow it yet: {plan['lifecycle']['reason']}")
    if not plan["may_deploy"]["allowed"]:
        say(f"You may not deploy it: {plan['may_deploy']['reason']}")
    from conveyor.cli.builds import print_plan_changes

    print_plan_changes(plan)


def _queued(
    result: dict[str, Any], server: str | None, api_key: str | None, wait: bool, output: Format
) -> None:
    """Print what deploy and promote print; with ``wait``, follow the task and exit by it."""
    if not wait:
        if output == Format.JSON:
            shown = {k: result[k] for k in ("deployment", "task", "state")}
            if result.get("checks"):  # the environment has checks: how they stand
                shown |= {"held": result["held"], "checks": result["checks"]}
            emit_json(shown)
        else:
            say(f"Queued {result['deployment']} as task {result['task']}")
            _waits_for(result)
            say(f"  follow it: conveyor task wait {result['task']}")
        return
    if output == Format.TEXT:
        say(f"Queued {result['deployment']} as task {result['task']}")
        _waits_for(result)
    final = follow_task(result["task"], server, api_key, output, timeout=None)
    if output == Format.JSON:
        emit_json(
            {"deployment": result["deployment"], "task": result["task"], "state": final["state"]}
        )
    exit_by(final, output)


def plan_json(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan for scripts: CLI.md's fields, then what only some plans have (a rollback, a
    refusal, pins, the environment's checks, a channel other than "Default"), each only where
    it applies."""
    steps = []
    for s in plan["steps"]:
        step = {k: s[k] for k in ("name", "action", "reason", "child")}
        step |= {k: s[k] for k in ("rollback", "refused", "pinned") if s.get(k)}
        steps.append(step)
    shown: dict[str, Any] = {"environment": plan["environment"], "steps": steps}
    if plan.get("channel", "Default") != "Default":
        shown["channel"] = plan["channel"]
    shown["changes"] = plan.get("changes", [])
    shown |= {k: plan[k] for k in ("rollback", "refused", "pinned", "checks") if plan.get(k)}
    return shown


def _waits_for(result: dict[str, Any]) -> None:
    """A held deployment: which of its environment's checks it waits for, and why."""
    if not result.get("held"):
        return
    say("  It waits for its environment's checks:")
    for check in result.get("checks", []):
        if check["state"] != "passed":
            say(f"    {check['name']}: {check['reason']}")


AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Start no earlier than this time (ISO 8601, e.g. 2026-12-03T09:30+01:00; without "
        "an offset: this machine's time zone), inside the environment's change window",
    ),
]
FreezeOverrideOpt = Annotated[
    str | None,
    typer.Option(
        "--freeze-override",
        metavar="REASON",
        help="Deploy during a freeze, saying why (needs DeploymentFreezeAdminister)",
    ),
]


def parse_at(text: str | None) -> str | None:
    """``--at``: an ISO 8601 time, sent with its offset (a bare one is this machine's time)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(
            Problem(("at",), f'"{text}" is not a time: use ISO 8601, e.g. 2026-12-03T09:30+01:00')
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.isoformat()


@release_app.command("deploy")
def release_deploy(
    project: ProjectOpt,
    version: VersionOpt,
    to: Annotated[str, typer.Option("--to", help="Environment")],
    wait: WaitOpt = False,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="A step to skip (repeatable)")
    ] = None,
    guided_failure: Annotated[
        bool | None,
        typer.Option(
            "--guided-failure/--no-guided-failure",
            help="Ask a person when a step fails (default: the environment's setting)",
        ),
    ] = None,
    at: AtOpt = None,
    freeze_override: FreezeOverrideOpt = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deploy a release to an environment (now, or from --at on); it waits while the
    environment's checks (approvals, change window, freeze) have not passed."""

    def work() -> Any:
        body = {
            "project": project,
            "version": version,
            "environment": to,
            "skip": skip or [],
            "guided_failure": guided_failure,
            "start_at": parse_at(at),
            "freeze_override": freeze_override,
        }
        with Client(server, api_key) as client:
            return client.post("/deployments", json=body)

    _queued(run(output, work), server, api_key, wait, output)


@release_app.command("promote")
def release_promote(
    project: ProjectOpt,
    source: Annotated[str, typer.Option("--from", help="Environment to take the release from")],
    to: Annotated[str, typer.Option("--to", help="Environment to deploy it to")],
    wait: WaitOpt = False,
    at: AtOpt = None,
    freeze_override: FreezeOverrideOpt = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deploy the release current in one environment to another."""

    def work() -> Any:
        body = {
            "project": project,
            "from": source,
            "to": to,
            "start_at": parse_at(at),
            "freeze_override": freeze_override,
        }
        with Client(server, api_key) as client:
            return client.post("/deployments/promote", json=body)

    _queued(run(output, work), server, api_key, wait, output)
