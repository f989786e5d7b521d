"""`conveyor release|deployment|task|interruption|dashboard`: ship releases and follow them.

Remote commands of CLI.md. `conveyor.cli.main` imports this module to register it, so ``run``
is imported from there at call time (as in ``conveyor.cli.packages``), and the option types are
declared here rather than imported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.status import Status
from rich.table import Table

from conveyor.cli.client import Client
from conveyor.cli.output import FAILED, Failure, Format, emit_json, err, fail, out, say

T = TypeVar("T")

release_app = typer.Typer(help="Create, plan, deploy and promote releases.", no_args_is_help=True)
deployment_app = typer.Typer(help="Deployments: which release went where.", no_args_is_help=True)
task_app = typer.Typer(help="Follow, read and cancel tasks.", no_args_is_help=True)
interruption_app = typer.Typer(
    help="Approvals and guided failures waiting for a person.", no_args_is_help=True
)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]
ProjectOpt = Annotated[str, typer.Option("--project", help="Project name or slug")]
VersionOpt = Annotated[str, typer.Option("--version", help="Release version")]
WaitOpt = Annotated[
    bool, typer.Option("--wait", help="Follow the task and exit by its outcome (0 = success)")
]

TERMINAL = ("success", "failed", "canceled", "timed_out")
# How long one long-poll for new log lines may last; short enough to keep the status fresh.
POLL_SECONDS = 2.0


def _run(fmt: Format, work: Callable[[], T]) -> T:
    from conveyor.cli.main import run

    return run(fmt, work)


def _seg(value: str) -> str:
    """One path segment: project names have spaces, versions may have '+'."""
    return quote(value, safe="")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``["Database:1.0.1"]`` -> ``{"Database": "1.0.1"}`` (the last colon splits)."""
    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, version = value.rpartition(":")
        if not sep or not name.strip() or not version.strip():
            what = "ID:VERSION" if flag == "--package" else "PROJECT:VERSION"
            raise Failure("bad_input", f'{flag} "{value}" must look like {what}')
        pairs[name.strip()] = version.strip()
    return pairs


def _when(value: str | None, *, seconds: bool = True) -> str:
    """An ISO 8601 time as local time for people: `2024-05-01 14:03:07`."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value).astimezone()
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


# ---------------------------------------------------------------- releases


def _release_json(release: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": release["id"],
        "project": release["project"],
        "version": release["version"],
        "packages": release["packages"],
        "children": release["children"],
    }


def _release_text(release: dict[str, Any]) -> None:
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
        str | None, typer.Option("--repo", help="The git repository (default: the current folder)")
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
        )
        return
    if not project:
        fail(Failure("bad_input", "--project is required (or --changed-since REV)"), output)

    def work() -> Any:
        body: dict[str, Any] = {
            "version": version,
            "packages": _pairs(package, "--package"),
            "children": _pairs(child, "--child"),
            "notes": notes,
        }
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
            return client.post(f"/projects/{_seg(project)}/releases", json=body)

    release = _run(output, work)
    if output == Format.JSON:
        emit_json(_release_json(release))
        return
    say(f"Created {release['project']} {release['version']} ({release['id']})")
    _release_text(release)
    for auto in release.get("automatic_deployments") or []:
        if "error" in auto:
            say(f"Could not deploy automatically to {auto['environment']}: {auto['error']}")
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
            return client.get(f"/projects/{_seg(project)}/releases")

    releases = _run(output, work)
    if output == Format.JSON:
        emit_json(
            [
                _release_json(r)
                | {"notes": r["notes"], "created": r["created"], "created_by": r["created_by"]}
                for r in releases
            ]
        )
        return
    if not releases:
        say(f"{project} has no releases yet.")
        return
    table = _table("version", "created", "by", "packages / children", "notes")
    for r in releases:
        shipped = [f"{k} {v}" for k, v in {**r["packages"], **r["children"]}.items()]
        table.add_row(
            r["version"],
            _when(r["created"], seconds=False),
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

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get(f"/projects/{_seg(project)}/releases/{_seg(version)}")

    release = _run(output, work)
    if output == Format.JSON:
        emit_json(release)
        return
    say(f"{release['project']} {release['version']} ({release['id']})")
    say(f"  created {_when(release['created'])} by {release['created_by']}")
    _release_text(release)
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
                f"/projects/{_seg(project)}/releases/{_seg(version)}/plan", params=params
            )

    plan = _run(output, work)
    if output == Format.JSON:
        emit_json(
            {
                "environment": plan["environment"],
                "steps": [
                    {
                        "name": s["name"],
                        "action": s["action"],
                        "reason": s["reason"],
                        "child": s["child"],
                    }
                    for s in plan["steps"]
                ],
                "changes": plan.get("changes", []),
            }
        )
        return
    say(f"Deploying {plan['project']} {plan['release']} to {plan['environment']} would:")
    table = _table("#", "step", "action", "reason")
    for i, s in enumerate(plan["steps"], 1):
        number = f"{i}" + ("∥" if s.get("parallel_with_previous") else "")
        table.add_row(number, s["name"], s["action"], s["reason"])
    out.print(table)
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
            emit_json(
                {
                    "deployment": result["deployment"],
                    "task": result["task"],
                    "state": result["state"],
                }
            )
        else:
            say(f"Queued {result['deployment']} as task {result['task']}")
            say(f"  follow it: conveyor task wait {result['task']}")
        return
    if output == Format.TEXT:
        say(f"Queued {result['deployment']} as task {result['task']}")
    final = _follow(result["task"], server, api_key, output, timeout=None)
    if output == Format.JSON:
        emit_json(
            {"deployment": result["deployment"], "task": result["task"], "state": final["state"]}
        )
    _exit_by(final, output)


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
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deploy a release to an environment."""

    def work() -> Any:
        body = {
            "project": project,
            "version": version,
            "environment": to,
            "skip": skip or [],
            "guided_failure": guided_failure,
        }
        with Client(server, api_key) as client:
            return client.post("/deployments", json=body)

    _queued(_run(output, work), server, api_key, wait, output)


