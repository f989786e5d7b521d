"""Task logs: lines are masked, buffered per task, and written by one writer per node.

A busy node runs a hundred scripts at once, each printing thousands of lines a second. Each task
only appends to its own buffer; the node's ``LogWriter`` is one asyncio task that drains every
buffer into one multi-row INSERT per round (every ``FLUSH_SECONDS``, or at once when
``BATCH_LINES`` are waiting or someone flushes). Memory is bounded: past ``MAX_BUFFERED_LINES``
(or ``MAX_BUFFERED_CHARS``) ``TaskLog.line`` hands back a future that the script's output reader
awaits, so a chatty script waits for the database instead of filling the server's memory.
``TaskLog.flush`` returns once every line logged before it is committed: the executor flushes
before it records a task's end, so a finished task's log is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from conveyor.domain.errors import ConveyorError
from conveyor.domain.masking import Masker

log = logging.getLogger("conveyor.engine")

FLUSH_SECONDS = 0.2
# A round starts at once (without waiting FLUSH_SECONDS) when this many lines wait.
BATCH_LINES = 2000
# At most this many rows go in one INSERT (SQLite allows 32,766 bound parameters; 5 a row).
ROUND_LINES = 5000
# Past either bound, producers that can wait (script output) wait for the writer.
MAX_BUFFERED_LINES = 20_000
MAX_BUFFERED_CHARS = 8_000_000
MAX_LINE = 8000
# A failed INSERT is tried this many times before its lines are given up (and reported).
ATTEMPTS = 3

Rows = list[dict[str, Any]]


class LogWriter:
    """The one writer of a node's task logs (see the module's description)."""

    def __init__(self, write: Callable[[Rows], Awaitable[object]]) -> None:
        self._write = write
        self._dirty: dict[TaskLog, None] = {}  # logs with buffered lines, in arrival order
        self.buffered_lines = 0
        self.buffered_chars = 0
        self._arrived = asyncio.Event()
        self._urgent = asyncio.Event()
        self._round_done = asyncio.Event()
        self._room: asyncio.Future[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    def open(self, task_id: int, masker: Masker | None = None, epoch: int | None = None) -> TaskLog:
        return TaskLog(task_id, self, masker, epoch)

    # ------------------------------------------------------------ producers

    def buffered(self, task_log: TaskLog, lines: int, chars: int) -> asyncio.Future[None] | None:
        self.buffered_lines += lines
        self.buffered_chars += chars
        self._dirty[task_log] = None
        self._arrived.set()
        if self.buffered_lines >= BATCH_LINES:
            self._urgent.set()
        self._ensure_running()
        if self.buffered_lines < MAX_BUFFERED_LINES and self.buffered_chars < MAX_BUFFERED_CHARS:
            return None
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        # Shielded: a canceled script's reader must not cancel the wait of every other one.
        return asyncio.shield(self._room)

    async def written(self, task_log: TaskLog, target: int) -> None:
        """Wait until ``task_log``'s first ``target`` lines are committed (or given up)."""
        while task_log.written < target:
            self._ensure_running()
            self._urgent.set()
            await self._round_done.wait()

    async def close(self) -> None:
        """Write what is buffered and stop (on shutdown); a later line starts it again."""
        self._closing = True
        self._urgent.set()
        self._arrived.set()
        try:
            if self._runner is not None:
                await asyncio.shield(self._runner)
        finally:
            self._closing = False

    # ------------------------------------------------------------ the writer

    def _ensure_running(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="conveyor-log-writer"
            )

    async def _run(self) -> None:
        while True:
            if not self._dirty:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if not self._urgent.is_set() and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), FLUSH_SECONDS)
            self._urgent.clear()
            await self._round()

    async def _round(self) -> None:
        rows: Rows = []
        taken: list[tuple[TaskLog, int]] = []
        # A fair share each: a script flooding output must not starve a task that is finishing.
        share = max(ROUND_LINES // len(self._dirty), 1)
        for task_log in list(self._dirty):
            count = min(len(task_log.buffer), share, ROUND_LINES - len(rows))
            if count <= 0:
                break
            rows += task_log.buffer[:count]
            taken.append((task_log, count))
        error = await self._insert(rows)
        chars = 0
        for task_log, count in taken:
            chars += sum(len(row["line"]) for row in task_log.buffer[:count])
            del task_log.buffer[:count]
            task_log.written += count
            if error is not None:
                task_log.error = error
            self._dirty.pop(task_log, None)
            if task_log.buffer:  # to the back of the line, behind those not served this round
                self._dirty[task_log] = None
        self.buffered_lines -= len(rows)
        self.buffered_chars -= chars
        if self.buffered_lines >= BATCH_LINES:
            self._urgent.set()
        if (
            self._room is not None
            and self.buffered_lines < MAX_BUFFERED_LINES // 2
            and self.buffered_chars < MAX_BUFFERED_CHARS // 2
        ):
            if not self._room.done():
                self._room.set_result(None)
            self._room = None
        done, self._round_done = self._round_done, asyncio.Event()
        done.set()

    async def _insert(self, rows: Rows) -> Exception | None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._write(rows)
                return None
            except Exception as exc:
                if attempt == ATTEMPTS:
                    log.exception("%d task log lines could not be written", len(rows))
                    return exc
                await asyncio.sleep(0.2 * attempt)
        return None


class TaskLog:
    """One task's log: masked lines, buffered until the node's writer takes them."""

    def __init__(
        self,
        task_id: int,
        writer: LogWriter | Callable[[Rows], Awaitable[object]],
        masker: Masker | None = None,
        epoch: int | None = None,
    ) -> None:
        self.task_id = task_id
        # The lease epoch of the run writing it: lines of a run another node took over are
        # dropped by the writer (`execution.write_logs`), never mixed into the new run's log.
        self.epoch = epoch
        # A bare write function (a tool, a test) gets a writer of its own.
        self._owns_writer = not isinstance(writer, LogWriter)
        self._writer = writer if isinstance(writer, LogWriter) else LogWriter(writer)
        self.masker = masker or Masker(())
        self.buffer: Rows = []
        self.appended = 0
        self.written = 0
        self.error: Exception | None = None

    def line(
        self, text: str, *, step: int | None = None, level: str = "info", target: str | None = None
    ) -> asyncio.Future[None] | None:
        """Log ``text``; returns a future to await when the node's buffers are full."""
        # Masked before splitting, so a multi-line secret in one piece is one ********; the
        # masker also knows each long line of such a secret, for a script printing it line by line.
        at = datetime.now(UTC)
        before, chars = len(self.buffer), 0
        # PostgreSQL text cannot hold NUL; a script printing one must not lose the line.
        for masked in self.masker(text).replace("\x00", "\ufffd").splitlines() or [""]:
            if len(masked) > MAX_LINE:
                masked = masked[:MAX_LINE] + " … (line cut)"
            chars += len(masked)
            self.buffer.append(
                {
                    "task_id": self.task_id,
                    "epoch": self.epoch,
                    "at": at,
                    "step": step,
                    "target": target,
                    "level": level,
                    "line": masked,
                }
            )
            self.appended += 1
        return self._writer.buffered(self, len(self.buffer) - before, chars)

    async def flush(self) -> None:
        """Return once every line logged so far is in the database."""
        await self._writer.written(self, self.appended)
        if self.error is not None:
            error, self.error = self.error, None
            raise ConveyorError(f"the task log could not be written: {error}") from error

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._owns_writer:
                await self._writer.close()
