"""build information pushed for package versions: one row per package version (any spelling of
the version), with the build, the version control commit and the commits it was built from

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 04:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "build_information",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("package_id", sa.String(200), nullable=False),
        sa.Column("package_key", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("version_key", sa.String(160), nullable=False),
        sa.Column("branch", sa.String(500), nullable=True),
        sa.Column("build_environment", sa.String(500), nullable=True),
        sa.Column("build_number", sa.String(500), nullable=True),
        sa.Column("build_url", sa.String(2000), nullable=True),
        sa.Column("vcs_type", sa.String(500), nullable=True),
        sa.Column("vcs_root", sa.String(2000), nullable=True),
        sa.Column("vcs_commit", sa.String(500), nullable=True),
        sa.Column("commits", sa.JSON, nullable=False),
        sa.Column("pushed_at", When, nullable=False),
        sa.Column("pushed_by_id", Id, nullable=True),
        sa.Column("pushed_by", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_build_information"),
    )
    op.create_index(
        "uq_build_information_package_version",
        "build_information",
        ["package_key", "version_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_build_information_package_version", table_name="build_information")
    op.drop_table("build_information")
