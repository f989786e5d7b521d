"""What the remote commands share: their options, running a command body, URLs, times, tables.

`conveyor.cli.main` imports the remote command modules to register them, so ``run`` imports
main's at call time (as in ``conveyor.cli.packages``), and the option types are declared here
rather than imported from main.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
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


def well_formed(output: Format, prefix: str, ref: str, noun: str) -> str:
    """``ref`` when it has the shape of an id of this kind (``ServerTasks-12`` or ``12``); else
    bad input (exit 2), as a typing mistake is, not "not found" (4: a well-formed id that names
    nothing)."""

    def check() -> str:
        from conveyor.cli.output import Failure
        from conveyor.domain.ids import is_well_formed

        if not is_well_formed(prefix, ref, bare=True):
            shown = ref if len(ref) <= 60 else ref[:57] + "..."
            raise Failure("bad_input", f'"{shown}" is not {noun} id: they look like {prefix}-12')
        return ref

    return run(output, check)


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


# Columns whose values are copied back into commands (ids, names, versions): never cut.
COPIED = frozenset(
    {"id", "task", "child task", "parent", "deployment", "release", "version", "project", "name"}
    | {"target", "environment", "interruption", "user", "by"}
)


# Each other column keeps at least this many characters (it wraps within them).
NARROWEST = 8


class CopyableTable(Table):
    """A table whose id-like columns keep their whole values, even printed to a pipe (80
    columns): they are as wide as their longest value, the other columns wrap instead (Rich's
    default cut ``Deployments-12`` to ``Deploy…``), and when even that does not fit the table
    is wider than the terminal rather than cut (``output.out`` does not crop it)."""

    never_cropped = True

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        for column, cell in zip(self.columns, renderables, strict=False):
            if column.no_wrap and isinstance(cell, str):
                widest = max((cell_len(line) for line in cell.splitlines()), default=0)
                column.min_width = max(column.min_width or 0, widest, cell_len(str(column.header)))
        super().add_row(*renderables, **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        needed = 2 * (len(self.columns) - 1) + sum(
            (c.min_width or 0) if c.no_wrap else NARROWEST for c in self.columns
        )
        if needed > options.max_width:
            options = options.update(width=needed)
        yield from super().__rich_console__(console, options)


def new_table(*columns: str, copied: Iterable[str] = ()) -> Table:
    """A table for people; ``copied`` names more columns that must never be cut."""
    keep = COPIED | set(copied)
    table = CopyableTable(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        if column in keep:
            table.add_column(column, no_wrap=True, overflow="fold")
        else:
            table.add_column(column, overflow="fold")
    return table
