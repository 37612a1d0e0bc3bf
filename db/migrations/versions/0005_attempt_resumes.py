"""Call attempts note each time nobat missed their events and went on from Asterisk's
channels (a lost AMI link, a takeover), and how long it saw nothing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call_attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resumes", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("unseen_seconds", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("call_attempt", schema=None) as batch_op:
        batch_op.drop_column("unseen_seconds")
        batch_op.drop_column("resumes")
