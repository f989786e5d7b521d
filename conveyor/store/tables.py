"""SQLAlchemy Core tables: the single schema source for Alembic migrations.

Named configuration documents share one shape: an integer id, the name and its slug (unique,
so names are unique without case), and the document body as JSON in the shape of config as code.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    text,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER on SQLite (so that SQLite keeps its rowid autoincrement).
Id = BigInteger().with_variant(Integer(), "sqlite")


def _timestamps() -> list[Column[object]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ]


def _document_table(name: str, *extra: Column[object]) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False),
        Column("slug", String(200), nullable=False, unique=True),
        Column("position", Integer, nullable=False, default=0),
        Column("version", Integer, nullable=False, default=1),
        Column("body", JSON, nullable=False),
        *_timestamps(),
        *extra,
    )


environments = _document_table("environments")
lifecycles = _document_table("lifecycles")
project_groups = _document_table("project_groups")
user_roles = _document_table(
    "user_roles", Column("built_in", Boolean, nullable=False, default=False)
)
targets = _document_table("targets")
teams = _document_table("teams")
projects = _document_table("projects")
# A webhook's secret is kept in the body encrypted (``webhook.cipher``), never in plain text.
subscriptions = _document_table("subscriptions")

# One versioned document per project; the version refuses stale edits.
processes = Table(
    "processes",
    metadata,
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Sensitive values are stored encrypted (``cipher``), never in plain text.
variable_sets = Table(
    "variable_sets",
    metadata,
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False),
    Column("slug", String(200), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False, default=""),
    Column("email", String(320), nullable=False, default=""),
    Column("service_account", Boolean, nullable=False, default=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("notify_interruptions", Boolean, nullable=False, default=True, server_default=true()),
    Column("password_hash", Text, nullable=True),
    # Set by an administrator with a password they chose: the next sign-in asks for a new one.
    Column("must_change_password", Boolean, nullable=False, default=False, server_default=false()),
    # A service account's trusted OIDC issuers and claim rules (config as code, docs/sso.md).
    Column("oidc_trust", JSON, nullable=True),
    Column("position", Integer, nullable=False, default=0),
    Column("version", Integer, nullable=False, default=1),
    *_timestamps(),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    # SHA-256 of the key: keys are 160 random bits, so a fast hash is safe and lookups are O(1).
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # A short-lived key (exchanged for an OIDC token) stops working at this time.
    Column("expires_at", DateTime(timezone=True), nullable=True),
)

# Single sign-on: which external identity (issuer and subject, never an email) is which user.
sso_identities = Table(
    "sso_identities",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("issuer", String(400), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_sign_in_at", DateTime(timezone=True), nullable=False),
    Index("uq_sso_identities_issuer_subject", "issuer", "subject", unique=True),
)

# Sign-ins under way at the provider: the state (stored hashed) is used once, within minutes.
sso_states = Table(
    "sso_states",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("state_hash", String(64), nullable=False, unique=True),
    Column("nonce", String(100), nullable=False),
    Column("code_verifier", String(200), nullable=False),
    Column("next_path", String(2000), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# The audit log: append-only; indexed for its filters and read newest first by keyset.
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("category", String(64), nullable=False),
    Column("actor_id", Id, nullable=True),
    Column("actor", String(100), nullable=False),
    # When the system acts on someone's behalf (a child deployment, an automatic deployment).
    Column("on_behalf_of", String(100), nullable=True),
    Column("ip_address", String(64), nullable=True),
    Column("user_agent", String(400), nullable=True),
    Column("message", Text, nullable=False),
    Column("project_id", Id, nullable=True),
    Column("environment_id", Id, nullable=True),
    Column("documents", JSON, nullable=False),
    Column("details", JSON, nullable=False),
    # The hash chain (conveyor.domain.audit.event_hash): SHA-256 of the event's canonical form,
    # which includes the previous event's hash, so an edit, removal or insertion shows.
    Column("hash", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=True),
    Index("ix_events_category_id", "category", "id"),
    Index("ix_events_project_id_id", "project_id", "id"),
    Index("ix_events_actor_id_id", "actor_id", "id"),
    Index("ix_events_project_env_id", "project_id", "environment_id", "id"),
    Index("ix_events_environment_id_id", "environment_id", "id"),
    Index("ix_events_occurred_at", "occurred_at"),
)

# One row (id 1): the newest event of the chain. Appenders lock it to take the next id and the
# hash to chain to (services/core.py write_event); bulk loaders call `catch_up_audit_head`.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_id", Id, nullable=False),
    Column("last_hash", String(64), nullable=True),
    Column("last_occurred_at", DateTime(timezone=True), nullable=True),
)

# One row per document an event concerns, so "everything about deployment D" is an index scan.
event_documents = Table(
    "event_documents",
    metadata,
    Column("event_id", Id, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column("document", String(64), primary_key=True),
    Index("ix_event_documents_document_event", "document", "event_id"),
)

# One row (id 1): the number every configuration change increments in its transaction, so that
# each node reloads its cached configuration only when it moved (services/model_cache.py).
config_revision = Table(
    "config_revision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("revision", Id, nullable=False),
)

DOCUMENT_TABLES: dict[str, Table] = {
    "environments": environments,
    "lifecycles": lifecycles,
    "project_groups": project_groups,
    "user_roles": user_roles,
    "projects": projects,
    "targets": targets,
    "teams": teams,
    "subscriptions": subscriptions,
}

# Public ids look like Octopus's ("Projects-3"); the number is the row id.
ID_PREFIXES: dict[str, str] = {
    "environments": "Environments",
    "lifecycles": "Lifecycles",
    "project_groups": "ProjectGroups",
    "user_roles": "UserRoles",
    "projects": "Projects",
    "targets": "Targets",
    "teams": "Teams",
    "subscriptions": "Subscriptions",
    "users": "Users",
    "api_keys": "ApiKeys",
    "events": "Events",
}


# ---------------------------------------------------------------- packages, releases, deployments

# The built-in feed; archives live in <data>/packages, the row holds their identity and hash.
packages = Table(
    "packages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("package_id", String(200), nullable=False),
    Column("package_key", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("file_name", String(400), nullable=False),
    Column("format", String(10), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("pushed_by", String(100), nullable=False),
    Index("uq_packages_key_version", "package_key", "version", unique=True),
)

# Build information pushed for a package version (docs/build-servers.md): the build, the commit
# and the commits it was built from. One row per package version: ``version_key`` is the same
# for every spelling of a version (1.0 is 1.0.0.0); the package need not be in the feed.
build_information = Table(
    "build_information",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("package_id", String(200), nullable=False),
    Column("package_key", String(200), nullable=False),
    Column("version", String(100), nullable=False),
    Column("version_key", String(160), nullable=False),
    Column("branch", String(500), nullable=True),
    Column("build_environment", String(500), nullable=True),
    Column("build_number", String(500), nullable=True),
    Column("build_url", String(2000), nullable=True),
    Column("vcs_type", String(500), nullable=True),
    Column("vcs_root", String(2000), nullable=True),
    Column("vcs_commit", String(500), nullable=True),
    # [{id, comment, author?, timestamp?, link?}], newest first as the build server sent them.
    Column("commits", JSON, nullable=False),
    Column("pushed_at", DateTime(timezone=True), nullable=False),
    Column("pushed_by_id", Id, nullable=True),
    Column("pushed_by", String(100), nullable=False),
    Index("uq_build_information_package_version", "package_key", "version_key", unique=True),
)

# A release: an immutable snapshot of a project's process and variables at creation.
releases = Table(
    "releases",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("version", String(100), nullable=False),
    Column("notes", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by_id", Id, nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("snapshot", JSON, nullable=False),
    Column("packages", JSON, nullable=False),
    Column("children", JSON, nullable=False),
    Column("build", JSON, nullable=False),
    # Blocked from going to any environment it has not reached yet (and why, by whom).
    Column("blocked_reason", Text, nullable=True),
    Column("blocked_by", String(100), nullable=True),
    Column("blocked_at", DateTime(timezone=True), nullable=True),
    # The channel it was created in (migration 0017; conveyor/domain/channels.py).
    Column("channel", String(100), nullable=False, server_default="Default"),
    # For lead times (services/insights.py): the earliest commit time of its build information
    # and its own commit's time (conveyor.domain.insights.commit_columns).
    Column("first_commit_at", DateTime(timezone=True), nullable=True),
    Column("commit_at", DateTime(timezone=True), nullable=True),
    Index("uq_releases_project_version", "project_id", "version", unique=True),
    Index("ix_releases_project_id_id", "project_id", "id"),
    # Insights: the earliest commit time of the releases a deployment brings, from the index.
    Index("ix_releases_project_commit", "project_id", "id", "first_commit_at"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("release_id", Id, ForeignKey("releases.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("environment_id", Id, ForeignKey("environments.id"), nullable=False),
    Column("task_id", Id, nullable=True),
    Column("parent_id", Id, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by_id", Id, nullable=True),
    Column("created_by", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("skip", JSON, nullable=False),
    Column("guided_failure", Boolean, nullable=False, default=False),
    # Variables passed by a parent's deploy_release step (sensitive ones encrypted).
    Column("variables", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # Queued to start no earlier than this (``release deploy --at``).
    Column("start_at", DateTime(timezone=True), nullable=True),
    # Queued during a freeze by someone who may override it: the reason they gave.
    Column("freeze_override", Text, nullable=True),
    # The last evaluation of the environment's checks: [{kind, name, state, reason}].
    Column("checks", JSON, nullable=True),
    Index("ix_deployments_project_env_id", "project_id", "environment_id", "id"),
    Index("ix_deployments_release_id", "release_id"),
    Index("ix_deployments_parent_id", "parent_id"),
    # Insights (services/insights.py): the deployments that ended in a range, and each one's
    # neighbours in its project and environment read from the index alone.
    Index("ix_deployments_completed_at", "completed_at"),
    Index("ix_deployments_environment_completed", "environment_id", "completed_at"),
    Index(
        "ix_deployments_pair_history",
        "project_id",
        "environment_id",
        "id",
        "state",
        "release_id",
        "completed_at",
    ),
)

# Durable units of work. A node claims a queued task and holds a lease renewed by heartbeat.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("description", String(400), nullable=False),
    Column("state", String(16), nullable=False),
    Column("deployment_id", Id, nullable=True),
    Column("project_id", Id, nullable=True),
    Column("environment_id", Id, nullable=True),
    Column("parent_task_id", Id, nullable=True),
    # One task per key executes at a time (a deployment's project and environment).
    Column("concurrency_key", String(100), nullable=True),
    Column("node", String(200), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    # Incremented by every claim and takeover; a run's writes carry the epoch it was claimed
    # with and are refused once it is stale (a node frozen past its lease, then continuing).
    Column("lease_epoch", Integer, nullable=False, default=0, server_default="0"),
    # Set when what a suspended task waited for happened: claim it again to resume.
    Column("wake", Boolean, nullable=False, default=False),
    Column("waiting_on", String(16), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    # Queued but not claimable: its environment's checks have not passed (services/gates.py).
    Column("held", Boolean, nullable=False, default=False, server_default=false()),
    # When retention removed the task's log (docs/retention.md); the task itself stays.
    Column("log_removed_at", DateTime(timezone=True), nullable=True),
    Index("ix_tasks_state_id", "state", "id"),
    Index("ix_tasks_held", "held", "state"),
    Index("ix_tasks_wake", "wake"),
    Index("ix_tasks_concurrency_key_state", "concurrency_key", "state"),
    Index("ix_tasks_parent_task_id", "parent_task_id"),
)

# Each step's durable state: after a crash, finished steps are not run again.
task_steps = Table(
    "task_steps",
    metadata,
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("child_task_id", Id, nullable=True),
    Column("interruption_id", Id, nullable=True),
    Column("outputs", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)

task_logs = Table(
    "task_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("step", Integer, nullable=True),
    # The target the line is about, for a step that runs on several (None: the task or server).
    Column("target", String(200), nullable=True),
    Column("level", String(8), nullable=False),
    Column("line", Text, nullable=False),
    Index("ix_task_logs_task_id_id", "task_id", "id"),
)

# A question a running task asks a person: a manual intervention or a guided failure.
interruptions = Table(
    "interruptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("deployment_id", Id, nullable=True),
    Column("project_id", Id, nullable=True),
    Column("environment_id", Id, nullable=True),
    Column("step_idx", Integer, nullable=False),
    Column("step_name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("title", String(400), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("responsible_teams", JSON, nullable=False),
    Column("settings", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("taken_by_id", Id, nullable=True),
    Column("taken_by", String(100), nullable=True),
    Column("taken_at", DateTime(timezone=True), nullable=True),
    Column("result", String(16), nullable=True),
    Column("notes", Text, nullable=True),
    Column("answered_by", String(100), nullable=True),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    # Every answer given (for quorum: N distinct people must proceed).
    Column("answers", JSON, nullable=False),
    # Answers to the step's structured questions (fields), by field name.
    Column("fields", JSON, nullable=True),
    Index("ix_interruptions_state_id", "state", "id"),
    Index("ix_interruptions_task_id", "task_id"),
    # Insights: a deployment's guided failures ignored and its manual interventions' waits.
    Index("ix_interruptions_deployment_id", "deployment_id"),
)


def _cell_columns() -> list[Column[Any]]:
    """A dashboard cell: the latest deployment, the one before it and the last success (the rule
    is ``conveyor.domain.runtime.project``); new objects for each table that has them."""
    return [
        Column("deployment_id", Id, nullable=False),
        Column("release_id", Id, nullable=False),
        Column("release_version", String(100), nullable=False),
        Column("state", String(16), nullable=False),
        Column("task_id", Id, nullable=True),
        Column("completed_at", DateTime(timezone=True), nullable=True),
        Column("previous_deployment_id", Id, nullable=True),
        # The release last deployed successfully: "current" for deploy_release conditions.
        Column("success_release_id", Id, nullable=True),
        Column("success_version", String(100), nullable=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ]


# The dashboard projection: (project, environment) -> current and previous deployment. Kept in
# the same transaction as deployment state changes, so the dashboard never scans history.
dashboard = Table(
    "dashboard",
    metadata,
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "environment_id", Id, ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    ),
    *_cell_columns(),
)

# The same projection per channel: (project, environment, channel key) -> the latest deployment
# of that channel's releases, the one before it and the channel's last success, for the
# dashboard's line per channel (services/channels.py). Kept by the same rule in the same
# transaction as the dashboard row (store/runs.py ``project``), for every project.
dashboard_channels = Table(
    "dashboard_channels",
    metadata,
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "environment_id", Id, ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    ),
    # ``documents.key`` of the release's channel (releases.channel): names match as keys do.
    Column("channel", String(100), primary_key=True),
    *_cell_columns(),
)

ID_PREFIXES.update(
    {
        "packages": "Packages",
        "releases": "Releases",
        "deployments": "Deployments",
        "tasks": "ServerTasks",
        "interruptions": "Interruptions",
        "approvals": "Approvals",
    }
)


# ---------------------------------------------------------------- web sign-in

# The server nodes: each writes its row when it starts and on every heartbeat, so that
# `conveyor node list` shows idle nodes too, and a node whose heartbeat stopped.
nodes = Table(
    "nodes",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("slots", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)

# Browser sessions of the web UI. Only the SHA-256 of the random session id is kept, so a copy
# of the database signs nobody in.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("ip_address", String(64), nullable=True),
    Column("user_agent", String(400), nullable=True),
)

# Failed sign-ins within the throttling window, per username and per client address. In the
# database, so that the limit survives a restart and holds across nodes.
sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # "user:<slug>" or "ip:<address>"
    Column("subject", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_sign_in_failures_subject_at", "subject", "at"),
)

# ---------------------------------------------------------------- notifications

# The outbox: one row per message an event causes (a subscriber's mail or webhook, an
# interruption's call), written in the event's transaction and sent by the engine, which claims
# due rows with a lease and retries with backoff. The payload is complete when written, so a
# later change of the subscription does not change what an event said.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", Id, nullable=True),
    # "subscription" or "interruption"
    Column("reason", String(16), nullable=False),
    Column("subscription", String(200), nullable=True),
    # "email" or "webhook"
    Column("channel", String(16), nullable=False),
    Column("recipient", String(100), nullable=True),
    # The address or URL.
    Column("target", String(2000), nullable=False),
    # email: subject and body; webhook: the exact body, headers and the secret (encrypted).
    Column("payload", JSON, nullable=False),
    # pending | succeeded | failed
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("node", String(200), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Index("ix_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_deliveries_event_id", "event_id"),
)

ID_PREFIXES["deliveries"] = "Deliveries"

__all__ = ["DOCUMENT_TABLES", "ID_PREFIXES", "metadata"]

# ---------------------------------------------------------------- targets

# The last health check of each target (by its name's slug): written by `conveyor target
# check` and by the periodic check, read by `target list`, the targets page and deployments.
target_health = Table(
    "target_health",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("os", String(200), nullable=False, default=""),
    Column("free_disk_bytes", BigInteger, nullable=True),
    Column("agent_version", String(50), nullable=False, default=""),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
)

# Host keys pinned on first use, for the ssh targets that asked for it (trust_first_host_key):
# once here, a different key is refused as for a key pinned in the configuration.
target_host_keys = Table(
    "target_host_keys",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("host_key", Text, nullable=False),
    Column("pinned_at", DateTime(timezone=True), nullable=False),
)

# Single-use enrolment tokens an administrator makes for one agent target; only the SHA-256
# of the token is kept.
agent_tokens = Table(
    "agent_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("target", String(200), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

# Enrolled agents: each holds its own credential (only its SHA-256 is kept here) for one target.
agents = Table(
    "agents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("target", String(200), nullable=False, index=True),
    Column("credential_hash", String(64), nullable=False, unique=True),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
    Column("hostname", String(200), nullable=False, default=""),
    Column("os", String(200), nullable=False, default=""),
    Column("version", String(50), nullable=False, default=""),
    Column("free_disk_bytes", BigInteger, nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Work for agents: a script to run or a package to install on one target. The payload (the
# script, its variables) is encrypted at rest; the node running the step waits for the result.
agent_jobs = Table(
    "agent_jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("target", String(200), nullable=False),
    Column("task_id", Id, ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True),
    Column("kind", String(20), nullable=False),
    Column("payload", Text, nullable=False),
    # queued -> running (an agent took it) -> done; cancel_requested asks the agent to stop it.
    Column("state", String(20), nullable=False),
    Column("agent_id", Id, ForeignKey("agents.id", ondelete="SET NULL"), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("result", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_agent_jobs_target_state", "target", "state"),
)

# Output an agent streamed back, until the node running the step moves it into the task log.
agent_job_lines = Table(
    "agent_job_lines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("agent_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("level", String(10), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_agent_job_lines_job_id_id", "job_id", "id"),
)

# Approvals given ahead of time, for a release (for an orchestrator: its train) and an
# environment; they count while not expired, not revoked and the release's digest unchanged.
approvals = Table(
    "approvals",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("release_id", Id, ForeignKey("releases.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", Id, nullable=False),
    Column("environment_id", Id, nullable=False),
    Column("user_id", Id, nullable=True),
    Column("username", String(100), nullable=False),
    Column("teams", JSON, nullable=False),
    Column("notes", Text, nullable=False),
    Column("fields", JSON, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("given_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", String(100), nullable=True),
    Index("ix_approvals_release_env", "release_id", "environment_id"),
    Index("ix_approvals_project_id", "project_id", "id"),
)

# A release pinned in an environment: automatic deployments (and trains) leave it in place.
release_pins = Table(
    "release_pins",
    metadata,
    Column("project_id", Id, nullable=False),
    Column("environment_id", Id, nullable=False),
    Column("release_id", Id, ForeignKey("releases.id", ondelete="CASCADE"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("pinned_by", String(100), nullable=False),
    Column("pinned_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("project_id", "environment_id", name="pk_release_pins"),
)

# ---------------------------------------------------------------- webhooks in (docs/webhooks.md)

# The Git hosts that may call /api/v1/hooks/…: their shared secret (encrypted with the master
# key), the repository and branches they speak for, the clone change detection reads, and the
# service account the pushes act as.
hook_sources = Table(
    "hook_sources",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("slug", String(100), nullable=False, unique=True),
    # github | gitlab | generic
    Column("provider", String(16), nullable=False),
    Column("secret", Text, nullable=False),
    Column("repository", String(400), nullable=False),
    Column("branches", JSON, nullable=False),
    Column("repo_path", String(2000), nullable=False),
    Column("run_as", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(100), nullable=False),
)

# Each delivery accepted, by the id its host gave it: a second one with the same id is a replay.
hook_deliveries = Table(
    "hook_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source_id", Id, ForeignKey("hook_sources.id", ondelete="CASCADE"), nullable=False),
    Column("delivery_id", String(200), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("event", String(64), nullable=False),
    # recorded (a push to a watched branch) | ignored (anything else)
    Column("outcome", String(16), nullable=False),
    Column("branch", String(255), nullable=True),
    Column("before", String(64), nullable=True),
    Column("after", String(64), nullable=True),
    # The build information: [{sha, author, email, message, timestamp}] from the push.
    Column("commits", JSON, nullable=False),
    # What it released: [{project, version} or {project, error}].
    Column("releases", JSON, nullable=False),
    Column("notes", JSON, nullable=False),
    Index("uq_hook_deliveries_source_delivery", "source_id", "delivery_id", unique=True),
)

# A project's own choice (off unless set): a push that changes its watch paths releases it.
project_hook_settings = Table(
    "project_hook_settings",
    metadata,
    Column("project_id", Id, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("release_on_push", Boolean, nullable=False, default=False, server_default=false()),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(100), nullable=False),
)

# ---------------------------------------------------------------- retention (docs/retention.md)

# Work that one node at a time does for the whole cluster (retention): the node holding the
# lease, the epoch its claim got (every write of the run checks it: fencing), and the last run.
singleton_leases = Table(
    "singleton_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=True),
    Column("epoch", Integer, nullable=False, default=0, server_default="0"),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    # What the last run did: {"node", "counts", "error"}.
    Column("outcome", JSON, nullable=True),
)

# ---------------------------------------------------------------- insights (docs/insights.md)

# What each ended deployment adds to the delivery insights, written when it ends (and when a
# later one changes it: a rollback, a restore), so that a report is an indexed aggregate
# (store/facts.py). ``day``: the UTC day of its end, 'YYYY-MM-DD' on both databases.
deployment_facts = Table(
    "deployment_facts",
    metadata,
    Column("deployment_id", Id, primary_key=True, autoincrement=False),
    Column("project_id", Id, nullable=False),
    Column("environment_id", Id, nullable=False),
    Column("release_id", Id, nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=False),
    Column("day", String(10), nullable=False),
    Column("success", Integer, nullable=False),
    Column("failure", Integer, nullable=False),
    Column("took", Float, nullable=True),  # seconds from start to end
    Column("lead", Float, nullable=True),  # seconds: successes only
    Column("waited", Float, nullable=False),  # seconds waiting for approvals
    Column("restored_at", DateTime(timezone=True), nullable=True),  # failures: the next success
    # Covering, so that each of the report's sums reads one index in its grouping's order:
    # per project and environment, per day, per restore incident (the failures only).
    Index(
        "ix_deployment_facts_pair",
        "project_id",
        "environment_id",
        "completed_at",
        "success",
        "failure",
        "took",
        "lead",
        "waited",
    ),
    Index(
        "ix_deployment_facts_day",
        "day",
        "completed_at",
        "project_id",
        "environment_id",
        "success",
        "failure",
        "lead",
    ),
    Index(
        "ix_deployment_facts_failures",
        "project_id",
        "environment_id",
        "restored_at",
        "completed_at",
        sqlite_where=text("failure = 1"),
        postgresql_where=text("failure = 1"),
    ),
)

# Each approval wait of an ended deployment, once per team (NULL: no team), with what the
# report's filters need.
deployment_waits = Table(
    "deployment_waits",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("deployment_id", Id, nullable=False),
    Column("project_id", Id, nullable=False),
    Column("environment_id", Id, nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=False),
    Column("team", String(200), nullable=True),
    Column("seconds", Float, nullable=False),
    Index("ix_deployment_waits_deployment_id", "deployment_id"),
    Index("ix_deployment_waits_completed_at", "completed_at"),
)
