"""Host keys pinned on first use, for the ssh targets that ask for it (``trust_first_host_key``).

The first key a target's host shows is recorded here, audited, and from then on held to as if it
were pinned in the configuration: a different key is refused. A key pinned in the target's
``host_key`` always wins over this record.
"""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from conveyor.domain.audit import Category
from conveyor.domain.documents import slugify
from conveyor.services.config import public_id
from conveyor.services.core import Services, system_caller
from conveyor.store import tables as t


async def pinned_host_key(services: Services, target: str) -> str | None:
    """The host key recorded on first use for ``target`` (by name), if any."""
    async with services.read() as session:
        found = await session.scalar(
            select(t.target_host_keys.c.host_key).where(
                t.target_host_keys.c.target == slugify(target)
            )
        )
    return str(found) if found is not None else None


async def pin_first_host_key(
    services: Services, target: str, host_key: str, fingerprint: str, address: str
) -> str:
    """Record ``host_key`` as the one ``target`` holds to, unless a key is recorded already
    (another node may have pinned one a moment ago); the key now pinned either way."""
    try:
        async with services.tx(system_caller()) as tx:
            existing = await tx.session.scalar(
                select(t.target_host_keys.c.host_key).where(
                    t.target_host_keys.c.target == slugify(target)
                )
            )
            if existing is not None:
                return str(existing)
            await tx.session.execute(
                insert(t.target_host_keys).values(
                    target=slugify(target), host_key=host_key, pinned_at=tx.now
                )
            )
            row = await tx.session.scalar(
                select(t.targets.c.id).where(t.targets.c.slug == slugify(target))
            )
            await tx.audit(
                Category.TARGET_HOST_KEY_PINNED,
                f"Target {target}: host key {fingerprint} of {address} pinned on first use",
                documents=[public_id("targets", row)] if row is not None else [],
                details={
                    "target": target,
                    "host_key": host_key,
                    "fingerprint": fingerprint,
                    "address": address,
                    "trust_first_host_key": True,
                },
            )
    except IntegrityError:  # pinned by another node at the same moment: its key stands
        pinned = await pinned_host_key(services, target)
        if pinned is None:
            raise
        return pinned
    return host_key
