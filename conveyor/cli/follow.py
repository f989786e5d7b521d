"""Following a task: its log lines as they come, a spinner saying what it does, who must
answer its interruptions, and an exit code by how it ended.

Shared by `conveyor release deploy|promote --wait` and `conveyor task wait`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import typer
from rich.status import Status

from conveyor.cli.client import Client
from conveyor.cli.output import FAILED, Format, err, out, say
from conveyor.cli.remote import run, seg

TERMINAL = ("success", "failed", "canceled", "timed_out")

# How long one long-poll for new log lines may last; short enough to keep the status fresh.
POLL_SECONDS = 2.0


def log_line(line: dict[str, Any]) -> str:
    at = line.get("at") or ""
    try:
        clock = datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S")
    except ValueError:
        clock = at[11:19]
    # A step on several targets: each line says which one, so their output can be told apart.
    target = f"[{line['target']}] " if line.get("target") else ""
    return f"{clock}  {line['level']:<5}  {target}{line['line']}"


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


def follow_task(
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
                return run(output, lambda: _wait_quietly(client, task_id, deadline))
            if status is not None:
                status.start()
            return run(output, lambda: _follow_loud(client, task_id, deadline, status))
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
            f"/tasks/{seg(task_id)}/wait", params={"timeout": f"{left:.2f}"}
        )
        if task["state"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return task


def _follow_loud(
    client: Client, task_id: str, deadline: float | None, status: Status | None
) -> dict[str, Any]:
    after = 0
    announced: set[str] = set()
    path = f"/tasks/{seg(task_id)}"
    while True:
        page = client.get(
            f"{path}/log", params={"after": after, "wait": f"{_remaining(deadline):.2f}"}
        )
        for line in page["lines"]:
            say(log_line(line))
        after = page["next"]
        task: dict[str, Any] = client.get(path)
        if status is not None:
            status.update(_status_text(task))
        if task["state"] in TERMINAL:
            # The last lines are written before the task ends: read what is left.
            while True:
                rest = client.get(f"{path}/log", params={"after": after})
                for line in rest["lines"]:
                    say(log_line(line))
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


def exit_by(task: dict[str, Any], output: Format) -> None:
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
