"""Agent capacity: how many conversations an agent holds at once.

* ``agents.max_concurrent``: the agent's own limit, set by a supervisor; NULL means the
  configuration's ``agents.max_concurrent_default``.
* ``agents.allow_overflow``: a supervisor allowed this agent to claim by hand above the limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("allow_overflow", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("allow_overflow")
        batch.drop_column("max_concurrent")
