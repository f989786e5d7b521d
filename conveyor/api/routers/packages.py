"""The built-in package feed: push (multipart), list, show, download, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.responses import FileResponse

from conveyor.api.deps import CallerDep, ServicesDep
from conveyor.services import packages

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
