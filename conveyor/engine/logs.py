"""Task logs written in batches: lines are masked, buffered, and flushed every few hundred ms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from conveyor.domain.masking import Masker

FLUSH_SECONDS = 0.2
FLUSH_LINES = 200
MAX_LINE = 8000


class TaskLog:
    def __init__(
        self,
        task_id: int,
        write: Callable[[list[dict[str, Any]]], Awaitable[None]],
        masker: Masker | None = None,
    ) -> None:
        self.task_id = task_id
        self._write = write
        self.masker = masker or Masker(())
        self._buffer: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def line(self, text: str, *, step: int | None = None, level: str = "info") -> None:
        # Masked before splitting, so a multi-line secret in one piece is one ********; the
        # masker also knows each long line of such a secret, for a script printing it line by line.
        for masked in self.masker(text).splitlines() or [""]:
            if len(masked) > MAX_LINE:
                masked = masked[:MAX_LINE] + " … (line cut)"
            self._buffer.append(
                {
                    "task_id": self.task_id,
                    "at": datetime.now(UTC),
                    "step": step,
                    "level": level,
                    "line": masked,
                }
            )
        if len(self._buffer) >= FLUSH_LINES:
            self._schedule(0)
        elif self._flusher is None:
            self._schedule(FLUSH_SECONDS)

    def _schedule(self, delay: float) -> None:
        if self._flusher is not None and not self._flusher.done() and delay > 0:
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.flush()

        self._flusher = asyncio.ensure_future(later())

    async def flush(self) -> None:
        async with self._lock:
            rows, self._buffer = self._buffer, []
            self._flusher = None
            if rows:
                await self._write(rows)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
