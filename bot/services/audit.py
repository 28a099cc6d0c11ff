"""The audit trail: who did what (promise 8).

:func:`record` adds an :class:`~bot.store.models.AuditEntry` to the caller's session, so the entry
commits or rolls back together with the action it describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.store.models import AuditEntry, utcnow


@dataclass(frozen=True)
class AuditView:
    """One audit entry, detached from any session."""

    id: int
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    created_at: datetime


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> AuditEntry:
    """Add an audit entry to ``session`` (committed with the caller's transaction).

    :param actor: who acted, e.g. ``"agent:alice"``, ``"bot"``, ``"customer:<visitor id>"``.
    :param action: what was done, e.g. ``"case_stage"``, ``"claim"``, ``"plan_change"``.
    :param target: what it was done to (a case number, a conversation id…).
    :param detail: JSON-serialisable details.
    :param at: the time to record (default: now, UTC).
    """
    if not actor or not action:
        raise ValueError("an audit entry needs an actor and an action")
    entry = AuditEntry(actor=actor, action=action, target=target, detail=detail, created_at=at or utcnow())
    session.add(entry)
    return entry


def entries(
    session: Session,
    *,
    actor: str | None = None,
    target: str | None = None,
    limit: int = 200,
) -> list[AuditView]:
    """The newest audit entries first, optionally only those of one actor or one target."""
    stmt = select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if target is not None:
        stmt = stmt.where(AuditEntry.target == target)
    return [
        AuditView(e.id, e.actor, e.action, e.target, e.detail, e.created_at) for e in session.execute(stmt).scalars()
    ]


__all__ = ["AuditView", "entries", "record"]
