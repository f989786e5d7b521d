"""release governance: approvals ahead of time, held and scheduled deployments, pins, blocks

An approval is given for a release and an environment before any deployment exists; a deployment
held by its environment's checks (approvals, a change window, a freeze, a start time) stays
queued and unclaimable until they pass; a release can be pinned in an environment (automatic
deployments leave it alone) and blocked from going further; answers to structured questions
are kept with the interruption.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 02:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "release_id", Id, sa.ForeignKey("releases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("project_id", Id, nullable=False),
        sa.Column("environment_id", Id, nullable=False),
        sa.Column("user_id", Id, nullable=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("teams", sa.JSON, nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("given_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.Column("revoked_at", When, nullable=True),
        sa.Column("revoked_by", sa.String(100), nullable=True),
    )
    op.create_index("ix_approvals_release_env", "approvals", ["release_id", "environment_id"])
    op.create_index("ix_approvals_project_id", "approvals", ["project_id", "id"])
    with op.batch_alter_table("tasks") as batch:
        # Queued but not claimable: its environment's checks have not passed yet.
        batch.add_column(sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index("ix_tasks_held", "tasks", ["held", "state"])
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("start_at", When, nullable=True))
        batch.add_column(sa.Column("freeze_override", sa.Text, nullable=True))
        # The last evaluation of the environment's checks: [{kind, name, state, reason}].
        batch.add_column(sa.Column("checks", sa.JSON, nullable=True))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("blocked_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("blocked_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("blocked_at", When, nullable=True))
    op.create_table(
        "release_pins",
        sa.Column("project_id", Id, nullable=False),
        sa.Column("environment_id", Id, nullable=False),
        sa.Column(
            "release_id", Id, sa.ForeignKey("releases.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("pinned_by", sa.String(100), nullable=False),
        sa.Column("pinned_at", When, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "environment_id", name="pk_release_pins"),
    )
    with op.batch_alter_table("interruptions") as batch:
        # Answers to the step's structured questions (fields), by field name.
        batch.add_column(sa.Column("fields", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interruptions") as batch:
        batch.drop_column("fields")
    op.drop_table("release_pins")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("blocked_at")
        batch.drop_column("blocked_by")
        batch.drop_column("blocked_reason")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("checks")
        batch.drop_column("freeze_override")
        batch.drop_column("start_at")
    op.drop_index("ix_tasks_held", "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("held")
    op.drop_index("ix_approvals_project_id", "approvals")
    op.drop_index("ix_approvals_release_env", "approvals")
    op.drop_table("approvals")
