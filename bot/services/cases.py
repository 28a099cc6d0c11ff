"""Cases: the only place with business rules about cases (promise 6).

A case is a complaint, refund or plan-change request with a unique number
(``HL-YYYYMMDD-NNNN``, the date in UTC), a category, a specialist queue, a stage and SLA
clocks. :class:`CaseService` is used by the hub, the agent console and the action server alike.

Rules
-----
* **Stages** go forward only: ``accepted → verifying → solution_proposed → resolved →
  confirmed``. :meth:`CaseService.advance` moves to any *later* stage (one step or a skip; the
  event records ``from_stage`` and ``to_stage``); ``confirmed`` is reachable only from
  ``resolved`` (the customer confirms a resolution). The only way back is
  :meth:`CaseService.reopen` (customer, from ``resolved``/``confirmed``, to ``verifying``).
* **SLA**: first human response due ``first_response_minutes`` after opening/reopening (the
  queue's value, else ``sla.first_response_minutes``); a progress update due every
  ``sla.progress_update_hours`` while open; an extension needs a non-blank reason; breaches are
  recorded as ``sla_breached`` events once per breach (clock + due time).
* **Resolution** schedules ``follow_up_at = resolved_at + sla.follow_up_days``.
* Any action by a human actor (not ``bot``/``system``/``customer:…``) that moves the case —
  a stage change or a progress update — counts as the first response if none was recorded.
* **Every change** writes a ``case_events`` row and an outbox notification in the *same*
  transaction; a failure anywhere rolls back all of it. Customer-facing changes notify the
  customer (``sms`` when a phone is known, else ``chat`` to the visitor id); internal ones (notes,
  SLA breaches) notify ``webhook``/``internal`` without the internal text.
* Customers only ever see their own cases: :meth:`CaseService.get_for_visitor` answers ``None``
  both for unknown numbers and for other people's cases.

Views returned are frozen dataclasses, never ORM objects.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from bot.i18n import lang_or_default, t
from bot.services import sla
from bot.services.config import HumanlineConfig
from bot.services.notifications import Outbox
from bot.services.routing import CATEGORIES
from bot.store.db import Database, insert_unless_present
from bot.store.models import Case, CaseCounter, CaseEvent, Visitor, utcnow

if TYPE_CHECKING:
    from bot.services.case_links import CaseLinks

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("accepted", "verifying", "solution_proposed", "resolved", "confirmed")
#: The SLA clocks stop at the closed stages (the one list is :data:`bot.services.sla.CLOSED_STAGES`).
CLOSED_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s in sla.CLOSED_STAGES)
OPEN_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s not in sla.CLOSED_STAGES)
#: Event kinds only agents and supervisors see.
INTERNAL_EVENTS = frozenset({"note", "sla_breached"})
#: the longest resolution text (:meth:`CaseService.resolve_with`): a short summary, not a report
MAX_RESOLUTION = 500
#: Actors that are not a human specialist.
NON_HUMAN_ACTORS = ("bot", "system")

NUMBER_RE = re.compile(r"^HL-(\d{8})-(\d{4,})$")
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff0d\ufe63_"
_LOOSE_NUMBER_RE = re.compile(r"^HL(\d{8})(\d{4,6})$")
_MAX_RETRIES = 5
#: the longest text a customer adds to a case at once (information, rating comment)
MAX_CUSTOMER_TEXT = 2000

Clock = Callable[[], datetime]


class CaseError(Exception):
    """Base class of case errors."""


class CaseNotFound(CaseError, LookupError):
    """No such case (or, for a customer, not *their* case — the two are never distinguished)."""


class CaseStateError(CaseError, ValueError):
    """The operation is not allowed in the case's current stage."""


class ReopenWindowClosed(CaseStateError):
    """The case was resolved longer ago than ``sla.reopen_window_days``: it cannot be reopened."""


class AlreadyRated(CaseStateError):
    """This resolution has been rated already and the caller asked for one rating only."""


@dataclass(frozen=True)
class CaseView:
    """A case as the services hand it out: immutable, safe outside any session."""

    id: int
    number: str
    category: str
    queue: str
    queue_display: str
    stage: str
    lang: str
    visitor_id: str | None
    conversation_id: str | None
    description: str | None
    order_id: str | None
    phone: str | None
    amount: str | None
    created_at: datetime
    updated_at: datetime
    first_response_due_at: datetime | None
    first_responded_at: datetime | None
    next_update_due_at: datetime | None
    resolved_at: datetime | None
    confirmed_at: datetime | None
    follow_up_at: datetime | None
    satisfaction: int | None
    reopen_count: int

    @property
    def is_open(self) -> bool:
        """True until the case is resolved (or confirmed)."""
        return self.stage in OPEN_STAGES

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (ISO times) for WebSocket frames and action slots."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True)
class CaseEventView:
    """One timeline entry."""

    kind: str
    from_stage: str | None
    to_stage: str | None
    actor: str
    detail: str | None
    created_at: datetime
    internal: bool


