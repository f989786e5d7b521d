"""Running one step on several targets: all at once, or a window at a time (rolling).

Each target gets its own context (`StepContext.on`): its log lines name it and its scripts
have their own work folder. Without a window every target starts at once and the step waits
for all; with one, at most ``window`` run at a time and, once one has failed, no further
target starts (those running finish). The step's outcome is the first failure in target order,
or success with the outputs of every target (later targets' values win, as before). A failure
names every target that failed or never started (``Outcome.targets_failed``): guided failure
asks about those, and its retry runs only those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from conveyor.domain.documents import Target
from conveyor.domain.errors import ConveyorError
from conveyor.domain.runtime import Outcome, OutcomeKind
from conveyor.engine.steps.base import StepContext

Work = Callable[[StepContext, Target], Awaitable[Outcome]]

NOT_STARTED = "not started: an earlier target failed and the step runs a window at a time"


async def on_each_target(
    ctx: StepContext, targets: Sequence[Target], window: int | None, work: Work
) -> Outcome:
    slots = asyncio.Semaphore(window or max(len(targets), 1))
    stopped = asyncio.Event()  # a target failed: with a window, start no more

    async def one(target: Target) -> Outcome:
        async with slots:
            if window is not None and stopped.is_set():
                ctx.on(target).say(f"{target.name} {NOT_STARTED}", level="warn")
                return Outcome.failed(f"{target.name} {NOT_STARTED}")
            try:
                outcome = await work(ctx.on(target), target)
            except ConveyorError as exc:  # this target's failure, not the others'
                ctx.on(target).say(exc.message, level="error")
                outcome = Outcome.failed(f"{target.name}: {exc.message}")
            if outcome.kind is not OutcomeKind.SUCCEEDED:
                stopped.set()
            return outcome

    outcomes = await asyncio.gather(*(one(target) for target in targets))
    failed = tuple(
        t.name
        for t, o in zip(targets, outcomes, strict=True)
        if o.kind is not OutcomeKind.SUCCEEDED
    )
    outputs: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.kind is not OutcomeKind.SUCCEEDED:
            if len(failed) > 1:
                more = f" (failed or not started on {len(failed)} targets: {', '.join(failed)})"
                outcome = replace(outcome, reason=outcome.reason + more)
            return replace(outcome, targets_failed=failed)
        outputs.update(outcome.outputs)
    return Outcome.succeeded("", outputs)
