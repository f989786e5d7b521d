"""Conveyor's facts in the shapes the Octopus clients read (PascalCase resources with Links)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from conveyor.domain import channels as ch
from conveyor.domain import octopus
from conveyor.domain.documents import Environment, Lifecycle, Project, ProjectGroup, slugify
from conveyor.services.access import UserRow
from conveyor.services.core import iso
from conveyor.services.octopus_builds import BuildInformation
from conveyor.services.octopus_reads import (
    ChannelFacts,
    DeploymentFacts,
    Found,
    ReleaseFacts,
    TaskFacts,
)
from conveyor.services.packages import PackageInfo

SPACE = octopus.SPACE_ID
PREFIX = f"/api/{SPACE}"


def _time(value: datetime | None) -> str | None:
    return iso(value)


def channel_id(project_id: int | None, channel: str) -> str | None:
    return octopus.channel_id(project_id, channel) if project_id else None


def channel(facts: ChannelFacts) -> dict[str, Any]:
    """``ChannelResource``: a rule's ``ActionPackages`` are the steps it constrains."""
    c, project = facts.channel, facts.project
    ident = facts.id
    rules = []
    for i, rule in enumerate(c.rules):
        steps = ch.rule_steps(project, rule)
        rules.append(
            {
                "Id": f"{ident}-rule-{i + 1}",
                "VersionRange": rule.range,
                "Tag": rule.tag,
                "ActionPackages": [
                    {"DeploymentAction": step, "PackageReference": ""} for step in steps
                ],
                "Links": {},
            }
        )
    project_path = f"{PREFIX}/projects/Projects-{facts.project_id}"
    return {
        "Id": ident,
        "SpaceId": SPACE,
        "ProjectId": f"Projects-{facts.project_id}",
        "Name": c.name,
        "Slug": slugify(c.name),
        "Description": c.description,
        "LifecycleId": facts.lifecycle_id,
        "IsDefault": facts.default,
        "Rules": rules,
        "TenantTags": [],
        "Links": {
            "Self": f"{PREFIX}/channels/{ident}",
            "Project": project_path,
            "Releases": f"{PREFIX}/channels/{ident}/releases",
        },
    }


def space() -> dict[str, Any]:
    return {
        "Id": SPACE,
        "Name": octopus.SPACE_NAME,
        "Slug": slugify(octopus.SPACE_NAME),
        "Description": "Conveyor has one space",
        "IsDefault": True,
        "IsPrivate": False,
        "TaskQueueStopped": False,
        "SpaceManagersTeams": [],
        "SpaceManagersTeamMembers": [],
        "Links": {"Self": f"/api/spaces/{SPACE}", "SpaceHome": PREFIX},
    }


def root(version: str, installation_id: str) -> dict[str, Any]:
    return {
        "Application": "Conveyor",
        "Version": octopus.SERVER_VERSION,
        "ApiVersion": octopus.API_VERSION,
        "ConveyorVersion": version,
        "InstallationId": installation_id,
        "IsEarlyAccessProgram": False,
        "HasLongTermSupport": False,
        "Links": {
            "Self": "/api",
            "Spaces": "/api/spaces{/id}{?skip,ids,take,partialName}",
            "CurrentUser": "/api/users/me",
            "Capabilities": "/api/capabilities",
            "Tasks": "/api/tasks{/id}{?skip,take,ids}",
        },
    }


def _named(found: Found, kind_path: str) -> dict[str, Any]:
    name = found.doc.name
    return {
        "Id": found.id,
        "SpaceId": SPACE,
        "Name": name,
        "Slug": slugify(name),
        "Description": getattr(found.doc, "description", ""),
        "Links": {"Self": f"{PREFIX}/{kind_path}/{found.id}"},
    }


def project(found: Found) -> dict[str, Any]:
    doc = found.doc
    assert isinstance(doc, Project)
    return {
        **_named(found, "projects"),
        "ProjectGroupId": found.refs.get("ProjectGroupId"),
        "LifecycleId": found.refs.get("LifecycleId"),
        "IsDisabled": doc.disabled,
        "DeploymentProcessId": f"deploymentprocess-{found.id}",
        "VariableSetId": f"variableset-{found.id}",
        "TenantedDeploymentMode": "Untenanted",
        "DiscreteChannelRelease": False,
        "PersistenceSettings": {"Type": "Database"},
        "IncludedLibraryVariableSetIds": [],
        "Links": {
            **_named(found, "projects")["Links"],
            "Channels": f"{PREFIX}/projects/{found.id}/channels{{?skip,take,partialName}}",
        },
    }


def environment(found: Found, *, v2: bool = False) -> dict[str, Any]:
    doc = found.doc
    assert isinstance(doc, Environment)
    out = {
        **_named(found, "environments"),
        "SortOrder": found.position,
        "UseGuidedFailure": doc.guided_failure,
        "AllowDynamicInfrastructure": False,
        "ExtensionSettings": [],
    }
    if v2:
        out["Type"] = "Static"
    return out


