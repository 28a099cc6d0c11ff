"""Tables of the Humanline store.

Every table of the system is declared here and nowhere else; services reach them through
:class:`bot.store.db.Database`. The schema itself is created and upgraded by the Alembic
migrations in ``bot/store/migrations`` (applied automatically at start), never by
``metadata.create_all`` in production code.

Times are stored timezone-aware in UTC. String identifiers are UUID4 hex strings.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import declarative_base, relationship
from sqlalchemy.sql.schema import Column
from sqlalchemy.types import TypeDecorator

Base: Any = declarative_base()


class UTCDateTime(TypeDecorator):  # type: ignore[type-arg]
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zones and hands back naive values; this type stores UTC and always
    returns aware datetimes, so comparisons with :func:`utcnow` work on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh opaque identifier (UUID4 hex)."""
    return uuid.uuid4().hex


class Visitor(Base):
    """A customer: an anonymous widget visitor or a signed-in app user."""

    __tablename__ = "visitors"

    id = Column(String(32), primary_key=True, default=new_id)
    external_user_id = Column(String(128), unique=True, nullable=True)
    lang = Column(String(8), nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    # Visitor tokens issued before this time are revoked (migration 0004).
    tokens_not_before = Column(UTCDateTime(), nullable=True)


class Conversation(Base):
    """One customer conversation and who holds it: the bot, a queue or an agent."""

    __tablename__ = "conversations"

    id = Column(String(32), primary_key=True, default=new_id)
    visitor_id = Column(String(32), ForeignKey("visitors.id"), nullable=False, index=True)
    channel = Column(String(16), nullable=False, default="web")
    status = Column(String(16), nullable=False, default="bot")  # bot|queued|agent|closed
    queue = Column(String(64), nullable=True, index=True)
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=True, index=True)
    case_id = Column(Integer, ForeignKey("cases.id", use_alter=True), nullable=True)
    lang = Column(String(8), nullable=True)
    last_seq = Column(Integer, nullable=False, default=0)
    guard_state = Column(JSON, nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)

    visitor = relationship("Visitor")


class Message(Base):
    """A message of a conversation, from either side, numbered by ``seq`` without gaps."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        UniqueConstraint("conversation_id", "client_msg_id", name="uq_messages_client_msg"),
    )

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(32), ForeignKey("conversations.id"), nullable=False)
    seq = Column(Integer, nullable=False)
    sender = Column(String(16), nullable=False)  # customer|bot|agent|system
    text = Column(Text, nullable=False)
    client_msg_id = Column(String(128), nullable=True)
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=True)
    intent = Column(String(64), nullable=True)
    confidence = Column(Float, nullable=True)
    buttons = Column(JSON, nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    # A customer message awaiting its turn: set in the transaction that stores it (before the
    # ack), cleared in the one that records the turn's result. The hub resumes turns whose mark
    # is older than a few seconds (after a crash, a database outage, on another hub); a resume
    # moves the mark to its own time, so of racing hubs one takes the turn (bot/hub/core.py).
    turn_pending_since = Column(UTCDateTime(), nullable=True)


class Case(Base):
    """A complaint, refund or plan-change request with its stage and SLA clocks."""

    __tablename__ = "cases"

    id = Column(Integer, primary_key=True, autoincrement=True)
    number = Column(String(32), unique=True, nullable=False)
    category = Column(String(32), nullable=False)
    queue = Column(String(64), nullable=False)
    stage = Column(String(32), nullable=False, default="accepted")
    visitor_id = Column(String(32), ForeignKey("visitors.id"), nullable=True, index=True)
    conversation_id = Column(String(32), nullable=True, index=True)
    description = Column(Text, nullable=True)
    order_id = Column(String(64), nullable=True)
    phone = Column(String(32), nullable=True)
    amount = Column(String(64), nullable=True)
    lang = Column(String(8), nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    first_response_due_at = Column(UTCDateTime(), nullable=True)
    first_responded_at = Column(UTCDateTime(), nullable=True)
    next_update_due_at = Column(UTCDateTime(), nullable=True)
    resolved_at = Column(UTCDateTime(), nullable=True)
    confirmed_at = Column(UTCDateTime(), nullable=True)
    follow_up_at = Column(UTCDateTime(), nullable=True)
    satisfaction = Column(Integer, nullable=True)
    reopen_count = Column(Integer, nullable=False, default=0)

    events = relationship("CaseEvent", order_by="CaseEvent.id", back_populates="case")


class CaseEvent(Base):
    """One entry of a case's timeline: creation, stage change, note, SLA event, reopen…"""

    __tablename__ = "case_events"

    id = Column(Integer, primary_key=True, autoincrement=True)
    case_id = Column(Integer, ForeignKey("cases.id"), nullable=False, index=True)
    kind = Column(String(32), nullable=False)
    from_stage = Column(String(32), nullable=True)
    to_stage = Column(String(32), nullable=True)
    actor = Column(String(128), nullable=False)
    detail = Column(Text, nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)

    case = relationship("Case", back_populates="events")


