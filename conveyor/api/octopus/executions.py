"""Releases and deployments: the Executions API's create commands (v1), and reading them back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from conveyor.api.deps import ServicesDep
from conveyor.api.octopus import shapes
from conveyor.api.octopus.routing import OctopusCaller, OctopusRoute, Space
from conveyor.domain import octopus
from conveyor.domain.errors import Problem, ValidationFailed
from conveyor.services import octopus_executions, octopus_reads
from conveyor.services.config import require_public_id

router = APIRouter(route_class=OctopusRoute, tags=["Octopus API"])


class CreateRelease(BaseModel):
    """``CreateReleaseCommandV1``; the client adds spaceId, spaceName and spaceIdOrName."""

    model_config = ConfigDict(extra="ignore")

    ProjectName: str = Field(min_length=1, max_length=200)
    ReleaseVersion: str | None = Field(default=None, max_length=100)
    ChannelName: str | None = Field(default=None, max_length=200)
    # Not in CreateReleaseCommandV1: what a client that looked the channel up may send.
    ChannelId: str | None = Field(default=None, max_length=300)
    PackageVersion: str | None = Field(default=None, max_length=100)
    Packages: list[str] = Field(default_factory=list, max_length=1000)
    GitResources: list[str] = Field(default_factory=list)
    GitRef: str | None = None
    GitCommit: str | None = Field(default=None, max_length=64)
    ReleaseNotes: str | None = Field(default=None, max_length=100_000)
    IgnoreIfAlreadyExists: bool = False
    IgnoreChannelRules: bool = False
    PackagePrerelease: str | None = None
    CustomFields: dict[str, str] = Field(default_factory=dict)


def _unsupported(**fields: Any) -> tuple[Problem, ...]:
    """Options Conveyor has no equivalent for yet: refused when used (once the caller is
    authorised), never ignored."""
    return tuple(
        Problem((name,), f"is not supported by Conveyor ({why}); leave it out")
        for name, (value, why) in fields.items()
        if value
    )


@router.post(
    "/api/{space}/releases/create/v1",
    status_code=201,
    summary="Create a release (Executions API); then its automatic deployments",
)
async def create_release(
    space: Space, body: CreateRelease, services: ServicesDep, caller: OctopusCaller
) -> dict[str, Any]:
    unsupported = _unsupported(
        GitResources=(body.GitResources, "projects are not version-controlled"),
        GitRef=(body.GitRef, "projects are not version-controlled"),
        PackagePrerelease=(body.PackagePrerelease, "give the versions in Packages"),
        CustomFields=(body.CustomFields, "releases have no custom fields"),
        IgnoreChannelRules=(
            body.IgnoreChannelRules,
            "a release follows its channel's version rules; choose the channel with ChannelName",
        ),
    )
    created = await octopus_executions.create_release(
        services,
        caller,
        octopus_executions.ReleaseCommand(
            project=body.ProjectName,
            version=body.ReleaseVersion or None,
            channel=body.ChannelName or None,
            channel_id=body.ChannelId or None,
            package_version=body.PackageVersion or None,
            packages=tuple(body.Packages),
            notes=body.ReleaseNotes or "",
            ignore_if_exists=body.IgnoreIfAlreadyExists,
            git_commit=body.GitCommit or None,
            unsupported=unsupported,
        ),
    )
    return {"ReleaseId": f"Releases-{created.release_id}", "ReleaseVersion": created.version}


@router.get("/api/{space}/releases/{ref}", summary="One release")
async def release(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return shapes.release(await octopus_reads.release(services, caller, ref))


@router.get("/api/{space}/releases", summary="Releases you may view, newest first")
async def releases(
    space: Space,
    services: ServicesDep,
    caller: OctopusCaller,
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    items = [shapes.release(r) for r in await octopus_reads.releases(services, caller)]
    return octopus.collection("Release", items, skip, take, f"{shapes.PREFIX}/releases")


def _releases_matching(
    found: list[octopus_reads.ReleaseFacts], search: str | None
) -> list[dict[str, Any]]:
    """``searchByVersion``: the releases whose version contains it, any case."""
    wanted = (search or "").lower()
    return [shapes.release(r) for r in found if wanted in r.view.version.lower()]


@router.get("/api/{space}/projects/{project}/releases", summary="A project's releases")
async def project_releases(
    space: Space,
    project: str,
    services: ServicesDep,
    caller: OctopusCaller,
    search: str | None = Query(default=None, alias="searchByVersion"),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    project_id = require_public_id("projects", project, "project", bare=False)
    found = await octopus_reads.releases(services, caller, project_id)
    items = _releases_matching(found, search)
    path = f"{shapes.PREFIX}/projects/{project}/releases"
    return octopus.collection("Release", items, skip, take, path)


@router.get("/api/{space}/channels/{ref}/releases", summary="A channel's releases")
async def channel_releases(
    space: Space,
    ref: str,
    services: ServicesDep,
    caller: OctopusCaller,
    search: str | None = Query(default=None, alias="searchByVersion"),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    found = await octopus_reads.channel_releases(services, caller, ref)
    items = _releases_matching(found, search)
    path = f"{shapes.PREFIX}/channels/{ref}/releases"
    return octopus.collection("Release", items, skip, take, path)


class CreateDeployment(BaseModel):
    """``CreateDeploymentUntenantedCommandV1``."""

    model_config = ConfigDict(extra="ignore")

    ProjectName: str = Field(min_length=1, max_length=200)
    ReleaseVersion: str = Field(min_length=1, max_length=100)
    EnvironmentNames: list[str] = Field(default_factory=list, max_length=100)
    SkipStepNames: list[str] = Field(default_factory=list)
    UseGuidedFailure: bool | None = None
    RunAt: AwareDatetime | None = None
    NoRunAfter: AwareDatetime | None = None
    DeploymentFreezeOverrideReason: str | None = Field(default=None, max_length=2000)
    DeploymentFreezeNames: list[str] = Field(default_factory=list)
    ForcePackageRedeployment: bool = False
    ForcePackageDownload: bool = False
    UpdateVariableSnapshot: bool = False
    SpecificMachineNames: list[str] = Field(default_factory=list)
    ExcludedMachineNames: list[str] = Field(default_factory=list)
    Variables: dict[str, str] = Field(default_factory=dict)


@router.post(
    "/api/{space}/deployments/create/untenanted/v1",
    status_code=201,
    summary="Deploy a release to environments (Executions API), all or none",
)
async def create_deployment(
    space: Space, body: CreateDeployment, services: ServicesDep, caller: OctopusCaller
) -> dict[str, Any]:
    unsupported = _unsupported(
        NoRunAfter=(body.NoRunAfter, "use the environment's change windows"),
        UpdateVariableSnapshot=(
            body.UpdateVariableSnapshot,
            "refresh the release's variables first: `conveyor release update-variables`",
        ),
        SpecificMachineNames=(body.SpecificMachineNames, "steps choose targets by role"),
        ExcludedMachineNames=(body.ExcludedMachineNames, "disable the target instead"),
        Variables=(body.Variables, "there are no prompted variables"),
        DeploymentFreezeNames=(
            body.DeploymentFreezeNames,
            "give DeploymentFreezeOverrideReason to override a freeze",
        ),
    )
    queued = await octopus_executions.deploy(
        services,
        caller,
        body.ProjectName,
        body.ReleaseVersion,
        body.EnvironmentNames,
        skip=body.SkipStepNames,
        guided_failure=body.UseGuidedFailure,
        start_at=body.RunAt,
        freeze_override=body.DeploymentFreezeOverrideReason or None,
        unsupported=unsupported,
    )
    return {
        "DeploymentServerTasks": [
            {
                "DeploymentId": f"Deployments-{q.deployment_id}",
                "ServerTaskId": f"ServerTasks-{q.task_id}",
            }
            for q in queued
        ]
    }


@router.post("/api/{space}/deployments/create/tenanted/v1", summary="Not supported: no tenants")
async def create_tenanted(space: Space, caller: OctopusCaller) -> dict[str, Any]:
    raise ValidationFailed(
        "tenanted deployments are not supported: Conveyor has no tenants; "
        "use deployments/create/untenanted/v1"
    )


@router.get("/api/{space}/deployments", summary="Deployments by ids, or the newest")
async def deployments(
    space: Space,
    services: ServicesDep,
    caller: OctopusCaller,
    ids: list[str] = Query(default=[]),
    projects: list[str] = Query(default=[]),
    environments: list[str] = Query(default=[]),
    channels: list[str] = Query(default=[]),
    task_state: str | None = Query(default=None, alias="taskState"),
    skip: int = 0,
    take: int | None = None,
) -> dict[str, Any]:
    wanted = octopus.split_ids(ids)
    found = await octopus_reads.deployments(
        services,
        caller,
        wanted,
        projects=octopus.split_ids(projects),
        environments=octopus.split_ids(environments),
        channel_ids=octopus.split_ids(channels),
        states=octopus.state_filter(task_state) if task_state else (),
    )
    items = [shapes.deployment(d) for d in found]
    # Asked by ids, every one found is returned, whatever skip says (the clients send the
    # ids of one batch with that batch's offset).
    start, size = (0, octopus.TAKE_ALL) if wanted and take is None else (skip, take)
    if wanted:
        start = 0
    return octopus.collection("Deployment", items, start, size, f"{shapes.PREFIX}/deployments")


@router.get("/api/{space}/deployments/{ref}", summary="One deployment")
async def deployment(space: Space, ref: str, services: ServicesDep, caller: OctopusCaller) -> Any:
    return shapes.deployment(await octopus_reads.deployment(services, caller, ref))
