"""`conveyor deployment list` and `conveyor dashboard`: which release went where (remote)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, emit_json, out, say
from conveyor.cli.remote import ApiKeyOpt, OutputOpt, ServerOpt, new_table, run, when

deployment_app = typer.Typer(help="Deployments: which release went where.", no_args_is_help=True)


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

    rows = run(output, work)
    if output == Format.JSON:
        emit_json([{f: r.get(f) for f in fields} for r in rows])
        return
    if not rows:
        say("No deployments.")
        return
    table = new_table(
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
            when(r["queued"]),
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


def dashboard(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """The current release of each project in each environment."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get("/dashboard")

    board = run(output, work)
    if output == Format.JSON:
        data: dict[str, Any] = {
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
        # CLI.md's shape; a line per channel only where a project has several (docs/deployments.md).
        if board.get("channels"):
            data["channels"] = board["channels"]
        emit_json(data)
        return
    if not board["projects"]:
        say("No projects.")
        return
    cells = {(c["project"], c["environment"]): c for c in board["cells"]}
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in board.get("channels", []):
        lines.setdefault(line["project"], []).append(line)
    table = new_table("project", *board["environments"])
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
        for line in lines.get(project, []):  # a project with several channels: one line each
            mine = {c["environment"]: c for c in line["cells"]}
            table.add_row(
                f"  {line['channel']}",
                *(
                    f"{c['release']} {marks.get(c['state'], '')}" if (c := mine.get(env)) else ""
                    for env in board["environments"]
                ),
            )
    out.print(table)
