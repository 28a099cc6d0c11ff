"""Queue-side dedupe of scripted handoffs (bot/services/handoff_dedupe.py, docs/security.md):
the policy alone, then through the real hub — beyond the threshold of one client address, a
handoff is held as "suspected automated" (a place, an answer and a case for the customer, no
agent woken, supervisors told once) until a supervisor releases it; danger and app users are
never held."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.client import ChatClient
from bot.hub.auth import identity_token
from bot.hub.ratelimit import RateLimiter
from bot.services.handoff_dedupe import HandoffDedupe
from tests.hubtools import AgentClient, GreeterBrain, RunningHub, running_hub

ASK = "I want to talk to a human"
DANGER = "The technician who visited my home now sends me frightening messages every night"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_policy_holds_beyond_the_threshold_tells_once_and_exempts_danger_and_app_users() -> None:
    clock = Clock()
    policy = HandoffDedupe(RateLimiter(2, 600.0, clock))
    verdicts = [policy.consider("203.0.113.7", "customer_request") for _ in range(5)]
    assert [v.held for v in verdicts] == [False, False, True, True, True]
    assert [v.first_held for v in verdicts] == [False, False, True, False, False]  # supervisors told once
    assert {v.source for v in verdicts} == {"203.0.113.7"}
    # Another address has its own budget; danger, app users and unknown sources are never held.
    assert not policy.consider("198.51.100.2", "customer_request").held
    assert not policy.consider("203.0.113.7", "danger").held
    assert not policy.consider("203.0.113.7", "customer_request", identified=True).held
    assert policy.consider(None, "customer_request").source is None
    # After the window the address is ordinary again, and a new burst is news again.
    clock.now += 601
    assert [policy.consider("203.0.113.7", "turn_budget").held for _ in range(3)] == [False, False, True]
    assert policy.consider("203.0.113.7", "turn_budget").first_held is False
    clock.now += 601
    policy.consider("203.0.113.7", "turn_budget")
    policy.consider("203.0.113.7", "turn_budget")
    assert policy.consider("203.0.113.7", "turn_budget").first_held is True


async def _agent(srv: RunningHub, username: str) -> AgentClient:
    agent = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, username))
    assert (await agent.connect())["type"] == "ready"
    await agent.send({"type": "availability", "available": False})  # nobody auto-assigned: cases are opened
    await _synced(agent)
    return agent


async def _synced(agent: AgentClient) -> None:
    """Every frame the hub wrote to ``agent`` before now has arrived (frames are in order)."""
    await agent.send({"type": "ping"})
    await agent.wait_for(lambda f: f["type"] == "pong")


async def _asks(srv: RunningHub, text: str = ASK, **kw: Any) -> ChatClient:
    chat = ChatClient(srv.ws_url, lang="en", **kw)
    await chat.connect()
    await chat.say_and_ack(text)
    queued = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=15)
    assert queued["position"] >= 1  # a place in the queue, held or not
    assert (await chat.settle())["settled"] is True
    # …and an answer: the queue notice, as for everyone.
    assert chat.messages("system"), chat.frames
    return chat


def _handoffs(agent: AgentClient) -> dict[str, dict[str, Any]]:
    return {f["conversation_id"]: f for f in agent.frames if f["type"] == "handoff"}


def _case_of(srv: RunningHub, cid: str) -> Any:
    return srv.hub.cases.open_for_conversation(cid)


async def test_scripted_handoffs_from_one_address_are_held_until_a_supervisor_releases_them(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), handoffs_per_address=2) as srv:
        srv.create_agent("alice", skills=("general", "safety"))
        srv.create_agent("sam", role="supervisor")
        alice, sam = await _agent(srv, "alice"), await _agent(srv, "sam")
        # Five anonymous visitors from one address (every test client is 127.0.0.1) ask for a person.
        chats = [await _asks(srv) for _ in range(5)]
        ordinary, held = [c.conversation_id for c in chats[:2]], [c.conversation_id for c in chats[2:]]
        await _synced(alice)
        await _synced(sam)
        # The first two are ordinary: every agent of the queue is told, a case is opened.
        assert set(_handoffs(alice)) == set(ordinary)
        assert all(_case_of(srv, cid) is not None for cid in ordinary)
        # The rest are held: nobody but the supervisors hears of them, once for the burst — but
        # each customer has a place, an answer and, nobody being available, a case (promise 4).
        told = {cid: f for cid, f in _handoffs(sam).items() if f.get("held")}
        assert list(told) == [held[0]] and told[held[0]]["source"] == "127.0.0.1"
        assert all(_case_of(srv, cid) is not None for cid in held)
        assert all(srv.hub.suspects.is_held(cid) for cid in held)
        # The supervisor's queue view (the latest snapshot) flags them.
        latest = [f for f in sam.frames if f["type"] == "queue"][-1]
        assert {w["conversation_id"] for w in latest["waiting"]} == set(ordinary + held)
        assert {w["conversation_id"] for w in latest["waiting"] if w.get("held")} == set(held)

        # Danger from the same address is never held: the agents are told at once.
        danger = await _asks(srv, DANGER)
        await _synced(alice)
        assert danger.conversation_id in _handoffs(alice)
        assert not srv.hub.suspects.is_held(danger.conversation_id)
        # An app user vouched for by the app's backend is not anonymous: never held.
        app_user = await _asks(srv, identity={"token": identity_token("identity-secret", "u-7")})
        await _synced(alice)
        assert app_user.conversation_id in _handoffs(alice)

        # Only a supervisor releases.
        await alice.send({"type": "release_held", "source": "127.0.0.1"})
        refused = await alice.wait_for(lambda f: f["type"] == "error")
        assert refused["code"] == "forbidden"
        # A supervisor may simply take a held customer: claiming ends the hold.
        await sam.send({"type": "claim", "conversation_id": held[2]})
        await sam.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == held[2])
        assert not srv.hub.suspects.is_held(held[2])
        # Releasing the address's held handoffs makes them ordinary: the agents are told.
        await sam.send({"type": "release_held", "source": "127.0.0.1"})
        released = await sam.wait_for(lambda f: f["type"] == "held_released")
        assert sorted(released["conversation_ids"]) == sorted(held[:2])
        await _synced(alice)
        assert set(held[:2]) <= set(_handoffs(alice))
        assert all(not _handoffs(alice)[cid].get("held") for cid in held[:2])
        assert all(_case_of(srv, cid) is not None for cid in held[:2])
        await sam.send({"type": "release_held", "conversation_id": held[0]})
        assert (await sam.wait_for(lambda f: f["type"] == "error"))["code"] == "not_held"
        for chat in [*chats, danger, app_user]:
            await chat.close()
        await alice.close()
        await sam.close()


async def test_held_handoffs_are_not_auto_assigned_but_a_released_one_is(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), handoffs_per_address=1) as srv:
        srv.create_agent("sam", role="supervisor")
        srv.create_agent("alice")
        sam = await _agent(srv, "sam")
        first, second = await _asks(srv), await _asks(srv)
        assert srv.hub.suspects.is_held(second.conversation_id)
        # Alice comes online, available, with room: she gets the ordinary one, not the held one.
        alice = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, "alice"))
        await alice.connect()
        # Becoming available assigns before the hub reads alice's next frame: after the pong,
        # every assignment it made has arrived.
        await alice.send({"type": "availability", "available": True})
        await _synced(alice)
        assert [f for f in alice.frames if f["type"] == "assigned" and f["conversation_id"] == first.conversation_id]
        await first.wait_for(lambda f: f["type"] == "status" and f["status"] == "agent")
        assert not [f for f in alice.frames if f["type"] == "assigned" and f["conversation_id"] ==
                    second.conversation_id]
        await sam.send({"type": "release_held", "conversation_id": second.conversation_id})
        released = await sam.wait_for(lambda f: f["type"] == "held_released")
        # Still waiting in the queue when released (an assignment would have ended the hold).
        assert released["conversation_ids"] == [second.conversation_id]
        assert not [f for f in second.frames if f["type"] == "status" and f["status"] == "agent"]
        await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == second.conversation_id)
        await second.wait_for(lambda f: f["type"] == "status" and f["status"] == "agent")
        for client in (first, second, alice, sam):
            await client.close()
