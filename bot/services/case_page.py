"""What the customer's case page shows and lets the customer do (``/case/<number>``).

The page is reached with a signed link (:mod:`bot.services.case_links`); whoever holds a valid
link acts as the case's customer (``customer:<visitor id>`` of the case). This module only shapes
the case for the page and calls :class:`~bot.services.cases.CaseService` for every change, so the
rules (stages, the reopen window, one rating per resolution) are those of the service.

Shown: the five stages (受理 → 核实 → 方案制定 → 问题解决 → 用户确认 and their Traditional and
English names) with the time each was reached, the specialist (display name of the agent who took
the case, else "not yet assigned"), the next update due, SLA extensions with their reasons and the
customer-visible events. Never shown: internal notes, SLA breaches, agents' user names, the routing
detail of the ``created`` event.

Every action is audited (``customer:<visitor id>``, ``case_page_<action>``, the case number) in
the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.i18n import lang_or_default
from bot.services import audit, sla
from bot.services.cases import (
    CLOSED_STAGES,
    INTERNAL_EVENTS,
    STAGES,
    CaseEventView,
    CaseNotFound,
    CaseService,
    CaseView,
)
from bot.store.models import Agent, Conversation, Handoff

#: the page's names of the five stages (the complaint channel's 受理 → 核实 → 方案制定 → 问题解决 → 用户确认)
PAGE_STAGE_NAMES: dict[str, dict[str, str]] = {
    "accepted": {"en": "Received", "zh-Hans": "受理", "zh-Hant": "受理"},
    "verifying": {"en": "Checking", "zh-Hans": "核实", "zh-Hant": "核實"},
    "solution_proposed": {"en": "Working on a solution", "zh-Hans": "方案制定", "zh-Hant": "方案制定"},
    "resolved": {"en": "Solved", "zh-Hans": "问题解决", "zh-Hant": "問題解決"},
    "confirmed": {"en": "Confirmed by you", "zh-Hans": "用户确认", "zh-Hant": "用戶確認"},
}

#: events whose detail is the customer's or is meant for the customer
_DETAIL_SHOWN = frozenset(
    {"resolution", "progress_update", "sla_extended", "customer_info", "reopened", "rated", "rating_comment"}
)


def page_lang(requested: str | None, case_lang: str | None) -> str:
    """The page's language: ``?lang=`` when it is one of ours, else the case's."""
    return lang_or_default(requested, lang_or_default(case_lang))


def stage_name(stage: str, lang: str) -> str:
    names = PAGE_STAGE_NAMES.get(stage, {})
    return names.get(lang) or names.get("en") or stage


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class CasePageService:
    """The case page over one :class:`CaseService` (same database, same configuration)."""

    def __init__(self, cases: CaseService, clock: Callable[[], datetime] | None = None) -> None:
        self.cases = cases
        self.db = cases.db
        self.clock = clock or cases.clock

    # -- reading ----------------------------------------------------------------------------

    def specialist(self, case: CaseView) -> str | None:
        """Display name of the agent who holds or last held the case, else ``None``."""
        with self.db.session() as s:
            name = s.execute(
                select(Agent.display_name)
                .join(Handoff, Handoff.agent_id == Agent.id)
                .where(Handoff.case_id == case.id)
                .order_by(Handoff.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if name is None:
                name = s.execute(
                    select(Agent.display_name)
                    .join(Conversation, Conversation.agent_id == Agent.id)
                    .where(Conversation.case_id == case.id)
                    .limit(1)
                ).scalar_one_or_none()
        return str(name) if name else None

    def view(self, number: str, requested_lang: str | None = None) -> dict[str, Any]:
        """Everything the page shows, JSON-ready.

        :raises CaseNotFound: no such case.
        """
        case = self.cases.get(number)
        if case is None:
            raise CaseNotFound(number)
        lang = page_lang(requested_lang, case.lang)
        events = [e for e in self.cases.timeline(case.number) if not e.internal and e.kind not in INTERNAL_EVENTS]
        now = self.clock()
        reached: dict[str, datetime] = {"accepted": case.created_at}
        for e in events:  # the latest time each stage was reached (a reopen starts over)
            if e.to_stage in STAGES:
                reached[e.to_stage] = e.created_at
                if e.kind == "reopened":
                    for later in STAGES[STAGES.index(e.to_stage) + 1:]:
                        reached.pop(later, None)
        current = STAGES.index(case.stage)
        stages = [
            {
                "key": key,
                "name": stage_name(key, lang),
                "state": "done" if i < current else "current" if i == current else "todo",
                "at": _iso(reached.get(key)) if i <= current else None,
            }
            for i, key in enumerate(STAGES)
        ]
        until = self.cases.reopen_until(case)
        closed = case.stage in CLOSED_STAGES
        return {
            "number": case.number,
            "lang": lang,
            "stage": case.stage,
            "stage_name": stage_name(case.stage, lang),
            "stages": stages,
            "team": self.cases.queue_display(case.queue, lang),
            "specialist": self.specialist(case),
            "opened_at": _iso(case.created_at),
            "first_response_due_at": _iso(case.first_response_due_at) if case.first_responded_at is None
            and not closed else None,
            "next_update_due_at": None if closed else _iso(case.next_update_due_at),
            "resolved_at": _iso(case.resolved_at),
            "extensions": [self._extension(e) for e in events if e.kind == "sla_extended"],
            "events": [self._event(e, lang) for e in events],
            "rating": case.satisfaction,
            "can_confirm": case.stage == "resolved",
            "can_reopen": closed and until is not None and now <= until,
            "reopen_until": _iso(until),
            "can_rate": closed and case.satisfaction is None,
            "now": now.isoformat(),
        }

    @staticmethod
    def _extension(e: CaseEventView) -> dict[str, Any]:
        ext = sla.parse_extension(e.detail)
        return {"at": _iso(e.created_at), "reason": ext.reason, "hours": ext.hours, "due_at": _iso(ext.due_at)}

    @staticmethod
    def _event(e: CaseEventView, lang: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": e.kind,
            "at": _iso(e.created_at),
            "by_customer": e.actor.startswith("customer"),
        }
        if e.to_stage:
            out["to_stage"] = stage_name(e.to_stage, lang)
        if e.kind == "sla_extended":
            out["detail"] = sla.parse_extension(e.detail).reason
        elif e.kind in _DETAIL_SHOWN and e.detail:
            out["detail"] = e.detail
        return out

    def holders(self, case_id: int) -> list[tuple[str, int]]:
        """(conversation id, agent id) of every conversation of the case an agent holds now."""
        with self.db.session() as s:
            rows = s.execute(
                select(Conversation.id, Conversation.agent_id).where(
                    Conversation.case_id == case_id, Conversation.status == "agent", Conversation.agent_id.is_not(None)
                )
            ).all()
        return [(str(cid), int(agent)) for cid, agent in rows]

    # -- acting -----------------------------------------------------------------------------

    def _owner(self, number: str) -> tuple[CaseView, str]:
        case = self.cases.get(number)
        if case is None or not case.visitor_id:
            raise CaseNotFound(number)
        return case, case.visitor_id

    def _audited(self, number: str, action: str, change: Callable[[Session, str], CaseView],
                 detail: dict[str, Any] | None = None) -> CaseView:
        """``change(session, visitor)`` and its audit entry in one transaction."""
        case, visitor = self._owner(number)

        def work(s: Session) -> CaseView:
            out = change(s, visitor)
            audit.record(s, f"customer:{visitor}", f"case_page_{action}", case.number, detail, at=self.clock())
            return out

        return self.cases.run_atomic(work)  # type: ignore[no-any-return]

    def add_info(self, number: str, text: str) -> CaseView:
        """The customer adds information (see :meth:`CaseService.add_customer_info`)."""
        return self._audited(number, "add_info", lambda s, v: self.cases.add_customer_info(
            number, v, text, session=s), {"chars": len(text.strip())})

    def confirm(self, number: str) -> CaseView:
        """The customer confirms the resolution (``resolved → confirmed`` only)."""
        return self._audited(number, "confirm", lambda s, v: self.cases.confirm(number, v, session=s))

    def reopen(self, number: str, reason: str = "") -> CaseView:
        """The customer reopens within the window (:meth:`CaseService.reopen`)."""
        return self._audited(number, "reopen", lambda s, v: self.cases.reopen(number, v, reason=reason, session=s))

    def rate(self, number: str, score: int, comment: str | None = None) -> CaseView:
        """The customer rates this resolution once, with an optional comment."""
        return self._audited(number, "rate", lambda s, v: self.cases.rate(
            number, v, score, comment=comment, once=True, session=s), {"score": score})


__all__ = ["PAGE_STAGE_NAMES", "CasePageService", "page_lang", "stage_name"]