def lifecycle(found: Found) -> dict[str, Any]:
    doc = found.doc
    assert isinstance(doc, Lifecycle)
    keep = {"QuantityToKeep": 0, "ShouldKeepForever": True, "Unit": "Items"}
    phases = []
    for i, phase in enumerate(doc.phases):
        automatic = [e for e in phase.environments if e in phase.automatic]
        manual = [e for e in phase.environments if e not in phase.automatic]
        phases.append(
            {
                "Id": f"{found.id}-phase-{i + 1}",
                "Name": phase.name,
                "AutomaticDeploymentTargets": [found.refs.get(e, e) for e in automatic],
                "OptionalDeploymentTargets": [found.refs.get(e, e) for e in manual],
                "MinimumEnvironmentsBeforePromotion": phase.minimum_environments,
                "IsOptionalPhase": phase.optional,
                "ReleaseRetentionPolicy": None,
                "TentacleRetentionPolicy": None,
            }
        )
    return {
        **_named(found, "lifecycles"),
        "Phases": phases,
        "ReleaseRetentionPolicy": keep,
        "TentacleRetentionPolicy": keep,
    }


def project_group(found: Found) -> dict[str, Any]:
    assert isinstance(found.doc, ProjectGroup)
    return {**_named(found, "projectgroups"), "EnvironmentIds": [], "RetentionPolicyId": None}


def built_in_feed() -> dict[str, Any]:
    return {
        "Id": octopus.BUILT_IN_FEED_ID,
        "SpaceId": SPACE,
        "Name": octopus.BUILT_IN_FEED_NAME,
        "Slug": slugify(octopus.BUILT_IN_FEED_NAME),
        "FeedType": "BuiltIn",
        "PackageAcquisitionLocationOptions": ["Server", "ExecutionTarget"],
        "IsBuiltInRepoSyncEnabled": False,
        "DeleteUnreleasedPackagesAfterDays": None,
        "Links": {"Self": f"{PREFIX}/feeds/{octopus.BUILT_IN_FEED_ID}"},
    }


def user(row: UserRow) -> dict[str, Any]:
    ident = f"Users-{row.id}"
    return {
        "Id": ident,
        "Username": row.username,
        "DisplayName": row.display_name or row.username,
        "EmailAddress": row.email,
        "IsActive": row.active,
        "IsService": row.service_account,
        "IsRequestor": True,
        "CanPasswordBeEdited": not row.service_account,
        "Identities": [],
        "Links": {"Self": f"/api/users/{ident}"},
    }


def release(facts: ReleaseFacts) -> dict[str, Any]:
    r = facts.view
    ident = f"Releases-{r.id}"
    return {
        "Id": ident,
        "SpaceId": SPACE,
        "ProjectId": f"Projects-{r.project_id}",
        "ChannelId": channel_id(r.project_id, r.channel),
        "Version": r.version,
        "ReleaseNotes": r.notes,
        "Assembled": _time(r.created_at),
        "IgnoreChannelRules": False,
        "SelectedPackages": [
            {"ActionName": step, "PackageReferenceName": "", "Version": version}
            for step, _, version in facts.selected
        ],
        "SelectedGitResources": [],
        "ProjectDeploymentProcessSnapshotId": f"deploymentprocess-Projects-{r.project_id}-{r.id}",
        "ProjectVariableSetSnapshotId": f"variableset-Projects-{r.project_id}-{r.id}",
        "LibraryVariableSetSnapshotIds": [],
        "BuildInformation": _release_build(r.build, facts),
        "CustomFields": {},
        "Links": {"Self": f"{PREFIX}/releases/{ident}"},
    }


def _release_build(build: dict[str, Any], facts: ReleaseFacts) -> list[dict[str, Any]]:
    if not build:
        return []
    return [
        {
            "PackageId": package,
            "Version": version,
            "Branch": build.get("branch", ""),
            "BuildUrl": build.get("build_url", ""),
            "VcsCommitNumber": build.get("commit", ""),
            "Commits": [
                {"Id": c["sha"], "Comment": c.get("message", "")} for c in build.get("commits", [])
            ],
        }
        for _, package, version in facts.selected[:1]
    ]


