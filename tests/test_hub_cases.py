"""Cases the hub opens itself when nobody can take a handoff (P4), and what the customer is told
when the brain or an action fails."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bot.brain import BrainTurn
from bot.client import ChatClient
from bot.services.cases import CaseService
from bot.store.models import Case
from tests.hubtools import RaisingBrain, ScriptedBrain, running_hub, settle, turn


def _is_queued(f: dict[str, Any]) -> bool:
    return f["type"] == "status" and f["status"] == "queued"


def _cases(db: Any) -> list[Case]:
    with db.session() as s:
        return list(s.execute(select(Case).order_by(Case.id)).scalars())


async def test_a_failing_brain_is_explained_to_the_customer_before_the_queue_notice(tmp_path: Path) -> None:
    with running_hub(tmp_path, RaisingBrain()) as srv:
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("my bill is wrong")
            await chat.wait_for(_is_queued)
            await settle(srv, chat)
            system = [m["text"] for m in chat.messages("system")]
            assert "something went wrong on our side" in system[0]
            assert any("Customer care" in t for t in system[1:])  # then the queue / no-agent notice
            assert chat.messages("bot") == []


async def test_a_failing_action_is_explained_too(tmp_path: Path) -> None:
    def script(text: str, n: int) -> BrainTurn:
        # What actions/services.py does when a service raises: its apology plus a handoff request.
        return turn("Sorry, something broke.", intent="request_refund", actions=["action_open_case"],
                    slots_set={"handoff_queue": "finance_compliance", "handoff_reason": "action_error"})

    with running_hub(tmp_path, ScriptedBrain(script)) as srv:
        async with ChatClient(srv.ws_url, lang="zh-Hans") as chat:
            await chat.say_and_ack("我要退款")
            queued = await chat.wait_for(_is_queued)
            assert queued["queue"] == "finance_compliance"
            await settle(srv, chat)
            assert "系统出了问题" in chat.messages("system")[0]["text"]


async def test_with_nobody_online_a_refund_handoff_opens_a_refund_case(tmp_path: Path) -> None:
    def script(text: str, n: int) -> BrainTurn:
        return turn("I'll get you a person.", intent="request_refund", actions=["action_handoff"],
                    slots_set={"handoff_queue": "finance_compliance", "handoff_reason": "customer_request"})

    with running_hub(tmp_path, ScriptedBrain(script)) as srv:
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("I want my money back")
            queued = await chat.wait_for(lambda f: _is_queued(f) and f.get("case_id"))
        (case,) = _cases(srv.db)
        assert case.category == "refund" and case.queue == "finance_compliance"
        assert queued["case_id"] == case.number


async def test_a_case_opened_in_a_turn_that_timed_out_is_reused_not_doubled(tmp_path: Path) -> None:
    opened: list[str] = []

    class SlowActionBrain:
        """Opens a case (as the action server would) and then takes longer than the timeout."""

        def __init__(self) -> None:
            self.db: Any = None

        async def ready(self) -> bool:
            return True

        async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
            view = await asyncio.to_thread(
                CaseService(self.db).open_case, "service", visitor_id=metadata["visitor_id"],
                conversation_id=conversation_id, description=text, lang="en",
            )
            opened.append(view.number)
            await asyncio.sleep(30)
            raise AssertionError("the hub should have timed out")

    brain = SlowActionBrain()
    # The timeout leaves the case opening (a thread, a transaction) ample time even on a loaded
    # machine: the turn must time out *after* the action opened its case.
    with running_hub(tmp_path, brain, brain_timeout_s=3.0) as srv:
        brain.db = srv.db
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("the network drops every evening")
            queued = await chat.wait_for(lambda f: _is_queued(f) and f.get("case_id"))
        assert [c.number for c in _cases(srv.db)] == opened
        assert queued["reason"] == "timeout" and queued["case_id"] == opened[0]
