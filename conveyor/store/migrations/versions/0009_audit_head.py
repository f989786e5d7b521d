"""the head of the audit chain in a row of its own

Appending an event read the newest event under an advisory lock, then inserted it and its
documents: four round trips. The head row is locked and read in one (a row lock hands the
waiting appender the row as the one before it left it), and the events, their documents and
the new head are written in one more. It also makes removing the newest events visible: the
next event still chains to the head, so the gap shows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 20:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=True),
        sa.Column("last_occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(table, [{"id": 1, "last_id": 0, "last_hash": None, "last_occurred_at": None}])
    op.execute(
        "UPDATE audit_head SET "
        "last_id = COALESCE((SELECT MAX(id) FROM events), 0), "
        "last_hash = (SELECT hash FROM events ORDER BY id DESC LIMIT 1), "
        "last_occurred_at = (SELECT occurred_at FROM events ORDER BY id DESC LIMIT 1) "
        "WHERE id = 1"
    )


def downgrade() -> None:
    op.drop_table("audit_head")
