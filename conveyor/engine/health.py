"""Health checks of targets and workers: `conveyor target check` and the periodic check.

Each target is checked by the runner of its kind (`Runner.check`), a few at a time, each within
a time limit: a machine that does not answer is unhealthy ("no answer within N s"), and a kind
this server has no runner for is unhealthy too, never an error. What a check found is recorded
by `conveyor.services.targets.record` (audited when the state changed).

The periodic check runs on every node every ``target_check_seconds`` (0: off), but a round is
done by one node at a time (`services.targets.round_lock`) and covers only the targets whose
last check is older than the interval, so that several nodes check each target about once per
interval between them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from conveyor.domain.documents import Target
from conveyor.domain.errors import ConveyorError
from conveyor.domain.targets import Health, judged
from conveyor.engine.steps.runners import Runner
from conveyor.services import targets as target_service
from conveyor.services.core import Caller, Services, system_caller
from conveyor.services.targets import TargetStatus

log = logging.getLogger("conveyor.engine")

# Machines checked at once: a round of many targets must not open many connections together.
CHECKS_AT_ONCE = 4
# A check that has not answered by then finds the machine unhealthy.
CHECK_SECONDS = 30.0
# The periodic loop looks for due targets this many times per interval: a target is checked
# between one and 1.25 intervals after its last check.
TICKS_PER_INTERVAL = 4


class HealthChecks:
    """Checks targets with the runners of this node (``Executor.runners``), by kind."""

    def __init__(
        self,
        services: Services,
        runners: Mapping[str, Runner],
        *,
        timeout_seconds: float = CHECK_SECONDS,
        at_once: int = CHECKS_AT_ONCE,
    ) -> None:
        self.services = services
        self.runners = runners
        self.timeout_seconds = timeout_seconds
        self._slots = asyncio.Semaphore(at_once)

    async def probe(self, target: Target) -> Health:
        """What one check of ``target`` finds (no record of it)."""
        runner = self.runners.get(target.kind)
        if runner is None:
            return Health.failed(f"no runner for kind {target.kind} on this server")
        async with self._slots:
            try:
                found = await asyncio.wait_for(runner.check(target), self.timeout_seconds)
            except TimeoutError:
                return Health.failed(f"no answer within {self.timeout_seconds:g} s")
            except ConveyorError as exc:
                return Health.failed(exc.message)
            except OSError as exc:
                return Health.failed(f"cannot reach it: {exc.strerror or exc.__class__.__name__}")
            except Exception as exc:
                # A runner's bug: the check fails visibly; the exception's text is not shown,
                # nor logged in full (it could quote a connection's settings).
                log.warning("checking target %s failed: %s", target.name, type(exc).__name__)
                return Health.failed(f"the check failed ({type(exc).__name__})")
        return judged(found)

    async def check_and_record(self, caller: Caller, targets: Sequence[Target]) -> None:
        """Check ``targets`` (a few at a time) and record each result as it comes."""

        async def one(target: Target) -> None:
            health = await self.probe(target)
            await target_service.record(self.services, caller, target, health)

        await asyncio.gather(*(one(target) for target in targets))

    async def check(self, caller: Caller, name: str | None = None) -> list[TargetStatus]:
        """`conveyor target check [NAME]`: ``name``, or every enabled target the caller may
        check; each as `target list` shows it after the check."""
        targets = await target_service.checkable(self.services, caller, name)
        await self.check_and_record(caller, targets)
        return await target_service.statuses_of(self.services, caller, targets)

    async def round(self, every_seconds: float) -> int:
        """One round of the periodic check, unless another node is doing one: the targets
        not checked within ``every_seconds``. How many were checked."""
        async with target_service.round_lock(self.services) as mine:
            if not mine:
                return 0
            targets = await target_service.due(self.services, every_seconds)
            await self.check_and_record(system_caller(), targets)
            return len(targets)

    async def run_periodically(self, every_seconds: float) -> None:
        """Until cancelled (the node stops): a round whenever targets are due. The first
        comes a tick after the start, not with it: a node starting does its own work first."""
        tick = every_seconds / TICKS_PER_INTERVAL
        while True:
            await asyncio.sleep(tick)
            try:
                await self.round(every_seconds)
            except Exception:
                log.exception("the periodic health check failed; trying again at the next")


def standalone(services: Services) -> HealthChecks:
    """Checks for a process that runs no task engine (the API alone, tests): the runners of
    an executor of its own, the same registry a node's executor has."""
    from conveyor.engine.executor import Executor

    return HealthChecks(services, Executor(services, "health-checks").runners)
