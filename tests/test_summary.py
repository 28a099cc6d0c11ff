"""The handoff summary: built from the stored facts (pure), and in the ``assigned`` frame of the
real hub, so the agent starts from it instead of the transcript."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from bot.client import ChatClient
from bot.services.config import HumanlineConfig
from bot.services.conversations import MessageRecord
from bot.services.plans import PlanCatalogue
from bot.services.summary import CaseFacts, PlanFacts, build_summary, extract_entities
from tests.hubtools import AgentClient, ScriptedBrain, running_hub, turn

CATALOGUE = PlanCatalogue.from_config(HumanlineConfig.load())
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)


def _m(seq: int, sender: str, text: str, intent: str | None = None) -> MessageRecord:
    return MessageRecord("c1", seq, sender, text, T0 + timedelta(seconds=seq), intent=intent)


def test_entities_come_from_the_customers_words() -> None:
    assert extract_entities("I was charged $45 twice on order AB1234567", CATALOGUE) == {
        "order_id": "AB1234567", "amount": "$45"}
    assert extract_entities("我的案件 ＨＬ－２０２６１２０３－０００７ 怎么样了")["case_id"] == "HL-20261203-0007"
    assert extract_entities("我要降到基础版", CATALOGUE) == {"plan": "basic"}
    assert extract_entities("上个月多扣了我 50 元，电话13812345678") == {"phone": "13812345678", "amount": "50 元"}
    assert extract_entities("hello there", CATALOGUE) == {}


def test_summary_of_requests_signals_what_the_bot_did_and_why() -> None:
    messages = [
        _m(1, "customer", "I was charged $45 twice this month", "complaint_billing"),
        _m(2, "bot", "Sorry about that. What is the order number?"),
        _m(3, "customer", "it is AB1234567", "inform"),
        _m(4, "bot", "I have opened case HL-20261203-0001 for you."),
        _m(5, "customer", "and I want to move to the basic plan", "downgrade_plan"),
        _m(6, "bot", "Shall I schedule the downgrade?"),
        _m(7, "customer", "this is ridiculous, I have been waiting for weeks", "express_frustration"),
    ]
    case = CaseFacts("HL-20261203-0001", "billing", "accepted", order_id="AB1234567", amount="45")
    change = PlanFacts("downgrade", "standard", "basic", date.today() + timedelta(days=20))
    s = build_summary(messages, lang="en", reason="frustration", case=case, plan_changes=[change],
                      catalogue=CATALOGUE).to_dict()
    case_only = build_summary(messages[:1], lang="en", reason=None, case=case).to_dict()
    assert case_only["requests"][0]["entities"] == {"amount": "$45", "order_id": "AB1234567"}  # from the case
    assert [(r["label"], r["entities"]) for r in s["requests"]] == [
        ("complaint about a bill", {"amount": "$45", "order_id": "AB1234567"}),   # the answer joined its request
        ("downgrade the plan", {"plan": "basic"}),                               # the billing case is not its
    ]
    assert s["signals"] == [
        {"kind": "frustration", "seq": 7, "text": "this is ridiculous, I have been waiting for weeks"}]
    assert s["bot_did"][0] == "Opened case HL-20261203-0001 (billing, accepted): order id AB1234567, amount 45"
    assert s["bot_did"][1].startswith("Recorded a downgrade: standard → basic, effective ")
    assert s["bot_did"][1].endswith("(pending)")
    assert s["bot_did"][2] == "Asked 2 questions, 2 answered"
    assert s["questions"][0] == {"seq": 2, "question": "Sorry about that. What is the order number?",
                                 "answer": "it is AB1234567"}
    assert s["reason_text"] == "The customer is frustrated or angry."
    assert (s["lang"], s["language"]) == ("en", "English")


def test_a_reason_is_a_signal_even_without_the_intent_and_unknown_reasons_are_words() -> None:
    s = build_summary([_m(1, "customer", "！！！")], lang="zh-Hant", reason="frustration").to_dict()
    assert s["signals"] == [{"kind": "frustration", "seq": None, "text": "The customer is frustrated or angry."}]
    asked = [_m(1, "bot", "Which plan would you like?"), _m(2, "customer", "let me talk to a human")]
    unanswered = build_summary(asked, lang="en", reason="customer_request").to_dict()
    assert unanswered["questions"] == [{"seq": 1, "question": "Which plan would you like?", "answer": None}]
    assert unanswered["bot_did"] == ["Asked 1 question, 0 answered"]
    assert s["language"] == "Traditional Chinese" and s["requests"] == []
    assert build_summary([], lang=None, reason="some_new_reason").reason_text == "some new reason"


def test_a_case_link_in_the_customers_words_reaches_the_agent_without_its_token() -> None:
    """The summary quotes the customer; a case link they pasted is their credential and is shown
    the way the transcript shows it (``#t=…``), also in a quoted bot question."""
    link = "https://help.example.com/case/HL-20261203-0001#t=v1.1798915463.zT8qCJLrJT8asE8Z4uU5KA"
    messages = [
        _m(1, "customer", f"I was charged twice, see {link}", "complaint_billing"),
        _m(2, "bot", f"Is this the case {link} ?"),
        _m(3, "customer", f"this is ridiculous, {link} shows nothing", "express_frustration"),
    ]
    s = build_summary(messages, lang="en", reason="frustration", catalogue=CATALOGUE).to_dict()
    assert "zT8qCJLrJT8asE8Z4uU5KA" not in repr(s)
    assert s["requests"][0]["text"] == "I was charged twice, see https://help.example.com/case/HL-20261203-0001#t=…"
    assert s["signals"][0]["text"].endswith("/case/HL-20261203-0001#t=… shows nothing")


async def test_the_agent_gets_the_summary_with_the_conversation(tmp_path: Path) -> None:
    def script(text: str, n: int) -> object:
        if "charged" in text:
            return turn("Sorry to hear that. Which order was it?", intent="complaint_billing")
        return turn(f"Noted (#{n}).", intent="inform")

    with running_hub(tmp_path, ScriptedBrain(script)) as srv:  # type: ignore[arg-type]
        srv.create_agent("alice", skills=("general", "finance_compliance"), display_name="Alice Chen")
        chat = ChatClient(srv.ws_url, lang="en")
        await chat.connect()
        await chat.say_and_ack("I was charged ¥50 twice")
        await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
        await chat.say_and_ack("order AB1234567")
        await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot" and "Noted" in f["text"])
        await chat.say_and_ack("I want to talk to a human")
        await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")
        alice = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, "alice"))
        await alice.connect()
        assigned = await alice.wait_for(lambda f: f["type"] == "assigned")
        s = assigned["summary"]
        assert s["reason_text"] == "The customer asked for a person."
        assert s["language"] == "English"
        billing = s["requests"][0]
        assert billing["label"] == "complaint about a bill"
        assert billing["entities"] == {"amount": "¥50", "order_id": "AB1234567"}
        assert s["questions"] == [{"seq": 2, "question": "Sorry to hear that. Which order was it?",
                                   "answer": "order AB1234567"}]
        assert any(d.startswith("Opened case HL-") for d in s["bot_did"])
        await chat.close()
        await alice.close()