@release_app.command("promote")
def release_promote(
    project: ProjectOpt,
    source: Annotated[str, typer.Option("--from", help="Environment to take the release from")],
    to: Annotated[str, typer.Option("--to", help="Environment to deploy it to")],
    wait: WaitOpt = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deploy the release current in one environment to another."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(
                "/deployments/promote", json={"project": project, "from": source, "to": to}
            )

    _queued(_run(output, work), server, api_key, wait, output)


# ---------------------------------------------------------------- deployments


@deployment_app.command("list")
def deployment_list(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="Only this environment")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deployments, newest first."""
    fields = (
        "id",
        "project",
        "release",
        "environment",
        "state",
        "task",
        "parent",
        "created_by",
        "queued",
        "started",
        "completed",
    )

    def work() -> Any:
        params = {k: v for k, v in (("project", project), ("environment", environment)) if v}
        with Client(server, api_key) as client:
            return client.get("/deployments", params=params)

    rows = _run(output, work)
    if output == Format.JSON:
        emit_json([{f: r.get(f) for f in fields} for r in rows])
        return
    if not rows:
        say("No deployments.")
        return
    table = _table(
        "id", "project", "release", "environment", "state", "by", "queued", "took", "task", "parent"
    )
    for r in rows:
        table.add_row(
            r["id"],
            r["project"] or "",
            r["release"],
            r["environment"] or "",
            r["state"],
            r["created_by"],
            _when(r["queued"]),
            _took(r["started"], r["completed"]),
            r["task"] or "",
            r["parent"] or "",
        )
    out.print(table)


def _took(started: str | None, completed: str | None) -> str:
    if not started or not completed:
        return ""
    try:
        seconds = (
            datetime.fromisoformat(completed) - datetime.fromisoformat(started)
        ).total_seconds()
    except ValueError:
        return ""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"


# ---------------------------------------------------------------- tasks


def _log_line(line: dict[str, Any]) -> str:
    at = line.get("at") or ""
    try:
        clock = datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S")
    except ValueError:
        clock = at[11:19]
    return f"{clock}  {line['level']:<5}  {line['line']}"


def _status_text(task: dict[str, Any]) -> str:
    """One line for the spinner: the task's state and what its steps are doing now."""
    busy = []
    for step in task.get("steps", []):
        if step["state"] == "running":
            busy.append(f"{step['name']}: running")
        elif step["state"] == "waiting" and step.get("child_task"):
            busy.append(f"{step['name']}: {step['child_task']} running")
        elif step["state"] == "waiting":
            busy.append(f"{step['name']}: waiting for a person")
    text = f"{task['description']}: {task['state']}"
    if task.get("queue_reason"):
        text += f" ({task['queue_reason']})"
    return text + (" · " + ", ".join(busy) if busy else "")


