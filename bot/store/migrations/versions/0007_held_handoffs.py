"""Held handoffs in the database: ``handoffs.held_source``.

A handoff held as "suspected automated" (``bot/services/handoff_dedupe.py``) carries the client
address it was counted against until a supervisor releases it or a person claims it (then
``NULL`` again). Every hub reads it — auto-assignment skips held handoffs, a release on one hub
is seen by all — and a restart no longer forgets it (issue #15).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("held_source", sa.String(64), nullable=True))
    op.create_index("ix_handoffs_held_source", "handoffs", ["held_source"])


def downgrade() -> None:
    op.drop_index("ix_handoffs_held_source", table_name="handoffs")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("held_source")
