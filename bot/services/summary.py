"""The handoff summary an agent reads before the transcript: what the customer asked (each
understood request with its entities), frustration and danger signals, what the bot already did
(case opened, plan change pending, questions asked and how they were answered), why the
conversation was handed over, in words, and the customer's language.

:func:`build_summary` is pure (stored facts in, summary out); :class:`SummaryService` reads the
facts from the store. Entities come from the customer's own words, found with the NLU's entity
patterns (``data/nlu/regexes.yml``: case number, order id, phone and amount — the same file the
model's ``RegexEntityExtractor`` uses; a currency pattern here when the file has no amount) and
the plan catalogue's names and aliases; and from the case the bot opened (order id, amount,
phone, recorded by the actions from the model's entities).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from bot.guard import asks_for_human
from bot.i18n import LANGUAGE_NAMES
from bot.services.case_links import redact_links
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationService, MessageRecord
from bot.services.plans import PlanCatalogue
from bot.services.routing import CATEGORY_BY_INTENT
from bot.store.db import Database
from bot.store.models import Case, Conversation, Handoff, PlanChange

ROOT = Path(__file__).resolve().parent.parent.parent
REGEXES = ROOT / "data" / "nlu" / "regexes.yml"

#: Intents that state what the customer wants, in words for the agent.
REQUESTS: dict[str, str] = {
    "complaint_service": "complaint about the service",
    "complaint_billing": "complaint about a bill",
    "complaint_privacy": "privacy complaint",
    "request_refund": "refund",
    "downgrade_plan": "downgrade the plan",
    "upgrade_plan": "upgrade the plan",
    "cancel_subscription": "cancel the subscription",
    "check_case_status": "status of a case",
    "reopen_case": "reopen a case",
    "rate_case": "rate a case",
    "request_human": "talk to a person",
}
#: Intents that only add details (an order id, a number…) to the request before them.
DETAILS = frozenset({"inform", "affirm", "deny"})
#: The guard's and the hub's handoff reasons, in words.
REASONS: dict[str, str] = {
    "customer_request": "The customer asked for a person.",
    "frustration": "The customer is frustrated or angry.",
    "repeated_request": "The customer asked for the same thing a second time and the bot had not solved it.",
    "repeated_fallback": "The bot did not understand the customer twice.",
    "repeated_reply": "The bot was about to repeat a reply it had already sent.",
    "turn_budget": "The bot used up its unresolved turns without solving the request.",
    "brain_error": "A technical problem (model, action server or database) stopped the bot.",
    "timeout": "The bot took too long to answer.",
    "action_request": "The bot's action needs a specialist for this request.",
    "transfer": "Another agent transferred the conversation to this queue.",
    "danger": "The customer may be in danger: priority handling.",
}
_DANGER_WORDS = ("danger", "emergency", "threat", "harass", "stalk", "violence", "self_harm", "medical")
_AMOUNT = re.compile(
    r"(?:[$¥£€]|rmb|usd|hkd|nt\$|cny)\s?\d+(?:[.,]\d+)?|\d+(?:[.,]\d+)?\s?(?:元|块|塊|蚊|dollars?|yuan|rmb|usd|hkd)",
    re.IGNORECASE,
)
_QUESTION = re.compile(r"[?？]\s*$")


@lru_cache(maxsize=1)
def _entity_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """``(entity, compiled pattern)`` from the NLU's regex file (empty when it is missing)."""
    try:
        raw = yaml.safe_load(REGEXES.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return ()
    out = []
    for item in raw.get("nlu") or ():
        name = item.get("regex")
        for line in str(item.get("examples") or "").splitlines():
            line = line.strip()
            if name and line.startswith("- "):
                out.append((str(name), re.compile(line[2:], re.IGNORECASE)))
    return tuple(out)


def extract_entities(text: str, catalogue: PlanCatalogue | None = None) -> dict[str, str]:
    """Case number, order id, phone, amount and plan mentioned in ``text`` (first of each)."""
    # The NLU matches after folding full width to half width; so do we.
    folded = unicodedata.normalize("NFKC", text)
    found: dict[str, str] = {}
    for name, pattern in _entity_patterns():
        if name not in found:
            m = pattern.search(folded)
            if m:
                found[name] = m.group(0).strip()
    if not any(name == "amount" for name, _ in _entity_patterns()):  # the NLU's own pattern first
        amount = _AMOUNT.search(folded)
        if amount:
            found["amount"] = amount.group(0).strip()
    if catalogue is not None:
        plan = catalogue.resolve(text)
        if plan:
            found["plan"] = plan
    return found


@dataclass(frozen=True)
class CaseFacts:
    number: str
    category: str
    stage: str
    order_id: str | None = None
    amount: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class PlanFacts:
    kind: str
    from_plan: str | None
    to_plan: str | None
    effective_date: date


@dataclass
class Request:
    """One thing the customer asked for, with the entities that came with it."""

    intent: str | None
    label: str
    seq: int
    text: str
    entities: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"intent": self.intent, "label": self.label, "seq": self.seq, "text": self.text,
                "entities": dict(self.entities)}


