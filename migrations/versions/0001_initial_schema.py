"""Initial schema: catalogue, voice maps, workspaces and settings, agents, API tokens.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "tiers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("cost_per_hour", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("cost_per_minute", sa.Numeric(precision=10, scale=4), nullable=False),
        sa.Column("pricing_source", sa.String(length=32), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("llm_provider", sa.String(length=64), nullable=False),
        sa.Column("llm_model", sa.String(length=128), nullable=False),
        sa.Column("stt_provider", sa.String(length=64), nullable=True),
        sa.Column("stt_model", sa.String(length=128), nullable=True),
        sa.Column("tts_provider", sa.String(length=64), nullable=True),
        sa.Column("tts_model", sa.String(length=128), nullable=True),
        sa.Column("telephony_provider", sa.String(length=64), nullable=False),
        sa.Column("voice_provider", sa.String(length=64), nullable=False),
        sa.Column("expected_latency_ms", sa.Integer(), nullable=True),
        sa.Column("quality", sa.String(length=64), nullable=False),
        sa.Column("flag_name", sa.String(length=128), nullable=True),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "voice_maps",
        sa.Column("target_provider", sa.String(length=64), nullable=False),
        sa.Column("source_provider", sa.String(length=64), nullable=False),
        sa.Column("default_voice", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("target_provider"),
    )
    op.create_table(
        "voices",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "name"),
    )
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pricing_tier", sa.String(length=64), nullable=False),
        sa.Column("voice", sa.String(length=64), nullable=False),
        sa.Column("instructions", sa.String(), nullable=False),
        sa.Column("language", sa.String(length=32), nullable=False),
        sa.Column("turn_detection_threshold", sa.Float(), nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("builtin_tools", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["pricing_tier"],
            ["tiers.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agents_pricing_tier"), ["pricing_tier"], unique=False)
        batch_op.create_index(batch_op.f("ix_agents_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "voice_map_entries",
        sa.Column("target_provider", sa.String(length=64), nullable=False),
        sa.Column("source_voice", sa.String(length=64), nullable=False),
        sa.Column("target_voice", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["target_provider"], ["voice_maps.target_provider"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("target_provider", "source_voice"),
    )
    op.create_table(
        "workspace_settings",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("default_tier_id", sa.String(length=64), nullable=True),
        sa.Column("default_language", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_tier_id"],
            ["tiers.id"],
        ),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workspace_id"),
    )


def downgrade() -> None:
    op.drop_table("workspace_settings")
    op.drop_table("voice_map_entries")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_agents_pricing_tier"))

    op.drop_table("agents")
    op.drop_table("workspaces")
    op.drop_table("voices")
    op.drop_table("voice_maps")
    op.drop_table("tiers")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_token_hash"))

    op.drop_table("api_tokens")
