"""Documents to and from plain data (the shape of config-as-code YAML and of the API's JSON).

Decoding never stops at the first problem: it collects every problem with the path of the bad
field, so a person fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from conveyor.domain.codec_channels import decode_channels, encode_channels
from conveyor.domain.codec_governance import (
    decode_checks,
    decode_fields,
    encode_checks,
    encode_fields,
)
from conveyor.domain.codec_retention import decode_policy, encode_policy
from conveyor.domain.documents import (
    Action,
    DeploymentCondition,
    DeployReleaseAction,
    Environment,
    GuidedFailureMode,
    Lifecycle,
    ManualInterventionAction,
    NotificationAction,
    PackageAction,
    Phase,
    Process,
    Project,
    ProjectGroup,
    RunCondition,
    ScopedRole,
    ScriptAction,
    ScriptSyntax,
    StartTrigger,
    Step,
    StepType,
    Subscription,
    SubscriptionWebhook,
    Target,
    Team,
    UnhealthyTargets,
    User,
    UserRole,
    Variable,
    Webhook,
)
from conveyor.domain.errors import Problem
from conveyor.domain.model import KINDS, Document, Kind
from conveyor.domain.oidc import decode_trust, encode_trust
from conveyor.domain.reading import NUL, NUL_MESSAGE, Path, Reader, scalar_text

# The key that names a document of each kind in a file.
NAME_FIELD: dict[str, str] = {str(kind): "name" for kind in KINDS} | {"users": "username"}


# ---------------------------------------------------------------- decoding


def decode(kind: Kind, data: Any, path: Path, problems: list[Problem]) -> Document | None:
    before = len(problems)
    doc = _DECODERS[kind](data, path, problems)
    return doc if len(problems) == before else None


def _environment(data: Any, path: Path, problems: list[Problem]) -> Environment:
    r = Reader(data, path, problems, "an environment")
    env = Environment(
        name=r.text("name", required=True),
        description=r.text("description"),
        guided_failure=r.flag("guided_failure"),
        checks=decode_checks(r),
    )
    r.finish()
    return env


def _lifecycle(data: Any, path: Path, problems: list[Problem]) -> Lifecycle:
    r = Reader(data, path, problems, "a lifecycle")
    phases = []
    for p_path, item in r.items("phases"):
        pr = Reader(item, p_path, problems, "a phase")
        phases.append(
            Phase(
                name=pr.text("name", required=True),
                environments=pr.names("environments"),
                automatic=pr.names("automatic"),
                optional=pr.flag("optional"),
                minimum_environments=pr.integer("minimum_environments", 0) or 0,
                release_retention=decode_policy(pr, "release_retention"),
                task_log_retention=decode_policy(pr, "task_log_retention"),
            )
        )
        pr.finish()
    lc = Lifecycle(
        name=r.text("name", required=True),
        description=r.text("description"),
        phases=tuple(phases),
        release_retention=decode_policy(r, "release_retention"),
        task_log_retention=decode_policy(r, "task_log_retention"),
        package_retention=decode_policy(r, "package_retention"),
    )
    if not r.has("phases"):
        r.problem("phases", "is required: list the phases in promotion order")
    r.finish()
    return lc


def _project_group(data: Any, path: Path, problems: list[Problem]) -> ProjectGroup:
    r = Reader(data, path, problems, "a project group")
    group = ProjectGroup(name=r.text("name", required=True), description=r.text("description"))
    r.finish()
    return group


def _user_role(data: Any, path: Path, problems: list[Problem]) -> UserRole:
    r = Reader(data, path, problems, "a user role")
    role = UserRole(
        name=r.text("name", required=True),
        description=r.text("description"),
        permissions=r.names("permissions"),
        built_in=r.flag("built_in"),
    )
    r.finish()
    return role


def _user(data: Any, path: Path, problems: list[Problem]) -> User:
    r = Reader(data, path, problems, "a user")
    user = User(
        username=r.text("username", required=True),
        display_name=r.text("display_name"),
        email=r.text("email"),
        service_account=r.flag("service_account"),
        active=r.flag("active", True),
        notify_interruptions=r.flag("notify_interruptions", True),
        oidc_trust=decode_trust(r),
    )
    r.finish()
    return user


def _target(data: Any, path: Path, problems: list[Problem]) -> Target:
    r = Reader(data, path, problems, "a deployment target")
    target = Target(
        name=r.text("name", required=True),
        kind=r.text("kind", default="local"),
        description=r.text("description"),
        environments=r.names("environments"),
        roles=r.names("roles"),
        host=r.text("host"),
        port=r.integer("port", 22, minimum=1) or 22,
        user=r.text("user"),
        private_key=r.text("private_key"),
        host_key=r.text("host_key"),
        trust_first_host_key=r.flag("trust_first_host_key"),
        work_dir=r.text("work_dir"),
        max_sessions=r.integer("max_sessions", 8, minimum=1) or 8,
        pool=r.text("pool"),
        disabled=r.flag("disabled"),
    )
    r.finish()
    return target


def _team(data: Any, path: Path, problems: list[Problem]) -> Team:
    r = Reader(data, path, problems, "a team")
    roles = []
    for s_path, item in r.items("roles"):
        sr = Reader(item, s_path, problems, "a scoped role")
        roles.append(
            ScopedRole(
                role=sr.text("role", required=True),
                projects=sr.names("projects"),
                project_groups=sr.names("project_groups"),
                environments=sr.names("environments"),
            )
        )
        sr.finish()
    team = Team(
        name=r.text("name", required=True),
        description=r.text("description"),
        members=r.names("members"),
        roles=tuple(roles),
        sso_groups=r.names("sso_groups"),
    )
    r.finish()
    return team


def _subscription(data: Any, path: Path, problems: list[Problem]) -> Subscription:
    r = Reader(data, path, problems, "a subscription")
    webhook = None
    if r.raw("webhook") is not None:
        wr = Reader(r.raw("webhook"), (*path, "webhook"), problems, "a webhook")
        webhook = SubscriptionWebhook(
            url=wr.text("url", required=True),
            headers=wr.mapping("headers"),
            secret=wr.text("secret"),
        )
        wr.finish()
    sub = Subscription(
        name=r.text("name", required=True),
        description=r.text("description"),
        team=r.text("team"),
        user=r.text("user"),
        webhook=webhook,
        categories=r.names("categories"),
        projects=r.names("projects"),
        project_groups=r.names("project_groups"),
        environments=r.names("environments"),
        disabled=r.flag("disabled"),
    )
    r.finish()
    return sub


def decode_variables(data: Any, path: Path, problems: list[Problem]) -> tuple[Variable, ...]:
    if not isinstance(data, list):
        problems.append(Problem(path, "must be a list of variables"))
        return ()
    out = []
    for i, item in enumerate(data):
        r = Reader(item, (*path, i), problems, "a variable")
        sensitive = r.flag("sensitive")
        value = r.raw("value")
        if value is not None and (isinstance(value, list | Mapping)):
            r.problem("value", "must be text")
            value = None
        elif value is not None and NUL in scalar_text(value):
            r.problem("value", NUL_MESSAGE)
            value = None
        out.append(
            Variable(
                name=r.text("name", required=True),
                value=scalar_text(value) if value is not None else "",
                sensitive=sensitive,
                environments=r.names("environments"),
            )
        )
        r.finish()
    return tuple(out)


def decode_process(data: Any, path: Path, problems: list[Problem]) -> Process:
    r = Reader(data, path, problems, "a deployment process")
    steps = tuple(decode_step(item, s_path, problems) for s_path, item in r.items("steps"))
    version = r.integer("version", 0) or 0
    r.finish()
    return Process(steps=steps, version=version)


def decode_step(data: Any, path: Path, problems: list[Problem]) -> Step:
    r = Reader(data, path, problems, "a step")
    name = r.text("name", required=True)
    step_type = r.choice("type", StepType, StepType.SCRIPT)
    if not r.has("type"):
        r.problem("type", f"is required: one of {', '.join(t.value for t in StepType)}")
    action = _ACTION_DECODERS[step_type](r)
    condition = r.choice("condition", RunCondition, RunCondition.SUCCESS)
    step = Step(
        name=name,
        action=action,
        environments=r.names("environments"),
        excluded_environments=r.names("excluded_environments"),
        condition=condition,
        condition_expression=r.text("condition_expression"),
        start=r.choice("start", StartTrigger, StartTrigger.AFTER_PREVIOUS),
        timeout_seconds=r.integer("timeout", None, minimum=1),
        disabled=r.flag("disabled"),
        required=r.flag("required"),
    )
    r.finish()
    return step


def _script(r: Reader) -> Action:
    return ScriptAction(
        body=r.text("script", required=True),
        syntax=r.choice("syntax", ScriptSyntax, ScriptSyntax.BASH),
        target_roles=r.names("target_roles"),
        window=r.integer("window", None, minimum=1),
        worker_pool=r.text("worker_pool"),
        unhealthy_targets=r.choice("unhealthy_targets", UnhealthyTargets, UnhealthyTargets.FAIL),
    )


def _package(r: Reader) -> Action:
    return PackageAction(
        package=r.text("package", required=True),
        target_roles=r.names("target_roles"),
        post_deploy_script=r.text("post_deploy_script"),
        post_deploy_syntax=r.choice("post_deploy_syntax", ScriptSyntax, ScriptSyntax.BASH),
        window=r.integer("window", None, minimum=1),
        unhealthy_targets=r.choice("unhealthy_targets", UnhealthyTargets, UnhealthyTargets.FAIL),
    )


def _manual(r: Reader) -> Action:
    return ManualInterventionAction(
        instructions=r.text("instructions", required=True),
        responsible_teams=r.names("responsible_teams"),
        block_deployments=r.flag("block_deployments"),
        prevent_self_approval=r.flag("prevent_self_approval"),
        required_approvals=r.integer("required_approvals", 1, minimum=1) or 1,
        approval_teams=r.names("approval_teams"),
        fields=decode_fields(r),
    )


def _notification(r: Reader) -> Action:
    hooks = []
    for h_path, item in r.items("webhooks"):
        hr = Reader(item, h_path, r.problems, "a webhook")
        hooks.append(
            Webhook(
                url=hr.text("url", required=True),
                headers=hr.mapping("headers"),
                secret_variable=hr.text("secret_variable"),
            )
        )
        hr.finish()
    return NotificationAction(
        subject=r.text("subject", required=True),
        body=r.text("body", required=True),
        to_teams=r.names("to_teams"),
        to_users=r.names("to_users"),
        to_addresses=r.names("to_addresses"),
        webhooks=tuple(hooks),
        warn_only=r.flag("warn_only"),
    )


def _deploy_release(r: Reader) -> Action:
    return DeployReleaseAction(
        project=r.text("project", required=True),
        condition=r.choice("deployment_condition", DeploymentCondition, DeploymentCondition.ALWAYS),
        variables=r.mapping("variables"),
    )


_ACTION_DECODERS: dict[StepType, Callable[[Reader], Action]] = {
    StepType.SCRIPT: _script,
    StepType.PACKAGE: _package,
    StepType.MANUAL_INTERVENTION: _manual,
    StepType.NOTIFICATION: _notification,
    StepType.DEPLOY_RELEASE: _deploy_release,
}


def _project(data: Any, path: Path, problems: list[Problem]) -> Project:
    r = Reader(data, path, problems, "a project")
    process = (
        decode_process(r.raw("process"), (*path, "process"), problems)
        if r.has("process")
        else Process()
    )
    variables = (
        decode_variables(r.raw("variables"), (*path, "variables"), problems)
        if r.has("variables")
        else ()
    )
    project = Project(
        name=r.text("name", required=True),
        description=r.text("description"),
        group=r.text("group", required=True),
        lifecycle=r.text("lifecycle", required=True),
        watch_paths=r.names("watch_paths"),
        disabled=r.flag("disabled"),
        guided_failure=r.choice(
            "guided_failure", GuidedFailureMode, GuidedFailureMode.ENVIRONMENT_DEFAULT
        ),
        process=process,
        variables=variables,
        channels=decode_channels(r),
    )
    r.finish({"process", "variables"})
    return project


_DECODERS: dict[str, Callable[[Any, Path, list[Problem]], Any]] = {
    "environments": _environment,
    "lifecycles": _lifecycle,
    "project_groups": _project_group,
    "user_roles": _user_role,
    "users": _user,
    "projects": _project,
    "targets": _target,
    "teams": _team,
    "subscriptions": _subscription,
}


# ---------------------------------------------------------------- encoding


def encode(kind: Kind, doc: Document, *, with_secrets: bool = False) -> dict[str, Any]:
    """The plain-data form; defaults are left out so exported files stay short and readable."""
    return _ENCODERS[kind](doc, with_secrets)


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, "", (), [], {}, False)}


def _enc_environment(env: Any, _: bool) -> dict[str, Any]:
    return _compact(
        {
            "name": env.name,
            "description": env.description,
            "guided_failure": env.guided_failure,
            "checks": encode_checks(env.checks),
        }
    )


def _enc_lifecycle(lc: Any, _: bool) -> dict[str, Any]:
    return _compact(
        {
            "name": lc.name,
            "description": lc.description,
            "phases": [
                _compact(
                    {
                        "name": ph.name,
                        "environments": list(ph.environments),
                        "automatic": list(ph.automatic),
                        "optional": ph.optional,
                        "minimum_environments": ph.minimum_environments or None,
                        "release_retention": encode_policy(ph.release_retention),
                        "task_log_retention": encode_policy(ph.task_log_retention),
                    }
                )
                for ph in lc.phases
            ],
            "release_retention": encode_policy(lc.release_retention),
            "task_log_retention": encode_policy(lc.task_log_retention),
            "package_retention": encode_policy(lc.package_retention),
        }
    )


def _enc_group(group: Any, _: bool) -> dict[str, Any]:
    return _compact({"name": group.name, "description": group.description})


def _enc_role(role: Any, _: bool) -> dict[str, Any]:
    return _compact(
        {
            "name": role.name,
            "description": role.description,
            "permissions": list(role.permissions),
            "built_in": role.built_in,
        }
    )


def _enc_user(user: Any, _: bool) -> dict[str, Any]:
    out = _compact(
        {
            "username": user.username,
            "display_name": user.display_name,
            "email": user.email,
            "service_account": user.service_account,
        }
    )
    if not user.active:
        out["active"] = False
    if not user.notify_interruptions:
        out["notify_interruptions"] = False
    if user.oidc_trust:
        out["oidc_trust"] = encode_trust(user.oidc_trust)
    return out


def _enc_target(target: Any, with_secrets: bool) -> dict[str, Any]:
    return _compact(
        {
            "name": target.name,
            "kind": target.kind,
            "description": target.description,
            "pool": target.pool,
            "environments": list(target.environments),
            "roles": list(target.roles),
            "host": target.host,
            "port": target.port if target.port != 22 else None,
            "user": target.user,
            "private_key": target.private_key if with_secrets else None,
            "host_key": target.host_key,
            "trust_first_host_key": target.trust_first_host_key,
            "work_dir": target.work_dir,
            "max_sessions": target.max_sessions if target.max_sessions != 8 else None,
            "disabled": target.disabled,
        }
    )


def _enc_team(team: Any, _: bool) -> dict[str, Any]:
    return _compact(
        {
            "name": team.name,
            "description": team.description,
            "members": list(team.members),
            "roles": [
                _compact(
                    {
                        "role": r.role,
                        "projects": list(r.projects),
                        "project_groups": list(r.project_groups),
                        "environments": list(r.environments),
                    }
                )
                for r in team.roles
            ],
            "sso_groups": list(team.sso_groups),
        }
    )


def _enc_subscription(sub: Any, with_secrets: bool) -> dict[str, Any]:
    webhook = None
    if sub.webhook is not None:
        hook = sub.webhook
        webhook = {"url": hook.url} | _compact(
            {
                "headers": dict(hook.headers),
                "secret": hook.secret if with_secrets else None,
            }
        )
    return _compact(
        {
            "name": sub.name,
            "description": sub.description,
            "team": sub.team,
            "user": sub.user,
            "webhook": webhook,
            "categories": list(sub.categories),
            "projects": list(sub.projects),
            "project_groups": list(sub.project_groups),
            "environments": list(sub.environments),
            "disabled": sub.disabled,
        }
    )


def encode_variables(variables: tuple[Variable, ...], with_secrets: bool) -> list[dict[str, Any]]:
    out = []
    for v in variables:
        item: dict[str, Any] = {"name": v.name}
        if not v.sensitive or with_secrets:
            item["value"] = v.value
        if v.sensitive:
            item["sensitive"] = True
        if v.environments:
            item["environments"] = list(v.environments)
        out.append(item)
    return out


def _unless_fail(choice: UnhealthyTargets) -> str | None:
    return None if choice is UnhealthyTargets.FAIL else choice.value


def encode_step(step: Step) -> dict[str, Any]:
    head: dict[str, Any] = {"name": step.name, "type": step.type.value}
    a = step.action
    body: dict[str, Any]
    if isinstance(a, ScriptAction):
        body = {
            "syntax": a.syntax.value if a.syntax != ScriptSyntax.BASH else None,
            "target_roles": list(a.target_roles),
            "window": a.window,
            "worker_pool": a.worker_pool,
            "unhealthy_targets": _unless_fail(a.unhealthy_targets),
            "script": a.body,
        }
    elif isinstance(a, PackageAction):
        body = {
            "package": a.package,
            "target_roles": list(a.target_roles),
            "window": a.window,
            "unhealthy_targets": _unless_fail(a.unhealthy_targets),
            "post_deploy_syntax": a.post_deploy_syntax.value
            if a.post_deploy_syntax != ScriptSyntax.BASH
            else None,
            "post_deploy_script": a.post_deploy_script,
        }
    elif isinstance(a, ManualInterventionAction):
        body = {
            "instructions": a.instructions,
            "responsible_teams": list(a.responsible_teams),
            "block_deployments": a.block_deployments,
            "prevent_self_approval": a.prevent_self_approval,
            "required_approvals": a.required_approvals if a.required_approvals != 1 else None,
            "approval_teams": list(a.approval_teams),
            "fields": encode_fields(a.fields),
        }
    elif isinstance(a, NotificationAction):
        body = {
            "to_teams": list(a.to_teams),
            "to_users": list(a.to_users),
            "to_addresses": list(a.to_addresses),
            "webhooks": [
                _compact(
                    {"url": h.url, "headers": dict(h.headers), "secret_variable": h.secret_variable}
                )
                for h in a.webhooks
            ],
            "warn_only": a.warn_only,
            "subject": a.subject,
            "body": a.body,
        }
    else:
        body = {
            "project": a.project,
            "deployment_condition": a.condition.value,
            "variables": dict(a.variables),
        }
    tail = {
        "environments": list(step.environments),
        "excluded_environments": list(step.excluded_environments),
        "condition": step.condition.value if step.condition != RunCondition.SUCCESS else None,
        "condition_expression": step.condition_expression,
        "start": step.start.value if step.start != StartTrigger.AFTER_PREVIOUS else None,
        "timeout": step.timeout_seconds,
        "disabled": step.disabled,
        "required": step.required,
    }
    return _compact(head | body | tail)


def encode_process(process: Process) -> dict[str, Any]:
    return {"steps": [encode_step(s) for s in process.steps]}


def _enc_project(project: Any, with_secrets: bool) -> dict[str, Any]:
    out = _compact(
        {
            "name": project.name,
            "description": project.description,
            "group": project.group,
            "lifecycle": project.lifecycle,
            "watch_paths": list(project.watch_paths),
            "disabled": project.disabled,
            "guided_failure": project.guided_failure.value
            if project.guided_failure != GuidedFailureMode.ENVIRONMENT_DEFAULT
            else None,
        }
    )
    if project.process.steps:
        out["process"] = encode_process(project.process)
    if project.variables:
        out["variables"] = encode_variables(project.variables, with_secrets)
    if project.channels:
        out["channels"] = encode_channels(project.channels)
    return out


_ENCODERS: dict[str, Callable[[Any, bool], dict[str, Any]]] = {
    "environments": _enc_environment,
    "lifecycles": _enc_lifecycle,
    "project_groups": _enc_group,
    "user_roles": _enc_role,
    "users": _enc_user,
    "projects": _enc_project,
    "targets": _enc_target,
    "teams": _enc_team,
    "subscriptions": _enc_subscription,
}
