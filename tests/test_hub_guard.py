"""Promises 1 and 2 through the real hub: fake brains that loop, vary, fail, hang or act at random."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.client import ChatClient
from tests.hubtools import (
    HangingBrain,
    LoopingBrain,
    RaisingBrain,
    RandomBrain,
    ScriptedBrain,
    VaryingBrain,
    running_hub,
    settle,
    turn,
)

N = 3


def _is_queued(f: dict) -> bool:
    return f["type"] == "status" and f["status"] == "queued"


async def _talk(chat: ChatClient, texts: list[str]) -> None:
    for text in texts:
        await chat.say_and_ack(text)
        await asyncio.sleep(0.05)


async def test_turn_budget_hands_off_and_the_bot_answers_at_most_n_unresolved_turns(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain, max_unresolved_turns=N) as srv:
        async with ChatClient(srv.ws_url) as chat:
            for i in range(N + 3):
                await chat.say_and_ack(f"question {i}")
                if i < N - 1:
                    await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "turn_budget"
            assert queued["queue"] == "general" and queued["position"] == 1
            assert "first come, first served" in queued["rule"]
            await settle(srv, chat)
            # The N-th unresolved turn is handed off instead of answered (docs/guard.md).
            assert len(chat.messages("bot")) == N - 1
            assert len(brain.calls) == N  # nothing after the handoff reaches the brain
            # the customer keeps writing: stored and acknowledged, never answered by the bot
            await chat.say_and_ack("hello? anyone?")
            await settle(srv, chat)
            assert len(chat.messages("bot")) == N - 1


async def test_a_canned_loop_is_cut_at_the_second_identical_reply(tmp_path: Path) -> None:
    brain = LoopingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await _talk(chat, ["I want to downgrade", "no, downgrade please", "downgrade!!"])
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "repeated_reply"
            await settle(srv, chat)
            texts = [m["text"] for m in chat.messages("bot")]
            assert len(texts) == len(set(texts)) == 1


async def test_asking_for_a_person_hands_off_before_the_brain(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("我要转人工")
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "customer_request"
            assert brain.calls == []
            system = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "system")
            assert system["text"]


@pytest.mark.parametrize(("brain_factory", "reason"), [(RaisingBrain, "brain_error"), (HangingBrain, "timeout")])
async def test_brain_failures_hand_off(tmp_path: Path, brain_factory: type, reason: str) -> None:
    with running_hub(tmp_path, brain_factory(), brain_timeout_s=0.3) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("my bill is wrong")
            queued = await chat.wait_for(_is_queued, timeout=10)
            assert queued["reason"] == reason
            await settle(srv, chat)
            assert chat.messages("bot") == []


async def test_a_reply_generated_while_an_agent_took_over_is_dropped(tmp_path: Path) -> None:
    """P2 checked after generation: the brain answers slowly; meanwhile the conversation is
    handed off from the side (as a concurrent event would); the late reply never arrives."""
    brain = ScriptedBrain(lambda text, n: turn("a late bot reply", resolved=True, intent="greet"), delay_s=0.5)
    with running_hub(tmp_path, brain, brain_timeout_s=5) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("hello")
            # The brain is working on the turn (not merely scheduled) when the handoff happens.
            while not brain.calls:
                await asyncio.sleep(0.01)
            srv.hub.conversations.queue(chat.conversation_id, "general", "customer_request")
            await settle(srv, chat)  # the turn finished: its reply was generated, then dropped
            assert brain.calls == ["hello"]
            assert chat.messages("bot") == []
            stored = srv.hub.conversations.messages_after(chat.conversation_id, 0)
            assert [m.sender for m in stored] == ["customer"]


async def test_an_action_requesting_a_person_routes_to_its_queue(tmp_path: Path) -> None:
    brain = ScriptedBrain(
        lambda text, n: turn("Let me connect you.", intent="request_refund",
                             slots_set={"handoff_queue": "finance_compliance", "handoff_reason": "refund"},
                             actions=["action_handoff"])
    )
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("give me my money back")
            queued = await chat.wait_for(_is_queued)
            assert queued["queue"] == "finance_compliance"
            assert queued["reason"] == "action_request"


@pytest.mark.parametrize("seed", range(4))
async def test_random_brain_never_exceeds_the_budget_or_speaks_after_handoff(tmp_path: Path, seed: int) -> None:
    brain = RandomBrain(seed)
    with running_hub(tmp_path, brain, max_unresolved_turns=N, brain_timeout_s=0.5) as srv:
        async with ChatClient(srv.ws_url) as chat:
            for i in range(8):
                await chat.say_and_ack(f"message {i}")
                await asyncio.sleep(0.08)
            await settle(srv, chat)
            frames = chat.frames
            handoff_at = next((i for i, f in enumerate(frames) if _is_queued(f)), None)
            assert handoff_at is not None, "eight messages without a handoff"
            after = [f for f in frames[handoff_at:] if f["type"] == "message" and f["sender"] == "bot"]
            assert after == []
            state = srv.hub.conversations.load_guard_state(chat.conversation_id)
            assert state.unresolved_turns <= N


async def test_a_turn_that_fails_outside_the_brain_still_hands_off(tmp_path: Path) -> None:
    """An unreadable guard state (a database-side failure) must not leave the customer in silence."""
    from sqlalchemy import update

    from bot.store.models import Conversation

    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            with srv.db.session() as s:
                s.execute(
                    update(Conversation)
                    .where(Conversation.id == chat.conversation_id)
                    .values(guard_state={"unresolved_turns": "not a number"})
                )
            await chat.say_and_ack("hello")
            queued = await chat.wait_for(_is_queued, timeout=15)
            assert queued["reason"] == "brain_error"
            assert brain.calls == []


# ---- issue #12: signals beside the intent, and the queue follows the request -----------------------


class ParsingBrain(ScriptedBrain):
    """A scripted brain that also offers the NLU-only ``parse`` (as the real brains do)."""

    def __init__(self, script: Any, intents: dict[str, str]) -> None:
        super().__init__(script)
        self.intents = intents
        self.parsed: list[str] = []

    async def parse(self, text: str) -> tuple[str | None, float | None]:
        self.parsed.append(text)
        return self.intents.get(text), 0.9


def _frame_text(f: dict) -> str:
    return str(f.get("text", ""))


async def test_emoji_only_anger_hands_off_before_the_brain(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("😤😤")
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "frustration" and queued["queue"] == "general"
            await chat.drain(0.3)
            assert brain.calls == [] and chat.messages("bot") == []


async def test_anger_inside_a_request_hands_off_to_the_requests_queue_with_its_case(tmp_path: Path) -> None:
    text = "this bot is useless, where is my refund"
    brain = ParsingBrain(lambda t, n: turn("What is your order number?", intent="request_refund"),
                         {text: "request_refund"})
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack(text)
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "frustration"
            assert queued["queue"] == "finance_compliance"
            assert brain.calls == [] and brain.parsed == [text]
            # nobody is online: the case keeps the detected request
            case = srv.hub.cases.open_for_conversation(chat.conversation_id)
            assert case is not None and case.category == "refund" and queued.get("case_id") == case.number
            stored = srv.hub.conversations.messages_after(chat.conversation_id, 0)
            assert [m.intent for m in stored if m.sender == "customer"] == ["request_refund"]


@pytest.mark.parametrize(("text", "region", "expected"), [
    ("上门维修的师傅现在天天给我发微信骚扰我，我很害怕", None, ["110 / 120", "紧急"]),
    ("上門安裝的師傅之後成日send訊息畀我，好驚", "HK", ["999", "緊急"]),
    ("The technician who visited my home now sends me frightening messages every night", "US", ["911", "danger"]),
])
async def test_danger_goes_to_the_safety_queue_with_the_emergency_number_in_the_customers_script(
    tmp_path: Path, text: str, region: str | None, expected: list[str]
) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain, region=region) as srv:
        srv.create_agent("sam", skills=("general",))  # not a safety agent: the handoff must not wait for him
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack(text)
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "danger" and queued["queue"] == "safety"
            assert queued["first_response_minutes"] == 5
            await chat.drain(0.3)
            system = [_frame_text(m) for m in chat.messages("system")]
            assert any(all(e in s for e in expected) for s in system), system
            assert brain.calls == []
            # nobody of the safety queue is online: a safety case is opened all the same (P4)
            case = srv.hub.cases.open_for_conversation(chat.conversation_id)
            assert case is not None and case.category == "safety" and case.queue == "safety"


async def test_danger_reported_while_waiting_moves_the_customer_to_the_safety_queue(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("转人工")
            first = await chat.wait_for(_is_queued)
            assert first["queue"] == "general"
            await chat.say_and_ack("他现在在我家门口，拿着刀")
            moved = await chat.wait_for(lambda f: _is_queued(f) and f["queue"] == "safety")
            assert moved["reason"] == "danger"
            await chat.drain(0.3)
            assert any("110 / 120" in _frame_text(m) for m in chat.messages("system"))


@pytest.mark.parametrize("text", ["is anyone actually there?", "有没有能说上话的人", "你们客服人呢", "有冇人呀"])
async def test_indirect_requests_for_a_person_hand_off_before_the_brain(tmp_path: Path, text: str) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack(text)
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "customer_request"
            assert brain.calls == []


async def test_the_queue_follows_a_plan_change_request(tmp_path: Path) -> None:
    """The issue's case: a plan-change conversation that runs out of budget went to the general queue."""
    script = {
        1: turn("Which plan would you like instead?", intent="downgrade_plan"),
        2: turn("Basic costs 99 a month from 1 January. Shall I?", intent="inform"),
        3: turn("Sorry, I did not get that.", intent="nlu_fallback"),
    }
    brain = ScriptedBrain(lambda t, n: script[min(n, 3)])
    with running_hub(tmp_path, brain, max_unresolved_turns=3) as srv:
        async with ChatClient(srv.ws_url) as chat:
            for text in ("I want to downgrade", "basic", "hmm what"):
                await chat.say_and_ack(text)
            queued = await chat.wait_for(_is_queued)
            assert queued["reason"] == "turn_budget"
            assert queued["queue"] == "account_services"


