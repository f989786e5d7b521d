"""The end of a script's output: read for as long as it keeps coming after the script ended
(a busy machine, a slow log), given up only when the pipe stays silent, held open by a child
that outlived the script, and never for longer than DRAIN_SECONDS."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.engine import runner
from conveyor.engine.runner import Flow, lines


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "GRACE_SECONDS", 0.3)
    monkeypatch.setattr(runner, "DRAIN_SECONDS", 3.0)


async def _read(stream: asyncio.StreamReader, flow: Flow, got: list[str]) -> None:
    async for line in lines(stream):
        got.append(line)
        await flow.passed(None)


async def test_output_that_keeps_coming_is_read_to_the_end() -> None:
    stream, flow, got = asyncio.StreamReader(), Flow(), []
    pumps = asyncio.gather(_read(stream, flow, got))

    async def slow_writer() -> None:  # each line within the grace, all of them well past it
        for i in range(6):
            stream.feed_data(f"line {i}\n".encode())
            await asyncio.sleep(0.2)
        stream.feed_eof()

    writer = asyncio.ensure_future(slow_writer())
    await flow.drained(pumps)
    await writer
    assert got == [f"line {i}" for i in range(6)]


async def test_a_slow_log_counts_as_progress() -> None:
    stream, flow = asyncio.StreamReader(), Flow()
    stream.feed_data(b"one\ntwo\n")
    stream.feed_eof()
    taken: list[str] = []

    async def read() -> None:
        async for line in lines(stream):
            await flow.passed(asyncio.sleep(0.5))  # the log's buffers are full for a while
            taken.append(line)

    await flow.drained(asyncio.gather(read()))
    assert taken == ["one", "two"]


async def test_a_pipe_held_open_in_silence_is_given_up() -> None:
    stream, flow, got = asyncio.StreamReader(), Flow(), []
    stream.feed_data(b"last words\n")  # and then nothing, and no end
    started = time.monotonic()
    await flow.drained(asyncio.gather(_read(stream, flow, got)))
    assert got == ["last words"]
    assert time.monotonic() - started < 1.5


async def test_a_writer_that_never_stops_is_cut_at_the_limit() -> None:
    stream, flow, got = asyncio.StreamReader(), Flow(), []
    pumps = asyncio.gather(_read(stream, flow, got))

    async def endless() -> None:
        while True:
            stream.feed_data(b"yes\n")
            await asyncio.sleep(0.05)

    writer = asyncio.ensure_future(endless())
    started = time.monotonic()
    await flow.drained(pumps)
    writer.cancel()
    assert 2.9 < time.monotonic() - started < 4.5