@dataclass(frozen=True)
class BreachView:
    """A case currently past an SLA deadline."""

    number: str
    queue: str
    stage: str
    kind: str  # first_response | progress_update
    due_at: datetime
    overdue_s: float

    def to_dict(self) -> dict[str, Any]:
        """As in the supervisor overview's ``breaches``."""
        return {"number": self.number, "queue": self.queue, "stage": self.stage, "kind": self.kind,
                "due_at": self.due_at.isoformat(), "overdue_s": int(self.overdue_s)}


@dataclass(frozen=True)
class SatisfactionSummary:
    """Ratings of resolved cases: count, average, distribution and per-queue figures."""

    count: int
    average: float | None
    distribution: dict[int, int]
    by_queue: dict[str, dict[str, float]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- timelines


def event_views(s: Session, case_id: int) -> list[CaseEventView]:
    """The case's events in order, internal ones included: the one reader of a case's timeline
    (:meth:`CaseService.timeline`, :func:`case_details`)."""
    rows = s.execute(select(CaseEvent).where(CaseEvent.case_id == case_id).order_by(CaseEvent.id)).scalars()
    return [
        CaseEventView(e.kind, e.from_stage, e.to_stage, e.actor, e.detail, e.created_at, e.kind in INTERNAL_EVENTS)
        for e in rows
    ]


def case_details(s: Session, case_id: int | None) -> dict[str, Any] | None:
    """A case's columns (datetimes as ISO text) with its whole timeline, as the agent console shows it."""
    if case_id is None:
        return None
    c = s.get(Case, case_id)
    if c is None:
        return None
    out: dict[str, Any] = {}
    for col in Case.__table__.columns:
        value = getattr(c, col.name)
        out[col.name] = value.isoformat() if hasattr(value, "isoformat") else value
    out["timeline"] = [
        {"kind": e.kind, "from_stage": e.from_stage, "to_stage": e.to_stage, "actor": e.actor, "detail": e.detail,
         "created_at": e.created_at.isoformat()}
        for e in event_views(s, case_id)
    ]
    return out


# ----------------------------------------------------------------------------- case numbers


def normalise_number(text: str | None) -> str | None:
    """The canonical case number ``HL-YYYYMMDD-NNNN`` for a customer's spelling of it, else ``None``.

    Accepts lower case, full-width characters, spaces, other dash characters and missing dashes
    (``hl 20261104 0001``, ``ＨＬ－２０２６１１０４－０００１``, ``HL202611040001``); rejects
    anything else, impossible dates and the sequence ``0000``.
    """
    if not text:
        return None
    cleaned = unicodedata.normalize("NFKC", text).strip().upper()
    cleaned = re.sub(r"\s+", "", cleaned)
    if not cleaned.startswith("HL"):
        return None
    match = NUMBER_RE.match(cleaned)
    if match:
        day, seq = match.groups()
    else:
        compact = "".join(ch for ch in cleaned if ch not in _DASHES)
        loose = _LOOSE_NUMBER_RE.match(compact)
        if not loose:
            return None
        day, seq = loose.groups()
    try:
        datetime.strptime(day, "%Y%m%d")
    except ValueError:
        return None
    if int(seq) == 0:
        return None
    return f"HL-{day}-{seq}"


def format_number(day: date, seq: int) -> str:
    """``HL-YYYYMMDD-NNNN`` (at least four digits)."""
    return f"HL-{day:%Y%m%d}-{seq:04d}"


# ----------------------------------------------------------------------------- message texts
# The notifications' texts are in the one catalogue, bot.i18n (keys ``case_<event>``).

_STAGE_NAMES: dict[str, dict[str, str]] = {
    "accepted": {"en": "accepted", "zh-Hans": "已受理", "zh-Hant": "已受理"},
    "verifying": {"en": "verifying", "zh-Hans": "核实中", "zh-Hant": "核實中"},
    "solution_proposed": {"en": "solution proposed", "zh-Hans": "已提出解决方案", "zh-Hant": "已提出解決方案"},
    "resolved": {"en": "resolved", "zh-Hans": "已解决", "zh-Hant": "已解決"},
    "confirmed": {"en": "confirmed", "zh-Hans": "已确认", "zh-Hant": "已確認"},
}


def stage_display(stage: str, lang: str | None) -> str:
    """The customer-facing name of a stage in ``lang``."""
    names = _STAGE_NAMES.get(stage, {})
    return names.get(lang or "en") or names.get("en") or stage


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# ----------------------------------------------------------------------------- the service


class CaseService:
    """Opens cases, moves them through their stages and keeps their SLA clocks.

    :param db: the store.
    :param config: business configuration (default: ``HumanlineConfig.load()``).
    :param clock: returns "now" (timezone-aware UTC); tests inject a fake clock.
    :param links: signs case-page links; with it every customer notification carries ``case_url``.
    """

    def __init__(
        self,
        db: Database,
        config: HumanlineConfig | None = None,
        clock: Clock = utcnow,
        *,
        links: CaseLinks | None = None,
    ) -> None:
        self.db = db
        self.config = config or HumanlineConfig.load()
        self.clock = clock
        self.links = links

    # -- helpers -------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now

    def route(self, category: str) -> str:
        """The specialist queue of ``category``; :class:`ValueError` for an unknown category."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown case category {category!r}; expected one of: {', '.join(CATEGORIES)}")
        return self.config.queue_for(category)

    def queue_display(self, queue: str, lang: str | None) -> str:
        """The customer-facing queue name in ``lang`` (:meth:`HumanlineConfig.queue_display`)."""
        return self.config.queue_display(queue, lang)

    def first_response_minutes(self, queue: str) -> int:
        """Minutes allowed for the first human response in ``queue``
        (:meth:`HumanlineConfig.first_response_minutes`)."""
        return self.config.first_response_minutes(queue)

    def _view(self, c: Case) -> CaseView:
        lang = c.lang or "en"
        return CaseView(
            id=c.id,
            number=c.number,
            category=c.category,
            queue=c.queue,
            queue_display=self.queue_display(c.queue, lang),
            stage=c.stage,
            lang=lang,
            visitor_id=c.visitor_id,
            conversation_id=c.conversation_id,
            description=c.description,
            order_id=c.order_id,
            phone=c.phone,
            amount=c.amount,
            created_at=c.created_at,
            updated_at=c.updated_at,
            first_response_due_at=c.first_response_due_at,
            first_responded_at=c.first_responded_at,
            next_update_due_at=c.next_update_due_at,
            resolved_at=c.resolved_at,
            confirmed_at=c.confirmed_at,
            follow_up_at=c.follow_up_at,
            satisfaction=c.satisfaction,
            reopen_count=c.reopen_count or 0,
        )

    def _load(self, session: Session, number: str, *, for_update: bool = True) -> Case:
        canonical = normalise_number(number)
        if canonical is None:
            raise CaseNotFound(f"no case {number!r}")
        stmt = select(Case).where(Case.number == canonical)
        if for_update:
            stmt = stmt.with_for_update()
        case = session.execute(stmt).scalar_one_or_none()
        if case is None:
            raise CaseNotFound(f"no case {canonical}")
        return case

    def _load_for_visitor(self, session: Session, number: str, visitor_id: str) -> Case:
        case = self._load(session, number)
        if not visitor_id or case.visitor_id != visitor_id:
            raise CaseNotFound(f"no case {number!r}")  # never reveal someone else's case
        return case

    @staticmethod
    def _is_human(actor: str) -> bool:
        return bool(actor) and actor not in NON_HUMAN_ACTORS and not actor.startswith("customer")

    def _event(
        self,
        session: Session,
        case: Case,
        kind: str,
        actor: str,
        now: datetime,
        *,
        from_stage: str | None = None,
        to_stage: str | None = None,
        detail: str | None = None,
    ) -> None:
        session.add(
            CaseEvent(
                case_id=case.id,
                kind=kind,
                from_stage=from_stage,
                to_stage=to_stage,
                actor=actor or "system",
                detail=detail,
                created_at=now,
            )
        )

    def _notify(self, session: Session, case: Case, event: str, now: datetime, **extra: Any) -> None:
        """Write the customer notification for ``event`` (the ``case_<event>`` text of
        :func:`bot.i18n.t`) in this transaction."""
        lang = case.lang or "en"
        queue_display = self.queue_display(case.queue, lang)
        expected = extra.pop("expected_by", None)
        message = t(
            f"case_{event}",
            lang,
            number=case.number,
            queue=queue_display,
            due=_fmt_time(expected),
            stage=stage_display(case.stage, lang),
            follow_up=_fmt_time(case.follow_up_at),
            **{k: v for k, v in extra.items() if isinstance(v, str)},
        )
        payload: dict[str, Any] = {
            "event": event,
            "case_number": case.number,
            "category": case.category,
            "stage": case.stage,
            "queue": case.queue,
            "queue_display": queue_display,
            "specialist": queue_display,
            "lang": lang,
            "expected_by": expected.isoformat() if expected else None,
            "message": message,
            "at": now.isoformat(),
        }
        payload.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in extra.items()})
        if self.links is not None:
            payload["case_url"] = self.links.url(case.number)
        channel, recipient = ("sms", case.phone) if case.phone else ("chat", case.visitor_id or "")
        if not recipient:
            channel, recipient = "webhook", "internal"
        Outbox(session, clock=lambda: now).add(channel=channel, recipient=recipient, payload=payload, case_id=case.id)

    def _notify_internal(self, session: Session, case: Case, event: str, now: datetime, **extra: Any) -> None:
        """An internal notification (notes, breaches): no customer, no internal text."""
        payload = {"event": event, "case_number": case.number, "queue": case.queue, "at": now.isoformat(), **extra}
        Outbox(session, clock=lambda: now).add(
            channel="webhook", recipient="internal", payload=payload, case_id=case.id
        )

    def _mark_first_response(self, session: Session, case: Case, actor: str, now: datetime) -> None:
        if case.first_responded_at is None and self._is_human(actor):
            case.first_responded_at = now
            self._event(session, case, "first_response", actor, now)

    def run_atomic(self, fn: Callable[[Session], Any]) -> Any:
        """Run ``fn(session)`` in one transaction, retried on write conflicts like every command:
        for callers that add their own rows (an audit entry) to a command given ``session=``."""
        return self._run(fn)

    def _run(self, fn: Callable[[Session], Any], session: Session | None = None) -> Any:
        """Run ``fn`` in the caller's session, or in a fresh transaction retried on conflicts."""
        if session is not None:
            return fn(session)
        for attempt in range(1, _MAX_RETRIES + 1):
            try:
                with self.db.session() as own:
                    return fn(own)
            except (IntegrityError, OperationalError) as exc:
                if attempt == _MAX_RETRIES or not _retryable(exc):
                    raise
                logger.info("case transaction conflict, retrying (%s/%s): %s", attempt, _MAX_RETRIES, exc.orig)
        raise AssertionError("unreachable")

    # -- numbers -------------------------------------------------------------------------

    def _next_number(self, session: Session, now: datetime) -> str:
        """Allocate the next number of ``now``'s UTC day in this transaction.

        ``INSERT … ON CONFLICT DO NOTHING`` creates the day's row if needed, then
        ``UPDATE … SET value = value + 1`` takes the row lock (PostgreSQL) or the database write
        lock (SQLite) until commit, so concurrent transactions get consecutive values.
        """
        day = now.date()
        key = f"{day:%Y%m%d}"
        insert_unless_present(session, CaseCounter, {"day": key, "value": 0})
        session.execute(
            update(CaseCounter)
            .where(CaseCounter.day == key)
            .values(value=CaseCounter.value + 1)
            .execution_options(synchronize_session=False)
        )
        value = session.execute(select(CaseCounter.value).where(CaseCounter.day == key)).scalar_one()
        return format_number(day, int(value))

    def _ensure_visitor(self, session: Session, visitor_id: str, lang: str, now: datetime) -> None:
        insert_unless_present(session, Visitor, {"id": visitor_id, "lang": lang, "created_at": now})

    # -- commands ------------------------------------------------------------------------

    def open_case(
        self,
        category: str,
        *,
        visitor_id: str,
        conversation_id: str | None = None,
        description: str,
        order_id: str | None = None,
        phone: str | None = None,
        amount: str | None = None,
        lang: str = "en",
        actor: str = "bot",
        session: Session | None = None,
    ) -> CaseView:
        """Open a case: number, routing, SLA clocks, ``created`` event and notification, in one transaction.

        :param category: ``service``, ``billing``, ``privacy``, ``plan_change`` or ``refund``.
        :param session: run inside the caller's transaction (the caller commits); by default the
            service opens its own transaction and retries it on a write conflict.
        :raises ValueError: unknown category or empty visitor id.
        """
        queue = self.route(category)
        if not visitor_id:
            raise ValueError("a case needs the visitor it belongs to")
        lang = lang_or_default(lang)

        def work(s: Session) -> CaseView:
            now = self._now()
            self._ensure_visitor(s, visitor_id, lang, now)
            case = Case(
                number=self._next_number(s, now),
                category=category,
                queue=queue,
                stage=STAGES[0],
                visitor_id=visitor_id,
                conversation_id=conversation_id,
                description=(description or "").strip() or None,
                order_id=order_id,
                phone=phone,
                amount=None if amount is None else str(amount),
                lang=lang,
                created_at=now,
                updated_at=now,
                first_response_due_at=sla.first_response_due(now, self.first_response_minutes(queue)),
                next_update_due_at=sla.next_update_due(now, self.config.sla.progress_update_hours),
                reopen_count=0,
            )
            s.add(case)
            s.flush()
            self._event(s, case, "created", actor, now, to_stage=case.stage, detail=f"{category} → {queue}")
            self._notify(
                s,
                case,
                "created",
                now,
                expected_by=case.first_response_due_at,
                expected_first_response_minutes=self.first_response_minutes(queue),
            )
            s.flush()
            return self._view(case)

        return self._run(work, session)

    def advance(
        self, number: str, to_stage: str, actor: str, *, detail: str | None = None, session: Session | None = None
    ) -> CaseView:
        """Move a case forward to ``to_stage`` (the next stage or any later one).

        ``resolved`` sets ``resolved_at`` and schedules the follow-up; ``confirmed`` is only
        reachable from ``resolved``. A human actor's first move counts as the first response.

        :raises CaseStateError: unknown stage, a step back or sideways, or ``confirmed`` too early.
        :raises CaseNotFound: no such case.
        """
        if to_stage not in STAGES:
            raise CaseStateError(f"unknown stage {to_stage!r}; stages are {', '.join(STAGES)}")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load(s, number)
            self._move(s, case, to_stage, actor, now, detail)
            return self._view(case)

        return self._run(work, session)

    def resolve_with(
        self, number: str, actor: str, resolution: str, *, session: Session | None = None
    ) -> CaseView:
        """Resolve an open case with a resolution the customer sees: a ``resolution`` event (its
        text on the case page's timeline, and in the ``resolved`` notification's payload), then the
        stage change to ``resolved`` as :meth:`advance` makes it. For the agent who resolves the
        conversation and its case at once: unlike a bare stage change, the customer is told *what*
        was done, so they can confirm or reopen knowingly.

        :raises ValueError: a blank resolution (or one over :data:`MAX_RESOLUTION` characters).
        :raises CaseStateError: the case is resolved or confirmed already.
        :raises CaseNotFound: no such case.
        """
        text = (resolution or "").strip()
        if not text:
            raise ValueError("a resolution the customer can read is required")
        if len(text) > MAX_RESOLUTION:
            raise ValueError(f"the resolution is limited to {MAX_RESOLUTION} characters")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load(s, number)
            if case.stage in CLOSED_STAGES:
                raise CaseStateError(f"case {case.number} is {case.stage} already")
            self._event(s, case, "resolution", actor, now, detail=text)
            self._move(s, case, "resolved", actor, now, None, resolution=text)
            return self._view(case)

        return self._run(work, session)

    def _move(
        self, s: Session, case: Case, to_stage: str, actor: str, now: datetime, detail: str | None,
        resolution: str | None = None,
    ) -> None:
        current = STAGES.index(case.stage)
        target = STAGES.index(to_stage)
        if target <= current:
            raise CaseStateError(f"case {case.number} is {case.stage}; it can only move forward, not to {to_stage}")
        if to_stage == "confirmed" and case.stage != "resolved":
            raise CaseStateError(f"case {case.number} must be resolved before it is confirmed")
        from_stage = case.stage
        self._mark_first_response(s, case, actor, now)
        case.stage = to_stage
        case.updated_at = now
        self._event(s, case, "stage_changed", actor, now, from_stage=from_stage, to_stage=to_stage, detail=detail)
        if to_stage == "resolved":
            case.resolved_at = now
            case.follow_up_at = sla.follow_up_at(now, self.config.sla.follow_up_days)
            self._event(
                s, case, "follow_up_scheduled", "system", now, detail=f"follow-up at {case.follow_up_at.isoformat()}"
            )
            extra: dict[str, Any] = {"resolution": resolution} if resolution else {}
            self._notify(s, case, "resolved", now, expected_by=case.follow_up_at, follow_up_at=case.follow_up_at,
                         **extra)
        elif to_stage == "confirmed":
            case.confirmed_at = now
            self._notify(s, case, "confirmed", now)
        else:
            case.next_update_due_at = sla.next_update_due(now, self.config.sla.progress_update_hours)
            self._notify(s, case, "stage_changed", now, expected_by=case.next_update_due_at)

    def confirm(self, number: str, visitor_id: str, *, session: Session | None = None) -> CaseView:
        """The customer confirms that a resolved case is solved (``resolved → confirmed``)."""

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load_for_visitor(s, number, visitor_id)
            self._move(s, case, "confirmed", f"customer:{visitor_id}", now, None)
            return self._view(case)

        return self._run(work, session)

    def record_first_response(self, number: str, actor: str, *, session: Session | None = None) -> CaseView:
        """Record that a specialist answered the customer for the first time (idempotent)."""

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load(s, number)
            if case.first_responded_at is None:
                case.first_responded_at = now
                case.updated_at = now
                self._event(s, case, "first_response", actor, now)
                self._notify(s, case, "first_response", now, expected_by=case.next_update_due_at)
            return self._view(case)

        return self._run(work, session)

    def record_progress_update(self, number: str, actor: str, text: str, *, session: Session | None = None) -> CaseView:
        """Tell the customer about progress; restarts the progress-update clock.

        :raises ValueError: empty text. :raises CaseStateError: the case is already resolved.
        """
        text = (text or "").strip()
        if not text:
            raise ValueError("a progress update needs a text")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load(s, number)
            if case.stage in CLOSED_STAGES:
                raise CaseStateError(f"case {case.number} is {case.stage}; reopen it first")
            self._mark_first_response(s, case, actor, now)
            case.next_update_due_at = sla.next_update_due(now, self.config.sla.progress_update_hours)
            case.updated_at = now
            self._event(s, case, "progress_update", actor, now, detail=text)
            self._notify(s, case, "progress_update", now, expected_by=case.next_update_due_at, text=text)
            return self._view(case)

        return self._run(work, session)

    def extend_sla(
        self, number: str, reason: str, actor: str, hours: float = 24, *, session: Session | None = None
    ) -> CaseView:
        """Extend the progress-update clock by ``hours`` for a stated reason (told to the customer).

        :raises ValueError: blank reason or non-positive hours.
        :raises CaseStateError: the case is resolved.
        """
        reason = sla.validate_reason(reason)
        if hours <= 0:
            raise ValueError("an SLA extension must be a positive number of hours")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load(s, number)
            if case.stage in CLOSED_STAGES:
                raise CaseStateError(f"case {case.number} is {case.stage}; nothing to extend")
            old = case.next_update_due_at
            case.next_update_due_at = sla.extend(old, now, hours, reason)
            case.updated_at = now
            detail = sla.extension_detail(str(reason), hours, case.next_update_due_at)
            self._event(s, case, "sla_extended", actor, now, detail=detail)
            self._notify(s, case, "sla_extended", now, expected_by=case.next_update_due_at, reason=reason)
            return self._view(case)

        return self._run(work, session)

    def add_note(self, number: str, actor: str, text: str, *, session: Session | None = None) -> None:
        """An internal note on the case timeline; never shown to the customer."""
        text = (text or "").strip()
        if not text:
            raise ValueError("a note needs a text")

        def work(s: Session) -> None:
            now = self._now()
            case = self._load(s, number)
            case.updated_at = now
            self._event(s, case, "note", actor, now, detail=text)
            self._notify_internal(s, case, "note_added", now, actor=actor)

        self._run(work, session)

    def record_event(
        self, case_id: int, kind: str, actor: str, detail: str, *, session: Session | None = None
    ) -> None:
        """An event on the case timeline written by another service (plan changes: ``plan_change_withdrawn``,
        ``plan_change_replaced``); shown to the customer unless ``kind`` is internal. No notification:
        the calling service writes its own.

        :raises CaseNotFound: no case with this id.
        """

        def work(s: Session) -> None:
            case = s.get(Case, case_id)
            if case is None:
                raise CaseNotFound(f"no case with id {case_id}")
            now = self._now()
            case.updated_at = now
            self._event(s, case, kind, actor, now, detail=detail)

        self._run(work, session)

    def reopen(self, number: str, visitor_id: str, reason: str = "", *, session: Session | None = None) -> CaseView:
        """The customer reopens a resolved or confirmed case: back to ``verifying`` with fresh clocks.

        Allowed until ``sla.reopen_window_days`` after the resolution (:meth:`reopen_until`).

        :raises CaseNotFound: unknown number or not this visitor's case.
        :raises ReopenWindowClosed: resolved longer ago than the window.
        :raises CaseStateError: the case is still open.
        """

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load_for_visitor(s, number, visitor_id)
            if case.stage not in CLOSED_STAGES:
                raise CaseStateError(f"case {case.number} is still open ({case.stage}); it cannot be reopened")
            until = self.reopen_until(self._view(case))
            if until is not None and now > until:
                raise ReopenWindowClosed(
                    f"case {case.number} was resolved more than {self.config.sla.reopen_window_days} days ago; "
                    "it can no longer be reopened"
                )
            from_stage = case.stage
            case.stage = "verifying"
            case.reopen_count = (case.reopen_count or 0) + 1
            case.resolved_at = None
            case.confirmed_at = None
            case.follow_up_at = None
            case.satisfaction = None  # the next resolution is rated afresh; the old rating stays in the timeline
            case.first_responded_at = None
            case.first_response_due_at = sla.first_response_due(now, self.first_response_minutes(case.queue))
            case.next_update_due_at = sla.next_update_due(now, self.config.sla.progress_update_hours)
            case.updated_at = now
            self._event(
                s,
                case,
                "reopened",
                f"customer:{visitor_id}",
                now,
                from_stage=from_stage,
                to_stage=case.stage,
                detail=(reason or "").strip() or None,
            )
            self._notify(s, case, "reopened", now, expected_by=case.first_response_due_at)
            return self._view(case)

        return self._run(work, session)

    def rate(
        self, number: str, visitor_id: str, score: int, *, comment: str | None = None, once: bool = False,
        session: Session | None = None,
    ) -> CaseView:
        """The customer rates the handling, 1 (worst) to 5 (best), once the case is resolved.

        A later rating of the same resolution replaces the earlier one (both stay in the timeline),
        unless ``once``. An optional ``comment`` (at most :data:`MAX_CUSTOMER_TEXT` characters) is
        kept as a ``rating_comment`` event.

        :raises ValueError: score not an integer 1–5, or comment too long.
        :raises AlreadyRated: ``once`` and this resolution is rated already.
        :raises CaseStateError: not resolved yet.
        """
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError("a rating is an integer from 1 to 5")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_CUSTOMER_TEXT:
            raise ValueError(f"a comment has at most {MAX_CUSTOMER_TEXT} characters")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load_for_visitor(s, number, visitor_id)
            if case.stage not in CLOSED_STAGES:
                raise CaseStateError(f"case {case.number} is not resolved yet; it can be rated after resolution")
            if once and case.satisfaction is not None:
                raise AlreadyRated(f"case {case.number} has been rated already")
            case.satisfaction = score
            case.updated_at = now
            self._event(s, case, "rated", f"customer:{visitor_id}", now, detail=str(score))
            if comment is not None:
                self._event(s, case, "rating_comment", f"customer:{visitor_id}", now, detail=comment)
            self._notify(s, case, "rated", now, score=score)
            return self._view(case)

        return self._run(work, session)

    def add_customer_info(
        self, number: str, visitor_id: str, text: str, *, session: Session | None = None
    ) -> CaseView:
        """The customer adds information to their case (a ``customer_info`` event, shown to the
        customer and to agents); the team is told by an internal notification, without the text.

        :raises ValueError: empty or longer than :data:`MAX_CUSTOMER_TEXT` characters.
        :raises CaseNotFound: unknown number or not this visitor's case.
        """
        text = (text or "").strip()
        if not text:
            raise ValueError("the information is empty")
        if len(text) > MAX_CUSTOMER_TEXT:
            raise ValueError(f"at most {MAX_CUSTOMER_TEXT} characters at once")

        def work(s: Session) -> CaseView:
            now = self._now()
            case = self._load_for_visitor(s, number, visitor_id)
            case.updated_at = now
            self._event(s, case, "customer_info", f"customer:{visitor_id}", now, detail=text)
            self._notify_internal(s, case, "customer_info_added", now)
            return self._view(case)

        return self._run(work, session)

    def reopen_until(self, case: CaseView) -> datetime | None:
        """Until when the customer may reopen ``case``: ``resolved_at + sla.reopen_window_days``
        (``None`` while the case is open)."""
        if case.stage not in CLOSED_STAGES or case.resolved_at is None:
            return None
        return case.resolved_at + timedelta(days=self.config.sla.reopen_window_days)

    def reopen_window_text(self, case: CaseView, lang: str | None) -> str:
        """What the customer is told when ``case`` can no longer be reopened, in ``lang``."""
        return t(
            "case_reopen_window_closed", lang,
            number=case.number, resolved=_fmt_time(case.resolved_at), until=_fmt_time(self.reopen_until(case))
        )

    def send_due_follow_ups(self, now: datetime | None = None) -> list[str]:
        """Write the follow-up notification of every resolved case whose ``follow_up_at`` has come.

        A follow-up is identified by its scheduled time (the ``follow_up`` event's detail), so
        repeated calls, or several hubs calling at once, send it once; a case reopened and
        resolved again is followed up again at its new time. Confirmed cases are not followed up:
        the customer already said the problem is solved.

        :returns: the numbers of the cases followed up by this call.
        """
        at = now or self._now()

        def work(s: Session) -> list[str]:
            done: list[str] = []
            due = s.execute(
                select(Case)
                .where(Case.stage == "resolved", Case.follow_up_at.is_not(None), Case.follow_up_at <= at)
                .order_by(Case.id)
                .with_for_update(skip_locked=True)
            ).scalars()
            for case in due:
                key = case.follow_up_at.isoformat()
                seen = s.execute(
                    select(CaseEvent.id).where(
                        CaseEvent.case_id == case.id, CaseEvent.kind == "follow_up", CaseEvent.detail == key
                    )
                ).first()
                if seen:
                    continue
                self._event(s, case, "follow_up", "system", at, detail=key)
                self._notify(s, case, "follow_up", at)
                done.append(case.number)
            return done

        return self._run(work)

    def check_breaches(self, now: datetime | None = None) -> list[BreachView]:
        """Record an ``sla_breached`` event (and an internal notification) for each new breach.

        A breach is identified by its clock and due time, so repeated checks record it once; a
        clock restarted by a progress update can breach again later.

        :returns: the breaches recorded by this call.
        """
        at = now or self._now()

        def work(s: Session) -> list[BreachView]:
            found: list[BreachView] = []
            candidates = s.execute(
                select(Case)
                .where(
                    (Case.stage.in_(OPEN_STAGES))
                    | (Case.first_responded_at.is_not(None) & (Case.first_responded_at > Case.first_response_due_at))
                )
                .order_by(Case.id)
            ).scalars()
            for case in candidates:
                for breach in self._breaches_of(case, at):
                    seen = s.execute(
                        select(CaseEvent.id).where(
                            CaseEvent.case_id == case.id,
                            CaseEvent.kind == "sla_breached",
                            CaseEvent.detail == breach.key,
                        )
                    ).first()
                    if seen:
                        continue
                    self._event(s, case, "sla_breached", "system", at, detail=breach.key)
                    self._notify_internal(
                        s, case, "sla_breached", at, clock=breach.kind, due_at=breach.due_at.isoformat()
                    )
                    found.append(self._breach_view(case, breach, at))
            return found

        return self._run(work)

    @staticmethod
    def _breaches_of(case: Case, now: datetime) -> list[sla.Breach]:
        return sla.breaches(
            stage=case.stage,
            first_response_due_at=case.first_response_due_at,
            first_responded_at=case.first_responded_at,
            next_update_due_at=case.next_update_due_at,
            now=now,
        )

    @staticmethod
    def _breach_view(case: Case, breach: sla.Breach, now: datetime) -> BreachView:
        return BreachView(
            number=case.number,
            queue=case.queue,
            stage=case.stage,
            kind=breach.kind,
            due_at=breach.due_at,
            overdue_s=max(0.0, (now - breach.due_at).total_seconds()),
        )

    # -- queries -------------------------------------------------------------------------

    def get(self, number: str) -> CaseView | None:
        """A case by number for agents and supervisors (no ownership check)."""
        canonical = normalise_number(number)
        if canonical is None:
            return None
        with self.db.session() as s:
            case = s.execute(select(Case).where(Case.number == canonical)).scalar_one_or_none()
            return self._view(case) if case else None

    def get_by_id(self, case_id: int) -> CaseView | None:
        """A case by its integer id (``conversations.case_id``, ``handoffs.case_id``)."""
        with self.db.session() as s:
            case = s.get(Case, case_id)
            return self._view(case) if case else None

    def get_for_visitor(self, number: str, visitor_id: str) -> CaseView | None:
        """The visitor's own case, or ``None`` — also when the number belongs to someone else."""
        view = self.get(number)
        if view is None or not visitor_id or view.visitor_id != visitor_id:
            return None
        return view

    def for_visitor(self, visitor_id: str) -> list[CaseView]:
        """All cases of one visitor, newest first."""
        with self.db.session() as s:
            rows = s.execute(
                select(Case).where(Case.visitor_id == visitor_id).order_by(Case.created_at.desc(), Case.id.desc())
            ).scalars()
            return [self._view(c) for c in rows]

    def timeline(self, number: str, *, visitor_id: str | None = None) -> list[CaseEventView]:
        """The case's events in order. With ``visitor_id``: only that visitor's case, without
        internal events (notes, SLA breaches).

        :raises CaseNotFound: unknown number, or (with ``visitor_id``) someone else's case.
        """
        with self.db.session() as s:
            case = self._load(s, number, for_update=False)
            if visitor_id is not None and case.visitor_id != visitor_id:
                raise CaseNotFound(f"no case {number!r}")
            events = event_views(s, case.id)
        if visitor_id is not None:
            events = [e for e in events if not e.internal]
        return events

    def open_for_conversation(self, conversation_id: str) -> CaseView | None:
        """The newest case of the conversation that is not resolved yet, or ``None``."""
        with self.db.session() as s:
            case = s.execute(
                select(Case)
                .where(Case.conversation_id == conversation_id, Case.stage.in_(OPEN_STAGES))
                .order_by(Case.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            return self._view(case) if case is not None else None

    def list_open(self, queue: str | None = None) -> list[CaseView]:
        """Open cases (not resolved or confirmed), oldest first, optionally of one queue."""
        with self.db.session() as s:
            stmt = select(Case).where(Case.stage.in_(OPEN_STAGES)).order_by(Case.created_at, Case.id)
            if queue is not None:
                stmt = stmt.where(Case.queue == queue)
            return [self._view(c) for c in s.execute(stmt).scalars()]

    def breaches(self, now: datetime | None = None) -> list[BreachView]:
        """Every case past an SLA deadline at ``now`` (default: the clock), most overdue first.
        Read-only: :meth:`check_breaches` records them."""
        at = now or self._now()
        with self.db.session() as s:
            rows = s.execute(select(Case).where(Case.stage.in_(OPEN_STAGES)).order_by(Case.id)).scalars()
            found = [self._breach_view(c, b, at) for c in rows for b in self._breaches_of(c, at)]
        return sorted(found, key=lambda b: b.overdue_s, reverse=True)

    def satisfaction_summary(self) -> SatisfactionSummary:
        """Count, average and 1–5 distribution of ratings, overall and per queue."""
        with self.db.session() as s:
            rows = s.execute(
                select(Case.queue, Case.satisfaction, func.count())
                .where(Case.satisfaction.is_not(None))
                .group_by(Case.queue, Case.satisfaction)
            ).all()
        distribution = {score: 0 for score in range(1, 6)}
        per_queue: dict[str, list[int]] = {}
        for queue, score, n in rows:
            distribution[int(score)] += int(n)
            acc = per_queue.setdefault(queue, [0, 0])
            acc[0] += int(n)
            acc[1] += int(score) * int(n)
        count = sum(distribution.values())
        total = sum(score * n for score, n in distribution.items())
        by_queue = {q: {"count": float(c), "average": round(t / c, 3)} for q, (c, t) in per_queue.items()}
        return SatisfactionSummary(
            count=count,
            average=round(total / count, 3) if count else None,
            distribution=distribution,
            by_queue=by_queue,
        )


def _retryable(exc: Exception) -> bool:
    """Write conflicts worth retrying: a duplicate key, a serialisation failure, a busy SQLite."""
    if isinstance(exc, IntegrityError):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "deadlock" in text or "could not serialize" in text


__all__ = [
    "CATEGORIES",
    "CLOSED_STAGES",
    "OPEN_STAGES",
    "STAGES",
    "BreachView",
    "CaseError",
    "CaseEventView",
    "CaseNotFound",
    "CaseService",
    "CaseStateError",
    "AlreadyRated",
    "ReopenWindowClosed",
    "MAX_CUSTOMER_TEXT",
    "CaseView",
    "SatisfactionSummary",
    "format_number",
    "normalise_number",
    "stage_display",
]
