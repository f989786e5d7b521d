"""Insights: per-deployment facts written when a deployment ends, so that a report is an
indexed aggregate (docs/insights.md); filled here for the deployments that already ended, with
the same computation the server uses (``conveyor.store.facts.rebuild_sync``), so that an
upgraded server shows the numbers it showed before.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from conveyor.store.facts import rebuild_sync

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deployment_facts",
        sa.Column("deployment_id", Id, nullable=False, autoincrement=False),
        sa.Column("project_id", Id, nullable=False),
        sa.Column("environment_id", Id, nullable=False),
        sa.Column("release_id", Id, nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("success", sa.Integer(), nullable=False),
        sa.Column("failure", sa.Integer(), nullable=False),
        sa.Column("took", sa.Float(), nullable=True),
        sa.Column("lead", sa.Float(), nullable=True),
        sa.Column("waited", sa.Float(), nullable=False),
        sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("deployment_id", name="pk_deployment_facts"),
    )
    op.create_index(
        "ix_deployment_facts_pair",
        "deployment_facts",
        ["project_id", "environment_id", "completed_at", "success", "failure", "took", "lead",
         "waited"],
    )  # fmt: skip
    op.create_index(
        "ix_deployment_facts_day",
        "deployment_facts",
        ["day", "completed_at", "project_id", "environment_id", "success", "failure", "lead"],
    )
    op.create_index(
        "ix_deployment_facts_failures",
        "deployment_facts",
        ["project_id", "environment_id", "restored_at", "completed_at"],
        sqlite_where=sa.text("failure = 1"),
        postgresql_where=sa.text("failure = 1"),
    )
    op.create_table(
        "deployment_waits",
        sa.Column("id", Id, nullable=False, autoincrement=True),
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("project_id", Id, nullable=False),
        sa.Column("environment_id", Id, nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_waits"),
    )
    op.create_index("ix_deployment_waits_deployment_id", "deployment_waits", ["deployment_id"])
    op.create_index("ix_deployment_waits_completed_at", "deployment_waits", ["completed_at"])
    connection = op.get_bind()
    rebuild_sync(connection, sqlite=connection.dialect.name == "sqlite")


def downgrade() -> None:
    op.drop_table("deployment_waits")
    op.drop_table("deployment_facts")
