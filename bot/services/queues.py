"""Specialist queues as customers and agents see them: waiting lists, positions, estimated waits.

Allocation rule (promise 4, shown to customers in plain words): *first come, first served within
the queue* — conversations are ordered by the time their handoff was requested; a conversation
that an agent gives back unanswered (reply timeout) keeps its original place. **Danger first**
(promise 9): a handoff for a danger report (reason ``danger``) goes before every other one, in
whatever queue it waits — in the dedicated danger queue they are all danger reports.

Estimated wait, from the capacity of the available agents online with the skill (each holds up
to its ``max_concurrent`` conversations at once): a conversation that a free place is left for
waits 0; otherwise it waits for ``(ahead − free places + 1)`` places to free up, and places free
up at ``total places ÷ average handling time`` — the average handling time being the mean of the
most recent finished handoffs of the queue (assigned until ended), or 5 minutes when there is no
history yet. When no agent with the skill is available, the estimate is the queue's
first-response target instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select

from bot.services.config import HumanlineConfig
from bot.store.db import Database
from bot.store.models import Case, Conversation, Handoff, Queue, utcnow

DEFAULT_HANDLING_S = 300
DANGER_REASON = "danger"  # bot.guard.DANGER: these handoffs are served first
HISTORY = 20


@dataclass(frozen=True)
class WaitingEntry:
    """A queued conversation."""

    conversation_id: str
    queue: str
    reason: str
    case_number: str | None
    requested_at: datetime
    #: when a person must have answered: the case's first-response deadline, or the queue's
    #: first-response target counted from the handoff when there is no case
    due_at: datetime | None = None
    #: held as "suspected automated" for this client address (bot.services.handoff_dedupe):
    #: waits for a supervisor, never auto-assigned
    held_source: str | None = None

    def frame(self) -> dict[str, Any]:
        """As in the agent ``handoff`` frame, plus ``due_at`` for the console's SLA countdown."""
        return {
            "conversation_id": self.conversation_id,
            "queue": self.queue,
            "reason": self.reason,
            "case_id": self.case_number,
            "ts": self.requested_at.isoformat(),
            "due_at": self.due_at.isoformat() if self.due_at else None,
        }


@dataclass(frozen=True)
class Position:
    """A queued customer's place: 1-based position, the estimate, and the agents online."""

    queue: str
    position: int
    eta_seconds: int
    agents_online: int
    entry: WaitingEntry


def estimated_wait(ahead: int, handling_s: float, slots: int, free: int) -> int:
    """Seconds until a conversation with ``ahead`` others before it gets an agent: none while a
    free place is left for it, else until ``ahead − free + 1`` places have freed up, at
    ``slots ÷ handling_s`` places a second."""
    needed = max(0, ahead - max(0, free) + 1)
    return int(round(needed * handling_s / slots)) if needed else 0


