"""Plan changes: upgrade, downgrade and cancellation through one action (promise 5).

The same form (``plan_change_form``) collects the target and this one action records every kind
of change with :meth:`bot.services.plans.PlanChangeService.request_change`, so the three paths
take the same number of turns, take effect by the same rule and carry no retention offer.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.services import ServiceAction, format_date, lang_of, services, visitor_of
from bot.services.plans import PlanTargetRequired, SamePlan, UnknownPlan

KIND_BY_INTENT = {"upgrade_plan": "upgrade", "downgrade_plan": "downgrade", "cancel_subscription": "cancel"}


def requested_kind(tracker: Tracker) -> str | None:
    """upgrade / downgrade / cancel as the customer asked (slot set from the intent), if known."""
    kind = tracker.get_slot("plan_change_kind")
    if kind in KIND_BY_INTENT.values():
        return str(kind)
    return KIND_BY_INTENT.get(str((tracker.latest_message.get("intent") or {}).get("name")))


class ActionChangePlan(ServiceAction):
    """Record the plan change and tell the customer when it takes effect."""

    def name(self) -> str:
        return "action_change_plan"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        kind = requested_kind(tracker)
        target = None if kind == "cancel" else tracker.get_slot("plan")
        plans = services().plans
        reset = [SlotSet("plan", None), SlotSet("plan_change_kind", None)]
        try:
            change = plans.request_change(
                visitor_of(tracker),
                target,
                kind,
                lang,
                conversation_id=tracker.sender_id,
                phone=tracker.get_slot("phone"),
            )
        except UnknownPlan:
            dispatcher.utter_message(response="utter_plan_unknown")
            return reset
        except PlanTargetRequired:
            dispatcher.utter_message(response="utter_ask_plan_change_form_plan")
            return reset
        except SamePlan:
            if target is None:
                dispatcher.utter_message(response="utter_nothing_to_cancel")
            else:
                resolved = plans.catalogue.resolve(target)
                name = plans.catalogue.name(resolved, lang) if resolved else target
                dispatcher.utter_message(response="utter_plan_unchanged", plan_name=name)
            return reset
        effective = format_date(change.effective_date, lang)
        if change.kind == "cancel":
            dispatcher.utter_message(
                response="utter_cancellation_recorded", case_number=change.case_number, effective_date=effective
            )
        else:
            dispatcher.utter_message(
                response="utter_plan_change_recorded",
                plan_name=plans.catalogue.name(change.to_plan, lang),
                case_number=change.case_number,
                effective_date=effective,
            )
        return [
            SlotSet("case_number", change.case_number),
            SlotSet("case_category", "plan_change"),
            SlotSet("resolution", "plan_change_recorded"),
            *reset,
        ]