def deployment(facts: DeploymentFacts) -> dict[str, Any]:
    ident = f"Deployments-{facts.id}"
    names = facts.names
    return {
        "Id": ident,
        "SpaceId": SPACE,
        "Name": f"Deploy to {names.environment}",
        "ReleaseId": f"Releases-{facts.release_id}",
        "ReleaseVersion": facts.release_version,
        "EnvironmentId": f"Environments-{names.environment_id}",
        "ProjectId": f"Projects-{names.project_id}",
        "ChannelId": channel_id(names.project_id, facts.channel),
        "TenantId": None,
        "TaskId": f"ServerTasks-{facts.task_id}" if facts.task_id else None,
        "Created": _time(facts.created_at),
        "DeployedBy": facts.created_by,
        "SkipActions": [],
        "SpecificMachineIds": [],
        "ExcludedMachineIds": [],
        "ForcePackageDownload": False,
        "ForcePackageRedeployment": False,
        "Comments": "",
        "FormValues": {},
        "Links": {
            "Self": f"{PREFIX}/deployments/{ident}",
            "Task": f"{PREFIX}/tasks/ServerTasks-{facts.task_id}" if facts.task_id else None,
        },
    }


def task(facts: TaskFacts) -> dict[str, Any]:
    ident = facts.public_id
    completed = octopus.is_completed(facts.state)
    ended = facts.completed_at
    duration = None
    if facts.started_at is not None:
        seconds = int(
            ((ended or datetime.now(facts.started_at.tzinfo)) - facts.started_at).total_seconds()
        )
        duration = f"{seconds // 60} minutes" if seconds >= 60 else f"{seconds} seconds"
    queue_time = facts.start_at or facts.created_at
    return {
        "Id": ident,
        "SpaceId": SPACE,
        "Name": "Deploy" if facts.deployment_id else "Task",
        "Description": facts.description,
        "State": octopus.task_state(facts.state, facts.cancel_requested),
        "IsCompleted": completed,
        "FinishedSuccessfully": facts.state == "success",
        "HasBeenPickedUpByProcessor": facts.started_at is not None,
        "HasPendingInterruptions": facts.state == "waiting"
        and facts.waiting_on in ("interruption", "block"),
        "HasWarningsOrErrors": facts.state in ("failed", "timed_out") or bool(facts.error),
        "CanRerun": False,
        "ErrorMessage": facts.error or "",
        "QueueTime": _time(queue_time),
        "QueueTimeExpiry": None,
        "StartTime": _time(facts.started_at),
        "CompletedTime": _time(ended),
        "LastUpdatedTime": _time(ended or facts.started_at or facts.created_at),
        "Duration": duration,
        "ServerNode": None,
        "ProjectId": f"Projects-{facts.names.project_id}" if facts.names.project_id else None,
        "EnvironmentId": (
            f"Environments-{facts.names.environment_id}" if facts.names.environment_id else None
        ),
        "Arguments": (
            {"DeploymentId": f"Deployments-{facts.deployment_id}"} if facts.deployment_id else {}
        ),
        "Links": {
            "Self": f"/api/tasks/{ident}",
            "Details": f"{PREFIX}/tasks/{ident}/details",
            "Raw": f"{PREFIX}/tasks/{ident}/raw",
            "Cancel": f"/api/tasks/{ident}/cancel",
        },
    }


def package(info: PackageInfo, build: BuildInformation | None) -> dict[str, Any]:
    extension = ".zip" if info.format == "zip" else ".tar.gz"
    return {
        "Id": info.id,
        "SpaceId": SPACE,
        "PackageId": info.package_id,
        "Version": info.version,
        "FeedId": octopus.BUILT_IN_FEED_ID,
        "FileExtension": extension,
        "Title": info.package_id,
        "Summary": "",
        "Description": "",
        "ReleaseNotes": "",
        "Published": iso(info.created_at),
        "PackageSizeBytes": info.size,
        "Hash": info.sha256,
        "PackageVersionBuildInformation": build_information(build) if build else None,
        "Links": {"Self": f"{PREFIX}/packages/{info.id}"},
    }


def build_information(found: BuildInformation) -> dict[str, Any]:
    info = found.info
    return {
        "Id": found.id,
        "SpaceId": SPACE,
        "PackageId": found.package_id,
        "Version": found.version,
        "Branch": info.get("Branch", ""),
        "BuildEnvironment": info.get("BuildEnvironment", ""),
        "BuildNumber": info.get("BuildNumber", ""),
        "BuildUrl": info.get("BuildUrl", ""),
        "VcsType": info.get("VcsType", ""),
        "VcsRoot": info.get("VcsRoot", ""),
        "VcsCommitNumber": info.get("VcsCommitNumber", ""),
        "VcsCommitUrl": "",
        "IssueTrackerName": "",
        "WorkItems": [],
        "Commits": [
            {
                "Id": c.get("Id", ""),
                "LinkUrl": c.get("LinkUrl", ""),
                "Comment": c.get("Comment", ""),
            }
            for c in info.get("Commits", [])
        ],
        "IncompleteDataWarning": None,
        "Created": iso(found.pushed_at),
        "LastModifiedBy": found.pushed_by,
        "LastModifiedOn": iso(found.pushed_at),
        "Links": {"Self": f"{PREFIX}/build-information/{found.id}"},
    }
