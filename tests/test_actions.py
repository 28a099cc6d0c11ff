"""The custom actions, run directly (rasa_sdk ``CollectingDispatcher`` + a hand-built ``Tracker``)
against a real SQLite database in ``tmp_path``.

Replies are checked twice: the response name and variables the action chose, and the text the
domain renders from them for the customer's script (``render``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import update

from actions.cases import ActionCaseStatus, ActionOpenCase, ActionRateCase, ActionReopenCase
from actions.forms import ValidateCaseReferenceForm, ValidatePlanChangeForm
from actions.handoff import ActionHandoff
from actions.plans import ActionChangePlan, ActionProposePlanChange, ActionRevisePlanChange
from actions.services import services
from bot.i18n import LANGS
from bot.services.config import HumanlineConfig
from bot.store.models import Case, utcnow

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))
CONFIG = HumanlineConfig.load(ROOT / "config" / "humanline.yml")
CASE_NUMBER = re.compile(r"^HL-\d{8}-\d{4,}$")
# Characters that only Traditional writing uses, and their Simplified forms.
TRADITIONAL_ONLY = set("個為處應幫請還沒發單號務組經會這專問題帳戶見與")
SIMPLIFIED_ONLY = set("个为处应帮请还没发单号务组经会这专问题账户见与")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def svc(tmp_path, monkeypatch):
    """The action server's services on a fresh SQLite database."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'humanline.db'}")
    monkeypatch.delenv("HUMANLINE_CONFIG", raising=False)
    services.cache_clear()
    yield services()
    services().db.dispose()
    services.cache_clear()


def make_tracker(
    intent: str,
    text: str,
    *,
    lang: str = "en",
    visitor: str | None = "visitor-a",
    sender: str = "conv-1",
    entities: dict[str, str] | None = None,
    slots: dict[str, Any] | None = None,
    history: list[tuple[str, str]] = (),
    prior_actions: list[str] = (),
) -> Tracker:
    """A tracker whose latest user message is ``text`` classified as ``intent``.

    ``history`` adds earlier user messages (intent, text) before it; ``prior_actions`` are the
    bot's actions just before it (e.g. the proposal a "yes" answers).
    """
    metadata = {"visitor_id": visitor} if visitor else {}
    ents = [{"entity": k, "value": v, "start": 0, "end": 0} for k, v in (entities or {}).items()]
    latest = {"intent": {"name": intent, "confidence": 0.99}, "entities": ents, "text": text, "metadata": metadata}
    events: list[dict[str, Any]] = []
    for past_intent, past_text in history:
        parse = {"intent": {"name": past_intent, "confidence": 0.99}, "entities": [], "text": past_text}
        events.append({"event": "user", "text": past_text, "parse_data": parse, "metadata": metadata})
        events.append({"event": "action", "name": "action_listen"})
    events.extend({"event": "action", "name": name} for name in prior_actions)
    if prior_actions:
        events.append({"event": "action", "name": "action_listen"})
    events.append({"event": "user", "text": text, "parse_data": latest, "metadata": metadata})
    all_slots = {"lang": lang, **(slots or {})}
    return Tracker(sender, all_slots, latest, events, False, None, {}, "action_listen")


