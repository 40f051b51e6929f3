"""Call reports say whose fault a failure was, and how many tool calls failed inside the agent's
own tool; a transcript's reference says whether someone independent of the call's workspace set it;
a flag's guard acts only on evidence from at least `min_workspaces` workspaces.

Reports stored before this revision get their fault from their end reason, as
`control_plane/telemetry/faults.py` attributes it today. References set before it are not
counted as independent (nothing recorded who set them with which rights): an admin sets them
again for them to count in a release plan's accuracy gate.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tool_calls_failed_in_tool", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("fault", sa.String(length=16), nullable=False, server_default="")
        )
    op.execute(
        """
        UPDATE call_reports SET fault = CASE
            WHEN completed THEN
                CASE WHEN end_reason IN ('caller_hangup', 'phone_stop')
                          AND time_to_first_audio_ms IS NULL AND duration_ms < 2000
                     THEN 'caller' ELSE '' END
            WHEN end_reason = 'worker_shutdown' THEN ''
            WHEN end_reason IN ('xai_key_refused', 'xai_api_key_missing',
                                'xai_api_key_rejected', 'credentials_missing') THEN 'workspace'
            WHEN end_reason = 'stream_token_refused' THEN 'caller'
            WHEN end_reason IN ('xai_refused', 'engine_mismatch', 'no_handler') THEN 'runtime'
            WHEN end_reason LIKE 'xai\\_%' ESCAPE '\\' THEN 'provider'
            ELSE 'runtime'
        END
        """
    )
    with op.batch_alter_table("flag_guards", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("min_workspaces", sa.Integer(), nullable=False, server_default="2")
        )
    with op.batch_alter_table("call_transcripts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reference_independent", sa.Boolean(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("flag_guards", schema=None) as batch_op:
        batch_op.drop_column("min_workspaces")
    with op.batch_alter_table("call_transcripts", schema=None) as batch_op:
        batch_op.drop_column("reference_independent")
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_column("fault")
        batch_op.drop_column("tool_calls_failed_in_tool")
