"""The durable "awaiting its turn" mark of customer messages.

``messages.turn_pending_since``: set when a customer message is stored for a turn (in the
transaction that stores it, before the ack), cleared in the transaction that records the turn's
result. A hub resumes the turns whose mark is older than a few seconds — at start-up after a
crash, after a database outage, or those of another hub that died — so an acknowledged message
is always answered by the bot or handed to a person (``bot/hub/core.py``).

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("turn_pending_since", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_messages_turn_pending_since", "messages", ["turn_pending_since"])


def downgrade() -> None:
    op.drop_index("ix_messages_turn_pending_since", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("turn_pending_since")
