"""Platform mode: each practice's own cap on outbound channels (its trunk's) and its own
quiet hours, no-call days and reminder time for calls to its patients; empty, a practice
keeps config.toml's.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clinic", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_channels", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("call_times", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clinic", schema=None) as batch_op:
        batch_op.drop_column("call_times")
        batch_op.drop_column("max_channels")
