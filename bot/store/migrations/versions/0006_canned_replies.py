"""Canned replies: texts agents insert by a shortcut, per language, managed by supervisors.

* ``canned_replies``: ``shortcut`` + ``lang`` (``en``, ``zh-Hans``, ``zh-Hant``) are unique;
  ``body`` may hold the placeholders of :mod:`bot.services.canned` (``{case_number}``…).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "canned_replies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("shortcut", sa.String(32), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("title", sa.String(128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("shortcut", "lang", name="uq_canned_replies_shortcut_lang"),
    )


def downgrade() -> None:
    op.drop_table("canned_replies")