def _waiting_for(client: Client, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The pending interruptions of a task and of its unfinished children."""
    ids = {task["id"]} | {c["id"] for c in task.get("children", []) if c["state"] not in TERMINAL}
    pending = client.get("/interruptions", params={"pending": "true"})
    return [i for i in pending if i["task"] in ids]


def _follow(
    task_id: str,
    server: str | None,
    api_key: str | None,
    output: Format,
    timeout: float | None,
) -> dict[str, Any]:
    """Follow a task until it ends (or ``timeout`` seconds pass); returns the task.

    Ctrl-C stops following, not the task: it says so, and how to pick it up again."""
    deadline = None if timeout is None else time.monotonic() + timeout
    status = Status("", console=out) if output == Format.TEXT and out.is_terminal else None
    try:
        with Client(server, api_key) as client:
            if output == Format.JSON:
                return _run(output, lambda: _wait_quietly(client, task_id, deadline))
            if status is not None:
                status.start()
            return _run(output, lambda: _follow_loud(client, task_id, deadline, status))
    except KeyboardInterrupt:
        if status is not None:
            status.stop()
        err.print(
            f"Stopped following {task_id}; it keeps running (conveyor task wait {task_id}).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        if status is not None:
            status.stop()


def _remaining(deadline: float | None) -> float:
    return (
        POLL_SECONDS
        if deadline is None
        else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
    )


def _wait_quietly(client: Client, task_id: str, deadline: float | None) -> dict[str, Any]:
    while True:
        left = 25.0 if deadline is None else max(0.0, min(25.0, deadline - time.monotonic()))
        task: dict[str, Any] = client.get(
            f"/tasks/{_seg(task_id)}/wait", params={"timeout": f"{left:.2f}"}
        )
        if task["state"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return task


def _follow_loud(
    client: Client, task_id: str, deadline: float | None, status: Status | None
) -> dict[str, Any]:
    after = 0
    announced: set[str] = set()
    path = f"/tasks/{_seg(task_id)}"
    while True:
        page = client.get(
            f"{path}/log", params={"after": after, "wait": f"{_remaining(deadline):.2f}"}
        )
        for line in page["lines"]:
            say(_log_line(line))
        after = page["next"]
        task: dict[str, Any] = client.get(path)
        if status is not None:
            status.update(_status_text(task))
        if task["state"] in TERMINAL:
            # The last lines are written before the task ends: read what is left.
            while True:
                rest = client.get(f"{path}/log", params={"after": after})
                for line in rest["lines"]:
                    say(_log_line(line))
                after = rest["next"]
                if not rest["lines"]:
                    return task
        if task["state"] == "waiting":
            for item in _waiting_for(client, task):
                if item["id"] in announced:
                    continue
                announced.add(item["id"])
                teams = ", ".join(item["responsible_teams"]) or "someone who may deploy here"
                answers = (
                    "retry|ignore|abort" if item["kind"] == "guided_failure" else "proceed|abort"
                )
                say(f'Waiting for {teams} to answer "{item["step"]}" ({item["id"]}):')
                say(
                    f"  conveyor interruption take {item['id']} && "
                    f"conveyor interruption submit {item['id']} --result {answers}"
                )
        if deadline is not None and time.monotonic() >= deadline:
            return task


def _exit_by(task: dict[str, Any], output: Format) -> None:
    """Exit 0 when the task succeeded; 1 when it failed, was canceled, timed out or is not done."""
    state = task["state"]
    if state == "success":
        if output == Format.TEXT:
            say(f"{task['description']}: succeeded")
        return
    if state in TERMINAL:
        message = f"{task['description']} ended {state.replace('_', ' ')}"
        if task.get("error"):
            message += f": {task['error']}"
    else:
        message = f"{task['id']} has not finished: it is still {state} ({task['description']})"
    if output == Format.TEXT:
        err.print(message, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(FAILED)


@task_app.command("wait")
def task_wait(
    task: Annotated[str, typer.Argument(help="Task id, like Tasks-12")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds (exit 1)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Follow a task until it ends; exit 0 if it succeeded, 1 otherwise."""
    if timeout is not None and timeout < 0:
        _run(output, _bad_timeout)
    final = _follow(task, server, api_key, output, timeout=timeout)
    if output == Format.JSON:
        emit_json({"id": final["id"], "state": final["state"]})
    _exit_by(final, output)


def _bad_timeout() -> None:
    raise Failure("bad_input", "--timeout must be zero or more seconds")


@task_app.command("log")
def task_log(
    task: Annotated[str, typer.Argument(help="Task id, like Tasks-12")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep going until it ends")
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A task's log: time, level and text of each line."""
    path = f"/tasks/{_seg(task)}/log"

    def work() -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        after = 0
        with Client(server, api_key) as client:
            while True:
                params: dict[str, Any] = {"after": after}
                if follow:
                    params["wait"] = 10
                page = client.get(path, params=params)
                if output == Format.JSON:
                    lines.extend(page["lines"])
                else:
                    for line in page["lines"]:
                        say(_log_line(line))
                after = page["next"]
                if not page["lines"] and (page["finished"] or not follow):
                    return lines

    lines = _run(output, work)
    if output == Format.JSON:
        emit_json(lines)


@task_app.command("cancel")
def task_cancel(
    task: Annotated[str, typer.Argument(help="Task id, like Tasks-12")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Cancel a task (and its child deployments); a running script's processes are killed."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/tasks/{_seg(task)}/cancel")

    result = _run(output, work)
    if output == Format.JSON:
        emit_json({"id": result["id"], "state": result["state"]})
        return
    if result["state"] in TERMINAL:
        say(f"{result['id']} ({result['description']}) ended {result['state']}.")
    else:
        say(f"Canceling {result['id']} ({result['description']}): it stops shortly.")


@task_app.command("show")
def task_show(
    task: Annotated[str, typer.Argument(help="Task id, like Tasks-12")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A task with its steps and child deployments."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get(f"/tasks/{_seg(task)}")

    result = _run(output, work)
    if output == Format.JSON:
        emit_json(result)
        return
    say(f"{result['id']}: {result['description']}: {result['state']}")
    if result.get("queue_reason"):
        say(f"  queued: {result['queue_reason']}")
    if result.get("error"):
        say(f"  error: {result['error']}")
    started, completed = _when(result["started"]) or "-", _when(result["completed"]) or "-"
    say(f"  started {started}, completed {completed}")
    if result["steps"]:
        table = _table("#", "step", "state", "reason", "child task")
        for s in result["steps"]:
            table.add_row(
                str(s["index"] + 1),
                s["name"],
                s["state"],
                s["reason"] or "",
                s["child_task"] or s["interruption"] or "",
            )
        out.print(table)


# ---------------------------------------------------------------- interruptions


INTERRUPTION_FIELDS = (
    "id",
    "task",
    "step",
    "kind",
    "responsible_teams",
    "taken_by",
    "state",
    "result",
)


def _interruption_json(item: dict[str, Any]) -> dict[str, Any]:
    return {f: item.get(f) for f in INTERRUPTION_FIELDS}


@interruption_app.command("list")
def interruption_list(
    task: Annotated[str | None, typer.Option("--task", help="Only this task's")] = None,
    mine: Annotated[
        bool, typer.Option("--mine", help="Only those waiting for you to answer")
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Interruptions you may view, newest first."""

    def work() -> Any:
        params: dict[str, Any] = {"mine": "true" if mine else "false"}
        if task:
            params["task"] = task
        with Client(server, api_key) as client:
            return client.get("/interruptions", params=params)

    items = _run(output, work)
    if output == Format.JSON:
        emit_json([_interruption_json(i) for i in items])
        return
    if not items:
        say("No interruptions.")
        return
    table = _table("id", "task", "step", "for", "state", "taken by", "result")
    for i in items:
        table.add_row(
            i["id"],
            i["task"],
            f"{i['step']} ({i['project']} → {i['environment']})",
            ", ".join(i["responsible_teams"]) or "-",
            i["state"],
            i["taken_by"] or "",
            i["result"] or "",
        )
    out.print(table)


def _interruption_text(item: dict[str, Any]) -> None:
    say(f"{item['id']}: {item['title']} ({item['kind'].replace('_', ' ')}, {item['state']})")
    say(f"  task {item['task']}, step {item['step']}")
    if item["responsible_teams"]:
        say(f"  for {', '.join(item['responsible_teams'])}")
    if item.get("instructions"):
        for line in item["instructions"].splitlines():
            say(f"  {line}")
    if item["taken_by"]:
        say(f"  taken by {item['taken_by']}")
    if item["result"]:
        notes = f": {item['notes']}" if item.get("notes") else ""
        say(f"  answered {item['result']} by {item['answered_by']}{notes}")
    elif item.get("why_not"):
        say(f"  you may not answer it: {item['why_not']}")


@interruption_app.command("show")
def interruption_show(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """One interruption, with its instructions and whether you may answer it."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get(f"/interruptions/{_seg(ident)}")

    item = _run(output, work)
    if output == Format.JSON:
        emit_json(item)
        return
    _interruption_text(item)


@interruption_app.command("take")
def interruption_take(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Take responsibility for an interruption (then answer it with submit)."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/interruptions/{_seg(ident)}/take")

    item = _run(output, work)
    if output == Format.JSON:
        emit_json(_interruption_json(item))
        return
    say(f"You took responsibility for {item['title']} ({item['id']}).")


@interruption_app.command("submit")
def interruption_submit(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    result: Annotated[
        str,
        typer.Option("--result", help="proceed or abort; for a guided failure retry|ignore|abort"),
    ],
    notes: Annotated[str, typer.Option("--notes", help="Why (kept in the audit log)")] = "",
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Answer an interruption."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(
                f"/interruptions/{_seg(ident)}/submit", json={"result": result, "notes": notes}
            )

    item = _run(output, work)
    if output == Format.JSON:
        emit_json(_interruption_json(item))
        return
    if item["state"] == "answered":
        say(f"Answered {item['result']} to {item['title']} ({item['id']}).")
    else:
        say(f"Recorded your answer to {item['title']} ({item['id']}); it needs more approvals.")


# ---------------------------------------------------------------- dashboard


def dashboard(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """The current release of each project in each environment."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get("/dashboard")

    board = _run(output, work)
    if output == Format.JSON:
        emit_json(
            {
                "environments": board["environments"],
                "projects": board["projects"],
                "cells": [
                    {
                        f: c.get(f)
                        for f in ("project", "environment", "release", "state", "task", "completed")
                    }
                    for c in board["cells"]
                ],
            }
        )
        return
    if not board["projects"]:
        say("No projects.")
        return
    cells = {(c["project"], c["environment"]): c for c in board["cells"]}
    table = _table("project", *board["environments"])
    marks = {
        "success": "✓",
        "failed": "✗",
        "canceled": "✗",
        "timed_out": "✗",
        "executing": "…",
        "queued": "…",
        "waiting": "⏸",
    }
    for project in board["projects"]:
        row = [project]
        for env in board["environments"]:
            cell = cells.get((project, env))
            if cell is None:
                row.append("")
                continue
            mark = marks.get(cell["state"], "")
            shown = f"{cell['release']} {mark}"
            success = cell.get("current_success")
            if cell["state"] != "success" and success and success != cell["release"]:
                shown += f" (current {success})"
            row.append(shown)
        table.add_row(*row)
    out.print(table)
