"""Case category → specialist queue, and queue display names.

The mapping lives in ``config/humanline.yml`` (``routing``); this module is the only place
that reads it. Categories: ``service``, ``billing``, ``refund``, ``privacy``, ``plan_change``, and
``general`` — a plain request for a person that no agent can take now still gets a case (P4).
"""

from __future__ import annotations

from bot.services.config import HumanlineConfig

CATEGORIES: tuple[str, ...] = ("service", "billing", "privacy", "plan_change", "refund", "general")

_default: HumanlineConfig | None = None


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


def default_queue(config: HumanlineConfig | None = None) -> str:
    """The queue of a handoff without a case category (a plain request for a person)."""
    return _config(config).default_queue


def queue_display(queue: str, lang: str | None = "en", config: HumanlineConfig | None = None) -> str:
    """The customer-facing name of ``queue`` in ``lang`` (``en``/``zh-Hans``/``zh-Hant``).

    Falls back to English, then to the queue id itself for a queue not in the configuration.
    """
    q = _config(config).queues.get(queue)
    return q.display_for(lang) if q is not None else queue


__all__ = ["CATEGORIES", "default_queue", "queue_display", "route"]
