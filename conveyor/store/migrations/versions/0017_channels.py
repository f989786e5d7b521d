"""Channels: the channel each release belongs to (a project without channels has one,
"Default")

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 04:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(100), nullable=False, server_default="Default")
        )


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("channel")
