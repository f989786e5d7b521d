"""The dashboard's cells per channel: a projection kept as deployments change, so that the line
per channel of a project with several reads a few rows instead of grouping every deployment
(docs/deployments.md); filled here from the deployments' history (the latest deployment of
each project, environment and channel, the one before it, the last success) with the
computation retention uses (``conveyor.store.channel_board``), so that an upgraded server
shows the lines it showed before.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 08:30:00.000000
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from conveyor.store.channel_board import rebuild_sync

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dashboard_channels",
        sa.Column("project_id", Id, nullable=False),
        sa.Column("environment_id", Id, nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("release_id", Id, nullable=False),
        sa.Column("release_version", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_id", Id, nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_deployment_id", Id, nullable=True),
        sa.Column("success_release_id", Id, nullable=True),
        sa.Column("success_version", sa.String(100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name="fk_dashboard_channels_environment_id_environments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_dashboard_channels_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "environment_id", "channel", name="pk_dashboard_channels"
        ),
    )
    rebuild_sync(op.get_bind(), datetime.now(UTC))


def downgrade() -> None:
    op.drop_table("dashboard_channels")
