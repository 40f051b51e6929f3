"""Browser test calls: a call report says whether it was one, and a flag's guard whether its
rollout health counts them (it does not by default).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("test_call", sa.Boolean(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("flag_guards", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("include_test_calls", sa.Boolean(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("flag_guards", schema=None) as batch_op:
        batch_op.drop_column("include_test_calls")
    with op.batch_alter_table("call_reports", schema=None) as batch_op:
        batch_op.drop_column("test_call")
