"""Patient calls: reminders, absence calls and surveys; reminder opt-out; page-recorded closures.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=40), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=40), nullable=True),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('reminder', 'absence', 'survey')", name=op.f("ck_patient_call_purpose")
        ),
        sa.CheckConstraint(
            "state IN ('scheduled', 'dialling', 'retry_wait', 'done', 'missed', 'cancelled')",
            name=op.f("ck_patient_call_state"),
        ),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointment.id"],
            name=op.f("fk_patient_call_appointment_id_appointment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_call")),
        sa.UniqueConstraint(
            "appointment_id", "purpose", "subject", name=op.f("uq_patient_call_appointment_id")
        ),
    )
    with op.batch_alter_table("patient_call", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patient_call_due_at"), ["due_at"], unique=False)

    op.create_table(
        "survey_answer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("doctor_id", sa.Integer(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.Column("audio", sa.Integer(), nullable=True),
        sa.Column("doctor", sa.Integer(), nullable=True),
        sa.Column("book_again", sa.Boolean(), nullable=True),
        sa.CheckConstraint("audio BETWEEN 1 AND 5", name=op.f("ck_survey_answer_audio")),
        sa.CheckConstraint("doctor BETWEEN 1 AND 5", name=op.f("ck_survey_answer_doctor")),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointment.id"],
            name=op.f("fk_survey_answer_appointment_id_appointment"),
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"], ["doctor.id"], name=op.f("fk_survey_answer_doctor_id_doctor")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_survey_answer")),
        sa.UniqueConstraint("appointment_id", name=op.f("uq_survey_answer_appointment_id")),
    )
    with op.batch_alter_table("survey_answer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_survey_answer_answered_at"), ["answered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_survey_answer_doctor_id"), ["doctor_id"], unique=False)

    with op.batch_alter_table("closure", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("source", sa.String(length=10), server_default="file", nullable=False)
        )
        batch_op.create_check_constraint("source", "source IN ('file', 'page')")

    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reminders_off_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_column("reminders_off_at")

    with op.batch_alter_table("closure", schema=None) as batch_op:
        batch_op.drop_constraint("ck_closure_source", type_="check")
        batch_op.drop_column("source")

    with op.batch_alter_table("survey_answer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_survey_answer_doctor_id"))
        batch_op.drop_index(batch_op.f("ix_survey_answer_answered_at"))

    op.drop_table("survey_answer")
    with op.batch_alter_table("patient_call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_call_due_at"))

    op.drop_table("patient_call")
