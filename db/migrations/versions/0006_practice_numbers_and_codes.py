"""Platform mode: the numbers (DIDs) that reach each practice, and doctors' codes a caller
keys on a number several practices share.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinic_number",
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinic.id"],
                                name=op.f("fk_clinic_number_clinic_id_clinic")),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_clinic_number")),
    )
    with op.batch_alter_table("clinic_number", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clinic_number_clinic_id"), ["clinic_id"], unique=False)
    with op.batch_alter_table("doctor", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code", sa.String(length=8), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_doctor_code"), ["code"])


def downgrade() -> None:
    with op.batch_alter_table("doctor", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_doctor_code"), type_="unique")
        batch_op.drop_column("code")
    with op.batch_alter_table("clinic_number", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clinic_number_clinic_id"))
    op.drop_table("clinic_number")
