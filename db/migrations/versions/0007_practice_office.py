"""Platform mode: each practice's own office (the dial target callers are put through to)
and its hours; empty, a practice keeps config.toml's.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clinic", schema=None) as batch_op:
        batch_op.add_column(sa.Column("office", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("office_hours", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clinic", schema=None) as batch_op:
        batch_op.drop_column("office_hours")
        batch_op.drop_column("office")
