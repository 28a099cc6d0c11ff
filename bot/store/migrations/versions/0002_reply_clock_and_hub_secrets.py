"""The agent reply clock on handoffs, and the hub's generated secrets.

* ``handoffs.awaiting_reply_since``: when the customer started waiting for the assigned agent
  (assignment, or the first customer message after the agent's last reply); cleared by an agent
  reply. The reply timeout runs on this clock, so an agent who answered once and then went
  silent loses the conversation back to the queue too.
* ``hub_secrets``: secrets the hub generated for itself when none was configured (the visitor
  token signing key), so tokens survive a restart of a single-machine install.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column("awaiting_reply_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "hub_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("hub_secrets")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("awaiting_reply_since")
