"""Promises 1 and 2 through the real hub: fake brains that loop, vary, fail, hang or act at random."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.client import ChatClient
from bot.guard import GuardState
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
            state = srv.hub.conversations.load_guard_state(chat.conversation_id, GuardState)
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
