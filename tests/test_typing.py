"""Typing indicators through the real hub: customer ↔ agent, at most one relayed per 2 s and side,
never stored and never replayed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import func, select

from bot.client import ChatClient
from bot.hub.core import TYPING_INTERVAL_S
from bot.store.models import Message
from tests.hubtools import AgentClient, GreeterBrain, running_hub


async def test_typing_is_relayed_both_ways_rate_limited_and_never_stored(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice", skills=("general",), display_name="Alice Chen")
        token = await asyncio.to_thread(srv.login, "alice")
        alice = AgentClient(srv.agent_ws_url, token)
        await alice.connect()
        await alice.send({"type": "availability", "available": False})

        chat = ChatClient(srv.ws_url, lang="en")
        await chat.connect()
        await chat.say_and_ack("I want to talk to a human")
        await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")
        await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
        await alice.wait_for(lambda f: f["type"] == "assigned")
        await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "agent")
        with srv.db.session() as s:
            stored_before = s.execute(select(func.count(Message.id))).scalar_one()

        # Customer → agent: a burst is relayed once; the next one only after the interval.
        started = time.monotonic()
        for _ in range(5):
            await chat.typing()
        first = await alice.wait_for(lambda f: f["type"] == "typing")
        assert first == {"type": "typing", "conversation_id": chat.conversation_id, "sender": "customer"}
        assert [f for f in await alice.drain(0.5) if f["type"] == "typing"] == []
        second = None
        while second is None and time.monotonic() - started < 10:
            await chat.typing()
            try:
                second = await alice.wait_for(lambda f: f["type"] == "typing", timeout=0.3)
            except (asyncio.TimeoutError, TimeoutError):
                continue
        assert second is not None and time.monotonic() - started >= TYPING_INTERVAL_S

        # Agent → customer, with the agent's name; a burst once.
        for _ in range(3):
            await alice.send({"type": "typing", "conversation_id": chat.conversation_id})
        got = await chat.wait_for(lambda f: f["type"] == "typing")
        assert got == {"type": "typing", "sender": "agent", "agent_name": "Alice Chen"}
        more = await chat.drain(0.5)
        assert [f for f in more if f["type"] == "typing"] == []
        # Typing in a conversation the agent does not hold is ignored, without an error.
        await alice.send({"type": "typing", "conversation_id": "not-a-conversation"})
        assert not [f for f in await alice.drain(0.3) if f["type"] == "error"]

        # Never stored, never in a replay.
        with srv.db.session() as s:
            assert s.execute(select(func.count(Message.id))).scalar_one() == stored_before
        again = AgentClient(srv.agent_ws_url, token)
        await again.connect(last_event_id=0)
        assert not [f for f in await again.drain(0.5) if f["type"] == "typing"]
        for client in (chat, alice, again):
            await client.close()


async def test_typing_before_hello_is_not_ready_and_with_the_bot_goes_nowhere(tmp_path: Path) -> None:
    import json

    import websockets

    with running_hub(tmp_path, GreeterBrain()) as srv:
        async with websockets.connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"type": "typing"}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer["type"] == "error" and answer["code"] == "not_ready"
        srv.create_agent("sue", skills=(), role="supervisor")
        sue = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, "sue"))
        await sue.connect()
        chat = ChatClient(srv.ws_url, lang="en")
        await chat.connect()
        await chat.typing()
        assert not [f for f in await chat.drain(0.5) if f["type"] == "error"]
        assert not [f for f in await sue.drain(0.3) if f["type"] == "typing"]
        await chat.close()
        await sue.close()
