"""audit hash chain

Each event carries the SHA-256 of its canonical form and the previous event's hash. The columns
are nullable: rows written before the chain existed have none, and `audit verify` counts them as
unchained (there are no deployed databases yet; a NULL after the chain starts is tampering).
The (project_id, id) index serves "everything about one project", newest first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 23:34:03.348797
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_events_project_id_id", ["project_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_project_id_id")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("hash")