@dataclass(frozen=True)
class HandoffSummary:
    lang: str
    language: str
    requests: tuple[Request, ...]
    signals: tuple[dict[str, Any], ...]
    bot_did: tuple[str, ...]
    questions: tuple[dict[str, Any], ...]
    reason: str | None
    reason_text: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lang": self.lang, "language": self.language, "requests": [r.to_dict() for r in self.requests],
            "signals": list(self.signals), "bot_did": list(self.bot_did), "questions": list(self.questions),
            "reason": self.reason, "reason_text": self.reason_text,
        }


def _excerpt(text: str, n: int = 120) -> str:
    # The agent reads this: a case link a customer pasted (or the bot sent) loses its token, as in
    # the transcript (the link is the customer's credential, docs/cases.md).
    text = " ".join(redact_links(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _category(intent: str | None) -> str | None:
    """The case category a request intent opens (as the routing decides it)."""
    if intent in ("downgrade_plan", "upgrade_plan", "cancel_subscription"):
        return "plan_change"
    return CATEGORY_BY_INTENT.get(intent or "")


def _signal_kind(intent: str | None) -> str | None:
    if not intent:
        return None
    if intent == "express_frustration":
        return "frustration"
    return "danger" if any(w in intent for w in _DANGER_WORDS) else None


def build_summary(
    messages: Sequence[MessageRecord],
    *,
    lang: str | None,
    reason: str | None,
    case: CaseFacts | None = None,
    plan_changes: Sequence[PlanFacts] = (),
    catalogue: PlanCatalogue | None = None,
) -> HandoffSummary:
    """The summary of a conversation from its stored facts (pure)."""
    requests: list[Request] = []
    by_intent: dict[str, Request] = {}
    signals: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    open_question: dict[str, Any] | None = None
    for m in messages:
        if m.sender == "bot" and _QUESTION.search(m.text):
            open_question = {"seq": m.seq, "question": _excerpt(m.text), "answer": None}
            questions.append(open_question)
            continue
        if m.sender != "customer":
            continue
        if open_question is not None:
            # Asking for a person instead is no answer to the bot's question.
            if m.intent != "request_human" and not asks_for_human(m.text):
                open_question["answer"] = _excerpt(m.text)
            open_question = None
        entities = extract_entities(m.text, catalogue)
        kind = _signal_kind(m.intent)
        if kind:
            signals.append({"kind": kind, "seq": m.seq, "text": _excerpt(m.text)})
        if m.intent in REQUESTS:
            if m.intent in by_intent:  # asked again: one line, with every detail
                by_intent[m.intent].entities.update({k: v for k, v in entities.items()
                                                     if k not in by_intent[m.intent].entities})
                continue
            request = Request(m.intent, REQUESTS[m.intent], m.seq, _excerpt(m.text), entities)
            by_intent[m.intent] = request
            requests.append(request)
        elif entities and requests and (m.intent in DETAILS or m.intent is None):
            requests[-1].entities.update({k: v for k, v in entities.items() if k not in requests[-1].entities})
        elif entities:
            requests.append(Request(m.intent, "said", m.seq, _excerpt(m.text), entities))
    bot_did: list[str] = []
    if case is not None:
        details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in
                            (("order_id", case.order_id), ("amount", case.amount), ("phone", case.phone)) if v)
        bot_did.append(f"Opened case {case.number} ({case.category}, {case.stage.replace('_', ' ')})"
                       + (f": {details}" if details else ""))
        for request in requests:  # the case's details belong to the request it was opened for
            if _category(request.intent) != case.category:
                continue
            for k, v in (("order_id", case.order_id), ("amount", case.amount), ("phone", case.phone)):
                if v and k not in request.entities:
                    request.entities[k] = v
    for p in plan_changes:
        pending = p.effective_date > date.today()
        bot_did.append(f"Recorded a {p.kind}: {p.from_plan or 'none'} → {p.to_plan or 'none'}, effective "
                       f"{p.effective_date.isoformat()}" + (" (pending)" if pending else ""))
    if questions:
        answered = sum(1 for q in questions if q["answer"])
        bot_did.append(f"Asked {len(questions)} question{'s' if len(questions) != 1 else ''}, "
                       f"{answered} answered")
    if reason and (reason == "frustration" or any(w in reason for w in _DANGER_WORDS)):
        kind = "frustration" if reason == "frustration" else "danger"
        if not any(s["kind"] == kind for s in signals):
            signals.append({"kind": kind, "seq": None, "text": REASONS.get(reason, reason)})
    code = lang or "en"
    return HandoffSummary(
        lang=code, language=LANGUAGE_NAMES.get(code, code), requests=tuple(requests), signals=tuple(signals),
        bot_did=tuple(bot_did), questions=tuple(questions[-5:]), reason=reason,
        reason_text=REASONS.get(reason, reason.replace("_", " ")) if reason else None,
    )


class SummaryService:
    """Reads a conversation's facts from the store and summarises them."""

    def __init__(self, db: Database, config: HumanlineConfig, conversations: ConversationService | None = None):
        self.db = db
        self.conversations = conversations or ConversationService(db)
        self.catalogue = PlanCatalogue.from_config(config) if config.plans is not None else None

    def summary(self, conversation_id: str) -> dict[str, Any] | None:
        """The summary of a conversation as the console shows it (``None`` if it does not exist)."""
        with self.db.session() as s:
            conv = s.get(Conversation, conversation_id)
            if conv is None:
                return None
            reason = s.execute(
                select(Handoff.reason).where(Handoff.conversation_id == conversation_id)
                .order_by(Handoff.requested_at.desc(), Handoff.id.desc()).limit(1)
            ).scalar_one_or_none()
            case = s.get(Case, conv.case_id) if conv.case_id is not None else None
            case_facts = CaseFacts(case.number, case.category, case.stage, case.order_id, case.amount,
                                   case.phone) if case is not None else None
            changes = s.execute(
                select(PlanChange).where(
                    PlanChange.visitor_id == conv.visitor_id, PlanChange.requested_at >= conv.created_at
                ).order_by(PlanChange.id)
            ).scalars().all()
            plan_facts = [PlanFacts(p.kind, p.from_plan, p.to_plan, p.effective_date) for p in changes]
            lang = conv.lang
        messages = self.conversations.messages_after(conversation_id, 0)
        return build_summary(messages, lang=lang, reason=reason, case=case_facts, plan_changes=plan_facts,
                             catalogue=self.catalogue).to_dict()
