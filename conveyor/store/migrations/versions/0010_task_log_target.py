"""the target a task log line is about

A step that runs on several targets runs them at once (or a window at a time); each line of
its output names its target, so the log can show each target's output as its own section.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 21:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_logs") as batch:
        batch.add_column(sa.Column("target", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_logs") as batch:
        batch.drop_column("target")
