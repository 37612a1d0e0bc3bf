"""Platform mode on the status page: each practice's staff token (only its hash), the
practice a page session may see (none: every practice), and the practice each inbound call
reached, so every practice's figures count its own calls only.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "page_token",
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"],
                                name=op.f("fk_page_token_clinic_id_clinic")),
        sa.PrimaryKeyConstraint("clinic_id", name=op.f("pk_page_token")),
    )
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clinic_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_web_session_clinic_id_clinic"), "clinic",
                                    ["clinic_id"], ["id"])
    with op.batch_alter_table("inbound_call", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clinic_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f("fk_inbound_call_clinic_id_clinic"), "clinic",
                                    ["clinic_id"], ["id"])
    # Calls logged before were all the first practice's: the line served no other.
    op.execute("UPDATE inbound_call SET clinic_id = (SELECT min(id) FROM clinic)")


def downgrade() -> None:
    with op.batch_alter_table("inbound_call", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_inbound_call_clinic_id_clinic"),
                                 type_="foreignkey")
        batch_op.drop_column("clinic_id")
    with op.batch_alter_table("web_session", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_web_session_clinic_id_clinic"),
                                 type_="foreignkey")
        batch_op.drop_column("clinic_id")
    op.drop_table("page_token")
