"""What the product team measures the launch by, and release plans: the tier an agent was
created on, opt-in transcript keeping per workspace, call ratings, kept transcripts with their
references, and each flag's release plan.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_tier", sa.String(length=64), nullable=True))
    op.execute("UPDATE agents SET created_tier = pricing_tier")
    with op.batch_alter_table("workspace_settings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("keep_transcripts", sa.Boolean(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "transcript_retention_days", sa.Integer(), server_default="30", nullable=False
            )
        )
    op.create_table(
        "call_feedback",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("cohort", sa.String(length=64), nullable=False),
        sa.Column("test_call", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id"),
    )
    with op.batch_alter_table("call_feedback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_call_feedback_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_feedback_tier"), ["tier"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_feedback_workspace_id"), ["workspace_id"], unique=False
        )
    op.create_table(
        "call_transcripts",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("caller_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kept_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reference_text", sa.Text(), nullable=True),
        sa.Column("reference_by", sa.String(length=200), nullable=True),
        sa.Column("reference_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("word_errors", sa.Integer(), nullable=True),
        sa.Column("reference_words", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("call_id"),
    )
    with op.batch_alter_table("call_transcripts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_call_transcripts_kept_until"), ["kept_until"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_transcripts_tier"), ["tier"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_transcripts_workspace_id"), ["workspace_id"], unique=False
        )
    op.create_table(
        "release_plans",
        sa.Column("flag", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("milestones", sa.JSON(), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["flag"], ["flags.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("flag"),
    )


def downgrade() -> None:
    op.drop_table("release_plans")
    with op.batch_alter_table("call_transcripts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_transcripts_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_call_transcripts_tier"))
        batch_op.drop_index(batch_op.f("ix_call_transcripts_kept_until"))
    op.drop_table("call_transcripts")
    with op.batch_alter_table("call_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_feedback_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_call_feedback_tier"))
        batch_op.drop_index(batch_op.f("ix_call_feedback_created_at"))
    op.drop_table("call_feedback")
    with op.batch_alter_table("workspace_settings", schema=None) as batch_op:
        batch_op.drop_column("transcript_retention_days")
        batch_op.drop_column("keep_transcripts")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("created_tier")
