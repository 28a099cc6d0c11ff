"""SLA rules as pure functions: due times, breach checks and extensions.

No I/O and no clock reads: every function takes the times it needs. :class:`CaseService`
applies them and persists the results.

Clocks (promise 6):

* **first response** — a human must answer within ``first_response_minutes`` of the case
  opening (or reopening);
* **progress update** — while a case is open, the customer hears about progress at least every
  ``progress_update_hours``; each update restarts the clock;
* **follow-up** — ``follow_up_days`` after resolution.

A clock may be extended only with a stated (non-blank) reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Stages after which the progress-update clock stops.
CLOSED_STAGES = frozenset({"resolved", "confirmed"})

FIRST_RESPONSE = "first_response"
PROGRESS_UPDATE = "progress_update"


@dataclass(frozen=True)
class Breach:
    """One missed SLA deadline: which clock (``first_response``/``progress_update``) and when it was due."""

    kind: str
    due_at: datetime

    @property
    def key(self) -> str:
        """A stable identity of this breach (the clock and its due time), used to record it once."""
        return f"{self.kind}@{self.due_at.isoformat()}"


def _aware(value: datetime, name: str) -> None:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")


def first_response_due(opened_at: datetime, minutes: int) -> datetime:
    """When the first human response is due for a case opened (or reopened) at ``opened_at``."""
    _aware(opened_at, "opened_at")
    if minutes <= 0:
        raise ValueError("first response minutes must be positive")
    return opened_at + timedelta(minutes=minutes)


def next_update_due(at: datetime, hours: int) -> datetime:
    """When the next progress update is due, counting from ``at`` (opening or the last update)."""
    _aware(at, "at")
    if hours <= 0:
        raise ValueError("progress update hours must be positive")
    return at + timedelta(hours=hours)


def follow_up_at(resolved_at: datetime, days: int) -> datetime:
    """When to follow up with the customer after a resolution."""
    _aware(resolved_at, "resolved_at")
    if days < 0:
        raise ValueError("follow-up days must not be negative")
    return resolved_at + timedelta(days=days)


def first_response_breached(due_at: datetime | None, responded_at: datetime | None, now: datetime) -> bool:
    """True when the first response is late: none yet and ``now`` is past the due time, or it came
    after the due time."""
    if due_at is None:
        return False
    if responded_at is not None:
        return responded_at > due_at
    return now > due_at


def progress_update_breached(due_at: datetime | None, stage: str, now: datetime) -> bool:
    """True when an open case (not resolved or confirmed) is past its progress-update due time."""
    return due_at is not None and stage not in CLOSED_STAGES and now > due_at


def breaches(
    *,
    stage: str,
    first_response_due_at: datetime | None,
    first_responded_at: datetime | None,
    next_update_due_at: datetime | None,
    now: datetime,
) -> list[Breach]:
    """Every SLA breach of one case at ``now``.

    A first-response breach counts only while the case is open or when the response came late;
    a progress-update breach only while the case is open.
    """
    found: list[Breach] = []
    counts = stage not in CLOSED_STAGES or first_responded_at is not None
    if counts and first_response_breached(first_response_due_at, first_responded_at, now):
        assert first_response_due_at is not None
        found.append(Breach(FIRST_RESPONSE, first_response_due_at))
    if next_update_due_at is not None and progress_update_breached(next_update_due_at, stage, now):
        found.append(Breach(PROGRESS_UPDATE, next_update_due_at))
    return found


def validate_reason(reason: str | None) -> str:
    """The stripped reason of an extension.

    :raises ValueError: the reason is missing or blank — an SLA is never extended silently.
    """
    cleaned = (reason or "").strip()
    if not cleaned:
        raise ValueError("an SLA extension needs a stated reason")
    return cleaned


def extend(due_at: datetime | None, now: datetime, hours: float, reason: str | None) -> datetime:
    """The new due time of a clock extended by ``hours`` for ``reason``.

    The extension counts from the later of the current due time and ``now``, so extending an
    already missed deadline still gives the stated time from now.

    :raises ValueError: blank reason, or ``hours`` not positive.
    """
    validate_reason(reason)
    if hours <= 0:
        raise ValueError("an SLA extension must be a positive number of hours")
    _aware(now, "now")
    base = now if due_at is None or due_at < now else due_at
    return base + timedelta(hours=hours)


__all__ = [
    "CLOSED_STAGES",
    "FIRST_RESPONSE",
    "PROGRESS_UPDATE",
    "Breach",
    "breaches",
    "extend",
    "first_response_breached",
    "first_response_due",
    "follow_up_at",
    "next_update_due",
    "progress_update_breached",
    "validate_reason",
]
