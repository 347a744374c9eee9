"""Calls remember the due time their slot was placed for and whether calendars have yet to hear of a change;
staff digests are recorded, one per staff member and local day.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call") as batch_op:
        batch_op.add_column(sa.Column("due_at", models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("invite_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_call_invite_pending"), ["invite_pending"], unique=False)

    op.create_table(
        "staff_digest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("smtp_response", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("flow_run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("staff_id", "day", name="uq_staff_digest_day"),
    )
    with op.batch_alter_table("staff_digest") as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_digest_staff_id"), ["staff_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("staff_digest") as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_digest_staff_id"))
    op.drop_table("staff_digest")
    with op.batch_alter_table("call") as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_invite_pending"))
        batch_op.drop_column("invite_pending")
        batch_op.drop_column("due_at")
