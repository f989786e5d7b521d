"""Which worker runs a script step that names no target roles.

A pool's workers are targets with ``pool:`` set (ssh or agent machines); the server itself is
the built-in worker of the default pool unless an administrator emptied it
(``CONVEYOR_BUILTIN_WORKER=false``). Each node counts the steps it runs on each worker and
gives the next one to the least loaded healthy worker.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence

from conveyor.domain.documents import Target, key, slugify
from conveyor.domain.errors import ConveyorError
from conveyor.domain.targets import (
    BUILTIN_WORKER,
    DEFAULT_POOL,
    HealthState,
    least_loaded,
    pool_members,
)


class Workers:
    """The steps this node runs on each worker now (by worker name; the server as itself)."""

    def __init__(self, builtin: bool) -> None:
        self.builtin = builtin
        self.load: Counter[str] = Counter()

    def pick(
        self,
        targets: Sequence[Target],
        pool: str,
        health: Mapping[str, HealthState],
    ) -> Target | None:
        """The worker for the next step of ``pool``: None means the server itself."""
        pool = pool or DEFAULT_POOL
        members = [
            t
            for t in pool_members(targets, pool)
            if health.get(slugify(t.name)) is not HealthState.UNHEALTHY
        ]
        by_name: dict[str, Target | None] = {}
        if self.builtin and key(pool) == key(DEFAULT_POOL):
            by_name[BUILTIN_WORKER] = None
        by_name.update({t.name: t for t in members})
        if not by_name:
            everyone = pool_members(targets, pool)
            if everyone:
                raise ConveyorError(
                    f'every worker of pool "{pool}" is unhealthy '
                    f"({', '.join(t.name for t in everyone)}): see `conveyor target list`"
                )
            raise ConveyorError(
                f'no worker in pool "{pool}" can run this step: add a worker (an ssh or agent '
                f"target with pool: {pool})"
                + (
                    ", or let the server run it (CONVEYOR_BUILTIN_WORKER=true)"
                    if key(pool) == key(DEFAULT_POOL)
                    else ""
                )
            )
        return by_name[least_loaded(list(by_name), self.load)]

    @contextlib.asynccontextmanager
    async def using(self, worker: Target | None) -> AsyncIterator[Target | None]:
        name = worker.name if worker is not None else BUILTIN_WORKER
        self.load[name] += 1
        try:
            yield worker
        finally:
            self.load[name] -= 1
