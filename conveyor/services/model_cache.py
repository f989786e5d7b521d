"""Each node's decoded configuration, reloaded only when the configuration revision moves.

Reads check the revision (one primary-key query) and get the cached model when it has not moved:
a full load costs tens of milliseconds at hundreds of projects, and the engine and every request
read the configuration several times. Every configuration change increments the revision in its
own transaction (``store.documents.persist``), so a change made through any node, this one or
another on the same database, is seen on the next read.

Sensitive values stay ``Sealed`` (encrypted) in the cached model: they are decrypted only for
the deployment that needs them (a release snapshot), never on a read.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from conveyor.domain import permissions as perms
from conveyor.domain.documents import UserRole, key
from conveyor.store.documents import Loaded, load_model, read_revision

if TYPE_CHECKING:  # core writes events, and the outbox it calls reads this cache
    from conveyor.services.core import Services


@dataclass
class Snapshot:
    """One revision's model, and what was computed from it (nothing here outlives a change)."""

    revision: int
    loaded: Loaded
    principals: dict[tuple[str, bool], perms.Principal] = field(default_factory=dict)
    roles: dict[str, UserRole] | None = None

    def principal(self, username: str, active: bool) -> perms.Principal:
        """What ``username`` may do: computed once per user and revision, not per request."""
        ident = (key(username), active)
        principal = self.principals.get(ident)
        if principal is None:
            model = self.loaded.model
            if self.roles is None:
                self.roles = {key(r.name): r for r in model.user_roles}
            principal = perms.principal_for(username, active, list(model.teams), self.roles)
            self.principals[ident] = principal
        return principal


# Reads of a model that a change overtook before one is kept anyway (and reloaded on next use).
RETRIES = 3


class ModelCache:
    """The snapshot of the newest revision this node has read. A snapshot is replaced whole,
    never changed in place, so a reader sees the old one or the new one, never a half-built one;
    one reload runs at a time and the others wait for it instead of loading the same again."""

    def __init__(self) -> None:
        self._current: Snapshot | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        # How many times the model was decoded: the tests and the benchmark read it.
        self.reloads = 0

    def _reload_lock(self) -> asyncio.Lock:
        # An asyncio lock belongs to one event loop; a test or CLI command may use another.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def snapshot(self, services: Services, session: AsyncSession | None = None) -> Snapshot:
        """The current revision's snapshot, never an older one than the database holds now.

        A caller that has a session open passes it: taking a second connection while holding
        one would, under load, leave every request holding one and waiting for another."""
        async with _session(services, session) as reading:
            revision = await read_revision(reading)
            current = self._current
            if current is not None and current.revision == revision:
                return current
            async with self._reload_lock():
                current = self._current
                if current is not None and current.revision == revision:
                    return current  # another reader loaded it meanwhile
                # Any other number reloads, a lower one too: a database restored from a backup
                # goes back in revisions, and the cache must follow it.
                current = Snapshot(*await self._read(services, reading))
                self._current = current
                return current

    async def _read(self, services: Services, session: AsyncSession) -> tuple[int, Loaded]:
        """The model and its revision, read whole: a change committed while its tables were
        being read (each query may see a newer commit) moves the revision, so read again."""
        for _ in range(RETRIES):
            revision = await read_revision(session)
            loaded = await load_model(session, services.box, decrypt=False)
            self.reloads += 1
            if await read_revision(session) == revision:
                break
        # Still moving after RETRIES reads: labelled with the revision read first, never a
        # newer one, so the next read loads again.
        return revision, loaded


@asynccontextmanager
async def _session(services: Services, session: AsyncSession | None) -> AsyncIterator[AsyncSession]:
    if session is not None:
        yield session
        return
    async with services.read() as own:
        yield own


_caches: weakref.WeakKeyDictionary[Services, ModelCache] = weakref.WeakKeyDictionary()


def cache_of(services: Services) -> ModelCache:
    """The cache of this process's ``Services`` (one per node; tests build several)."""
    cache = _caches.get(services)
    if cache is None:
        cache = _caches[services] = ModelCache()
    return cache


async def snapshot(services: Services, session: AsyncSession | None = None) -> Snapshot:
    return await cache_of(services).snapshot(services, session)


def cached(services: Services, revision: int) -> Snapshot | None:
    """The snapshot of ``revision`` if this node holds it, without a query: for a transaction
    that has read the revision itself (appending an audit event reads it with the chain's head)."""
    cache = _caches.get(services)
    current = cache._current if cache is not None else None
    return current if current is not None and current.revision == revision else None
