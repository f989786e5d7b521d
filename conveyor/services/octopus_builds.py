"""Build information a build server pushes for a package version through the Octopus API
(``build-information``): the branch, the build and the commits a package was built from.

It is kept where Conveyor's own API keeps it (``services/build_information.py``, one row per
package version; an overwrite replaces the row), and each push is audited
(``BuildInformationPushed``) with a summary. A release created with packages takes the build
information of the packages it pins as its own build (commit, branch, commits), which
Conveyor's change detection, deployment plans and insights read.
"""

from __future__ import annotations

from typing import Any

from conveyor.domain import build_information as rules
from conveyor.domain import octopus
from conveyor.domain import permissions as perms
from conveyor.domain.errors import Conflict
from conveyor.services import build_information as store
from conveyor.services.build_information import BuildInformation
from conveyor.services.core import Caller, Services

EXISTS = "Metadata for the specified Package ID and version already exists."

__all__ = [
    "EXISTS",
    "BuildInformation",
    "authorise_push",
    "build_information",
    "push_build_information",
]


def _parse(info: Any) -> rules.Record:
    return rules.from_octopus(octopus.normalise_build_information(info))


async def build_information(
    services: Services, package_id: str, version: str
) -> BuildInformation | None:
    """The build information pushed for this package version (read with the package, which the
    caller may see already), or None."""
    async with services.read() as session:
        return await store.find(session, package_id, version)


async def authorise_push(services: Services, caller: Caller) -> None:
    """BuildInformationPush, checked before anything the caller sent is looked at: without it
    the answer is 403 (audited as AccessDenied) whatever the request holds."""
    if not perms.authorize(caller.principal, perms.Permission.BuildInformationPush).allowed:
        async with services.tx(caller) as tx:
            tx.require(perms.Permission.BuildInformationPush)


async def push_build_information(
    services: Services,
    caller: Caller,
    package_id: str,
    version: str,
    info: Any,
    mode: str | None = "FailIfExists",
) -> BuildInformation:
    """Record ``OctopusBuildInformation`` for a package version (BuildInformationPush, checked
    first). ``mode`` is Octopus's ``overwriteMode`` as sent: FailIfExists (the default; Conflict
    with the message the clients look for), OverwriteExisting (replaced) or IgnoreIfExists (the
    existing one is returned)."""
    await authorise_push(services, caller)
    chosen = octopus.overwrite_mode(mode)
    try:
        pushed = await store.push(services, caller, package_id, version, info, chosen, parse=_parse)
    except Conflict as exc:
        if "package_id" not in exc.details:
            raise
        raise Conflict(
            f"{EXISTS} ({exc.details['package_id']} {exc.details['version']}): push with "
            "overwriteMode=OverwriteExisting to replace it",
            **exc.details,
        ) from exc
    return pushed.found
