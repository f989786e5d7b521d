"""The built-in package feed: push (multipart), list, show, download, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, Response, UploadFile
from fastapi.responses import FileResponse

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import build_information, packages

router = APIRouter(prefix="/packages", tags=["Packages"])

CHUNK = 1 << 20
MEDIA_TYPES = {"zip": "application/zip", "tar.gz": "application/gzip"}


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post(
    "",
    status_code=201,
    summary="Push a zip or tar.gz; id and version from the form or the file name",
)
async def push(
    services: ServicesDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="The archive, named <id>.<version>.zip")],
    package_id: Annotated[str | None, Form(description="Overrides the file name's id")] = None,
    version: Annotated[str | None, Form(description="Overrides the file name's version")] = None,
    replace: Annotated[
        bool, Form(description="Overwrite an existing version (BuiltInFeedAdminister)")
    ] = False,
) -> dict[str, Any]:
    info = await packages.push_package(
        services,
        caller,
        _chunks(file),
        file_name=file.filename or "",
        package_id=package_id or None,
        version=version or None,
        replace=replace,
    )
    return info.as_dict()


@router.get("", summary="Packages by id, each id's versions highest first")
async def list_packages(
    services: ServicesDep, caller: CallerDep, package_id: str | None = None
) -> list[dict[str, Any]]:
    return [p.as_dict() for p in await packages.list_packages(services, caller, package_id)]


@router.get("/{package_id}/{version}", summary="One package version")
async def get_package(
    package_id: str, version: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return (await packages.get_package(services, caller, package_id, version)).as_dict()


@router.get(
    "/{package_id}/{version}/build-information",
    summary="The build information pushed for a package version (FeedView)",
)
async def get_build_information(
    package_id: str, version: str, services: ServicesDep, caller: CallerDep
) -> dict[str, Any]:
    return (await build_information.get(services, caller, package_id, version)).as_dict()


@router.post(
    "/{package_id}/{version}/build-information",
    status_code=201,
    summary="Push build information for a package version (BuildInformationPush)",
    description="201 when stored (or replaced with `mode=overwrite`), 200 with the one kept "
    "(`mode=ignore`); 409 when the version has some already and `mode` is `fail` (the default). "
    "See docs/build-servers.md.",
)
async def push_build_information(
    package_id: str,
    version: str,
    services: ServicesDep,
    caller: CallerDep,
    response: Response,
    data: Any = Body(
        default=None,
        examples=[
            {
                "branch": "main",
                "build_number": "42",
                "build_url": "https://ci.example.com/runs/42",
                "vcs_type": "Git",
                "vcs_root": "https://github.com/example/shop",
                "vcs_commit": "3f2a9c1e",
                "commits": [
                    {
                        "id": "3f2a9c1e",
                        "comment": "Faster checkout",
                        "author": "Ada",
                        "timestamp": "2026-11-30T09:15:00Z",
                    }
                ],
            }
        ],
    ),
    mode: str | None = Query(default=None, description="fail (default), overwrite or ignore"),
) -> dict[str, Any]:
    pushed = await build_information.push(services, caller, package_id, version, data, mode)
    if pushed.outcome == "kept":
        response.status_code = 200
    return {**pushed.found.as_dict(), "outcome": pushed.outcome}


@router.get(
    "/{package_id}/{version}/download",
    summary="The archive itself",
    response_class=FileResponse,
)
async def download(
    package_id: str, version: str, services: ServicesDep, caller: CallerDep
) -> FileResponse:
    info, path = await packages.open_download(services, caller, package_id, version)
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(info.format, "application/octet-stream"),
        filename=info.file_name,
        headers={"ETag": f'"{info.sha256}"', "X-Package-Sha256": info.sha256},
    )


@router.delete(
    "/{package_id}/{version}",
    status_code=204,
    summary="Delete a package version (BuiltInFeedAdminister)",
)
async def delete(
    package_id: str, version: str, services: ServicesDep, caller: CallerDep
) -> Response:
    await packages.delete_package(services, caller, package_id, version)
    return Response(status_code=204)
