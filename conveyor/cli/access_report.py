"""`conveyor permissions report`: fetching the report and showing it as a table for people."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from rich.table import Table

from conveyor.cli.client import Client
from conveyor.cli.output import out, say


class ReportFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def fetch_report(
    client: Client, fmt: ReportFormat, project: str | None, environment: str | None
) -> Any:
    """The rows as JSON, or the CSV text as the server writes it."""
    params = {"project": project, "environment": environment}
    query = {k: v for k, v in params.items() if v}
    if fmt == ReportFormat.CSV:
        return client.request("GET", "/permissions/report", params={**query, "format": "csv"}).text
    return client.get("/permissions/report", params=query)


def _who(entries: list[dict[str, Any]], with_via: bool) -> str:
    lines = []
    for e in entries:
        line = f"{e['user']} ({e['team']} / {e['role']})"
        if with_via and e.get("via"):
            line += f"\n  {e['via']}"
        lines.append(line)
    return "\n".join(lines) or "nobody"


def report_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        say("No projects you may view.")
        return
    grid = Table(title="Who may deploy where", show_lines=True, header_style="bold")
    for column in ("project", "environment", "may deploy", "may approve"):
        grid.add_column(column, overflow="fold")
    for row in rows:
        approve = _who(row["approvers"], with_via=True) if row["gates"] else "(no approval asked)"
        if row["deploy_and_approve"]:
            approve += f"\n! deploys and approves: {', '.join(row['deploy_and_approve'])}"
        grid.add_row(row["project"], row["environment"], _who(row["deployers"], False), approve)
    out.print(grid)
