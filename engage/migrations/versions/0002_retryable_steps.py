"""A failed step remembers whether retrying it may help (retries ran out) or not (refused for good).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan_step") as batch_op:
        batch_op.add_column(sa.Column("retryable", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("plan_step") as batch_op:
        batch_op.drop_column("retryable")
