"""`conveyor release pin|unpin|pins|block|unblock|update-variables`: keep a release where it is,
stop it going further, refresh its variables. Added to the `release` group of
`conveyor.cli.releases` from here (imported by `conveyor.cli.main` to register them).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, out, say
from conveyor.cli.releases import ProjectOpt, VersionOpt, release_app
from conveyor.cli.remote import (
    ApiKeyOpt,
    OutputOpt,
    ServerOpt,
    new_table,
    run,
    seg,
    shown_as_json,
    when,
)

EnvironmentOpt = Annotated[str, typer.Option("--environment", help="Environment name or slug")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: the people it stops read it")]


def _call(
    output: Format,
    server: str | None,
    api_key: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Any:
    def work() -> Any:
        with Client(server, api_key) as client:
            response = client.request(method, path, json=body)
            return response.json() if response.content else {}

    return run(output, work)


def _pin_path(project: str, environment: str) -> str:
    return f"/projects/{seg(project)}/environments/{seg(environment)}/pin"


def _release_path(project: str, version: str, what: str) -> str:
    return f"/projects/{seg(project)}/releases/{seg(version)}/{what}"


@release_app.command("pin")
def release_pin(
    project: ProjectOpt,
    version: VersionOpt,
    environment: EnvironmentOpt,
    reason: ReasonOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Pin the release current in an environment: nothing replaces it there until unpinned.

    Automatic deployments and trains leave it there; deploying another release of the project
    there is refused."""
    body = {"version": version, "reason": reason}
    pinned = _call(output, server, api_key, "POST", _pin_path(project, environment), body)
    if shown_as_json(output, pinned):
        return
    say(f"Pinned {pinned['project']} {pinned['version']} in {pinned['environment']}.")


@release_app.command("unpin")
def release_unpin(
    project: ProjectOpt,
    environment: EnvironmentOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Remove the pin of a project in an environment."""
    was = _call(output, server, api_key, "DELETE", _pin_path(project, environment))
    if shown_as_json(output, was):
        return
    say(f"Unpinned {was['project']} {was['version']} in {was['environment']}.")


@release_app.command("pins")
def release_pins(
    project: ProjectOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Where a project's releases are pinned, by whom and why."""
    found = _call(output, server, api_key, "GET", f"/projects/{seg(project)}/pins")
    if shown_as_json(output, found):
        return
    if not found:
        say(f"{project} is not pinned anywhere.")
        return
    table = new_table("environment", "version", "pinned by", "when", "reason")
    for p in found:
        table.add_row(
            p["environment"], p["version"], p["pinned_by"], when(p["pinned_at"]), p["reason"]
        )
    out.print(table)


@release_app.command("block")
def release_block(
    project: ProjectOpt,
    version: VersionOpt,
    reason: ReasonOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Block a release from going to any environment it has not succeeded in yet."""
    path = _release_path(project, version, "block")
    result = _call(output, server, api_key, "POST", path, {"reason": reason})
    if shown_as_json(output, result):
        return
    say(f"Blocked {result['project']} {result['version']}: {result['blocked']['reason']}")


@release_app.command("unblock")
def release_unblock(
    project: ProjectOpt,
    version: VersionOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Let a blocked release be promoted again."""
    result = _call(output, server, api_key, "DELETE", _release_path(project, version, "block"))
    if shown_as_json(output, result):
        return
    say(f"Unblocked {result['project']} {result['version']}.")


@release_app.command("update-variables")
def release_update_variables(
    project: ProjectOpt,
    version: VersionOpt,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Replace the release's variables with the project's current ones (its process stays)."""
    path = _release_path(project, version, "update-variables")
    result = _call(output, server, api_key, "POST", path)
    if shown_as_json(output, result):
        return
    label = f"{result['project']} {result['version']}"
    if not result["changed"]:
        say(f"The variables of {label} are already the project's: nothing changed.")
        return
    say(f"Refreshed the variables of {label}: {', '.join(result['changed'])} changed.")
