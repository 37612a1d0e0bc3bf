"""Partial indexes on the calls under way, so a claim for a practice with a trunk of its own
counts that practice's live calls without reading every call it ever made.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LIVE = {"consultation": "state IN ('dialling', 'bridged')",
        "patient_call": "state IN ('dialling')"}


def upgrade() -> None:
    for table, where in LIVE.items():
        op.create_index(f"ix_{table}_live", table, ["state"],
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for table in LIVE:
        op.drop_index(f"ix_{table}_live", table_name=table)
