"""``action_handoff``: the customer asked for a person or is upset — hand over at once."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.services import ServiceAction, lang_of, services


class ActionHandoff(ServiceAction):
    """Sets ``handoff_queue`` (the queue of the case in context, else the default queue) and
    ``handoff_reason`` (``frustration`` or ``customer_request``); the hub does the rest."""

    def name(self) -> str:
        return "action_handoff"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        config = services().config
        queue = config.queue_of_category(tracker.get_slot("case_category"))
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        reason = "frustration" if intent == "express_frustration" else "customer_request"
        dispatcher.utter_message(response="utter_handoff", queue_name=config.queue_display(queue, lang_of(tracker)))
        return [SlotSet("handoff_queue", queue), SlotSet("handoff_reason", reason)]
