"""`conveyor target list|check`: the targets' health and last deployment, and checking it now
(remote: through the server, whose runners reach the machines)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.filesize import decimal

from conveyor.cli.client import Client
from conveyor.cli.output import FAILED, Format, emit_json, out, say
from conveyor.cli.remote import ApiKeyOpt, OutputOpt, ServerOpt, new_table, run, when

target_app = typer.Typer(
    help="Deployment targets and workers: their health, checked now or by the server.",
    no_args_is_help=True,
)

# A check waits for every machine (each within the server's time limit, a few at a time).
CHECK_TIMEOUT = 900.0


@target_app.command("list")
def target_list(
    environment: Annotated[
        str | None, typer.Option("--environment", help="Only the targets of this environment")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """The targets you may see: kind, environments, roles, health from the last check."""

    def work() -> Any:
        params = {"environment": environment} if environment else {}
        with Client(server, api_key) as client:
            return client.get("/targets/health", params=params)

    rows = run(output, work)
    if output == Format.JSON:
        emit_json(rows)
        return
    if not rows:
        where = f" in {environment}" if environment else ""
        say(f"No target{where} that you may see.")
        return
    _table(rows)


@target_app.command("check")
def target_check(
    name: Annotated[
        str | None, typer.Argument(help="The target to check (default: every enabled target)")
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Check targets now and record their health; exit 1 when one is not healthy."""

    def work() -> Any:
        with Client(server, api_key, timeout=CHECK_TIMEOUT) as client:
            return client.post("/targets/check", json={"name": name})

    result = run(output, work)
    rows: list[dict[str, Any]] = result["targets"]
    if output == Format.JSON:
        emit_json(rows)
    elif not rows:
        say("No enabled target to check.")
    else:
        _table(rows)
    if not result["healthy"]:
        raise typer.Exit(FAILED)


def _table(rows: list[dict[str, Any]]) -> None:
    table = new_table(
        "name", "kind", "environments", "roles", "health", "os", "free disk", "checked", "message"
    )
    for r in rows:
        place = ", ".join(r["environments"]) or (f"pool {r['pool']}" if r.get("pool") else "")
        free = r.get("free_disk_bytes")
        health = r["health"] + (" (disabled)" if r.get("disabled") else "")
        table.add_row(
            r["name"],
            r["kind"],
            place,
            ", ".join(r["roles"]),
            health,
            r.get("os") or "",
            decimal(free) if isinstance(free, int) else "",
            when(r.get("checked_at")),
            r.get("message") or "",
        )
    out.print(table)