class CaseCounter(Base):
    """Per-day counter behind case numbers (``HL-YYYYMMDD-NNNN``), incremented in a transaction."""

    __tablename__ = "case_counters"

    day = Column(String(8), primary_key=True)
    value = Column(Integer, nullable=False, default=0)


class Queue(Base):
    """A specialist queue, mirrored from ``config/humanline.yml`` at start."""

    __tablename__ = "queues"

    name = Column(String(64), primary_key=True)
    display = Column(JSON, nullable=False)
    first_response_minutes = Column(Integer, nullable=False, default=10)


class Agent(Base):
    """A human agent or supervisor who logs in to the console."""

    __tablename__ = "agents"

    id = Column(Integer, primary_key=True, autoincrement=True)
    username = Column(String(64), unique=True, nullable=False)
    display_name = Column(String(128), nullable=False)
    password_hash = Column(String(256), nullable=False)
    role = Column(String(16), nullable=False, default="agent")  # agent|supervisor
    skills = Column(JSON, nullable=False, default=list)  # queue names
    available = Column(Boolean, nullable=False, default=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    #: conversations held at once; NULL = ``agents.max_concurrent_default`` of the configuration
    max_concurrent = Column(Integer, nullable=True)
    #: a supervisor lets this agent claim by hand above the limit (automatic assignment never does)
    allow_overflow = Column(Boolean, nullable=False, default=False)
    # Set by `python -m bot disable-agent`: no login, no token (migration 0004).
    disabled_at = Column(UTCDateTime(), nullable=True)


class AgentToken(Base):
    """A login session of an agent; only the SHA-256 of the token is stored."""

    __tablename__ = "agent_tokens"

    token_hash = Column(String(64), primary_key=True)
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=False, index=True)
    expires_at = Column(UTCDateTime(), nullable=False)


class Handoff(Base):
    """One transfer of a conversation to humans, from request to its end."""

    __tablename__ = "handoffs"

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(32), ForeignKey("conversations.id"), nullable=False, index=True)
    queue = Column(String(64), nullable=False)
    reason = Column(String(64), nullable=False)
    case_id = Column(Integer, ForeignKey("cases.id"), nullable=True)
    requested_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    agent_id = Column(Integer, ForeignKey("agents.id"), nullable=True)
    assigned_at = Column(UTCDateTime(), nullable=True)
    first_agent_reply_at = Column(UTCDateTime(), nullable=True)
    # The customer waits for the assigned agent since then (assignment, or the first customer
    # message after the agent's last reply); None while the agent has the last word.
    awaiting_reply_since = Column(UTCDateTime(), nullable=True)
    ended_at = Column(UTCDateTime(), nullable=True)
    outcome = Column(String(32), nullable=True)  # resolved|handed_back|transferred|timeout
    # Held as "suspected automated" (bot/services/handoff_dedupe.py): the client address it was
    # counted against, while it waits for a supervisor's release; NULL for an ordinary handoff
    # and once released or claimed. Here rather than in a hub's memory so that every hub skips
    # it in auto-assignment, a release on any hub counts everywhere, and a restart keeps it
    # (migration 0007).
    held_source = Column(String(64), nullable=True, index=True)


