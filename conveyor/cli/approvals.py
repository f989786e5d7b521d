"""`conveyor approval give|list|revoke`: approvals ahead of time (docs/governance.md)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from conveyor.cli.approval_preview import print_preview
from conveyor.cli.client import Client
from conveyor.cli.output import Format, out, say
from conveyor.cli.remote import ApiKeyOpt, OutputOpt, ServerOpt, new_table, run, shown_as_json, when
from conveyor.domain.inputs import parse_pairs

approval_app = typer.Typer(
    help="Approve a release for an environment ahead of time, list approvals, revoke one.",
    no_args_is_help=True,
)


def _release_path(project: str, version: str) -> str:
    return f"/projects/{quote(project, safe='')}/releases/{quote(version, safe='')}"


@approval_app.command("give")
def approval_give(
    project: Annotated[str, typer.Option("--project", help="Project name or slug")],
    version: Annotated[str, typer.Option("--version", help="The release's version")],
    to: Annotated[str, typer.Option("--to", help="The environment you approve it for")],
    notes: Annotated[str, typer.Option("--notes", help="What you checked, for the record")] = "",
    field: Annotated[
        list[str] | None,
        typer.Option("--field", help="An answer the approval check asks for: NAME=VALUE"),
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Approve a release (an orchestrator's whole train) for an environment, before any
    deployment exists. Prints what you approve: the children, the commits and the process and
    variable changes since what that environment runs."""

    def work() -> Any:
        answers = parse_pairs(field or [])
        path = _release_path(project, version)
        with Client(server, api_key) as client:
            preview = client.get(f"{path}/approval-preview", params={"environment": to})
            given = client.post(
                f"{path}/approvals", json={"environment": to, "notes": notes, "fields": answers}
            )
        return preview, given

    preview, given = run(output, work)
    if shown_as_json(output, given):
        return
    print_preview(preview)
    say(
        f"{given['id']}: {given['user']} approved {given['project']} {given['version']} for "
        f"{given['environment']} as {', '.join(given['teams'])}, until {when(given['expires'])}"
    )
    if given.get("released"):
        say(f"{given['released']} waiting deployment(s) may start now")


@approval_app.command("list")
def approval_list(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Only this release (with --project)")
    ] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", help="Only this environment")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Approvals you may see, newest first, each valid, expired, revoked or stale."""

    def work() -> Any:
        params = {"project": project, "version": version, "environment": environment}
        with Client(server, api_key) as client:
            return client.get("/approvals", params={k: v for k, v in params.items() if v})

    rows = run(output, work)
    if shown_as_json(output, rows):
        return
    if not rows:
        say("No approval that you may see.")
        return
    table = new_table("id", "project", "version", "environment", "by", "as", "state", "expires")
    for r in rows:
        table.add_row(
            r["id"],
            r["project"],
            r["version"],
            r["environment"],
            r["user"],
            ", ".join(r["teams"]),
            r["state"],
            when(r["expires"]),
        )
    out.print(table)


@approval_app.command("revoke")
def approval_revoke(
    ident: Annotated[str, typer.Argument(help="The approval: Approvals-12 or 12")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Revoke an approval (your own, or any as an environment manager); deployments it let go
    that have not started wait again."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/approvals/{quote(ident, safe='')}/revoke")

    revoked = run(output, work)
    if shown_as_json(output, revoked):
        return
    say(
        f"{revoked['id']} revoked ({revoked['user']}'s approval of {revoked['project']} "
        f"{revoked['version']} for {revoked['environment']})"
    )
