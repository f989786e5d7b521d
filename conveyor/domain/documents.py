"""The configuration documents, as plain frozen values.

Documents refer to each other by name (case-insensitive), exactly as a person writes them in
config as code and reads them in the API. The store keeps the same shapes; a rename is a pure
rewrite of the references (``conveyor.domain.model.rename``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from conveyor.domain.channels import Channel
from conveyor.domain.oidc import OidcTrust


# Names are few and compared constantly (every permission check, every name lookup): remember.
@functools.lru_cache(maxsize=65536)
def slugify(name: str) -> str:
    """``"Deploy All"`` -> ``"deploy-all"``; used for URLs and case-insensitive identity."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return text or "x"


def key(name: str) -> str:
    """Identity of a named document: names match case-insensitively and by slug."""
    return slugify(name)


class StepType(StrEnum):
    SCRIPT = "script"
    PACKAGE = "package"
    MANUAL_INTERVENTION = "manual_intervention"
    NOTIFICATION = "notification"
    DEPLOY_RELEASE = "deploy_release"


class RunCondition(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    ALWAYS = "always"
    VARIABLE = "variable"


class StartTrigger(StrEnum):
    AFTER_PREVIOUS = "after_previous"
    WITH_PREVIOUS = "with_previous"


class DeploymentCondition(StrEnum):
    ALWAYS = "always"
    IF_NOT_CURRENT = "if_not_current"
    IF_NEWER = "if_newer"


class ScriptSyntax(StrEnum):
    BASH = "bash"
    PYTHON = "python"


class GuidedFailureMode(StrEnum):
    ENVIRONMENT_DEFAULT = "environment_default"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class InputField:
    """A question a person answers when approving (an approval check, a manual intervention):
    free text matching ``pattern`` (a regular expression the whole answer must match), or one
    of ``choices``. The answer is stored on the event and is a variable of later steps."""

    name: str
    label: str = ""
    pattern: str = ""
    choices: tuple[str, ...] = ()
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class TeamQuorum:
    """``quorum`` distinct members of ``team`` must approve."""

    team: str
    quorum: int = 1


@dataclass(frozen=True)
class ApprovalCheck:
    """Approvals a deployment needs before it starts: every team its quorum ("and" across
    teams). They can be given ahead of time, for a release and an environment."""

    teams: tuple[TeamQuorum, ...]
    # Four eyes: the person who queued the deployment, and the authors of the commits the
    # release brings, do not count (and are refused).
    block_creator: bool = True
    block_commit_authors: bool = True
    fields: tuple[InputField, ...] = ()


@dataclass(frozen=True)
class ChangeWindow:
    """When deployments may start: on ``days`` (mon…sun; empty: every day), from ``start`` to
    ``end`` (``HH:MM``, local time of ``time_zone``; an end before the start runs past
    midnight)."""

    start: str
    end: str
    days: tuple[str, ...] = ()
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Freeze:
    """A named period (ISO 8601 instants, the end excluded) in which nothing is deployed,
    except by someone who may override a freeze and says why."""

    name: str
    start: str
    end: str
    description: str = ""


@dataclass(frozen=True)
class EnvironmentChecks:
    """Checks every deployment to the environment passes, whatever its process says: process
    editors cannot remove them (editing an environment takes EnvironmentEdit)."""

    # Empty: every project; otherwise only the projects of these groups.
    project_groups: tuple[str, ...] = ()
    approval: ApprovalCheck | None = None
    # When any window is given, deployments start only inside one of them.
    windows: tuple[ChangeWindow, ...] = ()
    freezes: tuple[Freeze, ...] = ()
    # Queuing a deployment cancels the older queued (not started) ones of the same project.
    run_latest: bool = False


@dataclass(frozen=True)
class Environment:
    name: str
    description: str = ""
    guided_failure: bool = False
    checks: tuple[EnvironmentChecks, ...] = ()


class RetentionUnit(StrEnum):
    ITEMS = "items"
    DAYS = "days"


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the last ``keep`` items, or what is younger than ``keep`` days (docs/retention.md).
    No policy at all means keep forever."""

    keep: int
    unit: RetentionUnit = RetentionUnit.ITEMS


@dataclass(frozen=True)
class Phase:
    name: str
    environments: tuple[str, ...]
    automatic: tuple[str, ...] = ()
    optional: bool = False
    # 0 means every environment of the phase must be reached before promotion.
    minimum_environments: int = 0
    # Retention in this phase (None: the nearest earlier phase's, else the lifecycle's;
    # docs/retention.md).
    release_retention: RetentionPolicy | None = None
    task_log_retention: RetentionPolicy | None = None


@dataclass(frozen=True)
class Lifecycle:
    name: str
    phases: tuple[Phase, ...]
    description: str = ""
    # The default for its phases, and for releases deployed nowhere yet (None: keep forever).
    release_retention: RetentionPolicy | None = None
    task_log_retention: RetentionPolicy | None = None
    # Package versions of the built-in feed that this lifecycle's projects use.
    package_retention: RetentionPolicy | None = None


@dataclass(frozen=True)
class ProjectGroup:
    name: str
    description: str = ""


class UnhealthyTargets(StrEnum):
    """What a step does when one of its targets is unhealthy at the start of the deployment."""

    FAIL = "fail"  # the deployment fails before it starts anything
    SKIP = "skip"  # the step runs on the healthy targets and says which it left out


@dataclass(frozen=True)
class ScriptAction:
    body: str
    syntax: ScriptSyntax = ScriptSyntax.BASH
    # Empty: run once on the server. Otherwise: once on every target with one of these roles.
    target_roles: tuple[str, ...] = ()
    # On several targets: all at once (None), or this many at a time, a rolling deployment
    # that starts no further target after one failed.
    window: int | None = None
    # With no target roles: the worker pool it runs in (empty: the default pool).
    worker_pool: str = ""
    unhealthy_targets: UnhealthyTargets = UnhealthyTargets.FAIL


@dataclass(frozen=True)
class PackageAction:
    package: str
    target_roles: tuple[str, ...] = ()
    post_deploy_script: str = ""
    post_deploy_syntax: ScriptSyntax = ScriptSyntax.BASH
    window: int | None = None  # as for ScriptAction
    unhealthy_targets: UnhealthyTargets = UnhealthyTargets.FAIL


@dataclass(frozen=True)
class ManualInterventionAction:
    instructions: str
    responsible_teams: tuple[str, ...] = ()
    block_deployments: bool = False
    # Four eyes and quorum: beyond what Octopus's manual intervention offers.
    prevent_self_approval: bool = False
    required_approvals: int = 1
    approval_teams: tuple[str, ...] = ()
    # Questions the answer must carry (a change ticket, a choice): conveyor.domain.inputs.
    fields: tuple[InputField, ...] = ()


@dataclass(frozen=True)
class Webhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    # Name of a sensitive project variable whose value signs the body (HMAC-SHA256).
    secret_variable: str = ""


@dataclass(frozen=True)
class NotificationAction:
    subject: str
    body: str
    to_teams: tuple[str, ...] = ()
    to_users: tuple[str, ...] = ()
    to_addresses: tuple[str, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    # A failed delivery fails the step unless the step says it should only warn.
    warn_only: bool = False


@dataclass(frozen=True)
class DeployReleaseAction:
    project: str
    condition: DeploymentCondition = DeploymentCondition.ALWAYS
    variables: tuple[tuple[str, str], ...] = ()


Action = (
    ScriptAction
    | PackageAction
    | ManualInterventionAction
    | NotificationAction
    | DeployReleaseAction
)

ACTION_TYPES: dict[type, StepType] = {
    ScriptAction: StepType.SCRIPT,
    PackageAction: StepType.PACKAGE,
    ManualInterventionAction: StepType.MANUAL_INTERVENTION,
    NotificationAction: StepType.NOTIFICATION,
    DeployReleaseAction: StepType.DEPLOY_RELEASE,
}


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    # Environment scope: run only in these (empty: all of the lifecycle) and never in those.
    environments: tuple[str, ...] = ()
    excluded_environments: tuple[str, ...] = ()
    condition: RunCondition = RunCondition.SUCCESS
    condition_expression: str = ""
    start: StartTrigger = StartTrigger.AFTER_PREVIOUS
    timeout_seconds: int | None = None
    disabled: bool = False
    # A required step cannot be skipped at deploy time; a manual intervention with responsible
    # teams is always required (as in Octopus).
    required: bool = False

    @property
    def type(self) -> StepType:
        return ACTION_TYPES[type(self.action)]

    @property
    def is_required(self) -> bool:
        if self.required:
            return True
        return isinstance(self.action, ManualInterventionAction) and bool(
            self.action.responsible_teams
        )


@dataclass(frozen=True)
class Process:
    steps: tuple[Step, ...] = ()
    # Optimistic concurrency: an edit must name the version it was made from.
    version: int = 0


@dataclass(frozen=True)
class Variable:
    name: str
    value: str
    sensitive: bool = False
    environments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Project:
    name: str
    group: str
    lifecycle: str
    description: str = ""
    watch_paths: tuple[str, ...] = ()
    disabled: bool = False
    guided_failure: GuidedFailureMode = GuidedFailureMode.ENVIRONMENT_DEFAULT
    process: Process = field(default_factory=Process)
    variables: tuple[Variable, ...] = ()
    # Empty: one implicit channel, "Default" (conveyor/domain/channels.py).
    channels: tuple[Channel, ...] = ()


@dataclass(frozen=True)
class Target:
    """A machine steps run on: ``local`` (folders on the server, sandboxed), ``ssh`` (reached
    over SSH with a key, its host key pinned) or ``agent`` (a polling ``conveyor agent``).

    A target with a ``pool`` is a worker: it belongs to no environment and runs the script
    steps that name no target roles (docs/targets.md)."""

    name: str
    environments: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    kind: str = "local"
    description: str = ""
    # ssh: where and as whom; the private key is sensitive (encrypted at rest, never exported).
    host: str = ""
    port: int = 22
    user: str = ""
    private_key: str = ""
    # The host's public key as ``ssh-keyscan`` prints it (``ssh-ed25519 AAAA…``): anything else
    # is refused, unless ``trust_first_host_key`` (then the first key seen is pinned).
    host_key: str = ""
    trust_first_host_key: bool = False
    # ssh: the folder Conveyor keeps on the machine (relative paths are from the user's home).
    work_dir: str = ""
    # ssh: how many commands run on the machine at once (channels of one connection).
    max_sessions: int = 8
    # A worker: the worker pool it belongs to (then no environments or roles).
    pool: str = ""
    # Taken out of deployments without removing it (health checks skip it too).
    disabled: bool = False

    @property
    def is_worker(self) -> bool:
        return bool(self.pool)


@dataclass(frozen=True)
class User:
    username: str
    display_name: str = ""
    email: str = ""
    service_account: bool = False
    active: bool = True
    # The person's own choice: False stops mail addressed to a team they are in (interruption
    # calls, notification steps' to_teams, team subscriptions). A file that leaves it out keeps it.
    notify_interruptions: bool = True
    # A service account: the external OIDC issuers (CI systems) whose tokens it accepts, and
    # the claim rules those tokens must meet (docs/sso.md).
    oidc_trust: tuple[OidcTrust, ...] = ()

    @property
    def name(self) -> str:
        return self.username


@dataclass(frozen=True)
class UserRole:
    name: str
    permissions: tuple[str, ...]
    description: str = ""
    built_in: bool = False


@dataclass(frozen=True)
class ScopedRole:
    role: str
    projects: tuple[str, ...] = ()
    project_groups: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...] = ()
    roles: tuple[ScopedRole, ...] = ()
    description: str = ""
    # Single sign-on: members are those whose groups claim names one of these groups (set at
    # each sign-in); empty: membership is managed here only (docs/sso.md).
    sso_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubscriptionWebhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    # Signs each body (HMAC-SHA256); sensitive: encrypted at rest, never exported or shown.
    secret: str = ""


@dataclass(frozen=True)
class Subscription:
    """Who hears of which audit events: one subscriber (a team, a user or a webhook), the
    categories, and filters; within a filter any value matches, across filters all must, and an
    empty filter matches anything."""

    name: str
    team: str = ""
    user: str = ""
    webhook: SubscriptionWebhook | None = None
    categories: tuple[str, ...] = ()
    projects: tuple[str, ...] = ()
    project_groups: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    disabled: bool = False
    description: str = ""
