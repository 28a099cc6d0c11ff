"""The hub's transactional outbox of agent events and customer frames.

``hub_outbox``: the events an agent command emits (``recipients``: agent ids) and the frames it
sends a customer (``conversation_id``), written in the command's transaction and deleted once
published; ``claimed_at`` is the publishing hub's lease (``bot/hub/outbox.py``), so a row a
crashed hub left behind is published by the relay of a live one.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "hub_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(32), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("frame", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_hub_outbox_claimed_at", "hub_outbox", ["claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_hub_outbox_claimed_at", table_name="hub_outbox")
    op.drop_table("hub_outbox")
