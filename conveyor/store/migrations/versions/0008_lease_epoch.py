"""fence each run with a lease epoch; the queue reason is read, not stored

Every claim and every takeover of a task increments ``tasks.lease_epoch``, and each write a run
makes carries the epoch it was claimed with: a node that was frozen past its lease and then
continues is refused instead of writing over the node that took over. Why a queued task waits
is now worked out when it is read, so the claim writes nothing for the tasks it passes over.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 19:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_column("queue_reason")


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("queue_reason", sa.String(length=400), nullable=True))
        batch.drop_column("lease_epoch")
