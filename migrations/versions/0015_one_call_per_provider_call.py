"""One issued call per provider call: (workspace, channel, provider call id) is unique.

A replayed webhook used to issue a second call for the same Twilio CallSid or Telnyx
call_control_id. Calls issued that way before this revision keep their rows; only the earliest
keeps the provider call id, so the index can hold.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE calls SET provider_call_id = NULL
        WHERE provider_call_id IS NOT NULL AND EXISTS (
            SELECT 1 FROM calls AS earlier
            WHERE earlier.workspace_id = calls.workspace_id
              AND earlier.channel = calls.channel
              AND earlier.provider_call_id = calls.provider_call_id
              AND (earlier.started_at < calls.started_at
                   OR (earlier.started_at = calls.started_at AND earlier.id < calls.id))
        )
        """
    )
    op.create_index(
        "uq_calls_provider_call",
        "calls",
        ["workspace_id", "channel", "provider_call_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_calls_provider_call", table_name="calls")