class HubSecret(Base):
    """A secret the hub generated for itself because none was configured (see
    :func:`bot.settings.Settings`): kept here so that it survives a restart."""

    __tablename__ = "hub_secrets"

    name = Column(String(64), primary_key=True)
    value = Column(String(256), nullable=False)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)


class OutboxNotification(Base):
    """A notification to send (SMS, e-mail, webhook, chat); written in the same transaction
    as the change it announces, delivered later by a sender."""

    __tablename__ = "outbox"

    id = Column(Integer, primary_key=True, autoincrement=True)
    case_id = Column(Integer, ForeignKey("cases.id"), nullable=True, index=True)
    channel = Column(String(16), nullable=False)
    recipient = Column(String(256), nullable=False)
    payload = Column(JSON, nullable=False)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    sent_at = Column(UTCDateTime(), nullable=True)
    attempts = Column(Integer, nullable=False, default=0)
    last_error = Column(Text, nullable=True)


class HubEvent(Base):
    """An agent event or a customer frame a command emits, written in the command's transaction
    and deleted once published: the hub's transactional outbox (:mod:`bot.hub.outbox`, migration
    0008). ``recipients`` (agent ids) for an agent event, ``conversation_id`` for a customer
    frame. ``claimed_at`` is the lease of the hub publishing it: set to the commit time (the
    committing hub publishes it at once), and renewed by the relay that takes it over when that
    hub did not publish it within the grace period."""

    __tablename__ = "hub_outbox"

    id = Column(Integer, primary_key=True, autoincrement=True)
    conversation_id = Column(String(32), nullable=True)
    recipients = Column(JSON, nullable=True)
    frame = Column(JSON, nullable=False)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    claimed_at = Column(UTCDateTime(), nullable=False, default=utcnow, index=True)


class AuditEntry(Base):
    """Who did what: every agent action and every administrative change."""

    __tablename__ = "audit_log"

    id = Column(Integer, primary_key=True, autoincrement=True)
    actor = Column(String(128), nullable=False)
    action = Column(String(64), nullable=False)
    target = Column(String(128), nullable=True)
    detail = Column(JSON, nullable=True)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow, index=True)


class PlanChange(Base):
    """A plan change recorded by the local account backend."""

    __tablename__ = "plan_changes"

    id = Column(Integer, primary_key=True, autoincrement=True)
    visitor_id = Column(String(32), nullable=True, index=True)
    from_plan = Column(String(32), nullable=True)
    to_plan = Column(String(32), nullable=True)
    kind = Column(String(16), nullable=False)  # upgrade|downgrade|cancel
    requested_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    effective_date = Column(Date, nullable=False)
    case_id = Column(Integer, ForeignKey("cases.id"), nullable=True)


class CannedReply(Base):
    """A canned reply agents insert by its shortcut: one text per shortcut and language, with
    placeholders (``{case_number}``…) filled in for the conversation (migration 0006)."""

    __tablename__ = "canned_replies"
    __table_args__ = (UniqueConstraint("shortcut", "lang", name="uq_canned_replies_shortcut_lang"),)

    id = Column(Integer, primary_key=True, autoincrement=True)
    shortcut = Column(String(32), nullable=False)
    lang = Column(String(8), nullable=False)  # en|zh-Hans|zh-Hant
    title = Column(String(128), nullable=False)
    body = Column(Text, nullable=False)
    created_by = Column(String(128), nullable=False)
    updated_by = Column(String(128), nullable=False)
    created_at = Column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)


Index("ix_messages_conversation_seq", Message.conversation_id, Message.seq)
Index("ix_messages_turn_pending_since", Message.turn_pending_since)

__all__ = [
    "Agent",
    "AgentToken",
    "AuditEntry",
    "Base",
    "CannedReply",
    "Case",
    "CaseCounter",
    "CaseEvent",
    "Conversation",
    "Handoff",
    "HubEvent",
    "Message",
    "OutboxNotification",
    "PlanChange",
    "Queue",
    "UTCDateTime",
    "Visitor",
    "new_id",
    "utcnow",
]
