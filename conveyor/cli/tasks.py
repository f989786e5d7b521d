"""`conveyor task wait|log|cancel|show`: follow, read and cancel tasks (remote, CLI.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.follow import TERMINAL, exit_by, follow_task, log_line
from conveyor.cli.output import Failure, Format, emit_json, out, say
from conveyor.cli.remote import (
    ApiKeyOpt,
    OutputOpt,
    ServerOpt,
    fetch,
    new_table,
    run,
    seg,
    shown_as_json,
    well_formed,
    when,
)

task_app = typer.Typer(help="Follow, read and cancel tasks.", no_args_is_help=True)


@task_app.command("wait")
def task_wait(
    task: Annotated[str, typer.Argument(help="Task id, like ServerTasks-12")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds (exit 1)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Follow a task until it ends; exit 0 if it succeeded, 1 otherwise."""
    task = well_formed(output, "ServerTasks", task, "a task")
    if timeout is not None and timeout < 0:
        run(output, _bad_timeout)
    final = follow_task(task, server, api_key, output, timeout=timeout)
    if output == Format.JSON:
        emit_json({"id": final["id"], "state": final["state"]})
    exit_by(final, output)


def _bad_timeout() -> None:
    raise Failure("bad_input", "--timeout must be zero or more seconds")


@task_app.command("log")
def task_log(
    task: Annotated[str, typer.Argument(help="Task id, like ServerTasks-12")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep going until it ends")
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A task's log: time, level and text of each line."""
    task = well_formed(output, "ServerTasks", task, "a task")
    path = f"/tasks/{seg(task)}/log"

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
                        say(log_line(line))
                after = page["next"]
                if not page["lines"] and (page["finished"] or not follow):
                    return lines

    lines = run(output, work)
    if output == Format.JSON:
        emit_json(lines)


@task_app.command("cancel")
def task_cancel(
    task: Annotated[str, typer.Argument(help="Task id, like ServerTasks-12")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Cancel a task (and its child deployments); a running script's processes are killed."""
    task = well_formed(output, "ServerTasks", task, "a task")

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/tasks/{seg(task)}/cancel")

    result = run(output, work)
    if output == Format.JSON:
        emit_json({"id": result["id"], "state": result["state"]})
        return
    if result["state"] in TERMINAL:
        say(f"{result['id']} ({result['description']}) ended {result['state']}.")
    else:
        say(f"Canceling {result['id']} ({result['description']}): it stops shortly.")


@task_app.command("show")
def task_show(
    task: Annotated[str, typer.Argument(help="Task id, like ServerTasks-12")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """A task with its steps and child deployments."""
    task = well_formed(output, "ServerTasks", task, "a task")
    result = fetch(output, server, api_key, f"/tasks/{seg(task)}")
    if shown_as_json(output, result):
        return
    say(f"{result['id']}: {result['description']}: {result['state']}")
    if result.get("queue_reason"):
        say(f"  queued: {result['queue_reason']}")
    if result.get("error"):
        say(f"  error: {result['error']}")
    started, completed = when(result["started"]) or "-", when(result["completed"]) or "-"
    say(f"  started {started}, completed {completed}")
    if result["steps"]:
        # An interruption is not a task: each has its own column (only when some step has one).
        interrupted = any(s["interruption"] for s in result["steps"])
        columns = ["#", "step", "state", "reason", "child task"]
        table = new_table(*columns, *(["interruption"] if interrupted else []))
        for s in result["steps"]:
            cells = [str(s["index"] + 1), s["name"], s["state"], s["reason"] or ""]
            cells.append(s["child_task"] or "")
            if interrupted:
                cells.append(s["interruption"] or "")
            table.add_row(*cells)
        out.print(table)
