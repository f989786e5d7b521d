"""`conveyor insights`: delivery insights (DORA) as a table for people, JSON or CSV."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from conveyor.cli.audit import moment
from conveyor.cli.client import Client
from conveyor.cli.output import Format, emit_json, out, say
from conveyor.cli.remote import new_table
from conveyor.domain.insights import readable_seconds, readable_share


class InsightsFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


COLUMNS = (
    "",
    "deploys",
    "per day",
    "lead time",
    "failure rate",
    "restore",
    "duration",
    "approvals",
)


def _row(line: dict[str, Any]) -> list[str]:
    freq = line["deployment_frequency"]
    return [
        line["name"],
        f"{line['successes']}/{line['deployments']}",
        f"{freq:.2f}",
        readable_seconds(line["lead_time_seconds"]),
        readable_share(line["change_failure_rate"]),
        readable_seconds(line["time_to_restore_seconds"])
        + (f" ({line['open_failures']} open)" if line["open_failures"] else ""),
        readable_seconds(line["duration_seconds"]),
        readable_share(line["approvals_share_of_lead_time"]),
    ]


def show_table(body: dict[str, Any]) -> None:
    say(f"Deployments that ended from {body['since']} to {body['until']} ({body['days']:g} days)")
    say("deploys: successful/ended; approvals: their share of the lead time")
    for title, lines in (
        ("Project groups", body["project_groups"]),
        ("Projects", body["projects"]),
        ("Environments", body["environments"]),
    ):
        if not lines:
            continue
        table = new_table(*COLUMNS)
        table.columns[0].header = title
        for line in lines:
            table.add_row(*_row(line))
        table.add_row(*_row(body["overall"]))
        say("")
        out.print(table)
    if body["approval_waits"]:
        waits = new_table("Team", "waits", "total", "mean")
        for w in body["approval_waits"]:
            waits.add_row(
                w["team"],
                str(w["waits"]),
                readable_seconds(w["seconds"]),
                readable_seconds(w["mean_seconds"]),
            )
        say("")
        say("Waiting for approvals")
        out.print(waits)


def insights(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Only the projects of this project group")
    ] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="Only this environment")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From (ISO 8601 or an age like 90d; default: 30 days ago)"),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Until (ISO 8601 or an age; default: now)")
    ] = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
    ] = None,
    output: Annotated[
        InsightsFormat, typer.Option("--output", help="table, json or csv")
    ] = InsightsFormat.TABLE,
) -> None:
    """Deployment frequency, lead time for changes, change failure rate and time to restore,
    with deployment durations and approval waits, per project, group and environment."""
    from conveyor.cli.main import run

    fmt = Format.JSON if output == InsightsFormat.JSON else Format.TEXT

    def work() -> Any:
        query: dict[str, Any] = {
            "project": project,
            "group": group,
            "environment": environment,
            "since": moment(since, "--since") if since else None,
            "until": moment(until, "--until") if until else None,
        }
        query = {k: v for k, v in query.items() if v}
        with Client(server, api_key) as client:
            if output == InsightsFormat.CSV:
                return client.request("GET", "/insights", params={**query, "format": "csv"}).text
            return client.get("/insights", params=query)

    result = run(fmt, work)
    if output == InsightsFormat.JSON:
        emit_json(result)
    elif output == InsightsFormat.CSV:
        sys.stdout.write(result)
    else:
        show_table(result)
