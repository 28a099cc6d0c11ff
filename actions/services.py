"""Wiring of the action server to the business services, plus what every action shares.

``services()`` builds, once per process, the :class:`~bot.store.db.Database` (``DATABASE_URL``,
default ``sqlite:///humanline.db``, migrated on first use), the :class:`CaseService`, the
:class:`PlanChangeService` with the account backend named by ``HUMANLINE_ACCOUNT_BACKEND``
(default: the local ``plan_changes`` table) and the configuration. Tests call ``services.cache_clear()`` after
pointing ``DATABASE_URL`` somewhere else.

:class:`ServiceAction` is the base of every custom action: it runs the action's ``act`` and turns
*any* exception into the failure reply (``utter_action_failed``) plus a request for a person
(``handoff_queue``, ``handoff_reason="action_error"``), so a failing service never leaves the
customer without an answer.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.i18n import lang_or_default
from bot.services.config import HumanlineConfig
from bot.settings import account_backend, database_url
from bot.store.db import Database

logger = logging.getLogger(__name__)

FALLBACK_QUEUE = "general"


@dataclass(frozen=True)
class Services:
    db: Database
    cases: Any  # bot.services.cases.CaseService
    plans: Any  # bot.services.plans.PlanChangeService
    config: HumanlineConfig
    links: Any = None  # bot.services.case_links.CaseLinks, None without a secret


@lru_cache(maxsize=1)
def services() -> Services:
    """The services of this action server process, built on first use."""
    from bot.services.case_links import links_from_env
    from bot.services.cases import CaseService
    from bot.services.plans import PlanChangeService, load_account_backend

    config = HumanlineConfig.load()
    db = Database(database_url())
    db.migrate()
    links = links_from_env(db)
    cases = CaseService(db, config, links=links)
    backend = load_account_backend(account_backend(), db, config)
    plans = PlanChangeService(db, config, backend=backend, cases=cases)
    return Services(db=db, cases=cases, plans=plans, config=config, links=links)


# --- what every action reads from the tracker ------------------------------------------------------


def lang_of(tracker: Tracker) -> str:
    """The customer's script (slot ``lang``), ``en`` when unknown."""
    return lang_or_default(tracker.get_slot("lang"))


def visitor_of(tracker: Tracker) -> str:
    """The visitor the hub put in the message metadata, else the conversation (sender) id."""
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    visitor = metadata.get("visitor_id") if isinstance(metadata, dict) else None
    return str(visitor) if visitor else tracker.sender_id


def latest_entity(tracker: Tracker, entity: str) -> str | None:
    """The value of ``entity`` in the latest user message, if any."""
    value = next(tracker.get_latest_entity_values(entity), None)
    return str(value) if value not in (None, "") else None


def format_date(value: date, lang: str) -> str:
    """A date as the customer writes it: ``1 December 2026`` / ``2026年12月1日``."""
    if lang in ("zh-Hans", "zh-Hant"):
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value.day} {value.strftime('%B')} {value.year}"


def fallback_queue(tracker: Tracker) -> str:
    """Where a failed action sends the customer: the queue of the case in context, else the default."""
    try:
        return HumanlineConfig.load().queue_of_category(tracker.get_slot("case_category"))
    except Exception:  # noqa: BLE001 - even a broken configuration must not silence the bot
        logger.exception("configuration unavailable while handling an action failure")
        return FALLBACK_QUEUE


class ServiceAction(Action, ABC):
    """A custom action whose work is in :meth:`act`; any exception becomes a handoff.

    Abstract, so that the action server does not register the base class itself.
    """

    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]: ...

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        try:
            return self.act(dispatcher, tracker, domain)
        except Exception:  # noqa: BLE001 - promise 1: never silence, always a person
            logger.exception("action %s failed for conversation %s", self.name(), tracker.sender_id)
            dispatcher.messages.clear()  # nothing half-done reaches the customer
            dispatcher.utter_message(response="utter_action_failed")
            return [
                SlotSet("handoff_queue", fallback_queue(tracker)),
                SlotSet("handoff_reason", "action_error"),
            ]
