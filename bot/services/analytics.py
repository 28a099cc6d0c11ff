"""Supervisor analytics: daily figures of the last days, read from the store.

:meth:`AnalyticsService.report` computes one row of figures per **UTC day** (midnight to midnight
UTC, whatever the supervisor's own time zone) for the ``days`` days that end with the day of
``now`` (today counts so far). Nothing here writes; every figure is derived from rows the hub and
the case services already keep (docs/analytics.md defines each one exactly):

* **conversations / contained** — conversations started that day in which the customer wrote at
  least once; *contained*: those with no ``handoffs`` row at all (never queued for a person).
* **handoffs by reason and by queue** — handoffs *to humans* requested that day. A handoff starts
  a stretch with humans: a ``handoffs`` row whose conversation's previous row (if any) ended with
  ``resolved`` or ``handed_back``. Rows that continue a stretch (a transfer between queues, a
  requeue after an agent's reply timeout, a danger escalation while queued) are not counted again;
  the handoff keeps the guard's reason and the queue of its first row.
* **time to a person** — from a handoff's request to the first agent message of its stretch
  (``first_agent_reply_at``), p50 and p90 (nearest rank) over that day's handoffs that got one.
* **SLA clocks** — the first-response and progress-update clocks of every case
  (:mod:`bot.services.sla`), rebuilt from the case timeline; a clock is *met* on the day it was
  answered in time and *breached* on the day its deadline passed unanswered (or answered late).
* **satisfaction** — the customers' 1–5 ratings (:func:`satisfaction_by_day`).
* **agent load** — conversations assigned to agents that day, agents who held at least one, and
  the most conversations one agent held at once.

Queries are SQLAlchemy 2.0 style and run on SQLite and PostgreSQL alike; the per-day grouping is
done in Python on the rows of the window (no date functions that differ between databases).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from bot.guard import REASONS
from bot.services.cases import OPEN_STAGES, CaseService
from bot.services.config import HumanlineConfig
from bot.services.sla import case_clocks
from bot.store.db import Database
from bot.store.models import Agent, Case, CaseEvent, Conversation, Handoff, Message, utcnow

#: The longest window a report may cover, in days.
MAX_DAYS = 90
#: Handoff outcomes after which the conversation is back with the bot (or closed): the next
#: ``handoffs`` row of the conversation is a new handoff.
STRETCH_ENDS = frozenset({"resolved", "handed_back"})
#: Cases touched this long before the window are still read, so that clocks started before the
#: window and settled inside it are counted.
CASE_LOOKBACK = timedelta(days=31)

Clock = Callable[[], datetime]

#: Short names of the guard's handoff reasons for chart legends (the sentences the agents read are
#: :data:`bot.services.summary.REASONS`).
REASON_LABELS: dict[str, str] = {
    "danger": "Danger",
    "customer_request": "Asked for a person",
    "frustration": "Frustration",
    "repeated_request": "Same request twice",
    "repeated_fallback": "Not understood twice",
    "repeated_reply": "Would repeat a reply",
    "turn_budget": "Turn budget used up",
    "brain_error": "Technical problem",
    "timeout": "Bot too slow",
    "action_request": "Action asked for a specialist",
}


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of an aware ``moment``."""
    return moment.astimezone(timezone.utc).date()


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``."""
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p ≤ 100) of ``values``; ``None`` when empty.

    The smallest value with at least ``p`` % of the values at or below it — always one of the
    values, never interpolated.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def check_days(raw: object, default: int = 30) -> int:
    """``raw`` (a query parameter) as a number of days, 1 to :data:`MAX_DAYS`.

    :raises ValueError: not a whole number in that range (the message says what is allowed).
    """
    if raw is None or raw == "":
        return default
    text = str(raw).strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}, not {str(raw)[:20]!r}")
    return int(text)


# ----------------------------------------------------------------------------- figures


@dataclass
class DayFigures:
    """The figures of one UTC day (field meanings: docs/analytics.md)."""

    day: date
    conversations: int = 0
    contained: int = 0
    handoffs: int = 0
    handoffs_by_reason: dict[str, int] = field(default_factory=dict)
    handoffs_by_queue: dict[str, int] = field(default_factory=dict)
    reached_person: int = 0
    time_to_person_p50_s: float | None = None
    time_to_person_p90_s: float | None = None
    first_response_met: int = 0
    first_response_breached: int = 0
    update_met: int = 0
    update_breached: int = 0
    ratings: int = 0
    satisfaction_avg: float | None = None
    assignments: int = 0
    active_agents: int = 0
    peak_load: int = 0

    @property
    def containment_rate(self) -> float | None:
        """Contained / conversations, or ``None`` on a day without conversations."""
        return round(self.contained / self.conversations, 4) if self.conversations else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "conversations": self.conversations,
            "contained": self.contained,
            "containment_rate": self.containment_rate,
            "handoffs": self.handoffs,
            "handoffs_by_reason": dict(self.handoffs_by_reason),
            "handoffs_by_queue": dict(self.handoffs_by_queue),
            "reached_person": self.reached_person,
            "time_to_person_p50_s": self.time_to_person_p50_s,
            "time_to_person_p90_s": self.time_to_person_p90_s,
            "first_response_met": self.first_response_met,
            "first_response_breached": self.first_response_breached,
            "update_met": self.update_met,
            "update_breached": self.update_breached,
            "ratings": self.ratings,
            "satisfaction_avg": self.satisfaction_avg,
            "assignments": self.assignments,
            "active_agents": self.active_agents,
            "peak_load": self.peak_load,
        }


#: The CSV columns before the per-reason and per-queue ones, and after them.
_CSV_HEAD = ("day", "conversations", "contained", "containment_rate", "handoffs")
_CSV_TAIL = (
    "reached_person", "time_to_person_p50_s", "time_to_person_p90_s", "first_response_met",
    "first_response_breached", "update_met", "update_breached", "ratings", "satisfaction_avg",
    "assignments", "active_agents", "peak_load",
)


@dataclass(frozen=True)
class AnalyticsReport:
    """Daily figures, oldest day first, with the reasons and queues that have columns."""

    first_day: date
    last_day: date
    generated_at: datetime
    reasons: tuple[str, ...]
    queues: tuple[str, ...]
    days: tuple[DayFigures, ...]
    #: per agent over the whole window: display name, conversations assigned, most held at once
    agents: tuple[dict[str, Any], ...] = ()
    #: display names: ``{"reasons": {reason: label}, "queues": {queue: name}}``
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing at all happened in the window."""
        return not any(
            d.conversations or d.handoffs or d.first_response_met or d.first_response_breached or d.update_met
            or d.update_breached or d.ratings or d.assignments or d.active_agents
            for d in self.days
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "from": self.first_day.isoformat(),
            "to": self.last_day.isoformat(),
            "days": len(self.days),
            "generated_at": self.generated_at.isoformat(),
            "reasons": list(self.reasons),
            "queues": list(self.queues),
            "empty": self.empty,
            "series": [d.as_dict() for d in self.days],
            "agents": [dict(a) for a in self.agents],
            "labels": {k: dict(v) for k, v in self.labels.items()},
        }

    def csv_columns(self) -> list[str]:
        return [
            *_CSV_HEAD,
            *(f"handoffs_reason_{r}" for r in self.reasons),
            *(f"handoffs_queue_{q}" for q in self.queues),
            *_CSV_TAIL,
        ]

    def to_csv(self) -> str:
        """One row per day, one column per figure (header first); empty cells where a figure
        has no value (a rate or a percentile on a day without data)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.csv_columns())
        for d in self.days:
            row = d.as_dict()
            cells: list[Any] = [row[c] for c in _CSV_HEAD]
            cells += [d.handoffs_by_reason.get(r, 0) for r in self.reasons]
            cells += [d.handoffs_by_queue.get(q, 0) for q in self.queues]
            cells += [row[c] for c in _CSV_TAIL]
            writer.writerow(["" if c is None else c for c in cells])
        return out.getvalue()


# ----------------------------------------------------------------------------- satisfaction


def satisfaction_by_day(session: Session, start: datetime, end: datetime) -> dict[date, list[int]]:
    """The customers' ratings (1–5) given in ``[start, end)``, by UTC day of the rating.

    Source: the ``rated`` events that :meth:`bot.services.cases.CaseService.rate` writes on the
    case timeline (``detail`` = the score). A rating replaced by a later rating of the same
    resolution (no ``reopened`` event between them) is not counted; the last one is, on its day.
    Returns an empty mapping when no case was rated in the window.
    """
    rows = session.execute(
        select(CaseEvent.case_id, CaseEvent.id, CaseEvent.kind, CaseEvent.detail, CaseEvent.created_at)
        .where(CaseEvent.kind.in_(("rated", "reopened")), CaseEvent.created_at >= start, CaseEvent.created_at < end)
        .order_by(CaseEvent.case_id, CaseEvent.id)
    ).all()
    kept: dict[date, list[int]] = defaultdict(list)
    last: tuple[date, int] | None = None
    case_id: int | None = None
    for cid, _id, kind, detail, at in rows:
        if cid != case_id:
            if last is not None:
                kept[last[0]].append(last[1])
            case_id, last = cid, None
        if kind == "reopened":
            if last is not None:
                kept[last[0]].append(last[1])
            last = None
            continue
        try:
            score = int(str(detail).strip())
        except ValueError:
            continue
        if 1 <= score <= 5:
            last = (utc_day(at), score)
    if last is not None:
        kept[last[0]].append(last[1])
    return dict(kept)


# ----------------------------------------------------------------------------- SLA clocks


# The clocks are rebuilt by bot.services.sla.case_clocks, with the rule CaseService uses.


# ----------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class _HandoffRow:
    id: int
    conversation_id: str
    queue: str
    reason: str
    requested_at: datetime
    agent_id: int | None
    assigned_at: datetime | None
    first_agent_reply_at: datetime | None
    ended_at: datetime | None
    outcome: str | None


class AnalyticsService:
    """Daily supervisor figures over one :class:`Database` (read-only).

    :param cases: the case service whose SLA rules the clocks follow (default: one on ``db``).
    :param clock: "now" (aware UTC); tests inject a fake clock.
    """

    def __init__(
        self, db: Database, config: HumanlineConfig | None = None, *, cases: CaseService | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.config = config or HumanlineConfig.load()
        self.cases = cases or CaseService(db, self.config)
        self.clock = clock

    def report(self, days: int = 30, now: datetime | None = None) -> AnalyticsReport:
        """The figures of the ``days`` UTC days ending with today (the day of ``now``).

        :raises ValueError: ``days`` outside 1–:data:`MAX_DAYS`.
        """
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days must be from 1 to {MAX_DAYS}")
        now = now or self.clock()
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        last = utc_day(now)
        first = last - timedelta(days=days - 1)
        start, end = day_start(first), day_start(last + timedelta(days=1))
        figures = {first + timedelta(days=i): DayFigures(first + timedelta(days=i)) for i in range(days)}

        with self.db.session() as s:
            self._conversations(s, figures, start, end)
            rows = self._handoff_rows(s, start, end)
            self._handoffs(rows, figures, start, end)
            agent_totals = self._agent_load(s, figures, start, end, now, self.config.agents.max_concurrent_default)
            self._sla(s, figures, start, end, now)
            for day, scores in satisfaction_by_day(s, start, end).items():
                if day in figures and scores:
                    figures[day].ratings = len(scores)
                    figures[day].satisfaction_avg = round(sum(scores) / len(scores), 3)

        seen_reasons = {r for f in figures.values() for r in f.handoffs_by_reason}
        seen_queues = {q for f in figures.values() for q in f.handoffs_by_queue}
        reasons = (*REASONS, *sorted(seen_reasons - set(REASONS)))
        queues = (*self.config.queues, *sorted(seen_queues - set(self.config.queues)))
        return AnalyticsReport(
            first_day=first, last_day=last, generated_at=now, reasons=tuple(reasons), queues=tuple(queues),
            days=tuple(figures[d] for d in sorted(figures)), agents=tuple(agent_totals),
            labels={
                "reasons": {r: REASON_LABELS.get(r, r.replace("_", " ")) for r in reasons},
                "queues": {q: self.config.queue_display(q, "en") for q in queues},
            },
        )

    # -- conversations and containment ---------------------------------------------------

    @staticmethod
    def _conversations(s: Session, figures: dict[date, DayFigures], start: datetime, end: datetime) -> None:
        customer_wrote = exists().where(Message.conversation_id == Conversation.id, Message.sender == "customer")
        handed_off = exists().where(Handoff.conversation_id == Conversation.id)
        rows = s.execute(
            select(Conversation.created_at, handed_off.label("handed_off")).where(
                Conversation.created_at >= start, Conversation.created_at < end, customer_wrote
            )
        ).all()
        for created_at, was_handed_off in rows:
            f = figures[utc_day(created_at)]
            f.conversations += 1
            if not was_handed_off:
                f.contained += 1

    # -- handoffs and time to a person ---------------------------------------------------

    @staticmethod
    def _handoff_rows(s: Session, start: datetime, end: datetime) -> list[_HandoffRow]:
        """Every ``handoffs`` row of the conversations with a handoff requested in the window."""
        in_window = select(Handoff.conversation_id).where(Handoff.requested_at >= start, Handoff.requested_at < end)
        rows = s.execute(
            select(
                Handoff.id, Handoff.conversation_id, Handoff.queue, Handoff.reason, Handoff.requested_at,
                Handoff.agent_id, Handoff.assigned_at, Handoff.first_agent_reply_at, Handoff.ended_at,
                Handoff.outcome,
            )
            .where(Handoff.conversation_id.in_(in_window))
            .order_by(Handoff.conversation_id, Handoff.id)
        ).all()
        return [_HandoffRow(*r) for r in rows]

    @staticmethod
    def _handoffs(rows: list[_HandoffRow], figures: dict[date, DayFigures], start: datetime, end: datetime) -> None:
        # Group the rows of each conversation into stretches with humans.
        stretches: list[list[_HandoffRow]] = []
        previous: _HandoffRow | None = None
        for row in rows:
            new = previous is None or previous.conversation_id != row.conversation_id or (
                previous.outcome in STRETCH_ENDS
            )
            if new:
                stretches.append([row])
            else:
                stretches[-1].append(row)
            previous = row
        waits: dict[date, list[float]] = defaultdict(list)
        for stretch in stretches:
            head = stretch[0]
            if not start <= head.requested_at < end:
                continue
            day = utc_day(head.requested_at)
            f = figures[day]
            f.handoffs += 1
            f.handoffs_by_reason[head.reason] = f.handoffs_by_reason.get(head.reason, 0) + 1
            f.handoffs_by_queue[head.queue] = f.handoffs_by_queue.get(head.queue, 0) + 1
            replies = [r.first_agent_reply_at for r in stretch if r.first_agent_reply_at is not None]
            if replies:
                f.reached_person += 1
                waits[day].append(max(0.0, (min(replies) - head.requested_at).total_seconds()))
        for day, values in waits.items():
            p50, p90 = percentile(values, 50), percentile(values, 90)
            figures[day].time_to_person_p50_s = round(p50, 1) if p50 is not None else None
            figures[day].time_to_person_p90_s = round(p90, 1) if p90 is not None else None

    # -- agent load ----------------------------------------------------------------------

    @staticmethod
    def _agent_load(
        s: Session, figures: dict[date, DayFigures], start: datetime, end: datetime, now: datetime,
        default_limit: int,
    ) -> list[dict[str, Any]]:
        """Assignments per day, agents holding at least one conversation, and the most one agent
        held at once (an assignment lasts until its handoff row ends, or until ``now``); per agent,
        the totals and the agent's current limit of conversations at once."""
        rows = s.execute(
            select(Handoff.agent_id, Handoff.assigned_at, Handoff.ended_at, Agent.display_name, Agent.max_concurrent)
            .join(Agent, Agent.id == Handoff.agent_id)
            .where(
                Handoff.assigned_at.is_not(None), Handoff.assigned_at < end,
                or_(Handoff.ended_at.is_(None), Handoff.ended_at >= start),
            )
        ).all()
        names: dict[int, str] = {}
        limits: dict[int, int] = {}
        intervals: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
        assigned: dict[int, int] = defaultdict(int)
        for agent_id, assigned_at, ended_at, name, limit in rows:
            names[agent_id] = name
            limits[agent_id] = limit if limit is not None else default_limit
            intervals[agent_id].append((assigned_at, ended_at or now))
            if start <= assigned_at < end:
                figures[utc_day(assigned_at)].assignments += 1
                assigned[agent_id] += 1
        days = sorted(figures)
        active: dict[date, int] = defaultdict(int)
        peak_of: dict[int, int] = defaultdict(int)
        for agent_id, spans in intervals.items():
            # Ends sort before starts at the same instant: a conversation released and another
            # assigned at once are not held together.
            events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
            held, i = 0, 0
            for day in days:
                lo, hi = day_start(day), day_start(day + timedelta(days=1))
                while i < len(events) and events[i][0] < lo:
                    held += events[i][1]
                    i += 1
                peak = held
                while i < len(events) and events[i][0] < hi:
                    held += events[i][1]
                    i += 1
                    peak = max(peak, held)
                if peak > 0:
                    active[day] += 1
                    figures[day].peak_load = max(figures[day].peak_load, peak)
                    peak_of[agent_id] = max(peak_of[agent_id], peak)
        for day, n in active.items():
            figures[day].active_agents = n
        return [
            {"agent_id": a, "display_name": names[a], "assignments": assigned.get(a, 0), "peak_load": peak_of.get(a, 0),
             "limit": limits[a]}
            for a in sorted(names, key=lambda a: (names[a], a))
            if assigned.get(a, 0) or peak_of.get(a, 0)
        ]

    # -- SLA -----------------------------------------------------------------------------

    def _sla(self, s: Session, figures: dict[date, DayFigures], start: datetime, end: datetime, now: datetime) -> None:
        cases = s.execute(
            select(
                Case.id, Case.queue, Case.stage, Case.first_response_due_at, Case.next_update_due_at
            ).where(
                Case.created_at < end,
                or_(Case.stage.in_(OPEN_STAGES), Case.updated_at >= start - CASE_LOOKBACK),
            )
        ).all()
        if not cases:
            return
        by_case: dict[int, list[tuple[str, str | None, str | None, datetime]]] = defaultdict(list)
        ids = [c.id for c in cases]
        for chunk in range(0, len(ids), 500):
            for case_id, kind, to_stage, detail, at in s.execute(
                select(CaseEvent.case_id, CaseEvent.kind, CaseEvent.to_stage, CaseEvent.detail, CaseEvent.created_at)
                .where(CaseEvent.case_id.in_(ids[chunk:chunk + 500]), CaseEvent.created_at < end)
                .order_by(CaseEvent.case_id, CaseEvent.id)
            ):
                by_case[case_id].append((kind, to_stage, detail, at))
        hours = self.config.sla.progress_update_hours
        for c in cases:
            is_open = c.stage in OPEN_STAGES
            clocks = case_clocks(
                by_case.get(c.id, []),
                first_response_minutes=self.cases.first_response_minutes(c.queue),
                update_hours=hours,
                now=min(now, end),
                current_first_response_due=c.first_response_due_at,
                current_update_due=c.next_update_due_at if is_open else None,
            )
            for clock in clocks:
                if not start <= clock.at < end:
                    continue
                f = figures[utc_day(clock.at)]
                if clock.kind == "first_response":
                    if clock.outcome == "met":
                        f.first_response_met += 1
                    else:
                        f.first_response_breached += 1
                elif clock.outcome == "met":
                    f.update_met += 1
                else:
                    f.update_breached += 1


__all__ = [
    "MAX_DAYS",
    "REASON_LABELS",
    "AnalyticsReport",
    "AnalyticsService",
    "DayFigures",
    "check_days",
    "day_start",
    "percentile",
    "satisfaction_by_day",
    "utc_day",
]
