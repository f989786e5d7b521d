"""What the remote commands share: their options, running a command body, URLs, times, tables.

`conveyor.cli.main` imports the remote command modules to register them, so ``run`` imports
main's at call time (as in ``conveyor.cli.packages``), and the option types are declared here
rather than imported from main.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.table import Table

from conveyor.cli.output import Format, emit_json

T = TypeVar("T")

ServerOpt = Annotated[
    str | None, typer.Option("--server", help="Server URL (default: $CONVEYOR_SERVER)")
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: $CONVEYOR_API_KEY)")
]
OutputOpt = Annotated[Format, typer.Option("--output", help="text or json")]


def run(fmt: Format, work: Callable[[], T]) -> T:
    """``conveyor.cli.main.run``: a command body, its expected errors turned into exit codes."""
    from conveyor.cli.main import run as main_run

    return main_run(fmt, work)


def fetch(output: Format, server: str | None, api_key: str | None, path: str) -> Any:
    """GET one resource of the API, its errors turned into exit codes like any command's."""
    from conveyor.cli.client import Client

    def work() -> Any:
        with Client(server, api_key) as client:
            return client.get(path)

    return run(output, work)


def shown_as_json(output: Format, data: Any) -> bool:
    """Print ``data`` for scripts when they asked for JSON; then the command is done."""
    if output == Format.JSON:
        emit_json(data)
        return True
    return False


def seg(value: str) -> str:
    """One path segment: project names have spaces, versions may have '+'."""
    return quote(value, safe="")


def when(value: str | None, *, seconds: bool = True) -> str:
    """An ISO 8601 time as local time for people: `2024-05-01 14:03:07`."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value).astimezone()
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def new_table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table
