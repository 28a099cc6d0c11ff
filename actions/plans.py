"""Plan changes: a proposal first, recorded only when the customer confirms it (promise 5).

Upgrade, downgrade, cancellation and the withdrawal of a scheduled change take the same steps:

1. ``plan_change_form`` collects the target plan (nothing to ask for a cancellation);
2. ``action_propose_plan_change`` states the change — plan in effect → new plan, the date it
   takes effect, the monthly price difference — with the buttons *Confirm* (``/affirm``),
   *Change something* (``/deny``) and *Talk to a person* (``/request_human``), and keeps the
   proposal in the slot ``plan_proposal``. Nothing is recorded. A "how do I …" question gets
   the answer (where in the app, when it applies) before the same proposal;
3. ``affirm`` → ``action_change_plan`` records exactly that proposal
   (:meth:`bot.services.plans.PlanChangeService.confirm`); ``deny`` → ``action_revise_plan_change``
   records nothing and asks what to change.

Every business rule (kinds by rank, the effective date, what is pending) is in
:mod:`bot.services.plans`; these classes read the tracker and choose the response. The same
response serves every kind, so the three paths also read the same.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.services import ServiceAction, format_date, lang_of, latest_entity, services, visitor_of
from bot.services.plans import (
    KIND_NAMES,
    NO_PLAN,
    WITHDRAW,
    AlreadyScheduled,
    PlanChangeProposal,
    PlanTargetRequired,
    ProposalOutdated,
    SamePlan,
    UnknownPlan,
    is_how_to_question,
)

KIND_BY_INTENT = {"upgrade_plan": "upgrade", "downgrade_plan": "downgrade", "cancel_subscription": "cancel"}
PROPOSAL_SLOT = "plan_proposal"
PROPOSED_FLAG = "plan_change_proposed"
# The action whose reply is a proposal: a "yes" right after it confirms it.
PROPOSING_ACTIONS = ("action_propose_plan_change",)

CLEAR_PROPOSAL: list[EventType] = [SlotSet(PROPOSAL_SLOT, None), SlotSet(PROPOSED_FLAG, None)]
CLEAR_REQUEST: list[EventType] = [SlotSet("plan", None), SlotSet("plan_change_kind", None)]


def requested_kind(tracker: Tracker) -> str | None:
    """upgrade / downgrade / cancel as the customer asked (slot set from the intent), if known."""
    kind = tracker.get_slot("plan_change_kind")
    if kind in KIND_BY_INTENT.values():
        return str(kind)
    return KIND_BY_INTENT.get(str((tracker.latest_message.get("intent") or {}).get("name")))


def request_texts(tracker: Tracker) -> list[str]:
    """The customer's words of this request: the latest message, and the message that asked for
    the plan change if the form asked for the plan in between. Not earlier than the last proposal:
    a "how do I …" already answered is not answered again when the customer picks another plan."""
    texts = [str((tracker.latest_message or {}).get("text") or "")]
    events = list(tracker.events)
    last_user = max((i for i, e in enumerate(events) if e.get("event") == "user"), default=len(events))
    for event in reversed(events[:last_user]):
        if event.get("event") == "action" and event.get("name") in (*PROPOSING_ACTIONS, "action_revise_plan_change"):
            break
        if event.get("event") == "user":
            intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
            if intent in KIND_BY_INTENT:
                texts.append(str(event.get("text") or ""))
                break
    return texts


def answers_a_proposal(tracker: Tracker) -> bool:
    """True when the bot's last action before the latest customer message proposed a plan change:
    a "yes" then answers that proposal and nothing older (a proposal left standing while the
    conversation moved on is never confirmed by a later, unrelated "yes")."""
    events = list(tracker.events)
    last_user = max((i for i, e in enumerate(events) if e.get("event") == "user"), default=None)
    if last_user is None:
        return False
    for event in reversed(events[:last_user]):
        if event.get("event") == "action" and event.get("name") != "action_listen":
            return event.get("name") in PROPOSING_ACTIONS
    return False


def _money(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def _difference(value: float) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "±") + _money(abs(value))


def utter_proposal(dispatcher: CollectingDispatcher, proposal: PlanChangeProposal, lang: str) -> list[EventType]:
    """Say the proposal (one response for every kind) and keep it for the confirmation."""
    catalogue = services().plans.catalogue

    def name(plan: str | None) -> str:
        return catalogue.name(plan, lang) or NO_PLAN[lang]

    pending = proposal.pending
    if proposal.kind == WITHDRAW and pending is not None:
        dispatcher.utter_message(
            response="utter_plan_change_withdraw_proposal",
            change_name=KIND_NAMES[lang][pending.kind],
            pending_name=name(pending.to_plan),
            effective_date=format_date(pending.effective_date, lang),
            current_name=name(proposal.from_plan),
            current_price=_money(proposal.from_price),
        )
    else:
        # One message either way (a second, separate note would repeat word for word when the
        # customer revises, and the guard hands off on a repeated reply).
        replacing: dict[str, Any] = {}
        if pending is not None:
            replacing = {
                "pending_change_name": KIND_NAMES[lang][pending.kind],
                "pending_name": name(pending.to_plan),
                "pending_date": format_date(pending.effective_date, lang),
            }
        dispatcher.utter_message(
            response="utter_plan_change_proposal_replacing" if pending is not None else "utter_plan_change_proposal",
            change_name=KIND_NAMES[lang][proposal.kind],
            from_name=name(proposal.from_plan),
            to_name=name(proposal.to_plan),
            effective_date=format_date(proposal.effective_date, lang),
            from_price=_money(proposal.from_price),
            to_price=_money(proposal.to_price),
            price_difference=_difference(proposal.price_difference),
            **replacing,
        )
    return [SlotSet(PROPOSAL_SLOT, proposal.as_slot()), SlotSet(PROPOSED_FLAG, True)]


class ActionProposePlanChange(ServiceAction):
    """State the change and offer Confirm / Change something / Talk to a person. Records nothing,
    and does not set ``resolution``: the customer's goal is not reached yet."""

    def name(self) -> str:
        return "action_propose_plan_change"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        kind = requested_kind(tracker)
        # A cancellation only takes a plan named in this very message (the plan being left, or a
        # cheaper one wanted): never one remembered from earlier in the conversation.
        target = latest_entity(tracker, "plan") if kind == "cancel" else tracker.get_slot("plan")
        plans = services().plans
        catalogue = plans.catalogue
        try:
            proposal = plans.propose(visitor_of(tracker), target, kind)
        except UnknownPlan:
            dispatcher.utter_message(response="utter_plan_unknown")
            return [*CLEAR_REQUEST, *CLEAR_PROPOSAL]
        except PlanTargetRequired:
            dispatcher.utter_message(response="utter_ask_plan_change_form_plan")
            return [*CLEAR_REQUEST, *CLEAR_PROPOSAL]
        except AlreadyScheduled as scheduled:
            # The same change again: its status, not "nothing to change" and not a second record.
            pending = scheduled.pending
            dispatcher.utter_message(
                response="utter_plan_change_already_scheduled",
                change_name=KIND_NAMES[lang][pending.kind],
                plan_name=catalogue.name(pending.to_plan, lang) or NO_PLAN[lang],
                effective_date=format_date(pending.effective_date, lang),
                case_number=scheduled.case_number or "—",
                current_name=catalogue.name(scheduled.current_plan, lang) or NO_PLAN[lang],
            )
            return [
                SlotSet("case_number", scheduled.case_number),
                SlotSet("case_category", "plan_change"),
                SlotSet("resolution", "status_returned"),
                *CLEAR_REQUEST,
                *CLEAR_PROPOSAL,
            ]
        except SamePlan:
            if target is None:
                dispatcher.utter_message(response="utter_nothing_to_cancel")
            else:
                resolved = catalogue.resolve(target)
                name = catalogue.name(resolved, lang) if resolved else target
                dispatcher.utter_message(response="utter_plan_unchanged", plan_name=name)
            return [*CLEAR_REQUEST, *CLEAR_PROPOSAL]
        if any(is_how_to_question(text) for text in request_texts(tracker)):
            dispatcher.utter_message(response="utter_plan_change_how")
        return [*CLEAR_REQUEST, *utter_proposal(dispatcher, proposal, lang)]


