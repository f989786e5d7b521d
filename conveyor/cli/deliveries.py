"""`conveyor delivery list`: the notifications the outbox sent or will send, with their outcome.

`conveyor.cli.main` imports this module to register it, so ``run`` is imported from there at
call time (as in `conveyor.cli.audit`).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer

from conveyor.cli.client import Client
from conveyor.cli.output import Format, emit_json, out, say
from conveyor.cli.remote import new_table

T = TypeVar("T")

delivery_app = typer.Typer(
    help="Notifications from subscriptions and interruptions: what was sent, what is pending.",
    no_args_is_help=True,
)

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]


class State(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _run(fmt: Format, work: Callable[[], T]) -> T:
    from conveyor.cli.main import run

    return run(fmt, work)


@delivery_app.command("list")
def delivery_list(
    state: Annotated[State | None, typer.Option("--state", help="Only in this state")] = None,
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Only this subscription's")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many")] = 100,
    server: ServerOpt = None,
    api_key: ApiKeyOpt = None,
    output: OutputOpt = Format.TEXT,
) -> None:
    """Deliveries, newest first, with attempts and the last error (needs SubscriptionView)."""

    def work() -> Any:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state.value
        if subscription:
            params["subscription"] = subscription
        with Client(server, api_key) as client:
            return client.get("/deliveries", params=params)

    items = _run(output, work)
    if output == Format.JSON:
        emit_json(items)
        return
    if not items:
        say("No deliveries.")
        return
    table = new_table("id", "event", "for", "to", "state", "attempts", "last error")
    for d in items:
        table.add_row(
            d["id"],
            d["event"] or "",
            d["subscription"] or d["reason"],
            d["target"],
            d["state"],
            str(d["attempts"]),
            d["last_error"] or "",
        )
    out.print(table)
