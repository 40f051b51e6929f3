"""Telemetry: call reports from the runtime and per-flag guard targets.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_reports",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("engine", sa.String(length=64), nullable=False),
        sa.Column("flag", sa.String(length=128), nullable=True),
        sa.Column("cohort", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_to_first_audio_ms", sa.Float(), nullable=True),
        sa.Column("tool_calls_ok", sa.Integer(), nullable=False),
        sa.Column("tool_calls_failed", sa.Integer(), nullable=False),
        sa.Column("transcript_events", sa.Integer(), nullable=False),
        sa.Column("end_reason", sa.String(length=64), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("websocket_disconnects", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_reports_flag"), ["flag"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_reports_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_reports_tier"), ["tier"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_reports_workspace_id"), ["workspace_id"], unique=False
        )

    op.create_table(
        "flag_guards",
        sa.Column("flag", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("first_audio_p95_max_ms", sa.Float(), nullable=False),
        sa.Column("first_audio_target_ms", sa.Float(), nullable=False),
        sa.Column("tool_success_min", sa.Float(), nullable=False),
        sa.Column("completion_min", sa.Float(), nullable=False),
        sa.Column("websocket_stability_min", sa.Float(), nullable=False),
        sa.Column("min_calls", sa.Integer(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sa.String(length=500), nullable=True),
        sa.Column("last_paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("flag"),
    )


def downgrade() -> None:
    op.drop_table("flag_guards")
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_reports_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_call_reports_tier"))
        batch_op.drop_index(batch_op.f("ix_call_reports_received_at"))
        batch_op.drop_index(batch_op.f("ix_call_reports_flag"))

    op.drop_table("call_reports")
