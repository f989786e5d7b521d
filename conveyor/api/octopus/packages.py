"""The built-in feed as the clients push to it (``packages/raw``, multipart ``fileToUpload``),
list and read it, and build information pushed for a package version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile as FormFile

from conveyor.api.deps import ServicesDep
from conveyor.api.octopus import shapes
from conveyor.api.octopus.routing import OctopusCaller, OctopusRoute, Space
from conveyor.domain import octopus
from conveyor.domain.errors import Conflict, ValidationFailed
from conveyor.domain.packages import package_key
from conveyor.domain.versions import Version
from conveyor.services import octopus_builds, octopus_reads, packages
from conveyor.services.core import Caller, Services
from conveyor.services.packages import PackageInfo

router = APIRouter(route_class=OctopusRoute, tags=["Octopus API"])

CHUNK = 1 << 20
EXISTS = "A package with the same name and version already exists."


async def _chunks(upload: FormFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


async def _shape(services: Services, info: PackageInfo) -> dict[str, Any]:
    build = await octopus_builds.build_information(services, info.package_id, info.version)
    return shapes.package(info, build)


UPLOAD_FIELD = "fileToUpload"
MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [UPLOAD_FIELD],
                    "properties": {
                        UPLOAD_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "The archive, named <id>.<version>.zip or .tar.gz",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/api/{space}/packages/raw",
    status_code=201,
    summary="Push a package (multipart fileToUpload, named <id>.<version>.zip)",
    openapi_extra=MULTIPART_BODY,
)
async def push(
    space: Space,
    request: Request,
    services: ServicesDep,
    caller: OctopusCaller,
    response: Response,
    mode: str | None = Query(default=None, alias="overwriteMode"),
    replace: bool = Query(default=False, description="Older clients: OverwriteExisting"),
) -> dict[str, Any]:
    # Authorise before reading anything sent: the upload is parsed here, after the check, not
    # by FastAPI before the handler runs.
    await packages.authorise_push(services, caller)
    chosen = octopus.overwrite_mode(mode or ("OverwriteExisting" if replace else None))
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get(UPLOAD_FIELD)
        if not isinstance(upload, FormFile):
            raise ValidationFailed(
                f"{UPLOAD_FIELD}: send the archive as the multipart field {UPLOAD_FIELD}"
            )
        return await _receive(services, caller, response, upload, chosen)


async def _receive(
    services: Services, caller: Caller, response: Response, upload: FormFile, chosen: str
) -> dict[str, Any]:
    try:
        info = await packages.push_package(
            services,
            caller,
            _chunks(upload),
            file_name=upload.filename or "",
            replace=chosen == "OverwriteExisting",
        )
    except Conflict as exc:
        if chosen == "IgnoreIfExists" and "package_id" in exc.details:
            response.status_code = 200
            existing = await packages.get_package(
                services, caller, exc.details["package_id"], exc.details["version"]
            )
            return await _shape(services, existing)
        if "package_id" not in exc.details:
            raise
        raise Conflict(
            f"{EXISTS} {exc.details['package_id']} {exc.details['version']} is in the built-in "
            "feed: push with overwriteMode=OverwriteExisting to replace it (needs "
            "BuiltInFeedAdminister), or IgnoreIfExists",
            **exc.details,
        ) from exc
    return await _shape(services, info)


@router.get("/api/{space}/packages", summary="Packages of the built-in feed")
async def list_packages(
    space: Space,
    services: ServicesDep,
    caller: OctopusCaller,
    nuget_id: str | None = Query(default=None, alias="nuGetPackageId"),
    text: str | None = Query(default=None, alias="filter"),
    latest: bool = False,
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    found = await packages.list_packages(services, caller, nuget_id or None)
    if text:
        found = [p for p in found if text.lower() in p.package_id.lower()]
    if latest:
        best: dict[str, PackageInfo] = {}
        for p in found:
            known = best.get(package_key(p.package_id))
            if known is None or Version(p.version) > Version(known.version):
                best[package_key(p.package_id)] = p
        found = [p for p in found if best[package_key(p.package_id)] is p]
    page = octopus.collection("Package", found, skip, take, f"{shapes.PREFIX}/packages")
    page["Items"] = [await _shape(services, p) for p in page["Items"]]
    return page


@router.get("/api/{space}/packages/{ref}", summary="One package (Packages-12 or packages-Id.1.0.0)")
async def get_package(
    space: Space, ref: str, services: ServicesDep, caller: OctopusCaller
) -> dict[str, Any]:
    return await _shape(services, await octopus_reads.package(services, caller, ref))


class BuildInformationBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    PackageId: str = Field(min_length=1, max_length=100)
    Version: str = Field(min_length=1, max_length=100)
    OctopusBuildInformation: dict[str, Any] | None = None


@router.post(
    "/api/{space}/build-information",
    status_code=201,
    summary="Push build information for a package version (BuildInformationPush)",
    # The body is read once the caller is authorised (below); its shape, for the schema.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BuildInformationBody.model_json_schema()}},
        }
    },
)
async def push_build_information(
    space: Space,
    request: Request,
    services: ServicesDep,
    caller: OctopusCaller,
    mode: str | None = Query(default=None, alias="overwriteMode"),
) -> dict[str, Any]:
    # Authorise before validating: a caller without BuildInformationPush gets 403 whatever the
    # body or overwriteMode holds, never a 400 that tells what the request lacks.
    await octopus_builds.authorise_push(services, caller)
    try:
        body = BuildInformationBody.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    found = await octopus_builds.push_build_information(
        services,
        caller,
        body.PackageId,
        body.Version,
        body.OctopusBuildInformation,
        mode,
    )
    return shapes.build_information(found)