class ActionChangePlan(ServiceAction):
    """The customer confirmed: record exactly the proposal they saw, and say when it takes effect."""

    def name(self) -> str:
        return "action_change_plan"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        lang = lang_of(tracker)
        shown = tracker.get_slot(PROPOSAL_SLOT)
        if not isinstance(shown, dict) or not answers_a_proposal(tracker):
            dispatcher.utter_message(response="utter_plan_change_not_proposed")
            return [*CLEAR_PROPOSAL]
        plans = services().plans
        try:
            change = plans.confirm(
                visitor_of(tracker),
                shown,
                lang,
                conversation_id=tracker.sender_id,
                phone=tracker.get_slot("phone"),
            )
        except ProposalOutdated:
            # Nothing recorded; the customer asks again and sees the summary of the account as it is.
            # (Always cleared: the confirmation rule ends with the proposal cleared.)
            dispatcher.utter_message(response="utter_plan_change_outdated")
            return [*CLEAR_REQUEST, *CLEAR_PROPOSAL]
        catalogue = plans.catalogue
        current_name = catalogue.name(change.from_plan, lang) or NO_PLAN[lang]
        effective = format_date(change.effective_date, lang)
        if change.kind == WITHDRAW and change.replaced is not None:
            dispatcher.utter_message(
                response="utter_plan_change_withdrawn",
                change_name=KIND_NAMES[lang][change.replaced.kind],
                plan_name=catalogue.name(change.replaced.to_plan, lang) or NO_PLAN[lang],
                case_number=change.case_number,
                current_name=current_name,
            )
        elif change.kind == "cancel":
            dispatcher.utter_message(
                response="utter_cancellation_recorded",
                case_number=change.case_number,
                effective_date=effective,
                current_name=current_name,
                current_plan=change.from_plan or "",  # the Undo button: back to the plan in effect
            )
        else:
            dispatcher.utter_message(
                response="utter_plan_change_recorded",
                plan_name=catalogue.name(change.to_plan, lang),
                case_number=change.case_number,
                effective_date=effective,
                current_name=current_name,
                current_plan=change.from_plan or "",  # the Undo button: back to the plan in effect
            )
        return [
            SlotSet("case_number", change.case_number),
            SlotSet("case_category", "plan_change"),
            SlotSet("resolution", "plan_change_recorded"),
            *CLEAR_REQUEST,
            *CLEAR_PROPOSAL,
        ]


class ActionRevisePlanChange(ServiceAction):
    """The customer said no (or *Change something*): nothing is recorded; ask which plan instead."""

    def name(self) -> str:
        return "action_revise_plan_change"

    def act(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType]:
        if answers_a_proposal(tracker):
            dispatcher.utter_message(response="utter_plan_change_revise")
        else:  # a "no" to something else; the old proposal is dropped all the same
            dispatcher.utter_message(response="utter_deny_ack")
        return [*CLEAR_REQUEST, *CLEAR_PROPOSAL]
