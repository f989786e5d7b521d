"""`conveyor node list`: the server nodes on this database, their heartbeat and work (remote)."""

from __future__ import annotations

from typing import Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, emit_json, out, say
from conveyor.cli.remote import ApiKeyOpt, OutputOpt, ServerOpt, new_table, run, when

node_app = typer.Typer(help="Server nodes: which are alive, what they run.", no_args_is_help=True)


@node_app.command("list")
def node_list(
    server: ServerOpt = None, api_key: ApiKeyOpt = None, output: OutputOpt = Format.TEXT
) -> None:
    """Every node: heartbeat, slots and running tasks (needs AdministerSystem)."""

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get("/nodes")

    rows = run(output, work)
    if output == Format.JSON:
        emit_json(rows)
        return
    if not rows:
        say("No node has started on this database yet.")
        return
    table = new_table("name", "state", "heartbeat", "running", "tasks")
    for r in rows:
        table.add_row(
            r["name"],
            "alive" if r.get("alive") else "gone",
            when(r["heartbeat"]),
            f"{r['running']} of {r['slots']}",
            ", ".join(r.get("tasks", [])),
        )
    out.print(table)
