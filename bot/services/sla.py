"""SLA rules as pure functions: due times, breach checks and extensions.

No I/O and no clock reads: every function takes the times it needs. :class:`CaseService`
applies them and persists the results; the supervisor overview and ``/metrics`` list
:meth:`CaseService.breaches`, and the analytics rebuild settled clocks with :func:`case_clocks`.
All of them decide "met" or "breached" with :func:`clock_outcome`, so they agree.

Clocks (promise 6):

* **first response** — a human must answer within ``first_response_minutes`` of the case
  opening (or reopening);
* **progress update** — while a case is open, the customer hears about progress at least every
  ``progress_update_hours``; each update restarts the clock;
* **follow-up** — ``follow_up_days`` after resolution.

A clock may be extended only with a stated (non-blank) reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


MET = "met"
BREACHED = "breached"


def clock_outcome(due_at: datetime, answered_at: datetime | None, now: datetime) -> str | None:
    """How one clock stands at ``now``: :data:`MET` when answered by the due time, :data:`BREACHED`
    when answered after it or still unanswered with ``now`` past it, ``None`` while it runs in time.

    The one rule for every clock, shared by :func:`breaches` and :func:`case_clocks`."""
    if answered_at is not None:
        return MET if answered_at <= due_at else BREACHED
    return BREACHED if now > due_at else None


def first_response_breached(due_at: datetime | None, responded_at: datetime | None, now: datetime) -> bool:
    """True when the first response is late: none yet and ``now`` is past the due time, or it came
    after the due time."""
    return due_at is not None and clock_outcome(due_at, responded_at, now) == BREACHED


def progress_update_breached(due_at: datetime | None, stage: str, now: datetime) -> bool:
    """True when an open case (not resolved or confirmed) is past its progress-update due time."""
    return due_at is not None and stage not in CLOSED_STAGES and clock_outcome(due_at, None, now) == BREACHED


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


@dataclass(frozen=True)
class Extension:
    """An ``sla_extended`` event's detail read back: the reason, the hours and the new due time."""

    reason: str
    hours: float | None
    due_at: datetime | None


_EXTENSION = re.compile(r"^(?P<reason>.*) \(\+(?P<hours>[0-9.]+) h, due (?P<due>[^)]+)\)$", re.DOTALL)


def extension_detail(reason: str, hours: float, due_at: datetime) -> str:
    """The detail of an ``sla_extended`` event: ``"<reason> (+<hours> h, due <iso>)"``."""
    return f"{reason} (+{hours:g} h, due {due_at.isoformat()})"


def parse_extension(detail: str | None) -> Extension:
    """The parts of an :func:`extension_detail`; a detail in another form is all reason."""
    match = _EXTENSION.match(detail or "")
    if match is None:
        return Extension(detail or "", None, None)
    try:
        due: datetime | None = datetime.fromisoformat(match.group("due").strip())
    except ValueError:
        due = None
    return Extension(match.group("reason"), float(match.group("hours")), due)


@dataclass(frozen=True)
class ClockOutcome:
    """One SLA clock of one case that was settled: ``met`` or ``breached``, and when."""

    kind: str  # first_response | progress_update
    outcome: str  # met | breached
    at: datetime


def case_clocks(
    events: Iterable[tuple[str, str | None, str | None, datetime]],
    *,
    first_response_minutes: int,
    update_hours: int,
    now: datetime,
    current_first_response_due: datetime | None = None,
    current_update_due: datetime | None = None,
) -> list[ClockOutcome]:
    """The settled SLA clocks of one case, rebuilt from its timeline (``(kind, to_stage, detail,
    created_at)`` in order), following the rules of :class:`~bot.services.cases.CaseService`:

    * **first response**: starts at ``created`` and ``reopened`` (due after
      ``first_response_minutes``); answered by the ``first_response`` event. Met when answered by
      the due time; breached at the due time when it was not (also when the case was closed
      unanswered after it). A case closed unanswered before its due time settles nothing.
    * **progress update**: starts at ``created`` and ``reopened`` (due after ``update_hours``);
      a ``progress_update`` or a stage change answers it (a change to an open stage starts the
      next one); ``sla_extended`` moves its due time. Met when answered by the due time, else
      breached at the due time.

    Clocks still running at ``now`` are breached if ``now`` is past their due time (as
    :func:`breaches` says), else not settled. The current clocks' due times are taken from the case
    row when given (they are the stored truth; earlier clocks are recomputed with the same rule).
    """
    found: list[ClockOutcome] = []
    fr_due: datetime | None = None
    up_due: datetime | None = None

    def settle(kind: str, due: datetime, answered: datetime | None) -> None:
        outcome = clock_outcome(due, answered, now)
        if outcome is not None:
            found.append(ClockOutcome(kind, outcome, answered if outcome == MET and answered else due))

    for kind, to_stage, detail, at in events:
        if kind in ("created", "reopened"):
            fr_due = at + timedelta(minutes=first_response_minutes)
            up_due = at + timedelta(hours=update_hours)
        elif kind == "first_response" and fr_due is not None:
            settle(FIRST_RESPONSE, fr_due, at)
            fr_due = None
        elif kind == "progress_update" and up_due is not None:
            settle(PROGRESS_UPDATE, up_due, at)
            up_due = at + timedelta(hours=update_hours)
        elif kind == "sla_extended" and up_due is not None:
            up_due = parse_extension(detail).due_at or up_due
        elif kind == "stage_changed":
            if up_due is not None:
                settle(PROGRESS_UPDATE, up_due, at)
                up_due = None
            if to_stage in CLOSED_STAGES:
                if fr_due is not None and at > fr_due:  # closed unanswered after the deadline
                    found.append(ClockOutcome(FIRST_RESPONSE, BREACHED, fr_due))
                fr_due = None
            elif to_stage is not None:
                up_due = at + timedelta(hours=update_hours)
    if fr_due is not None:
        settle(FIRST_RESPONSE, current_first_response_due or fr_due, None)
    if up_due is not None:
        settle(PROGRESS_UPDATE, current_update_due or up_due, None)
    return found


__all__ = [
    "BREACHED",
    "CLOSED_STAGES",
    "FIRST_RESPONSE",
    "MET",
    "PROGRESS_UPDATE",
    "Breach",
    "ClockOutcome",
    "Extension",
    "breaches",
    "case_clocks",
    "clock_outcome",
    "extend",
    "extension_detail",
    "first_response_breached",
    "first_response_due",
    "follow_up_at",
    "next_update_due",
    "parse_extension",
    "progress_update_breached",
    "validate_reason",
]
