"""The rows of the hub's transactional outbox (table ``hub_outbox``; why and what it guarantees:
:mod:`bot.hub.outbox`).

:func:`add` writes an event in the caller's transaction (the command's); :class:`HubOutboxStore`
deletes published rows and claims the rows nobody published in time, exactly once across hubs:
on PostgreSQL the candidate rows are locked with ``FOR UPDATE SKIP LOCKED`` (two relays never
take the same row) and their lease renewed in the same transaction; SQLite serves one process,
whose transactions run one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.store.db import Database
from bot.store.models import HubEvent, utcnow


@dataclass(frozen=True)
class OutboxEvent:
    """One stored event: for agents ``recipients``, else for the customers of ``conversation_id``."""

    id: int
    conversation_id: str | None
    recipients: tuple[int, ...] | None
    frame: dict[str, Any]
    created_at: datetime


def _event(row: HubEvent) -> OutboxEvent:
    recipients = tuple(int(a) for a in row.recipients) if row.recipients is not None else None
    return OutboxEvent(int(row.id), row.conversation_id, recipients, dict(row.frame), row.created_at)


def add(
    session: Session, frame: dict[str, Any], *, recipients: Iterable[int] | None = None,
    conversation_id: str | None = None,
) -> OutboxEvent:
    """Write an event in ``session``'s transaction (committed or rolled back with the change it
    announces); leased to the caller, which publishes it after the commit."""
    if (recipients is None) == (conversation_id is None):
        raise ValueError("an outbox event is for agents (recipients) or for a conversation's customers")
    now = utcnow()
    row = HubEvent(conversation_id=conversation_id, recipients=list(recipients) if recipients is not None else None,
                   frame=frame, created_at=now, claimed_at=now)
    session.add(row)
    session.flush()
    return _event(row)


class HubOutboxStore:
    """Deleting published rows and claiming forgotten ones."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def delete(self, ids: Iterable[int]) -> None:
        """Forget published events."""
        ids = list(ids)
        if ids:
            with self.db.session() as s:
                s.execute(delete(HubEvent).where(HubEvent.id.in_(ids)))

    def claim_stale(self, older_than_s: float, limit: int = 200) -> list[OutboxEvent]:
        """Take over up to ``limit`` events whose lease is older than ``older_than_s`` (their
        hub crashed, or failed to publish them): their lease is renewed in the same transaction,
        so no other relay takes them before this one has published them or its own lease ran
        out. Oldest first."""
        now = utcnow()
        with self.db.session() as s:
            rows = s.execute(
                select(HubEvent).where(HubEvent.claimed_at < now - timedelta(seconds=older_than_s))
                .order_by(HubEvent.id).limit(limit).with_for_update(skip_locked=True)
            ).scalars().all()
            if not rows:
                return []
            s.execute(update(HubEvent).where(HubEvent.id.in_([r.id for r in rows])).values(claimed_at=now)
                      .execution_options(synchronize_session=False))
            return [_event(r) for r in rows]

    def count(self) -> int:
        """Events not yet published (tests, metrics)."""
        from sqlalchemy import func

        with self.db.read_session() as s:
            return int(s.execute(select(func.count(HubEvent.id))).scalar_one())
