"""Tables for people (JSON output is for scripts)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from conveyor.cli.output import out


def matrix_table(result: dict[str, Any]) -> None:
    """One row per permission and project, one column per environment: ✓ allowed, · not."""
    environments: list[str] = result["environments"]
    table = Table(title=f"What {result['user']} may do", show_lines=False)
    table.add_column("permission")
    table.add_column("project")
    for env in environments:
        table.add_column(env, justify="center")
    table.add_column("anywhere", justify="center")
    rows: dict[tuple[str, str], dict[str | None, bool]] = {}
    for cell in result["cells"]:
        row = rows.setdefault((cell["permission"], cell["project"] or "(all)"), {})
        row[cell["environment"]] = cell["allowed"]
    for (permission, project), cells in rows.items():
        if not any(cells.values()):
            continue
        marks = [_mark(cells.get(env)) for env in environments]
        table.add_row(permission, project, *marks, _mark(cells.get(None)))
    out.print(table)


def _mark(value: bool | None) -> str:
    if value is None:
        return ""
    return "✓" if value else "·"
