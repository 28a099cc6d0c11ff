"""Case category → specialist queue, the queue of a handoff, and queue display names.

The mapping lives in ``config/humanline.yml`` (``routing``); this module is the only place
that reads it. Categories: ``service``, ``billing``, ``refund``, ``privacy``, ``plan_change``,
``general`` — a plain request for a person that no agent can take now still gets a case (P4) — and
``safety``, a danger report (promise 9).

The queue of a handoff follows the conversation's request (:func:`handoff_queue`): the category of
its open case, else of the last request understood in it, else the default queue; a danger report
goes to the danger queue whatever the request.
"""

from __future__ import annotations

from collections.abc import Iterable

from bot.services.config import HumanlineConfig

CATEGORIES: tuple[str, ...] = ("service", "billing", "privacy", "plan_change", "refund", "general", "safety")

# The intent that asks for a case → the case's category. The open-case form opens cases by it,
# and the hub uses it too when it opens a case itself (no agent online for a handoff).
CATEGORY_BY_INTENT: dict[str, str] = {
    "complaint_service": "service",
    "complaint_billing": "billing",
    "complaint_privacy": "privacy",
    "request_refund": "refund",
}
# Plan changes go through the plan-change form, not the open-case form; a handoff after one is
# still a plan-change case.
_PLAN_INTENTS = frozenset({"downgrade_plan", "upgrade_plan", "cancel_subscription"})

_default: HumanlineConfig | None = None


def category_of_intent(intent: str | None) -> str | None:
    """The case category a request of ``intent`` belongs to (``"downgrade_plan"`` → ``"plan_change"``),
    or ``None`` for an intent that is no request with a category (small talk, a status question…)."""
    if intent in _PLAN_INTENTS:
        return "plan_change"
    return CATEGORY_BY_INTENT.get(intent or "")


def _config(config: HumanlineConfig | None) -> HumanlineConfig:
    global _default
    if config is not None:
        return config
    if _default is None:
        _default = HumanlineConfig.load()
    return _default


def route(category: str, config: HumanlineConfig | None = None) -> str:
    """The queue a case of ``category`` goes to (e.g. ``"refund"`` → ``"finance_compliance"``).

    :param config: the configuration; default: ``HumanlineConfig.load()`` (cached).
    :raises ValueError: unknown category.
    """
    return _config(config).queue_for(category)


def category_for(intent: str | None, queue: str, config: HumanlineConfig | None = None) -> str | None:
    """The case category for a handoff to ``queue`` after ``intent``.

    The intent's category when it routes to ``queue`` (a refund request stays ``refund`` though
    billing shares its queue); otherwise the first category routed to ``queue``; ``None`` when
    no category routes there.
    """
    routing = _config(config).routing
    category = category_of_intent(intent)
    if category is not None and routing.get(category) == queue:
        return category
    return next((c for c, q in routing.items() if q == queue), None)


def handoff_queue(
    case_category: str | None, intents: Iterable[str | None], config: HumanlineConfig | None = None,
    *, danger: bool = False,
) -> str:
    """The queue a new handoff goes to: it follows the conversation's request (issue #12, item 5).

    In order: the danger queue when the customer reported danger; the queue of ``case_category``
    (the conversation's open case); the queue of the first of ``intents`` (the conversation's
    understood intents, newest first) that has a category; the default queue when nothing is known.

    :param case_category: the category of the conversation's open case, if any.
    :param intents: the intents understood in the conversation, newest first (``None`` entries and
        intents without a category are skipped).
    :param danger: the handoff is for a danger report.
    """
    cfg = _config(config)
    if danger:
        return cfg.danger_queue or cfg.default_queue
    if case_category is not None and case_category in cfg.routing:
        return cfg.routing[case_category]
    for intent in intents:
        category = category_of_intent(intent)
        if category is not None and category in cfg.routing:
            return cfg.routing[category]
    return cfg.default_queue


def default_queue(config: HumanlineConfig | None = None) -> str:
    """The queue of a handoff without a case category (a plain request for a person)."""
    return _config(config).default_queue


def queue_display(queue: str, lang: str | None = "en", config: HumanlineConfig | None = None) -> str:
    """The customer-facing name of ``queue`` in ``lang`` (``en``/``zh-Hans``/``zh-Hant``).

    Falls back to English, then to the queue id itself for a queue not in the configuration.
    """
    return _config(config).queue_display(queue, lang)


def first_response_minutes(queue: str | None, config: HumanlineConfig | None = None) -> int:
    """Minutes allowed for the first human response in ``queue`` (see
    :meth:`HumanlineConfig.first_response_minutes`)."""
    return _config(config).first_response_minutes(queue)


__all__ = [
    "CATEGORIES", "CATEGORY_BY_INTENT", "category_for", "category_of_intent", "default_queue",
    "first_response_minutes", "handoff_queue",
    "queue_display", "route",
]
