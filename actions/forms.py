"""Form validation: what the two forms accept, and when they ask nothing at all.

* ``case_reference_form`` (billing complaints, refunds) asks at most **one** optional question.
  Every answer is accepted — an order number or phone (the entities), "no"/"没有"/"沒有" or a
  request for a person ("none"), or any other text (kept as the reference) — so it is never
  asked twice and the case is opened on the next step.
* ``plan_change_form`` (upgrade, downgrade, cancel) asks for the target plan only when it is
  missing and the request is not a cancellation; the same question for upgrades and downgrades.
"""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.types import DomainDict

from actions.services import latest_entity, services

NO_REFERENCE = "none"
# "No" / "I don't have one" in the customer's words (also Cantonese "冇").
_NEGATIVE = re.compile(
    r"^\s*(no+|nope|none|n/?a|nothing|don'?t have( one| it)?|i don'?t have( one| it)?|skip|"
    r"没有|沒有|没|沒|冇|无|無|不用|不知道|唔知|算了)\s*[.!。！]*\s*$",
    re.IGNORECASE,
)
_SKIP_INTENTS = {"deny", "request_human", "express_frustration"}


class ValidateCaseReferenceForm(FormValidationAction):
    def name(self) -> str:
        return "validate_case_reference_form"

    def validate_case_reference(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        entity = latest_entity(tracker, "order_id") or latest_entity(tracker, "phone")
        if entity:
            return {"case_reference": entity}
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        text = str(value or "").strip()
        if intent in _SKIP_INTENTS or not text or _NEGATIVE.match(text):
            return {"case_reference": NO_REFERENCE}
        return {"case_reference": text[:200]}


class ValidatePlanChangeForm(FormValidationAction):
    def name(self) -> str:
        return "validate_plan_change_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        if tracker.get_slot("plan_change_kind") == "cancel":
            return []
        return domain_slots

    async def extract_plan(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """When asked for the plan, a plan named in any words counts, even if the NLU missed it."""
        if tracker.get_slot("requested_slot") != "plan" or latest_entity(tracker, "plan"):
            return {}
        try:
            plan = services().plans.catalogue.resolve((tracker.latest_message or {}).get("text"))
        except Exception:  # noqa: BLE001 - the form then asks again; the guard bounds the turns
            return {}
        return {"plan": plan} if plan else {}

    def validate_plan(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        plan = services().plans.catalogue.resolve(str(value)) if value else None
        if plan is None:
            dispatcher.utter_message(response="utter_plan_unknown")
            return {"plan": None}
        return {"plan": plan}
