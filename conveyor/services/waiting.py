"""How much waits for a person: the count the navigation shows on every page.

It counts what the "Waiting for me" page lists as theirs to do: the pending interruptions they
may answer, and the held deployments that want an approval they may give. Both reads are
bounded by what is pending now (indexed: interruptions by state, tasks by held), never by the
history, so the count costs the same on a server with a long past.
"""

from __future__ import annotations

from conveyor.services import approvals, interruptions
from conveyor.services.core import Caller, Services


async def waiting_count(services: Services, caller: Caller) -> int:
    answerable = await interruptions.list_interruptions(services, caller, mine=True)
    wanted = await approvals.wanted(services, caller)
    return len(answerable) + len(wanted)
