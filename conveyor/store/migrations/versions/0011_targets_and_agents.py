"""targets' health, pinned host keys, and polling agents

SSH targets pin host keys (first use only when a target asks for it); agents enrol with a
single-use token, then hold their own credential and long-poll for jobs; every target's last
health check is kept for deployments, `conveyor target list` and the targets page.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 22:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "target_health",
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("os", sa.String(200), nullable=False),
        sa.Column("free_disk_bytes", sa.BigInteger, nullable=True),
        sa.Column("agent_version", sa.String(50), nullable=False),
        sa.Column("checked_at", When, nullable=False),
        sa.Column("changed_at", When, nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_target_health"),
    )
    op.create_table(
        "target_host_keys",
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("host_key", sa.Text, nullable=False),
        sa.Column("pinned_at", When, nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_target_host_keys"),
    )
    op.create_table(
        "agent_tokens",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
        sa.Column("used_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_agent_tokens_token_hash"),
    )
    op.create_index("ix_agent_tokens_target", "agent_tokens", ["target"])
    op.create_table(
        "agents",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        sa.Column("enrolled_at", When, nullable=False),
        sa.Column("last_seen_at", When, nullable=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("os", sa.String(200), nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("free_disk_bytes", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("credential_hash", name="uq_agents_credential_hash"),
    )
    op.create_index("ix_agents_target", "agents", ["target"])
    op.create_table(
        "agent_jobs",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("task_id", Id, nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("agent_id", Id, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("started_at", When, nullable=True),
        sa.Column("finished_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_jobs"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_agent_jobs_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name="fk_agent_jobs_agent_id_agents", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_agent_jobs_target_state", "agent_jobs", ["target", "state"])
    op.create_table(
        "agent_job_lines",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("job_id", Id, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_job_lines"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["agent_jobs.id"],
            name="fk_agent_job_lines_job_id_agent_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_agent_job_lines_job_id_id", "agent_job_lines", ["job_id", "id"])


def downgrade() -> None:
    for table in (
        "agent_job_lines",
        "agent_jobs",
        "agents",
        "agent_tokens",
        "target_host_keys",
        "target_health",
    ):
        op.drop_table(table)
