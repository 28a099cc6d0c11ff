"""Conversations, their messages and who holds them.

Every customer conversation has one sequence: ``seq`` numbers its messages from both sides,
starting at 1, without gaps. :meth:`ConversationService.append` allocates the next number inside
the transaction that inserts the message (``UPDATE conversations SET last_seq = last_seq + 1``,
then read it back): the row lock (PostgreSQL) or the database write lock (SQLite) serialises
concurrent writers, and a failed insert rolls the counter back with it, so there is never a gap
and never a duplicate. A message with a ``client_msg_id`` that was stored before is not stored
again: the existing message is returned (idempotent resends, promise 3).

Status transitions (``bot → queued → agent → bot | closed``) are conditional ``UPDATE``\\ s, so
exactly one of two racing agents wins a claim. Each stretch with humans is a ``handoffs`` row.

All methods are synchronous and short; the hub calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.guard import Decision, GuardState
from bot.services.case_links import redact_links
from bot.services.cases import case_details
from bot.services.plans import case_plan_change
from bot.store.db import Database
from bot.store.models import Agent, Case, Conversation, Handoff, Message, Visitor, new_id, utcnow

STATUSES = ("bot", "queued", "agent", "closed")

Buttons = list[dict[str, str]]
"""A message's quick-reply buttons (``{"title", "payload"}``)."""
ReplyRow = tuple[str, Buttons | None]
"""A bot reply to store: its text and its buttons (:meth:`ConversationService.finish_bot_turn`)."""


@dataclass(frozen=True)
class MessageRecord:
    """One stored message."""

    conversation_id: str
    seq: int
    sender: str
    text: str
    created_at: datetime
    client_msg_id: str | None = None
    agent_id: int | None = None
    agent_name: str | None = None
    intent: str | None = None
    confidence: float | None = None
    buttons: list[dict[str, str]] | None = None

    def customer_frame(self) -> dict[str, Any]:
        """The ``message`` frame of the customer protocol (docs/protocol.md)."""
        frame: dict[str, Any] = {
            "type": "message",
            "seq": self.seq,
            "sender": self.sender,
            "text": self.text,
            "ts": self.created_at.isoformat(),
        }
        if self.sender == "customer" and self.client_msg_id:
            frame["client_msg_id"] = self.client_msg_id
        if self.agent_name:
            frame["agent_name"] = self.agent_name
        if self.buttons:
            frame["buttons"] = self.buttons
        return frame

    def agent_frame(self) -> dict[str, Any]:
        """The ``message`` frame of the agent protocol: with the conversation id and the NLU."""
        frame = self.customer_frame()
        frame["text"] = redact_links(self.text)  # a case link is the customer's credential
        frame["conversation_id"] = self.conversation_id
        if self.sender == "customer":
            frame["intent"] = self.intent
            frame["confidence"] = self.confidence
        return frame


@dataclass(frozen=True)
class ConversationInfo:
    """A snapshot of a conversation row."""

    id: str
    visitor_id: str
    channel: str
    status: str
    queue: str | None
    agent_id: int | None
    case_id: int | None
    lang: str | None
    last_seq: int
    created_at: datetime


@dataclass(frozen=True)
class Appended:
    """The result of :meth:`ConversationService.append`: the message, and whether it is new."""

    message: MessageRecord
    created: bool


@dataclass
class FinishedTurn:
    """What :meth:`ConversationService.finish_bot_turn` did: the guard's decision, the bot replies
    stored (in order) and whether some were refused because the bot no longer held the
    conversation."""

    decision: Decision
    stored: list[MessageRecord]
    dropped: bool = False


@dataclass(frozen=True)
class HandoffInfo:
    """The open handoff of a conversation."""

    id: int
    conversation_id: str
    queue: str
    reason: str
    case_id: int | None
    requested_at: datetime
    agent_id: int | None
    assigned_at: datetime | None
    #: held as "suspected automated": the client address it was counted against (``None``: an
    #: ordinary handoff, or one released or claimed since)
    held_source: str | None = None


def _info(c: Conversation) -> ConversationInfo:
    return ConversationInfo(
        id=c.id,
        visitor_id=c.visitor_id,
        channel=c.channel,
        status=c.status,
        queue=c.queue,
        agent_id=c.agent_id,
        case_id=c.case_id,
        lang=c.lang,
        last_seq=c.last_seq,
        created_at=c.created_at,
    )


