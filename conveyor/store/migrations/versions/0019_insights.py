"""Insights: what lead times and the range queries of services/insights.py read

Each release keeps the earliest commit time of its build information and the time of its own
commit (``conveyor.domain.insights.commit_columns``), filled here for the releases there are;
indexes for the deployments that ended in a range, for each one's neighbours in its project
and environment (covering, so that they are read from the index alone), for the releases a
deployment brings, and for a deployment's interruptions.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 04:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

from conveyor.domain.insights import commit_columns

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("first_commit_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("commit_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_deployments_completed_at", "deployments", ["completed_at"])
    op.create_index(
        "ix_deployments_environment_completed", "deployments", ["environment_id", "completed_at"]
    )
    op.create_index("ix_interruptions_deployment_id", "interruptions", ["deployment_id"])
    op.create_index(
        "ix_deployments_pair_history",
        "deployments",
        ["project_id", "environment_id", "id", "state", "release_id", "completed_at"],
    )
    op.create_index(
        "ix_releases_project_commit", "releases", ["project_id", "id", "first_commit_at"]
    )
    releases = sa.table(
        "releases",
        sa.column("id", sa.BigInteger),
        sa.column("build", sa.JSON),
        sa.column("first_commit_at", sa.DateTime(timezone=True)),
        sa.column("commit_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(releases.c.id, releases.c.build)
            .where(releases.c.id > last)
            .order_by(releases.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        for row in rows:
            values = commit_columns(row.build if isinstance(row.build, dict) else None)
            if any(values.values()):
                connection.execute(
                    releases.update().where(releases.c.id == row.id).values(**values)
                )
        last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_releases_project_commit", table_name="releases")
    op.drop_index("ix_deployments_pair_history", table_name="deployments")
    op.drop_index("ix_interruptions_deployment_id", table_name="interruptions")
    op.drop_index("ix_deployments_environment_completed", table_name="deployments")
    op.drop_index("ix_deployments_completed_at", table_name="deployments")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("commit_at")
        batch.drop_column("first_commit_at")
