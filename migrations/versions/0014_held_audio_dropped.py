"""Call reports say how many caller frames were lost when a call's set-up outlasted the hold.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held_audio_dropped", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_column("held_audio_dropped")