def _record(m: Message, agent_name: str | None = None) -> MessageRecord:
    return MessageRecord(
        conversation_id=m.conversation_id,
        seq=m.seq,
        sender=m.sender,
        text=m.text,
        created_at=m.created_at,
        client_msg_id=m.client_msg_id,
        agent_id=m.agent_id,
        agent_name=agent_name,
        intent=m.intent,
        confidence=m.confidence,
        buttons=m.buttons,
    )


def _handoff(h: Handoff) -> HandoffInfo:
    return HandoffInfo(
        id=h.id,
        conversation_id=h.conversation_id,
        queue=h.queue,
        reason=h.reason,
        case_id=h.case_id,
        requested_at=h.requested_at,
        agent_id=h.agent_id,
        assigned_at=h.assigned_at,
        held_source=h.held_source,
    )


def _open_handoff(s: Session, conversation_id: str) -> Handoff | None:
    found: Handoff | None = s.execute(
        select(Handoff)
        .where(Handoff.conversation_id == conversation_id, Handoff.ended_at.is_(None))
        .order_by(Handoff.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return found


class AtCapacity(Exception):
    """An agent already holds as many conversations as it may."""

    def __init__(self, load: int, limit: int):
        super().__init__(f"the agent holds {load} conversations (limit {limit})")
        self.load = load
        self.limit = limit


def _append_in(
    s: Session, m: Message, *, only_if_status: str | None = None, awaiting_turn: bool = False
) -> Appended | None:
    """The writes of :meth:`ConversationService.append` for the new message ``m`` (its
    conversation, sender, text and the optional fields set; not yet added), in the caller's
    transaction ``s``: ``m`` gets the next seq and its time and is added."""
    conversation_id, client_msg_id = m.conversation_id, m.client_msg_id
    if client_msg_id is not None:
        found = s.execute(
            select(Message).where(
                Message.conversation_id == conversation_id, Message.client_msg_id == client_msg_id
            )
        ).scalar_one_or_none()
        if found is not None:
            return Appended(_record(found), created=False)
    stmt = (
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(last_seq=Conversation.last_seq + 1, updated_at=utcnow())
    )
    if only_if_status is not None:
        stmt = stmt.where(Conversation.status == only_if_status)
    # PostgreSQL returns the new seq (and the status) from the UPDATE itself: one round trip, not two.
    returning = s.get_bind().dialect.name == "postgresql"
    result = s.execute(stmt.returning(Conversation.last_seq, Conversation.status) if returning else stmt)
    row = result.one_or_none() if returning else None
    if (row is None) if returning else (result.rowcount != 1):
        if only_if_status is not None and s.get(Conversation, conversation_id) is not None:
            return None
        raise KeyError(conversation_id)
    if row is not None:
        seq, status = int(row[0]), str(row[1])
    else:
        current = s.execute(
            select(Conversation.last_seq, Conversation.status).where(Conversation.id == conversation_id)
        ).one()
        seq, status = int(current[0]), str(current[1])
    m.seq = seq
    m.created_at = utcnow()
    if awaiting_turn:
        m.turn_pending_since = m.created_at
    s.add(m)
    if m.sender == "customer" and status != "bot":
        # The customer now waits for the assigned agent, if there is one and the
        # agent had the last word (the reply timeout runs on this clock). A conversation the
        # bot holds has no assigned agent: no statement.
        s.execute(
            update(Handoff)
            .where(
                Handoff.conversation_id == conversation_id,
                Handoff.ended_at.is_(None),
                Handoff.agent_id.is_not(None),
                Handoff.awaiting_reply_since.is_(None),
            )
            .values(awaiting_reply_since=m.created_at)
            .execution_options(synchronize_session=False)
        )
    s.flush()
    name = s.get(Agent, m.agent_id).display_name if m.agent_id is not None else None
    return Appended(_record(m, name), created=True)


class ConversationService:
    """Visitors, conversations, messages, guard state and handoffs over one :class:`Database`."""

    def __init__(self, db: Database, on_stored: Callable[[str], None] | None = None):
        """``on_stored(sender)`` is called for every message :meth:`append` stores (the hub's
        message counter)."""
        self.db = db
        self.on_stored = on_stored

    @contextlib.contextmanager
    def _tx(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when it gives one (a command that commits its change with its
        audit entry: :mod:`bot.hub.agent_commands`), else a transaction of its own."""
        if session is not None:
            yield session
        else:
            with self.db.session() as s:
                yield s

    # ---- visitors and conversations --------------------------------------------------------

    def create_visitor(self, lang: str | None = None, external_user_id: str | None = None) -> str:
        """A new visitor; returns its id."""
        with self.db.session() as s:
            v = Visitor(id=new_id(), lang=lang, external_user_id=external_user_id)
            s.add(v)
        return str(v.id)

    def visitor_for_user(self, external_user_id: str, lang: str | None = None) -> str:
        """The visitor of a signed-in app user, created on first sight."""
        with self.db.session() as s:
            found = s.execute(select(Visitor.id).where(Visitor.external_user_id == external_user_id)).scalar()
            if found:
                return str(found)
        try:
            return self.create_visitor(lang, external_user_id)
        except IntegrityError:  # created concurrently by another socket
            with self.db.session() as s:
                return str(s.execute(select(Visitor.id).where(Visitor.external_user_id == external_user_id)).scalar())

    def visitor_exists(self, visitor_id: str) -> bool:
        with self.db.session() as s:
            return s.get(Visitor, visitor_id) is not None

    def create_conversation(self, visitor_id: str, channel: str = "web", lang: str | None = None) -> ConversationInfo:
        """A new conversation held by the bot."""
        with self.db.session() as s:
            c = Conversation(
                id=new_id(), visitor_id=visitor_id, channel=channel, status="bot", lang=lang, last_seq=0,
                created_at=utcnow(),
            )
            s.add(c)
            s.flush()
            return _info(c)

    def create_visitor_and_conversation(self, channel: str = "web", lang: str | None = None) -> ConversationInfo:
        """A new anonymous visitor and its first conversation, in one transaction: an anonymous
        hello costs one trip to the database, not two (and no reads: nothing to replay yet)."""
        with self.db.session() as s:
            v = Visitor(id=new_id(), lang=lang)
            c = Conversation(
                id=new_id(), visitor_id=v.id, channel=channel, status="bot", lang=lang, last_seq=0,
                created_at=utcnow(),
            )
            s.add(v)
            s.flush()  # the visitor row first (the conversation's foreign key)
            s.add(c)
            s.flush()
            return _info(c)

    def get(self, conversation_id: str) -> ConversationInfo | None:
        with self.db.read_session() as s:
            c = s.get(Conversation, conversation_id)
            return _info(c) if c else None

    def latest_for_visitor(self, visitor_id: str) -> ConversationInfo | None:
        """The visitor's most recent conversation, whatever its status."""
        with self.db.session() as s:
            c = s.execute(
                select(Conversation)
                .where(Conversation.visitor_id == visitor_id)
                .order_by(Conversation.created_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            return _info(c) if c else None

    def set_lang(self, conversation_id: str, lang: str) -> None:
        with self.db.session() as s:
            s.execute(update(Conversation).where(Conversation.id == conversation_id).values(lang=lang))

    def by_agent(self, agent_id: int) -> list[ConversationInfo]:
        """Conversations an agent holds now."""
        with self.db.session() as s:
            rows = s.execute(
                select(Conversation).where(Conversation.agent_id == agent_id, Conversation.status == "agent")
            ).scalars()
            return [_info(c) for c in rows]

    # ---- messages ----------------------------------------------------------------------------

    def append(
        self,
        conversation_id: str,
        sender: str,
        text: str,
        *,
        client_msg_id: str | None = None,
        agent_id: int | None = None,
        intent: str | None = None,
        confidence: float | None = None,
        buttons: list[dict[str, str]] | None = None,
        only_if_status: str | None = None,
        awaiting_turn: bool = False,
        session: Session | None = None,
    ) -> Appended | None:
        """Store a message with the next ``seq``; ``on_stored(sender)`` follows for a message it
        created (committed, or with ``session`` written in the caller's transaction).

        With ``awaiting_turn`` a new message gets the durable "awaiting its turn" mark
        (``turn_pending_since``) in the same transaction (see :meth:`pending_turns`).

        With ``client_msg_id`` already stored for this conversation, nothing is written and the
        existing message is returned (``created=False``). With ``only_if_status``, the message is
        stored only while the conversation has that status, checked in the same statement that
        allocates the seq; otherwise ``None`` is returned and nothing is written (this is how a
        bot reply generated before a handoff is dropped, promise 2).

        With ``session`` the message is written in the caller's transaction, and a concurrent
        duplicate ``client_msg_id`` raises :class:`IntegrityError` (the caller's transaction is lost).

        :raises KeyError: the conversation does not exist.
        """
        m = Message(
            conversation_id=conversation_id, sender=sender, text=text, client_msg_id=client_msg_id,
            agent_id=agent_id, intent=intent, confidence=confidence, buttons=buttons or None,
        )
        try:
            with self._tx(session) as s:
                appended = _append_in(s, m, only_if_status=only_if_status, awaiting_turn=awaiting_turn)
        except IntegrityError:
            # The same client_msg_id was stored concurrently: the counter rolled back with us.
            if client_msg_id is not None and session is None:
                existing = self.find_client_msg(conversation_id, client_msg_id)
                if existing:
                    return Appended(existing, created=False)
            raise
        if appended is not None and appended.created and self.on_stored is not None:
            self.on_stored(sender)
        return appended

    def find_client_msg(self, conversation_id: str, client_msg_id: str) -> MessageRecord | None:
        with self.db.session() as s:
            m = s.execute(
                select(Message).where(
                    Message.conversation_id == conversation_id, Message.client_msg_id == client_msg_id
                )
            ).scalar_one_or_none()
            return _record(m) if m else None

    def set_nlu(self, conversation_id: str, seq: int, intent: str | None, confidence: float | None) -> None:
        """Record what the NLU understood of a customer message (shown to agents)."""
        with self.db.session() as s:
            s.execute(
                update(Message)
                .where(Message.conversation_id == conversation_id, Message.seq == seq)
                .values(intent=intent, confidence=confidence)
            )

    def messages_after(self, conversation_id: str, last_seq: int = 0, limit: int | None = None) -> list[MessageRecord]:
        """Messages with ``seq > last_seq`` in order, agent messages with the agent's name."""
        with self.db.session() as s:
            q = (
                select(Message, Agent.display_name)
                .outerjoin(Agent, Agent.id == Message.agent_id)
                .where(Message.conversation_id == conversation_id, Message.seq > last_seq)
                .order_by(Message.seq)
            )
            if limit is not None:
                q = q.limit(limit)
            return [_record(m, name) for m, name in s.execute(q)]

    def replies_since(self, conversation_id: str, sender: str, seconds: float) -> int:
        """How many messages ``sender`` wrote in the last ``seconds`` (rate limits, tests)."""
        since = utcnow().timestamp() - seconds
        return sum(1 for m in self.messages_after(conversation_id) if m.sender == sender and
                   m.created_at.timestamp() >= since)

    # ---- guard state ---------------------------------------------------------------------

    def load_guard_state(self, conversation_id: str, *, session: Session | None = None) -> GuardState:
        """The persisted guard state (``GuardState()`` when none is stored yet).

        :raises ValueError: the stored state is malformed (:meth:`GuardState.from_json`).
        """
        with self._tx(session) as s:
            raw = s.execute(
                select(Conversation.guard_state).where(Conversation.id == conversation_id)
            ).scalar_one_or_none()
        return GuardState.from_json(raw)

    def get_with_guard_state(self, conversation_id: str) -> tuple[ConversationInfo, GuardState] | None:
        """The conversation and its persisted guard state, read in one statement."""
        with self.db.read_session() as s:
            c = s.get(Conversation, conversation_id)
            if c is None:
                return None
            return _info(c), GuardState.from_json(c.guard_state)

    def finish_turn(
        self, conversation_id: str, decide: Callable[[GuardState], Decision], seq: int, intent: str | None,
        confidence: float | None,
    ) -> Decision:
        """After a brain call, in one transaction: read the guard state as persisted now, call
        ``decide(state)`` (the guard's ``after_turn``, a pure function), save the state it
        returns, record the NLU of the customer message ``seq`` (when ``intent`` is given) and
        clear the "awaiting its turn" marks of the conversation's messages up to ``seq`` (what
        :meth:`turn_done` does): the turn is counted exactly once, even if the hub dies right
        after. Returns the decision."""
        return self.finish_bot_turn(conversation_id, decide, seq, intent, confidence).decision

    def finish_bot_turn(
        self, conversation_id: str, decide: Callable[[GuardState], Decision], seq: int, intent: str | None,
        confidence: float | None, replies: Callable[[Decision], Sequence[ReplyRow]] | None = None,
    ) -> FinishedTurn:
        """:meth:`finish_turn`, which also stores, in the same transaction, the bot replies
        ``replies(decision)`` returns (``(text, buttons)`` pairs, in order) while the bot still
        holds the conversation — checked in the statement that allocates each reply's seq, as
        :meth:`append` with ``only_if_status="bot"`` does. The first reply refused (the
        conversation was handed off meanwhile) and those after it are not stored
        (``FinishedTurn.dropped``); the guard state and the cleared marks are. The caller sends
        the stored replies after this returns (stored before sent)."""
        stored: list[MessageRecord] = []
        dropped = False
        with self.db.session() as s:
            raw = s.execute(
                select(Conversation.guard_state).where(Conversation.id == conversation_id)
            ).scalar_one_or_none()
            decision = decide(GuardState.from_json(raw))
            s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(guard_state=decision.state.to_json())
            )
            if intent is not None:
                s.execute(
                    update(Message)
                    .where(Message.conversation_id == conversation_id, Message.seq == seq)
                    .values(intent=intent, confidence=confidence)
                    .execution_options(synchronize_session=False)
                )
            s.execute(
                update(Message)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.seq <= seq,
                    Message.turn_pending_since.is_not(None),
                )
                .values(turn_pending_since=None)
                .execution_options(synchronize_session=False)
            )
            if replies is not None:
                for text, buttons in replies(decision):
                    reply = Message(conversation_id=conversation_id, sender="bot", text=text, buttons=buttons or None)
                    appended = _append_in(s, reply, only_if_status="bot")
                    if appended is None:
                        dropped = True
                        break
                    stored.append(appended.message)
        if self.on_stored is not None:
            for _ in stored:
                self.on_stored("bot")
        return FinishedTurn(decision, stored, dropped)

    # ---- turns awaiting their result ---------------------------------------------------------

    def turn_done(self, conversation_id: str, seq: int) -> None:
        """Clear the "awaiting its turn" mark of the conversation's messages up to ``seq``."""
        with self.db.session() as s:
            s.execute(
                update(Message)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.seq <= seq,
                    Message.turn_pending_since.is_not(None),
                )
                .values(turn_pending_since=None)
                .execution_options(synchronize_session=False)
            )

    def pending_turns(self, older_than_s: float, limit: int = 200) -> list[MessageRecord]:
        """Customer messages whose turn has been awaited for more than ``older_than_s``,
        oldest first (by conversation and seq, so a conversation's turns resume in order)."""
        cutoff = datetime.fromtimestamp(utcnow().timestamp() - older_than_s, tz=utcnow().tzinfo)
        with self.db.session() as s:
            rows = s.execute(
                select(Message)
                .where(Message.turn_pending_since.is_not(None), Message.turn_pending_since < cutoff)
                .order_by(Message.conversation_id, Message.seq)
                .limit(limit)
            ).scalars()
            return [_record(m) for m in rows]

    def claim_pending_turn(self, conversation_id: str, seq: int, older_than_s: float) -> bool:
        """Take a stale turn for this process: its mark moves to now, only if it is still older
        than ``older_than_s``. One conditional ``UPDATE`` (row lock on PostgreSQL, the write
        lock on SQLite): of several hubs resuming the same turn exactly one gets ``True``, and
        the others leave it alone for another ``older_than_s``."""
        now = utcnow()
        cutoff = datetime.fromtimestamp(now.timestamp() - older_than_s, tz=now.tzinfo)
        with self.db.session() as s:
            res = s.execute(
                update(Message)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.seq == seq,
                    Message.turn_pending_since.is_not(None),
                    Message.turn_pending_since < cutoff,
                )
                .values(turn_pending_since=now)
                .execution_options(synchronize_session=False)
            )
            return bool(res.rowcount == 1)

    def save_guard_state(self, conversation_id: str, state: GuardState, *, session: Session | None = None) -> None:
        with self._tx(session) as s:
            s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(guard_state=state.to_json())
            )

    # ---- status and handoffs -------------------------------------------------------------

    def queue(
        self,
        conversation_id: str,
        queue: str,
        reason: str,
        case_id: int | None = None,
        *,
        from_statuses: tuple[str, ...] = ("bot",),
        requested_at: datetime | None = None,
        end_outcome: str | None = None,
        held_source: str | None = None,
        session: Session | None = None,
    ) -> HandoffInfo | None:
        """Move a conversation to ``queue`` (status ``queued``) and open a handoff.

        Only from one of ``from_statuses``; returns ``None`` when the conversation had another
        status (nothing changes). An open handoff is ended first with ``end_outcome`` (transfer,
        reply timeout); ``requested_at`` keeps the customer's place in line. ``held_source``: the
        new handoff is held as suspected automated, counted against this address (written with
        it, so no hub can offer it to an agent before it is marked). ``session``: in the
        caller's transaction (here and in the other commands that take it).
        """
        with self._tx(session) as s:
            values: dict[str, Any] = {"status": "queued", "queue": queue, "agent_id": None, "updated_at": utcnow()}
            if case_id is not None:
                values["case_id"] = case_id
            res = s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status.in_(from_statuses))
                .values(**values)
            )
            if res.rowcount != 1:
                return None
            now = utcnow()
            old = _open_handoff(s, conversation_id)
            if old is not None:
                old.ended_at = now
                old.outcome = end_outcome or "requeued"
                if case_id is None:
                    case_id = old.case_id
            if case_id is None:
                case_id = s.execute(
                    select(Conversation.case_id).where(Conversation.id == conversation_id)
                ).scalar_one_or_none()
            h = Handoff(
                conversation_id=conversation_id,
                queue=queue,
                reason=reason,
                case_id=case_id,
                requested_at=requested_at or now,
                held_source=held_source,
            )
            s.add(h)
            s.flush()
            return _handoff(h)

    def assign(
        self, conversation_id: str, agent_id: int, *, max_load: int | None = None, session: Session | None = None
    ) -> HandoffInfo | None:
        """Give a queued conversation to an agent. Atomic: of racing agents exactly one gets it.

        With ``max_load``, the agent's row is locked (``SELECT … FOR UPDATE`` on PostgreSQL, so
        hubs assigning to the same agent at once take turns) and the conversation is given only
        while the agent holds fewer than ``max_load``.

        :raises AtCapacity: the agent already holds ``max_load`` conversations or more.
        """
        with self._tx(session) as s:
            if max_load is not None:
                s.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update())
                load = s.execute(
                    select(func.count(Conversation.id)).where(
                        Conversation.agent_id == agent_id, Conversation.status == "agent"
                    )
                ).scalar_one()
                if load >= max_load:
                    raise AtCapacity(int(load), max_load)
            res = s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == "queued")
                .values(status="agent", agent_id=agent_id, updated_at=utcnow())
            )
            if res.rowcount != 1:
                return None
            h = _open_handoff(s, conversation_id)
            if h is None:  # queued without a handoff row: should not happen, repair it
                conv = s.get(Conversation, conversation_id)
                h = Handoff(conversation_id=conversation_id, queue=conv.queue or "general", reason="unknown")
                s.add(h)
            h.agent_id = agent_id
            h.assigned_at = h.awaiting_reply_since = utcnow()
            h.held_source = None  # a person has it now: no longer held
            s.flush()
            return _handoff(h)

    def open_handoff(self, conversation_id: str) -> HandoffInfo | None:
        with self.db.session() as s:
            h = _open_handoff(s, conversation_id)
            return _handoff(h) if h else None

    def release_held(self, conversation_id: str) -> HandoffInfo | None:
        """A held handoff becomes ordinary: the open handoff of a queued conversation, only if
        it is held. One conditional ``UPDATE``: of racing releases (on any hub) exactly one gets
        the handoff back, the others ``None``."""
        with self.db.session() as s:
            h = _open_handoff(s, conversation_id)
            if h is None or h.held_source is None:
                return None
            res = s.execute(
                update(Handoff)
                .where(Handoff.id == h.id, Handoff.ended_at.is_(None), Handoff.held_source.is_not(None))
                .values(held_source=None)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:
                return None
            return dataclasses.replace(_handoff(h), held_source=None)

    def held_of_source(self, source: str) -> list[str]:
        """The conversations whose open handoff is held for ``source``, oldest request first."""
        with self.db.session() as s:
            return list(s.execute(
                select(Handoff.conversation_id)
                .where(Handoff.held_source == source, Handoff.ended_at.is_(None))
                .order_by(Handoff.requested_at, Handoff.id)
            ).scalars())

    def mark_agent_reply(self, conversation_id: str, *, session: Session | None = None) -> None:
        """Record an agent reply on the open handoff: the first one is time-stamped, and the
        customer is no longer waiting (stops the reply timer until the customer writes again)."""
        with self._tx(session) as s:
            h = _open_handoff(s, conversation_id)
            if h is not None:
                if h.first_agent_reply_at is None:
                    h.first_agent_reply_at = utcnow()
                h.awaiting_reply_since = None

    def overdue_assignments(self, timeout_s: float) -> list[HandoffInfo]:
        """Open, assigned handoffs whose customer has waited more than ``timeout_s`` for the
        agent: since the assignment, or since the first customer message after the agent's last
        reply (an agent who answered once and then went silent is overdue too)."""
        cutoff = datetime.fromtimestamp(utcnow().timestamp() - timeout_s, tz=utcnow().tzinfo)
        with self.db.session() as s:
            rows = s.execute(
                select(Handoff).where(
                    Handoff.ended_at.is_(None),
                    Handoff.agent_id.is_not(None),
                    Handoff.awaiting_reply_since.is_not(None),
                    Handoff.awaiting_reply_since < cutoff,
                )
            ).scalars()
            return [_handoff(h) for h in rows]

    def release(
        self, conversation_id: str, agent_id: int, to_status: str, outcome: str, *, session: Session | None = None
    ) -> bool:
        """End an agent's hold: ``to_status`` ``bot`` (hand back) or ``closed`` (resolved).

        Only the agent holding the conversation may do it; returns whether it happened.
        """
        assert to_status in ("bot", "closed")
        with self._tx(session) as s:
            res = s.execute(
                update(Conversation)
                .where(
                    Conversation.id == conversation_id,
                    Conversation.status == "agent",
                    Conversation.agent_id == agent_id,
                )
                .values(status=to_status, agent_id=None, queue=None, updated_at=utcnow())
            )
            if res.rowcount != 1:
                return False
            h = _open_handoff(s, conversation_id)
            if h is not None:
                h.ended_at = utcnow()
                h.outcome = outcome
            return True

    def reopen(self, conversation_id: str) -> bool:
        """A closed conversation the customer writes to again goes back to the bot."""
        with self.db.session() as s:
            res = s.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == "closed")
                .values(status="bot", updated_at=utcnow())
            )
            return bool(res.rowcount == 1)

    def case_number(self, case_id: int | None) -> str | None:
        if case_id is None:
            return None
        with self.db.session() as s:
            number: str | None = s.execute(select(Case.number).where(Case.id == case_id)).scalar_one_or_none()
            return number

    def case_id_for_number(self, number: str | None) -> int | None:
        if not number:
            return None
        with self.db.session() as s:
            found: int | None = s.execute(select(Case.id).where(Case.number == number)).scalar_one_or_none()
            return found

    def case_details(self, case_id: int | None) -> dict[str, Any] | None:
        """A case with its timeline, as the agent console shows it (:func:`bot.services.cases.case_details`)."""
        with self.db.session() as s:
            out = case_details(s, case_id)
            if out is None:
                return None
            # The console's view: the description and the timeline quote the customer, and a case
            # link they pasted reaches the agent without its token.
            for key, value in list(out.items()):
                if isinstance(value, str):
                    out[key] = redact_links(value)
            for entry in out.get("timeline", []):
                if entry.get("detail"):
                    entry["detail"] = redact_links(entry["detail"])
            if out["category"] == "plan_change":
                # Pending is not current: the change's state today (pending / in_effect /
                # withdrawn / replaced), from the plan service's own rule.
                out["plan_change"] = case_plan_change(s, out["id"], utcnow().date())
            return out

    def set_case(self, conversation_id: str, case_id: int) -> None:
        with self.db.session() as s:
            s.execute(update(Conversation).where(Conversation.id == conversation_id).values(case_id=case_id))
            h = _open_handoff(s, conversation_id)
            if h is not None and h.case_id is None:
                h.case_id = case_id

