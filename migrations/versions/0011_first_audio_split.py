"""Call reports split first audio into our part (set-up wait after the media stream starts, relay
of the first audio) and xAI's, and say whether the call attached to a warm session.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("setup_wait_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("first_audio_relay_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("warm_start", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_column("warm_start")
        batch_op.drop_column("first_audio_relay_ms")
        batch_op.drop_column("setup_wait_ms")
