"""Security: disabled agents and revocable visitor tokens.

* ``agents.disabled_at``: set by ``python -m bot disable-agent``; a disabled agent cannot log
  in and has no valid token.
* ``visitors.tokens_not_before``: visitor tokens issued before this time are refused
  (``python -m bot rotate-tokens --visitor ID``, or for every visitor with ``--all-visitors``).

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("visitors") as batch:
        batch.add_column(sa.Column("tokens_not_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("visitors") as batch:
        batch.drop_column("tokens_not_before")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("disabled_at")
