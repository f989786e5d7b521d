"""single sign-on (OpenID Connect) and short-lived API keys exchanged for CI tokens

Users signed in through an OpenID provider are linked by issuer and subject; a sign-in under
way keeps its state (hashed), nonce and PKCE verifier until it is used, once. A service account
holds the OIDC issuers it trusts; API keys may expire.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 04:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("oidc_trust", sa.JSON, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", When, nullable=True))
    op.create_table(
        "sso_identities",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("issuer", sa.String(400), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("last_sign_in_at", When, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_sso_identities_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sso_identities"),
    )
    op.create_index("ix_sso_identities_user_id", "sso_identities", ["user_id"])
    op.create_index(
        "uq_sso_identities_issuer_subject", "sso_identities", ["issuer", "subject"], unique=True
    )
    op.create_table(
        "sso_states",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(100), nullable=False),
        sa.Column("code_verifier", sa.String(200), nullable=False),
        sa.Column("next_path", sa.String(2000), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("used_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sso_states"),
        sa.UniqueConstraint("state_hash", name="uq_sso_states_state_hash"),
    )
    op.create_index("ix_sso_states_created_at", "sso_states", ["created_at"])


def downgrade() -> None:
    op.drop_table("sso_states")
    op.drop_table("sso_identities")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("oidc_trust")
