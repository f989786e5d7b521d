"""The built-in package feed: each package's versions (size, pushed when and by whom, sha256),
the releases that pinned each, and deleting a version for those who administer the feed."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from conveyor.domain import permissions as perms
from conveyor.domain.errors import Conflict
from conveyor.domain.packages import package_key
from conveyor.services import build_information, packages
from conveyor.services.build_information import BuildInformation
from conveyor.services.config import load_outline, project_ref
from conveyor.services.packages import PackageInfo, Pin
from conveyor.web.pages import PageCaller, PageRoute, ServicesDep, form_text, redirect, render
from conveyor.web.routes.targets import _size

router = APIRouter(route_class=PageRoute, include_in_schema=False)
P = perms.Permission


@dataclass(frozen=True)
class VersionRow:
    info: PackageInfo
    pinned_by: list[Pin]  # those of projects the reader may view
    hidden: int  # releases of other projects that pinned it
    build: BuildInformation | None = None  # the build information pushed for it

    @property
    def size(self) -> str:
        return _size(self.info.size)


@dataclass(frozen=True)
class PackageRow:
    package_id: str
    versions: list[VersionRow]


@router.get("/packages")
async def feed_page(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    infos = await packages.list_packages(services, caller)
    ids = sorted({i.package_id for i in infos}, key=package_key)
    pins = await packages.package_pins(services, caller, ids)
    builds = await build_information.for_versions(
        services, caller, [(i.package_id, i.version) for i in infos]
    )
    model = (await load_outline(services)).model
    viewable = {
        p.name
        for p in model.projects
        if perms.authorize(
            caller.principal, P.ProjectView, project=project_ref(model, p.name)
        ).allowed
    }
    rows: list[PackageRow] = []
    for info in infos:
        if not rows or package_key(rows[-1].package_id) != package_key(info.package_id):
            rows.append(PackageRow(info.package_id, []))
        pinning = [p for p in pins if p.pins(info.package_id, info.version)]
        shown = [p for p in pinning if p.project in viewable]
        build = builds.get(build_information.key_of(info.package_id, info.version))
        rows[-1].versions.append(VersionRow(info, shown, len(pinning) - len(shown), build))
    refused = ""
    kept = request.query_params.get("kept", "")
    if ":" in kept:
        package_id, version = kept.rsplit(":", 1)
        refused = _kept_sentence(rows, package_id, version)
    done = request.query_params.get("deleted", "")
    return render(
        request,
        "packages.html",
        title="Packages",
        rows=rows,
        may_delete=perms.authorize(caller.principal, P.BuiltInFeedAdminister).allowed,
        refused=refused,
        deleted=done.replace(":", " ") if done else "",
    )


@router.post("/packages/delete")
async def delete_version(request: Request, services: ServicesDep, caller: PageCaller) -> Response:
    """Delete one version; a version a release pinned is kept, and the page says why."""
    form = await request.form()
    package_id = form_text(form, "package")
    version = form_text(form, "version")
    try:
        await packages.delete_package(services, caller, package_id, version)
    except Conflict:
        return redirect("/packages", kept=f"{package_id}:{version}")
    return redirect("/packages", deleted=f"{package_id}:{version}")


def _kept_sentence(rows: list[PackageRow], package_id: str, version: str) -> str:
    """Why a version was not deleted, naming the releases that pinned it (those the reader may
    see)."""
    found = next(
        (
            v
            for row in rows
            if package_key(row.package_id) == package_key(package_id)
            for v in row.versions
            if v.info.version == version
        ),
        None,
    )
    if found is None:
        return ""
    names = [f"{p.project} {p.release}" for p in found.pinned_by]
    if found.hidden:
        names.append(f"{found.hidden} release(s) of projects you may not view")
    by = ", ".join(names) or "a release"
    return (
        f"{found.info.package_id} {found.info.version} was not deleted: {by} pinned it, and a "
        "release deploys exactly the package versions it pinned."
    )
