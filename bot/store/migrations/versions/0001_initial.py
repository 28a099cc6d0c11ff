"""Initial schema: every table declared in ``bot/store/models.py``.

Generated with ``alembic revision --autogenerate`` against an empty SQLite database, then
reviewed and rewritten by hand: plain ``sa.DateTime(timezone=True)`` instead of the model's
``UTCDateTime`` decorator (the decorator only converts values in Python, the column type is the
same), tables in dependency order so no foreign key needs ``ALTER`` (SQLite cannot add one), and
explicit index names equal to SQLAlchemy's ``ix_<table>_<column>`` convention so later
autogenerate runs find no difference.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = True) -> sa.Column:
    """A timezone-aware timestamp column (``UTCDateTime`` in the models)."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "visitors",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("external_user_id", sa.String(128), nullable=True),
        sa.Column("lang", sa.String(8), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_user_id"),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("skills", sa.JSON(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "agent_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        _ts("expires_at", nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_agent_tokens_agent_id", "agent_tokens", ["agent_id"])

    op.create_table(
        "queues",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("display", sa.JSON(), nullable=False),
        sa.Column("first_response_minutes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "case_counters",
        sa.Column("day", sa.String(8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("visitor_id", sa.String(32), nullable=True),
        sa.Column("conversation_id", sa.String(32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("amount", sa.String(64), nullable=True),
        sa.Column("lang", sa.String(8), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("first_response_due_at"),
        _ts("first_responded_at"),
        _ts("next_update_due_at"),
        _ts("resolved_at"),
        _ts("confirmed_at"),
        _ts("follow_up_at"),
        sa.Column("satisfaction", sa.Integer(), nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["visitor_id"], ["visitors.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    op.create_index("ix_cases_visitor_id", "cases", ["visitor_id"])
    op.create_index("ix_cases_conversation_id", "cases", ["conversation_id"])

    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_stage", sa.String(32), nullable=True),
        sa.Column("to_stage", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_events_case_id", "case_events", ["case_id"])

    # conversations.case_id -> cases.id is declared with use_alter in the models (to break the
    # metadata sort cycle); here cases already exists, so the key is created inline.
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("visitor_id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("lang", sa.String(8), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("guard_state", sa.JSON(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["visitor_id"], ["visitors.id"]),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_conversations_visitor_id", "conversations", ["visitor_id"])
    op.create_index("ix_conversations_queue", "conversations", ["queue"])
    op.create_index("ix_conversations_agent_id", "conversations", ["agent_id"])

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("client_msg_id", sa.String(128), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("intent", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("buttons", sa.JSON(), nullable=True),
        _ts("created_at", nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        sa.UniqueConstraint("conversation_id", "client_msg_id", name="uq_messages_client_msg"),
    )
    op.create_index("ix_messages_conversation_seq", "messages", ["conversation_id", "seq"])

    op.create_table(
        "handoffs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(32), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        _ts("requested_at", nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        _ts("assigned_at"),
        _ts("first_agent_reply_at"),
        _ts("ended_at"),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_handoffs_conversation_id", "handoffs", ["conversation_id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(256), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("sent_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_case_id", "outbox", ["case_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(128), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])

    op.create_table(
        "plan_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visitor_id", sa.String(32), nullable=True),
        sa.Column("from_plan", sa.String(32), nullable=True),
        sa.Column("to_plan", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        _ts("requested_at", nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_plan_changes_visitor_id", "plan_changes", ["visitor_id"])


def downgrade() -> None:
    # Reverse dependency order; dropping a table drops its indexes.
    for table in (
        "plan_changes",
        "audit_log",
        "outbox",
        "handoffs",
        "messages",
        "conversations",
        "case_events",
        "cases",
        "case_counters",
        "queues",
        "agent_tokens",
        "agents",
        "visitors",
    ):
        op.drop_table(table)
