"""Case actions: open a case, tell its status, reopen it, rate its handling.

Thin on purpose: which queue, which number, who may see a case and what a stage means are
decided by :class:`bot.services.cases.CaseService`; these classes only read the tracker, call
the service and choose the response.
"""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.services import ServiceAction, lang_of, latest_entity, services, visitor_of
from bot.services.case_links import link_line
from bot.services.cases import CaseStateError, ReopenWindowClosed, normalise_number, stage_display
from bot.services.routing import CATEGORY_BY_INTENT

# Something that is meant as a case number even when the NLU did not extract one ("HL-2026-11").
_LOOKS_LIKE_CASE = re.compile(r"\bHL[-_ ]?[0-9][0-9 _-]*\b", re.IGNORECASE)
# Word forms of a rating.
_RATING_WORDS = {
    **{"一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5},
    **{"one": 1, "two": 2, "three": 3, "four": 4, "five": 5},
}


def case_reply(case: Any, lang: str) -> dict[str, Any]:
    """The variables every case response uses."""
    config = services().config
    return {
        "case_number": case.number,
        "queue_name": config.queue_display(case.queue, lang),
        "eta_minutes": config.first_response_minutes(case.queue),
        "stage_name": stage_display(case.stage, lang),
    }


def _to_the_team(
    dispatcher: CollectingDispatcher, case: Any, lang: str, response: str, outcome: str
) -> list[EventType]:
    """Tell the customer the case is with its team (``response``: number, queue, expected first
    response, then the case link) and hand the conversation to the case's queue (``outcome`` is
    the resolution and the handoff reason)."""
    reply = case_reply(case, lang)
    dispatcher.utter_message(response=response, case_number=reply["case_number"], queue_name=reply["queue_name"],
                             eta_minutes=reply["eta_minutes"])
    send_case_link(dispatcher, case, lang)
    return [
        SlotSet("case_number", case.number),
        SlotSet("case_category", case.category),
        SlotSet("resolution", outcome),
        SlotSet("handoff_queue", case.queue),
        SlotSet("handoff_reason", outcome),
    ]


def send_case_link(dispatcher: CollectingDispatcher, case: Any, lang: str) -> None:
    """Add the signed link to the customer's case page under a case reply (when links are set up)."""
    links = services().links
    if links is not None:
        dispatcher.utter_message(text=link_line(links.url(case.number), lang))


def latest_case(visitor_id: str) -> Any | None:
    """The visitor's newest case, if any."""
    own = services().cases.for_visitor(visitor_id)
    return own[0] if own else None


def requested_number(tracker: Tracker) -> str | None:
    """The case number the customer gave: entity of this message, then the slot, then anything
    in the text that looks like one (so that a malformed number gets the format explained)."""
    raw = latest_entity(tracker, "case_id") or tracker.get_slot("case_id")
    if raw:
        return str(raw).strip()
    match = _LOOKS_LIKE_CASE.search((tracker.latest_message or {}).get("text") or "")
    return match.group(0).strip() if match else None


def _trigger(tracker: Tracker) -> tuple[str, str]:
    """(category, customer text) of the latest user message that asked for a case."""
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent in CATEGORY_BY_INTENT:
            return CATEGORY_BY_INTENT[intent], event.get("text") or ""
    intent = str((tracker.latest_message.get("intent") or {}).get("name"))
    return CATEGORY_BY_INTENT.get(intent, "service"), tracker.latest_message.get("text") or ""


class ActionOpenCase(ServiceAction):
    """Complaint or refund → a case with a number, a specialist queue and a first-response time."""

    def name(self) -> str:
        return "action_open_case"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        category, description = _trigger(tracker)
        reference = tracker.get_slot("case_reference")
        order_id = tracker.get_slot("order_id")
        phone = tracker.get_slot("phone")
        if reference and reference != "none" and reference not in (order_id, phone):
            description = f"{description}\n(reference: {reference})"
        case = services().cases.open_case(
            category=category,
            description=description,
            visitor_id=visitor_of(tracker),
            conversation_id=tracker.sender_id,
            lang=lang,
            order_id=order_id,
            phone=phone,
            amount=tracker.get_slot("amount"),
        )
        return [
            *_to_the_team(dispatcher, case, lang, "utter_case_opened", "case_opened"),
            # the references belonged to this case; the next one starts clean
            SlotSet("case_reference", None),
            SlotSet("order_id", None),
            SlotSet("phone", None),
            SlotSet("amount", None),
        ]


class ActionCaseStatus(ServiceAction):
    """The stage of one of the customer's own cases. Someone else's and unknown numbers get the
    same answer, so the reply never tells whether a number exists."""

    def name(self) -> str:
        return "action_case_status"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        cases = services().cases
        visitor = visitor_of(tracker)
        raw = requested_number(tracker)
        if raw is None:
            case = latest_case(visitor)
            if case is None:
                dispatcher.utter_message(response="utter_ask_case_number")
                return []
        else:
            number = normalise_number(raw)
            if number is None:
                dispatcher.utter_message(response="utter_case_number_malformed", case_id=raw)
                return [SlotSet("case_id", None)]
            case = cases.get_for_visitor(number, visitor)
            if case is None:
                dispatcher.utter_message(response="utter_case_not_found", case_number=number)
                return [SlotSet("case_id", None)]
        return _tell_status(dispatcher, case, lang, "utter_case_status")


def _tell_status(dispatcher: CollectingDispatcher, case: Any, lang: str, response: str) -> list[EventType]:
    """Tell the customer where their case stands; the turn is resolved with the status."""
    reply = case_reply(case, lang)
    dispatcher.utter_message(
        response=response,
        case_number=reply["case_number"],
        stage_name=reply["stage_name"],
        queue_name=reply["queue_name"],
    )
    send_case_link(dispatcher, case, lang)
    return [
        SlotSet("case_number", case.number),
        SlotSet("case_category", case.category),
        SlotSet("resolution", "status_returned"),
    ]


def _own_case(tracker: Tracker, dispatcher: CollectingDispatcher) -> Any | None:
    """The customer's case meant by this message (number given, else the latest one), or None
    after telling the customer why not."""
    cases = services().cases
    visitor = visitor_of(tracker)
    raw = requested_number(tracker) or tracker.get_slot("case_number")
    if raw is None:
        case = latest_case(visitor)
        if case is None:
            dispatcher.utter_message(response="utter_ask_case_number")
        return case
    number = normalise_number(raw)
    if number is None:
        dispatcher.utter_message(response="utter_case_number_malformed", case_id=raw)
        return None
    case = cases.get_for_visitor(number, visitor)
    if case is None:
        dispatcher.utter_message(response="utter_case_not_found", case_number=number)
    return case


class ActionReopenCase(ServiceAction):
    """The problem is not solved: the case goes back to its specialist queue."""

    def name(self) -> str:
        return "action_reopen_case"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        case = _own_case(tracker, dispatcher)
        if case is None:
            return [SlotSet("case_id", None)]
        reason = (tracker.latest_message or {}).get("text") or ""
        try:
            case = services().cases.reopen(case.number, visitor_of(tracker), reason=reason)
        except ReopenWindowClosed:
            # Too long after the resolution: the team gets the customer's words; the customer is told why.
            services().cases.add_note(case.number, f"customer:{visitor_of(tracker)}", reason or "not solved")
            dispatcher.utter_message(text=services().cases.reopen_window_text(case, lang))
            return [SlotSet("case_number", case.number), SlotSet("case_category", case.category)]
        except CaseStateError:
            # Still open: the team gets the customer's words as a note; the customer gets the status.
            services().cases.add_note(case.number, f"customer:{visitor_of(tracker)}", reason or "not solved")
            return _tell_status(dispatcher, case, lang, "utter_case_still_open")
        return _to_the_team(dispatcher, case, lang, "utter_case_reopened", "case_reopened")


def parse_rating(value: Any) -> int | None:
    """1–5 from "4", "4.0", "five", "五", "五星", "4 stars"; None for anything else."""
    if value is None:
        return None
    text = str(value).strip().lower()
    match = re.search(r"\d+(?:\.\d+)?", text)
    words = (n for word, n in _RATING_WORDS.items() if word in text)
    score = int(float(match.group(0))) if match else next(words, 0)
    return score if 1 <= score <= 5 else None


class ActionRateCase(ServiceAction):
    """The customer scores the handling of a case (1–5)."""

    def name(self) -> str:
        return "action_rate_case"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        case = _own_case(tracker, dispatcher)
        if case is None:
            return [SlotSet("case_id", None)]
        raw = latest_entity(tracker, "rating") or tracker.get_slot("rating")
        if raw is None:
            dispatcher.utter_message(response="utter_ask_rating", case_number=case.number)
            return [SlotSet("case_number", case.number)]
        score = parse_rating(raw)
        if score is None:
            dispatcher.utter_message(response="utter_rating_invalid")
            return [SlotSet("rating", None), SlotSet("case_number", case.number)]
        try:
            case = services().cases.rate(case.number, visitor_of(tracker), score)
        except CaseStateError:
            dispatcher.utter_message(response="utter_rating_not_yet", case_number=case.number)
            return [SlotSet("case_number", case.number), SlotSet("rating", None)]
        dispatcher.utter_message(response="utter_case_rated", case_number=case.number, rating=score)
        return [
            SlotSet("case_number", case.number),
            SlotSet("rating", None),
            SlotSet("resolution", "rated"),
        ]