async def run(action: Any, tracker: Tracker) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run an action; returns (messages, slots set) — slots as a dict in event order."""
    dispatcher = CollectingDispatcher()
    events = await action.run(dispatcher, tracker, DOMAIN)
    slots = {e["name"]: e["value"] for e in events if e.get("event") == "slot"}
    return dispatcher.messages, slots


def render(message: dict[str, Any], lang: str) -> str:
    """The text the domain produces for this message in ``lang`` (conditional variation)."""
    variations = DOMAIN["responses"][message["response"]]
    chosen = next(
        v for v in variations if any(c.get("name") == "lang" and c.get("value") == lang for c in v.get("condition", []))
    )
    variables = {k: v for k, v in message.items() if k not in ("response", "template")}
    variables.update(message.get("custom") or {})
    return chosen["text"].format(**variables)


def assert_script(text: str, lang: str) -> None:
    chars = set(text)
    if lang == "zh-Hant":
        assert chars & TRADITIONAL_ONLY and not chars & SIMPLIFIED_ONLY, text
    elif lang == "zh-Hans":
        assert chars & SIMPLIFIED_ONLY and not chars & TRADITIONAL_ONLY, text
    else:
        assert not re.search(r"[\u4e00-\u9fff]", text.replace("{queue_name}", "")), text


def assert_case_link(svc: Any, message: dict[str, Any], number: str, lang: str) -> None:
    """``message`` is the line with the signed link to case ``number``'s page, in ``lang``'s script."""
    text = message["text"]
    url = text.split("：")[-1] if lang != "en" else text.split(": ")[-1]
    assert url.startswith(f"{svc.links.public_url}/case/{number}#t=")
    assert svc.links.verify(number, url.split("#t=")[1])
    assert_script(text.replace(url, ""), lang)


# ----------------------------------------------------------------------------- domain


def test_every_response_has_all_three_scripts_and_an_english_default() -> None:
    for name, variations in DOMAIN["responses"].items():
        default = [v for v in variations if "condition" not in v]
        by_lang = {c["value"]: v["text"] for v in variations for c in v.get("condition", []) if c["name"] == "lang"}
        assert set(by_lang) == set(LANGS), name
        assert len(default) == 1 and default[0]["text"] == by_lang["en"], name
        for lang, text in by_lang.items():
            assert_script(text, lang)


def test_no_retention_pitch_in_any_response() -> None:
    words = ("discount", "offer", "stay with us", "优惠", "優惠", "挽留", "折扣", "再考虑", "再考慮")
    for name, variations in DOMAIN["responses"].items():
        for v in variations:
            assert not any(w in v["text"].lower() for w in words), name


# ----------------------------------------------------------------------------- opening cases

CASE_INTENTS = {
    "complaint_service": ("service", "service_supervision"),
    "complaint_billing": ("billing", "finance_compliance"),
    "complaint_privacy": ("privacy", "data_protection"),
    "request_refund": ("refund", "finance_compliance"),
}
TEXTS = {
    "en": "the network drops every evening",
    "zh-Hans": "网络每天晚上都断线",
    "zh-Hant": "網路每天晚上都斷線，搞到我好煩",
}


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("intent", sorted(CASE_INTENTS))
async def test_open_case_tells_number_queue_and_eta_in_the_customers_script(svc, intent, lang) -> None:
    category, queue = CASE_INTENTS[intent]
    tracker = make_tracker(intent, TEXTS[lang], lang=lang, slots={"case_reference": "none"})
    messages, slots = await run(ActionOpenCase(), tracker)

    assert len(messages) == 2 and messages[0]["response"] == "utter_case_opened"
    msg = messages[0]
    assert_case_link(svc, messages[1], msg["case_number"], lang)
    assert CASE_NUMBER.match(msg["case_number"])
    assert msg["queue_name"] == CONFIG.queues[queue].display[lang]
    assert msg["eta_minutes"] == CONFIG.queues[queue].first_response_minutes
    text = render(msg, lang)
    assert msg["case_number"] in text and msg["queue_name"] in text and str(msg["eta_minutes"]) in text
    assert_script(text, lang)

    assert slots["case_number"] == msg["case_number"]
    assert slots["resolution"] == "case_opened"
    assert slots["handoff_queue"] == queue and slots["handoff_reason"] == "case_opened"
    case = svc.cases.get(msg["case_number"])
    assert case.category == category and case.queue == queue
    assert case.visitor_id == "visitor-a" and case.conversation_id == "conv-1"
    assert case.description == TEXTS[lang] and case.lang == lang


async def test_open_case_description_is_the_text_that_started_it_not_the_reference_answer(svc) -> None:
    tracker = make_tracker(
        "deny",
        "没有",
        lang="zh-Hans",
        slots={"case_reference": "none"},
        history=[("complaint_billing", "这个月被重复扣费了两次")],
    )
    messages, _ = await run(ActionOpenCase(), tracker)
    case = svc.cases.get(messages[0]["case_number"])
    assert case.category == "billing" and case.description == "这个月被重复扣费了两次"


async def test_visitor_falls_back_to_the_sender_id(svc) -> None:
    tracker = make_tracker("complaint_service", "no signal", visitor=None, sender="sender-9")
    messages, _ = await run(ActionOpenCase(), tracker)
    assert svc.cases.get(messages[0]["case_number"]).visitor_id == "sender-9"


@pytest.mark.parametrize(
    "slots,order_id",
    [({"case_reference": "none"}, None), ({"case_reference": "SO20261104", "order_id": "SO20261104"}, "SO20261104")],
)
async def test_refund_always_opens_a_refund_case(svc, slots, order_id) -> None:
    tracker = make_tracker("request_refund", "I want my money back", slots=slots)
    messages, out = await run(ActionOpenCase(), tracker)
    case = svc.cases.get(messages[0]["case_number"])
    assert case.category == "refund" and case.queue == "finance_compliance" and case.order_id == order_id
    assert out["handoff_queue"] == "finance_compliance"
    assert out["case_reference"] is None and out["order_id"] is None  # the next case starts clean


# ----------------------------------------------------------------------------- case status


async def _open(svc, visitor: str = "visitor-a", category: str = "service") -> str:
    return svc.cases.open_case(category, visitor_id=visitor, description="it broke", lang="en").number


@pytest.mark.parametrize("lang", LANGS)
async def test_status_of_own_case(svc, lang) -> None:
    number = await _open(svc)
    tracker = make_tracker("check_case_status", f"status {number}", lang=lang, entities={"case_id": number.lower()})
    messages, slots = await run(ActionCaseStatus(), tracker)
    assert messages[0]["response"] == "utter_case_status" and messages[0]["case_number"] == number
    text = render(messages[0], lang)
    assert number in text
    assert_script(text, lang)
    assert_case_link(svc, messages[1], number, lang)
    assert slots["resolution"] == "status_returned"


async def test_someone_elses_case_gets_the_same_reply_as_an_unknown_number(svc) -> None:
    number = await _open(svc, visitor="visitor-a")
    other = make_tracker("check_case_status", f"status {number}", visitor="visitor-b", entities={"case_id": number})
    unknown = make_tracker(
        "check_case_status", "HL-20260101-9999", visitor="visitor-b", entities={"case_id": "HL-20260101-9999"}
    )
    (m_other, s_other), (m_unknown, s_unknown) = (
        await run(ActionCaseStatus(), other),
        await run(ActionCaseStatus(), unknown),
    )
    assert m_other[0]["response"] == m_unknown[0]["response"] == "utter_case_not_found"
    assert len(m_other) == len(m_unknown) == 1  # no link to someone else's case
    assert set(m_other[0]) == set(m_unknown[0])  # same variables: nothing about the case leaks
    assert "resolution" not in s_other and "resolution" not in s_unknown
    assert "it broke" not in render(m_other[0], "en")


@pytest.mark.parametrize("text,entity", [("where is HL-2026-11 at", None), ("status HL-123", "HL-123")])
async def test_malformed_number_explains_the_format(svc, text, entity) -> None:
    tracker = make_tracker("check_case_status", text, entities={"case_id": entity} if entity else None)
    messages, slots = await run(ActionCaseStatus(), tracker)
    assert messages[0]["response"] == "utter_case_number_malformed"
    assert "HL-20250101-0001" in render(messages[0], "en")
    assert "resolution" not in slots


async def test_no_number_gives_the_latest_case_or_asks(svc) -> None:
    messages, _ = await run(ActionCaseStatus(), make_tracker("check_case_status", "any news on my case?"))
    assert messages[0]["response"] == "utter_ask_case_number"
    number = await _open(svc)
    messages, slots = await run(ActionCaseStatus(), make_tracker("check_case_status", "any news on my case?"))
    assert messages[0]["case_number"] == number and slots["resolution"] == "status_returned"


# ----------------------------------------------------------------------------- reopen and rate


async def test_reopen_resolved_case_and_open_case(svc) -> None:
    number = await _open(svc)
    messages, slots = await run(
        ActionReopenCase(), make_tracker("reopen_case", "still broken", entities={"case_id": number})
    )
    assert messages[0]["response"] == "utter_case_still_open" and slots.get("resolution") != "case_reopened"
    svc.cases.advance(number, "resolved", "agent:alice")
    messages, slots = await run(
        ActionReopenCase(), make_tracker("reopen_case", "still broken", entities={"case_id": number})
    )
    assert messages[0]["response"] == "utter_case_reopened" and slots["resolution"] == "case_reopened"
    assert svc.cases.get(number).stage == "verifying"
    assert_case_link(svc, messages[1], number, "en")


@pytest.mark.parametrize("lang", LANGS)
async def test_reopen_after_the_window_tells_why_and_passes_the_words_on(svc, lang) -> None:
    number = await _open(svc)
    svc.cases.advance(number, "resolved", "agent:alice")
    window = svc.config.sla.reopen_window_days
    with svc.db.session() as s:
        s.execute(update(Case).where(Case.number == number)
                  .values(resolved_at=utcnow() - timedelta(days=window, minutes=1)))
    messages, slots = await run(
        ActionReopenCase(), make_tracker("reopen_case", "still broken", lang=lang, entities={"case_id": number})
    )
    (msg,) = messages
    assert number in msg["text"] and slots.get("resolution") != "case_reopened"
    assert_script(msg["text"], lang)
    assert svc.cases.get(number).stage == "resolved"
    assert [e.detail for e in svc.cases.timeline(number) if e.kind == "note"] == ["still broken"]


@pytest.mark.parametrize("rating,expected", [("5", 5), ("五", 5), ("五星", 5), ("4 stars", 4)])
async def test_rate_resolved_case(svc, rating, expected) -> None:
    number = await _open(svc)
    svc.cases.advance(number, "resolved", "agent:alice")
    tracker = make_tracker("rate_case", "rating", entities={"case_id": number, "rating": rating})
    messages, slots = await run(ActionRateCase(), tracker)
    assert messages[0]["response"] == "utter_case_rated" and slots["resolution"] == "rated"
    assert svc.cases.get(number).satisfaction == expected


# ----------------------------------------------------------------------------- plan changes (promise 5)

PLAN_REQUESTS = {
    "upgrade": ("upgrade_plan", "premium"),
    "downgrade": ("downgrade_plan", "basic"),
    "cancel": ("cancel_subscription", None),
}


PROPOSAL = "action_propose_plan_change"
CONFIRM_BUTTONS = {
    "en": ["Confirm", "Change something", "Talk to a person"],
    "zh-Hans": ["确认", "修改", "转人工"],
    "zh-Hant": ["確認", "修改", "轉真人客服"],
}
STANDARD = {"en": "Standard", "zh-Hans": "标准版", "zh-Hant": "標準方案"}


def recorded_changes(svc) -> int:
    from sqlalchemy import func, select

    from bot.store.models import PlanChange

    with svc.db.session() as s:
        return s.execute(select(func.count()).select_from(PlanChange)).scalar_one()


async def propose(kind: str, lang: str = "en", visitor: str = "visitor-a", text: str = "change my plan", **kw: Any):
    intent, plan = PLAN_REQUESTS[kind]
    entities = {"plan": plan} if plan else None
    slots = {"plan": plan, "plan_change_kind": kind}
    tracker = make_tracker(intent, text, lang=lang, visitor=visitor, slots=slots, entities=entities, **kw)
    return await run(ActionProposePlanChange(), tracker)


async def confirm(proposal_slots: dict[str, Any], lang: str = "en", visitor: str = "visitor-a", text: str = "yes"):
    tracker = make_tracker("affirm", text, lang=lang, visitor=visitor, slots=proposal_slots, prior_actions=[PROPOSAL])
    return await run(ActionChangePlan(), tracker)


def test_the_proposal_offers_confirm_change_and_a_person_in_every_script() -> None:
    for name in (
        "utter_plan_change_proposal",
        "utter_plan_change_proposal_replacing",
        "utter_plan_change_withdraw_proposal",
    ):
        for variation in DOMAIN["responses"][name]:
            lang = next((c["value"] for c in variation.get("condition", [])), "en")
            buttons = variation["buttons"]
            assert [b["title"] for b in buttons] == CONFIRM_BUTTONS[lang], name
            assert [b["payload"] for b in buttons] == ["/affirm", "/deny", "/request_human"], name


def test_plan_button_payloads_survive_rasas_templating() -> None:
    from rasa.core.nlg.interpolator import interpolate

    for name in ("utter_ask_plan_change_form_plan", "utter_plan_change_revise"):
        for variation in DOMAIN["responses"][name]:
            for button in variation["buttons"]:
                payload = interpolate(dict(button), {})["payload"]
                if payload != "/request_human":
                    assert re.fullmatch(r'/inform\{"plan": "(basic|standard|premium|family)"\}', payload), payload


@pytest.mark.parametrize("lang", LANGS)
async def test_plan_change_proposals_are_symmetric_and_record_nothing(svc, lang) -> None:
    outcomes = {kind: await propose(kind, lang, visitor=f"visitor-{kind}") for kind in PLAN_REQUESTS}

    shapes = {kind: ([m["response"] for m in messages], list(slots)) for kind, (messages, slots) in outcomes.items()}
    assert len(set(map(repr, shapes.values()))) == 1, shapes  # same replies, same slots set
    assert shapes["upgrade"][0] == ["utter_plan_change_proposal"]
    assert "resolution" not in shapes["upgrade"][1]  # a proposal does not complete the customer's goal
    dates = {messages[0]["effective_date"] for messages, _ in outcomes.values()}
    assert len(dates) == 1  # the same effective-date rule for every kind
    for kind, (messages, slots) in outcomes.items():
        assert slots["plan_change_proposed"] is True and slots["plan_proposal"]["kind"] == kind
        text = render(messages[0], lang)
        assert STANDARD[lang] in text and messages[0]["effective_date"] in text
        assert "199" in text and messages[0]["price_difference"] in text
        assert_script(text, lang)
    assert outcomes["upgrade"][0][0]["price_difference"] == "+100"
    assert outcomes["downgrade"][0][0]["price_difference"] == "−100"
    assert outcomes["cancel"][0][0]["price_difference"] == "−199"
    assert recorded_changes(svc) == 0 and svc.cases.for_visitor("visitor-downgrade") == []


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", sorted(PLAN_REQUESTS))
async def test_affirm_records_exactly_the_proposal(svc, kind, lang) -> None:
    _, proposed = await propose(kind, lang)
    messages, slots = await confirm(proposed, lang)
    assert slots["resolution"] == "plan_change_recorded"
    assert slots["plan_change_proposed"] is None and slots["plan_proposal"] is None
    case = svc.cases.get(slots["case_number"])
    assert case.category == "plan_change" and case.visitor_id == "visitor-a"
    status = svc.plans.status("visitor-a")
    assert status.current_plan == "standard"  # pending is not current
    assert (status.pending.kind, status.pending.to_plan) == (kind, proposed["plan_proposal"]["to_plan"])
    assert recorded_changes(svc) == 1
    assert messages[0]["current_plan"] == "standard"  # the Undo button goes back to the plan in effect
    text = render(messages[0], lang)
    assert case.number in text and messages[0]["effective_date"] in text and STANDARD[lang] in text
    assert_script(text, lang)


async def test_recorded_replies_are_the_same_for_upgrade_and_downgrade(svc) -> None:
    replies = {}
    for kind in ("upgrade", "downgrade"):
        _, proposed = await propose(kind, visitor=f"v-{kind}")
        messages, slots = await confirm(proposed, visitor=f"v-{kind}")
        replies[kind] = ([m["response"] for m in messages], sorted(slots))
    assert replies["upgrade"] == replies["downgrade"]


@pytest.mark.parametrize("kind", sorted(PLAN_REQUESTS))
async def test_deny_records_nothing_and_asks_what_to_change(svc, kind) -> None:
    _, proposed = await propose(kind)
    tracker = make_tracker("deny", "/deny", slots=proposed, prior_actions=[PROPOSAL])
    messages, slots = await run(ActionRevisePlanChange(), tracker)
    assert [m["response"] for m in messages] == ["utter_plan_change_revise"]
    assert slots["plan_change_proposed"] is None and slots["plan_proposal"] is None and "resolution" not in slots
    assert recorded_changes(svc) == 0


async def test_a_yes_that_does_not_answer_the_proposal_records_nothing(svc) -> None:
    _, proposed = await propose("cancel")
    # the conversation moved on (a case status) before the customer said "yes"
    tracker = make_tracker("affirm", "yes thanks", slots=proposed, prior_actions=[PROPOSAL, "action_case_status"])
    messages, slots = await run(ActionChangePlan(), tracker)
    assert [m["response"] for m in messages] == ["utter_plan_change_not_proposed"]
    assert "resolution" not in slots and slots["plan_change_proposed"] is None
    # and a "yes" with no proposal at all
    messages, _ = await run(ActionChangePlan(), make_tracker("affirm", "yes", prior_actions=[PROPOSAL]))
    assert [m["response"] for m in messages] == ["utter_plan_change_not_proposed"]
    assert recorded_changes(svc) == 0


HOW_TO = {
    "en": "what would I need to do to move to Basic?",
    "zh-Hans": "请问降档到基础版要去哪里操作",
    "zh-Hant": "點樣先可以轉去基本方案？",
}


@pytest.mark.parametrize("lang", LANGS)
async def test_a_how_to_question_gets_the_answer_and_the_same_offer_not_the_change(svc, lang) -> None:
    messages, slots = await propose("downgrade", lang, text=HOW_TO[lang])
    assert [m["response"] for m in messages] == ["utter_plan_change_how", "utter_plan_change_proposal"]
    assert "resolution" not in slots and slots["plan_change_proposed"] is True
    assert_script(render(messages[0], lang), lang)
    assert recorded_changes(svc) == 0


async def test_how_to_is_read_from_the_request_when_the_form_asked_the_plan(svc) -> None:
    tracker = make_tracker(
        "inform",
        "Basic",
        entities={"plan": "basic"},
        slots={"plan": "basic", "plan_change_kind": "downgrade"},
        history=[("downgrade_plan", "how can I downgrade?")],
        prior_actions=["plan_change_form"],
    )
    messages, _ = await run(ActionProposePlanChange(), tracker)
    assert [m["response"] for m in messages] == ["utter_plan_change_how", "utter_plan_change_proposal"]


async def test_how_to_already_answered_is_not_repeated_when_another_plan_is_picked(svc) -> None:
    # "how can I downgrade to Basic?" → how-to + proposal → "Change something" → taps Premium
    tracker = make_tracker(
        "inform",
        '/inform{"plan": "premium"}',
        entities={"plan": "premium"},
        slots={"plan": "premium"},
        history=[("downgrade_plan", "how can I downgrade to Basic?"), ("deny", "/deny")],
        prior_actions=[PROPOSAL, "action_revise_plan_change", "plan_change_form"],
    )
    messages, _ = await run(ActionProposePlanChange(), tracker)
    assert [m["response"] for m in messages] == ["utter_plan_change_proposal"]


@pytest.mark.parametrize("lang", LANGS)
async def test_a_scheduled_change_is_shown_as_pending_and_asking_again_recognises_it(svc, lang) -> None:
    _, proposed = await propose("downgrade", lang)
    await confirm(proposed, lang)
    messages, slots = await propose("downgrade", lang)  # the same change again
    assert [m["response"] for m in messages] == ["utter_plan_change_already_scheduled"]
    text = render(messages[0], lang)
    assert STANDARD[lang] in text and messages[0]["effective_date"] in text and messages[0]["case_number"] in text
    assert_script(text, lang)
    assert slots["resolution"] == "status_returned" and recorded_changes(svc) == 1


async def test_after_a_pending_cancellation_a_downgrade_is_a_downgrade_from_the_plan_in_effect(svc) -> None:
    _, proposed = await propose("cancel")
    await confirm(proposed)
    messages, slots = await propose("downgrade")
    assert [m["response"] for m in messages] == ["utter_plan_change_proposal_replacing"]
    assert messages[0]["from_name"] == "Standard" and messages[0]["change_name"] == "downgrade"
    assert messages[0]["pending_change_name"] == "cancellation"
    assert "a change scheduled for 1 " in render(messages[0], "en")
    assert "(cancellation: Standard → no plan); this would replace it" in render(messages[0], "en")
    assert slots["plan_proposal"]["kind"] == "downgrade"
    assert recorded_changes(svc) == 1  # still only the cancellation
    _, done = await confirm(slots)
    assert svc.plans.status("visitor-a").pending.kind == "downgrade"


@pytest.mark.parametrize("lang", LANGS)
async def test_a_confirmed_change_can_be_undone_in_the_same_conversation(svc, lang) -> None:
    _, proposed = await propose("downgrade", lang)
    _, recorded = await confirm(proposed, lang)
    # "keep Standard" (a plan button or the plan's name): the same proposal step, then Confirm
    tracker = make_tracker(
        "inform", STANDARD[lang], lang=lang, entities={"plan": "standard"}, slots={"plan": "standard"}
    )
    messages, slots = await run(ActionProposePlanChange(), tracker)
    assert [m["response"] for m in messages] == ["utter_plan_change_withdraw_proposal"]
    assert slots["plan_proposal"]["kind"] == "withdraw" and "resolution" not in slots
    assert_script(render(messages[0], lang), lang)
    messages, done = await confirm(slots, lang)
    assert [m["response"] for m in messages] == ["utter_plan_change_withdrawn"]
    assert done["case_number"] == recorded["case_number"] and done["resolution"] == "plan_change_recorded"
    assert svc.plans.status("visitor-a").pending is None
    assert_script(render(messages[0], lang), lang)


async def test_plan_change_form_asks_the_plan_only_for_upgrade_and_downgrade(svc) -> None:
    form = ValidatePlanChangeForm()
    for kind, expected in (("upgrade", ["plan"]), ("downgrade", ["plan"]), ("cancel", [])):
        tracker = make_tracker("x", "x", slots={"plan_change_kind": kind})
        assert await form.required_slots(["plan"], CollectingDispatcher(), tracker, DOMAIN) == expected


async def test_plan_named_in_free_words_is_understood(svc) -> None:
    tracker = make_tracker("inform", "換成高級方案", slots={"requested_slot": "plan"})
    assert await ValidatePlanChangeForm().extract_plan(CollectingDispatcher(), tracker, DOMAIN) == {"plan": "premium"}


@pytest.mark.parametrize("text", ["no", "No.", "没有", "沒有", "冇", "I don't have one"])
def test_reference_question_accepts_no(text) -> None:
    tracker = make_tracker("inform", text)
    out = ValidateCaseReferenceForm().validate_case_reference(text, CollectingDispatcher(), tracker, DOMAIN)
    assert out == {"case_reference": "none"}


def test_reference_question_takes_an_order_number() -> None:
    tracker = make_tracker("inform", "order SO20261104", entities={"order_id": "SO20261104"})
    out = ValidateCaseReferenceForm().validate_case_reference(
        "order SO20261104", CollectingDispatcher(), tracker, DOMAIN
    )
    assert out == {"case_reference": "SO20261104"}


# ----------------------------------------------------------------------------- handoff and failures


@pytest.mark.parametrize(
    "intent,category,queue,reason",
    [
        ("request_human", None, "general", "customer_request"),
        ("express_frustration", None, "general", "frustration"),
        ("request_human", "privacy", "data_protection", "customer_request"),
    ],
)
async def test_handoff(svc, intent, category, queue, reason) -> None:
    tracker = make_tracker(intent, "人工", lang="zh-Hans", slots={"case_category": category})
    messages, slots = await run(ActionHandoff(), tracker)
    assert slots == {"handoff_queue": queue, "handoff_reason": reason}
    assert messages[0]["response"] == "utter_handoff"
    assert CONFIG.queues[queue].display["zh-Hans"] in render(messages[0], "zh-Hans")


@pytest.mark.parametrize(
    "action,intent",
    [
        (ActionOpenCase(), "complaint_billing"),
        (ActionCaseStatus(), "check_case_status"),
        (ActionReopenCase(), "reopen_case"),
        (ActionRateCase(), "rate_case"),
        (ActionProposePlanChange(), "downgrade_plan"),
        (ActionChangePlan(), "affirm"),
    ],
)
@pytest.mark.parametrize("lang", LANGS)
async def test_action_failure_says_so_and_hands_off(tmp_path, monkeypatch, action, intent, lang) -> None:
    # A database that cannot be opened: every service call fails.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    services.cache_clear()
    try:
        proposal = {"kind": "downgrade", "from_plan": "standard", "to_plan": "basic", "effective_date": "2026-12-01"}
        slots = {"case_category": "billing", "plan": "basic", "plan_proposal": proposal}
        tracker = make_tracker(intent, "help", lang=lang, slots=slots, prior_actions=[PROPOSAL])
        messages, slots = await run(action, tracker)
    finally:
        services.cache_clear()
    assert [m["response"] for m in messages] == ["utter_action_failed"]
    assert_script(render(messages[0], lang), lang)
    assert slots == {"handoff_queue": "finance_compliance", "handoff_reason": "action_error"}


async def test_service_exception_mid_action_hands_off_to_the_default_queue(svc, monkeypatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("db down")

    monkeypatch.setattr(svc.cases, "open_case", boom)
    messages, slots = await run(ActionOpenCase(), make_tracker("complaint_service", "broken"))
    assert [m["response"] for m in messages] == ["utter_action_failed"]
    assert slots == {"handoff_queue": "general", "handoff_reason": "action_error"}


def test_action_server_registers_exactly_the_domain_actions() -> None:
    from rasa_sdk.executor import ActionExecutor

    executor = ActionExecutor()
    executor.register_package("actions")
    assert sorted(executor.actions) == sorted(DOMAIN["actions"])
