"""Issued calls, a per-workspace concurrent-call limit, and the phone providers' webhook
secrets (Twilio auth token, Telnyx public key) as rows of the encrypted provider-key store.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_PROVIDERS = sa.table(
    "key_providers",
    sa.column("id", sa.String),
    sa.column("display_name", sa.String),
    sa.column("key_prefix", sa.String),
    sa.column("min_length", sa.Integer),
    sa.column("max_length", sa.Integer),
    sa.column("console_url", sa.String),
)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("provider_call_id", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calls_started_at"), ["started_at"], unique=False)
        batch_op.create_index(
            "ix_calls_workspace_id_state", ["workspace_id", "state"], unique=False
        )

    with op.batch_alter_table("workspace_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("max_concurrent_calls", sa.Integer(), server_default="20", nullable=False)
        )

    op.bulk_insert(
        KEY_PROVIDERS,
        [
            {
                "id": "twilio",
                "display_name": "Twilio",
                "key_prefix": "",
                "min_length": 32,
                "max_length": 64,
                "console_url": "https://console.twilio.com",
            },
            {
                "id": "telnyx",
                "display_name": "Telnyx",
                "key_prefix": "",
                "min_length": 44,
                "max_length": 44,
                "console_url": "https://portal.telnyx.com",
            },
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM workspace_api_keys WHERE provider IN ('twilio', 'telnyx')"))
    op.execute(sa.text("DELETE FROM key_providers WHERE id IN ('twilio', 'telnyx')"))
    with op.batch_alter_table("workspace_settings", schema=None) as batch_op:
        batch_op.drop_column("max_concurrent_calls")

    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_workspace_id_state")
        batch_op.drop_index(batch_op.f("ix_calls_started_at"))

    op.drop_table("calls")
