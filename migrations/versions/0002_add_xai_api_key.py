"""add_xai_api_key: encrypted provider keys per workspace (xAI first), deployable on its own.

Keys live beside workspace settings, one row per (workspace, provider), encrypted with
AES-256-GCM; the master key id is stored with each ciphertext so the master key can rotate.
Providers are data: xAI and OpenAI are inserted here, others can be added as rows.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_providers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("min_length", sa.Integer(), nullable=False),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("console_url", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "workspace_api_keys",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("ciphertext", sa.String(length=2048), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("master_key_id", sa.String(length=64), nullable=False),
        sa.Column("last4", sa.String(length=4), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["key_providers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspace_settings.workspace_id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workspace_id", "provider"),
    )
    with op.batch_alter_table("workspace_api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_workspace_api_keys_master_key_id"), ["master_key_id"], unique=False
        )

    providers = sa.table(
        "key_providers",
        sa.column("id", sa.String),
        sa.column("display_name", sa.String),
        sa.column("key_prefix", sa.String),
        sa.column("min_length", sa.Integer),
        sa.column("max_length", sa.Integer),
        sa.column("console_url", sa.String),
    )
    op.bulk_insert(
        providers,
        [
            {
                "id": "xai",
                "display_name": "xAI",
                "key_prefix": "xai-",
                "min_length": 24,
                "max_length": 256,
                "console_url": "https://console.x.ai",
            },
            {
                "id": "openai",
                "display_name": "OpenAI",
                "key_prefix": "sk-",
                "min_length": 24,
                "max_length": 256,
                "console_url": "https://platform.openai.com/api-keys",
            },
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("workspace_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_api_keys_master_key_id"))

    op.drop_table("workspace_api_keys")
    op.drop_table("key_providers")
