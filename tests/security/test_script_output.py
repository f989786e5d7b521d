"""A script output line over 64 KiB (issue 10, items 1 and 6): it used to fail the step with
"Separator is not found" and lose the output after it. Now it is logged in 64 KiB pieces, and
the lines after it, output variables included, still work. Real engine, real scripts, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio

from conveyor.engine.logs import MAX_LINE as LOG_LINE
from conveyor.engine.node import Node
from conveyor.engine.runner import MAX_LINE, lines
from conveyor.services import tasks
from conveyor.services.core import Caller, Services
from tests.integration.test_engine import deploy, engine, finished, project, setup

__all__ = ["engine"]  # the fixture, shared with the engine's own tests

LONG = 200 * 1024


async def test_a_200_kib_line_is_split_and_later_output_survives(
    services: Services, admin: Caller, engine: Node
) -> None:
    steps = f"""        - name: Loud
          type: script
          script: |
            head -c {LONG} /dev/zero | tr '\\0' a
            echo
            echo after-the-long-line
            echo "##conveyor[setVariable name='Done' value='yes']"
            printf 'last line without a newline'
        - name: Next
          type: script
          script: echo "done=#{{Conveyor.Action[Loud].Output.Done}}"
"""
    await setup(services, admin, project("Loud", steps))
    task = await deploy(services, admin, "Loud")
    result = await finished(services, admin, task, waiting=False)
    lines = [line["line"] for line in (await tasks.task_log(services, admin, task))["lines"]]
    assert result["state"] == "success", lines[-10:]
    # Four pieces of at most 64 KiB; the log keeps the first 8,000 characters of each line.
    pieces = [line for line in lines if line.startswith("aaaa")]
    assert pieces == ["a" * LOG_LINE + " … (line cut)"] * 4, [len(p) for p in pieces]
    assert "after-the-long-line" in lines
    assert "last line without a newline" in lines
    assert "Output variable Done set" in lines
    assert "done=yes" in lines


async def test_lines_are_split_at_64_kib_and_nothing_is_lost() -> None:
    """What the runner reads from a script's pipe, before the log stores it."""
    stream = asyncio.StreamReader(limit=2**16)
    stream.feed_data(b"b" * LONG + b"\r\nnext\n" + "\u00e9".encode() * 40_000 + b"\nend")
    stream.feed_eof()
    got = [line async for line in lines(stream)]
    assert [len(x) for x in got[:4]] == [MAX_LINE, MAX_LINE, MAX_LINE, LONG - 3 * MAX_LINE]
    assert "".join(got[:4]) == "b" * LONG
    assert got[4:] == ["next", "\u00e9" * 40_000, "end"]
