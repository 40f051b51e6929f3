"""Call reports count the xAI errors a call survived, the events it skipped as unknown and the
retries of its xAI connection.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("nonfatal_errors", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("unknown_events", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("connect_retries", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_column("connect_retries")
        batch_op.drop_column("unknown_events")
        batch_op.drop_column("nonfatal_errors")
