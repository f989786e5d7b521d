"""`conveyor interruption list|show|take|submit`: approvals and guided failures (remote)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, emit_json, out, say
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
)
from conveyor.domain.inputs import parse_pairs

interruption_app = typer.Typer(
    help="Approvals and guided failures waiting for a person.", no_args_is_help=True
)


INTERRUPTION_FIELDS = (
    "id",
    "task",
    "step",
    "kind",
    "responsible_teams",
    "taken_by",
    "state",
    "result",
)


def _interruption_json(item: dict[str, Any]) -> dict[str, Any]:
    return {f: item.get(f) for f in INTERRUPTION_FIELDS}


@interruption_app.command("list")
def interruption_list(
    task: Annotated[str | None, typer.Option("--task", help="Only this task's")] = None,
    mine: Annotated[
        bool, typer.Option("--mine", help="Only those waiting for you to answer")
    ] = False,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Interruptions you may view, newest first."""

    def work() -> Any:
        params: dict[str, Any] = {"mine": "true" if mine else "false"}
        if task:
            params["task"] = task
        with Client(server, api_key) as client:
            return client.get("/interruptions", params=params)

    items = run(output, work)
    if output == Format.JSON:
        emit_json([_interruption_json(i) for i in items])
        return
    if not items:
        say("No interruptions.")
        return
    table = new_table("id", "task", "step", "for", "state", "taken by", "result")
    for i in items:
        table.add_row(
            i["id"],
            i["task"],
            f"{i['step']} ({i['project']} → {i['environment']})",
            ", ".join(i["responsible_teams"]) or "-",
            i["state"],
            i["taken_by"] or "",
            i["result"] or "",
        )
    out.print(table)


def _interruption_text(item: dict[str, Any]) -> None:
    say(f"{item['id']}: {item['title']} ({item['kind'].replace('_', ' ')}, {item['state']})")
    say(f"  task {item['task']}, step {item['step']}")
    if item["responsible_teams"]:
        say(f"  for {', '.join(item['responsible_teams'])}")
    if item.get("instructions"):
        for line in item["instructions"].splitlines():
            say(f"  {line}")
    if item["taken_by"]:
        say(f"  taken by {item['taken_by']}")
    _questions_text(item.get("fields") or [])
    if item["result"]:
        notes = f": {item['notes']}" if item.get("notes") else ""
        say(f"  answered {item['result']} by {item['answered_by']}{notes}")
    elif item.get("why_not"):
        say(f"  you may not answer it: {item['why_not']}")


def _questions_text(fields: list[dict[str, Any]]) -> None:
    """The questions a proceed must answer (--field NAME=VALUE), with the answers once given."""
    if not fields:
        return
    say("  asks (answer with --field NAME=VALUE):")
    for f in fields:
        optional = "" if f.get("required", True) else ", optional"
        answer = f" = {f['answer']}" if f.get("answer") is not None else ""
        say(f"    {f['name']}: {f['prompt']}{optional}{answer}")
        if f.get("description"):
            say(f"      {f['description']}")


@interruption_app.command("show")
def interruption_show(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """One interruption, with its instructions and whether you may answer it."""
    ident = well_formed(output, "Interruptions", ident, "an interruption")
    item = fetch(output, server, api_key, f"/interruptions/{seg(ident)}")
    if shown_as_json(output, item):
        return
    _interruption_text(item)


@interruption_app.command("take")
def interruption_take(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Take responsibility for an interruption (then answer it with submit)."""
    ident = well_formed(output, "Interruptions", ident, "an interruption")

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.post(f"/interruptions/{seg(ident)}/take")

    item = run(output, work)
    if output == Format.JSON:
        emit_json(_interruption_json(item))
        return
    say(f"You took responsibility for {item['title']} ({item['id']}).")


@interruption_app.command("submit")
def interruption_submit(
    ident: Annotated[str, typer.Argument(metavar="ID", help="Interruption id")],
    result: Annotated[
        str,
        typer.Option("--result", help="proceed or abort; for a guided failure retry|ignore|abort"),
    ],
    notes: Annotated[str, typer.Option("--notes", help="Why (kept in the audit log)")] = "",
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="NAME=VALUE",
            help="Answer to one of the step's questions (repeat for each; see interruption show)",
        ),
    ] = None,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Answer an interruption."""
    ident = well_formed(output, "Interruptions", ident, "an interruption")

    def work() -> Any:
        answers = parse_pairs(field or ())
        with Client(server, api_key) as client:
            return client.post(
                f"/interruptions/{seg(ident)}/submit",
                json={"result": result, "notes": notes, "fields": answers},
            )

    item = run(output, work)
    if output == Format.JSON:
        emit_json(_interruption_json(item))
        return
    if item["state"] == "answered":
        say(f"Answered {item['result']} to {item['title']} ({item['id']}).")
    else:
        say(f"Recorded your answer to {item['title']} ({item['id']}); it needs more approvals.")
