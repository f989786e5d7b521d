"""the server nodes and their heartbeats

Each node writes its row (slots, start, last heartbeat) so that `conveyor node list` and
`GET /api/v1/nodes` show every node, idle ones and ones whose heartbeat stopped.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )


def downgrade() -> None:
    op.drop_table("nodes")
