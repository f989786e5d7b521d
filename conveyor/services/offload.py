"""Run CPU-bound work that a caller controls (expressions, config files) off the event loop.

A thread cannot be stopped, so the work itself must be bounded (``domain/expressions.py``,
``yamlsource`` limits); the timeout is the second line: the request gets its answer in time
even if a bound was missed, and the server goes on answering others meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from conveyor.domain.errors import ValidationFailed

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(
    seconds: float, label: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn(*args, **kwargs)`` in a worker thread; ValidationFailed naming ``label`` if it
    takes longer than ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.to_thread(fn, *args, **kwargs)
    except TimeoutError:
        raise ValidationFailed(
            f"{label} took longer than {seconds:g} s to evaluate and was abandoned; simplify it"
        ) from None
