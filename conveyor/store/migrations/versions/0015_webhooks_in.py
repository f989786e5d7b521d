"""webhooks in: the Git hosts that may call, each push delivery received, and which projects
create releases on a push

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 04:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hook_sources",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("slug", sa.String(100), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("repository", sa.String(400), nullable=False),
        sa.Column("branches", sa.JSON, nullable=False),
        sa.Column("repo_path", sa.String(2000), nullable=False),
        sa.Column("run_as", sa.String(100), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hook_sources"),
        sa.UniqueConstraint("slug", name="uq_hook_sources_slug"),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("source_id", Id, nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("received_at", When, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("branch", sa.String(255), nullable=True),
        sa.Column("before", sa.String(64), nullable=True),
        sa.Column("after", sa.String(64), nullable=True),
        sa.Column("commits", sa.JSON, nullable=False),
        sa.Column("releases", sa.JSON, nullable=False),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hook_deliveries"),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["hook_sources.id"],
            name="fk_hook_deliveries_source_id_hook_sources",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "uq_hook_deliveries_source_delivery",
        "hook_deliveries",
        ["source_id", "delivery_id"],
        unique=True,
    )
    op.create_table(
        "project_hook_settings",
        sa.Column("project_id", Id, nullable=False),
        sa.Column("release_on_push", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("project_id", name="pk_project_hook_settings"),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_project_hook_settings_project_id_projects",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("project_hook_settings")
    op.drop_index("uq_hook_deliveries_source_delivery", table_name="hook_deliveries")
    op.drop_table("hook_deliveries")
    op.drop_table("hook_sources")
