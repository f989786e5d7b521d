"""SQLAlchemy Core tables: the single schema source for Alembic migrations.

Named configuration documents share one shape: an integer id, the name and its slug (unique,
so names are unique without case), and the document body as JSON in the shape of config as code.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
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
    Column("password_hash", Text, nullable=True),
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
    Index("ix_events_category_id", "category", "id"),
    Index("ix_events_actor_id_id", "actor_id", "id"),
    Index("ix_events_project_env_id", "project_id", "environment_id", "id"),
    Index("ix_events_environment_id_id", "environment_id", "id"),
    Index("ix_events_occurred_at", "occurred_at"),
)

# One row per document an event concerns, so "everything about deployment D" is an index scan.
event_documents = Table(
    "event_documents",
    metadata,
    Column("event_id", Id, ForeignKey("events.id", ondelete="CASCADE"), primary_key=True),
    Column("document", String(64), primary_key=True),
    Index("ix_event_documents_document_event", "document", "event_id"),
)

DOCUMENT_TABLES: dict[str, Table] = {
    "environments": environments,
    "lifecycles": lifecycles,
    "project_groups": project_groups,
    "user_roles": user_roles,
    "projects": projects,
    "targets": targets,
    "teams": teams,
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
    "users": "Users",
    "api_keys": "ApiKeys",
    "events": "Events",
}

__all__ = ["DOCUMENT_TABLES", "ID_PREFIXES", "Text", "metadata"]
