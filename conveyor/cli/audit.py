"""`conveyor audit list|verify|export` and `conveyor release evidence`: the audit log, remote.

`conveyor.cli.main` imports this module to register it, so ``run`` is imported from there at
call time and the option types are declared here (as in `conveyor.cli.packages`). `release
evidence` is added to the `release` group of `conveyor.cli.releases` from here.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.filesize import decimal
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from conveyor.cli.client import Client
from conveyor.cli.output import FAILED, Failure, Format, emit_json, err, out, say
from conveyor.cli.releases import release_app
from conveyor.cli.remote import new_table

T = TypeVar("T")

audit_app = typer.Typer(
    help="The audit log: read it, export it, verify its hash chain.", no_args_is_help=True
)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="From this time: ISO 8601 (local time unless it has an offset) "
        "or ago, like 30d, 12h, 15m",
    ),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (as --since)")]
UserOpt = Annotated[list[str] | None, typer.Option("--user", help="Who acted (repeatable)")]
CategoryOpt = Annotated[
    list[str] | None, typer.Option("--category", help="Event category (repeatable)")
]
ProjectOpt = Annotated[list[str] | None, typer.Option("--project", help="Project (repeatable)")]
EnvironmentOpt = Annotated[
    list[str] | None, typer.Option("--environment", help="Environment (repeatable)")
]
DocumentOpt = Annotated[
    list[str] | None,
    typer.Option("--document", help="A document the event concerns, e.g. Deployments-4"),
]

AGO = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ListFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    CSV = "csv"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class EvidenceFormat(StrEnum):
    JSON = "json"
    MARKDOWN = "markdown"


def _run(fmt: Format, work: Callable[[], T]) -> T:
    from conveyor.cli.main import run

    return run(fmt, work)


def moment(value: str, flag: str) -> str:
    """``30d`` -> 30 days ago; ISO 8601 without an offset is local time. Sent in UTC."""
    ago = AGO.match(value)
    if ago:
        delta = timedelta(**{UNITS[ago.group(2)]: int(ago.group(1))})
        return (datetime.now(UTC) - delta).isoformat()
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise Failure(
            "bad_input",
            f'{flag} "{value}" is not a time: use ISO 8601 (2024-05-01, 2024-05-01T14:00) '
            "or an age like 30d, 12h, 15m",
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the person's local time
    return parsed.astimezone(UTC).isoformat()


def params(
    since: str | None,
    until: str | None,
    user: list[str] | None,
    category: list[str] | None,
    project: list[str] | None,
    environment: list[str] | None,
    document: list[str] | None,
) -> dict[str, Any]:
    out_params: dict[str, Any] = {}
    if since:
        out_params["since"] = moment(since, "--since")
    if until:
        out_params["until"] = moment(until, "--until")
    for name, values in (
        ("user", user),
        ("category", category),
        ("project", project),
        ("environment", environment),
        ("document", document),
    ):
        if values:
            out_params[name] = values
    return out_params


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _actor(event: dict[str, Any]) -> str:
    behalf = event["on_behalf_of"]
    return str(event["actor"]) + (f" (for {behalf})" if behalf else "")


@audit_app.command("list")
def audit_list(
    since: SinceOpt = None,
    until: UntilOpt = None,
    user: UserOpt = None,
    category: CategoryOpt = None,
    project: ProjectOpt = None,
    environment: EnvironmentOpt = None,
    document: DocumentOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="How many (at most 500)")] = 50,
    before: Annotated[
        str | None, typer.Option("--before", help="Only events before this one (paging)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: Annotated[ListFormat, typer.Option("--output", help="text, json or csv")] = (
        ListFormat.TEXT
    ),
) -> None:
    """Audit events, newest first; filters combine (AND), repeated flags widen (OR)."""
    fmt = Format.JSON if output == ListFormat.JSON else Format.TEXT

    def work() -> Any:
        query = params(since, until, user, category, project, environment, document)
        query["limit"] = limit
        if before:
            query["before"] = before
        with Client(server, api_key) as client:
            return client.get("/events", params=query)

    page = _run(fmt, work)
    events: list[dict[str, Any]] = page["events"]
    if output == ListFormat.JSON:
        emit_json(events)
    elif output == ListFormat.CSV:
        from conveyor.services.audit_export import CSV_COLUMNS, csv_row

        writer = csv.writer(sys.stdout)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_row(e) for e in events)
    elif not events:
        say("No events.")
    else:
        table = new_table(
            "id", "occurred", "category", "actor", "project", "env", "message", copied=["category"]
        )
        for e in events:
            table.add_row(
                e["id"],
                _when(e["occurred"]),
                e["category"],
                _actor(e),
                e["project"] or "",
                e["environment"] or "",
                e["message"],
            )
        out.print(table)
        if page["next"]:
            err.print(f"More: --before {page['next']}", markup=False, highlight=False)


@audit_app.command("verify")
def audit_verify(
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: Annotated[Format, typer.Option("--output", help="text or json")] = Format.TEXT,
) -> None:
    """Walk the hash chain: exit 0 if intact, else 1 naming the first bad event."""

    def work() -> Any:
        with Client(server, api_key, timeout=600.0) as client:
            return client.get("/events/verify")

    result = _run(output, work)
    if output == Format.JSON:
        emit_json(result)
    elif result["intact"]:
        say(result["message"])
        if result["head"]:
            head = result["head"]
            say(f"newest: {head['id']} {head['hash']}")
    else:
        err.print(f"TAMPERED: {result['message']}", markup=False, highlight=False, soft_wrap=True)
    if not result["intact"]:
        raise typer.Exit(FAILED)


def _copy(response: Any, sink: IO[bytes], progress: Progress | None) -> tuple[int, int]:
    """Write the stream to ``sink``; (rows, bytes). Rows end in a newline (CSV: CRLF)."""
    rows = size = 0
    task = progress.add_task("Exporting", total=None) if progress is not None else None
    for chunk in response.iter_bytes():
        sink.write(chunk)
        size += len(chunk)
        rows += chunk.count(b"\n")
        if progress is not None and task is not None:
            progress.update(task, description=f"Exporting: {rows:,} rows, {decimal(size)}")
    return rows, size


@audit_app.command("export")
def audit_export(
    format: Annotated[
        ExportFormat, typer.Option("--format", help="csv or jsonl")
    ] = ExportFormat.JSONL,
    out_file: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write to this file (default: stdout)")
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    user: UserOpt = None,
    category: CategoryOpt = None,
    project: ProjectOpt = None,
    environment: EnvironmentOpt = None,
    document: DocumentOpt = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Every matching event, oldest first, streamed from the server (any size)."""

    def work() -> tuple[int, int]:
        query = params(since, until, user, category, project, environment, document)
        query["format"] = format.value
        with (
            Client(server, api_key, timeout=600.0) as client,
            client.stream("GET", "/events/export", params=query) as response,
        ):
            if out_file is None:
                return _copy(response, sys.stdout.buffer, None)
            if not err.is_terminal:  # a progress display off a terminal is a stray blank line
                with out_file.open("wb") as sink:
                    return _copy(response, sink, None)
            columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
            with (
                out_file.open("wb") as sink,
                Progress(*columns, console=err, transient=True) as progress,
            ):
                return _copy(response, sink, progress)

    rows, size = _run(Format.TEXT, work)
    if out_file is not None:
        events = rows - 1 if format == ExportFormat.CSV else rows
        say(f"Exported {events:,} events ({decimal(size)}) to {out_file}")


@release_app.command("evidence")
def release_evidence(
    project: Annotated[str, typer.Option("--project", help="Project name or slug")],
    version: Annotated[str, typer.Option("--version", help="Release version")],
    format: Annotated[
        EvidenceFormat, typer.Option("--format", help="json or markdown")
    ] = EvidenceFormat.MARKDOWN,
    out_file: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write to this file (default: stdout)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Who created the release and from what, what changed, every deployment and approval, and
    the audit events with their hashes: for a change ticket."""
    fmt = Format.JSON if format == EvidenceFormat.JSON else Format.TEXT

    def work() -> str:
        path = f"/projects/{quote(project, safe='')}/releases/{quote(version, safe='')}/evidence"
        with Client(server, api_key) as client:
            response = client.request("GET", path, params={"format": format.value})
        if format == EvidenceFormat.JSON:
            return json.dumps(response.json(), indent=2, ensure_ascii=False)
        return response.text

    text = _run(fmt, work)
    if out_file is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out_file.write_text(text, encoding="utf-8")
        say(f"Wrote {out_file}")