async def test_the_queue_follows_the_open_case(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("hello")
            await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
            conv = srv.hub.conversations.get(chat.conversation_id)
            srv.hub.cases.open_case("privacy", visitor_id=conv.visitor_id, conversation_id=conv.id,
                                    description="my data", lang="en", actor="test")
            await chat.say_and_ack("agent please")
            queued = await chat.wait_for(_is_queued)
            assert queued["queue"] == "data_protection"


async def test_a_conversation_without_a_known_request_goes_to_the_default_queue(tmp_path: Path) -> None:
    brain = VaryingBrain()
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("agent")
            queued = await chat.wait_for(_is_queued)
            assert queued["queue"] == "general"


async def test_danger_handoffs_are_served_first(tmp_path: Path) -> None:
    with running_hub(tmp_path, VaryingBrain()) as srv:
        convs = srv.hub.conversations
        first = convs.create_conversation(convs.create_visitor())
        second = convs.create_conversation(convs.create_visitor())
        assert convs.queue(first.id, "general", "customer_request") is not None
        assert convs.queue(second.id, "general", "danger") is not None
        waiting = srv.hub.queues.waiting(["general"])
        assert [w.conversation_id for w in waiting] == [second.id, first.id]
        positions = srv.hub.queues.positions("general", 1)
        assert positions[second.id].position == 1 and positions[first.id].position == 2
