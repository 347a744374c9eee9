"""Every outgoing message is a delivery: a staff digest's email (kind `digest`, linked to the day it is for) and a
test send (kind `test`, linked to nothing) join the emails and invites of plan steps; `staff_digest` keeps what the
day's digest decided (how many items, none being an empty day). Existing digests become the deliveries they were.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_DIGEST_DELIVERY_COLUMNS = (
    "staff_digest_id, kind, sequence, recipient, subject, language, message_id, state, smtp_response, flow_run_id, "
    "created_at, sent_at"
)


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.alter_column("plan_step_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("staff_digest_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_delivery_staff_digest_id"), ["staff_digest_id"], unique=False)
        batch_op.create_unique_constraint("uq_delivery_digest_kind_seq", ["staff_digest_id", "kind", "sequence"])

    # A digest that went out (or was tried) is the delivery of sequence 0 of its day, to its staff member.
    op.execute(
        f"INSERT INTO delivery ({_DIGEST_DELIVERY_COLUMNS}) "
        "SELECT staff_digest.id, 'digest', 0, staff.email, NULL, staff_digest.language, staff_digest.message_id, "
        "staff_digest.state, staff_digest.smtp_response, staff_digest.flow_run_id, staff_digest.created_at, "
        "staff_digest.sent_at "
        "FROM staff_digest JOIN staff ON staff.id = staff_digest.staff_id "
        "WHERE staff_digest.state <> 'empty'"
    )

    with op.batch_alter_table("staff_digest") as batch_op:
        batch_op.drop_column("sent_at")
        batch_op.drop_column("smtp_response")
        batch_op.drop_column("state")
        batch_op.drop_column("message_id")
        batch_op.drop_column("language")

    # Last: on SQLite, a batch rebuilds the table, and a table another one refers to cannot be dropped.
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.create_foreign_key(
            "fk_delivery_staff_digest_id_staff_digest", "staff_digest", ["staff_digest_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.drop_constraint("fk_delivery_staff_digest_id_staff_digest", type_="foreignkey")

    with op.batch_alter_table("staff_digest") as batch_op:
        batch_op.add_column(sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True))
        batch_op.add_column(sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
        batch_op.add_column(
            sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False, server_default="empty")
        )
        batch_op.add_column(sa.Column("smtp_response", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True))
        batch_op.add_column(sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=True))

    # Each day keeps what its last delivery says; a deferred one (nothing went out) is forgotten, as it used to be.
    last = (
        "(SELECT {column} FROM delivery WHERE delivery.staff_digest_id = staff_digest.id "
        "ORDER BY delivery.sequence DESC LIMIT 1)"
    )
    op.execute(
        "UPDATE staff_digest SET "
        + ", ".join(
            f"{column} = {last.format(column=column)}"
            for column in ("language", "message_id", "state", "smtp_response", "sent_at")
        )
        + " WHERE EXISTS (SELECT 1 FROM delivery WHERE delivery.staff_digest_id = staff_digest.id)"
    )
    op.execute("DELETE FROM delivery WHERE kind IN ('digest', 'test')")
    op.execute("DELETE FROM staff_digest WHERE state = 'deferred'")

    with op.batch_alter_table("delivery") as batch_op:
        batch_op.drop_constraint("uq_delivery_digest_kind_seq", type_="unique")
        batch_op.drop_index(batch_op.f("ix_delivery_staff_digest_id"))
        batch_op.drop_column("staff_digest_id")
        batch_op.alter_column("plan_step_id", existing_type=sa.Integer(), nullable=False)