class QueueService:
    """Read-side of the queues over the store and the configuration."""

    def __init__(self, db: Database, config: HumanlineConfig):
        self.db = db
        self.config = config

    def sync_catalogue(self) -> None:
        """Mirror the configured queues into the ``queues`` table (at hub start), so reports and
        other tools that read the database see the same names, display names and targets."""
        from sqlalchemy import update

        from bot.store.db import insert_unless_present

        # Several hubs starting at once on a new database: an insert that does not fail when
        # another hub inserted the row first, then the configured values.
        with self.db.session() as s:
            for q in self.config.queues.values():
                values = {"display": dict(q.display), "first_response_minutes": q.first_response_minutes}
                insert_unless_present(s, Queue, {"name": q.name, **values})
                s.execute(update(Queue).where(Queue.name == q.name).values(**values))

    def names(self) -> list[str]:
        return list(self.config.queues)

    def waiting(self, queues: Iterable[str] | None = None) -> list[WaitingEntry]:
        """Queued conversations, danger reports first, then oldest request first, optionally only
        in ``queues``."""
        with self.db.session() as s:
            q = (
                select(
                    Conversation.id, Handoff.queue, Handoff.reason, Case.number, Handoff.requested_at,
                    Case.first_response_due_at, Handoff.held_source,
                )
                .join(Handoff, Handoff.conversation_id == Conversation.id)
                .outerjoin(Case, Case.id == Handoff.case_id)
                .where(Conversation.status == "queued", Handoff.ended_at.is_(None))
                .order_by(case((Handoff.reason == DANGER_REASON, 0), else_=1), Handoff.requested_at, Handoff.id)
            )
            if queues is not None:
                q = q.where(Handoff.queue.in_(list(queues)))
            out = []
            for cid, queue, reason, number, requested_at, case_due, held_source in s.execute(q):
                due = case_due or requested_at + timedelta(minutes=self.first_response_minutes(queue))
                out.append(WaitingEntry(cid, queue, reason, number, requested_at, due, held_source))
            return out

    def with_agent_counts(self) -> dict[str, int]:
        with self.db.session() as s:
            counts: dict[str, int] = {}
            for (queue,) in s.execute(select(Conversation.queue).where(Conversation.status == "agent")):
                counts[queue or ""] = counts.get(queue or "", 0) + 1
            return counts

    def snapshot(self, lang: str = "en") -> list[dict[str, Any]]:
        """Per queue: name, display (all languages), waiting, oldest_wait_s, first_response_minutes,
        with_agent."""
        now = utcnow()
        waiting = self.waiting()
        with_agent = self.with_agent_counts()
        out = []
        for name, qc in self.config.queues.items():
            mine = [w for w in waiting if w.queue == name]
            out.append(
                {
                    "name": name,
                    "display": dict(qc.display),
                    "waiting": len(mine),
                    "oldest_wait_s": int((now - mine[0].requested_at).total_seconds()) if mine else None,
                    "first_response_minutes": qc.first_response_minutes,
                    "with_agent": with_agent.get(name, 0),
                }
            )
        return out

    def handling_seconds(self, queue: str) -> float:
        """Mean handling time of the queue's recent finished handoffs (5 min without history)."""
        with self.db.session() as s:
            rows = s.execute(
                select(Handoff.assigned_at, Handoff.ended_at)
                .where(Handoff.queue == queue, Handoff.assigned_at.is_not(None), Handoff.ended_at.is_not(None))
                .order_by(Handoff.ended_at.desc())
                .limit(HISTORY)
            ).all()
        durations = [(e - a).total_seconds() for a, e in rows if e >= a]
        return sum(durations) / len(durations) if durations else float(DEFAULT_HANDLING_S)

    def positions(
        self, queue: str, agents_online: int, slots: int | None = None, free: int = 0
    ) -> dict[str, Position]:
        """The position and estimated wait of every conversation waiting in ``queue``.

        :param agents_online: available agents online with the skill (shown to the customer).
        :param slots: conversations those agents can hold at once, all together (default: one
            each); ``free``: how many of those places are not taken now.
        """
        entries = self.waiting([queue])
        per = self.handling_seconds(queue) if entries else DEFAULT_HANDLING_S
        target = self.first_response_minutes(queue) * 60
        places = agents_online if slots is None else slots
        out = {}
        for i, w in enumerate(entries):
            eta = target if agents_online <= 0 or places <= 0 else estimated_wait(i, per, places, free)
            out[w.conversation_id] = Position(queue, i + 1, eta, agents_online, w)
        return out

    def first_response_minutes(self, queue: str) -> int:
        """The queue's first-response target in minutes (:meth:`HumanlineConfig.first_response_minutes`)."""
        return self.config.first_response_minutes(queue)

    def display(self, queue: str | None, lang: str | None) -> str:
        """The queue's display name (:meth:`HumanlineConfig.queue_display`)."""
        return self.config.queue_display(queue, lang)
