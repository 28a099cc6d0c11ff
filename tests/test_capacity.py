"""Agent capacity through the real hub: a limit of conversations held at once per agent
(``agents.max_concurrent_default``, overridable per agent by a supervisor), automatic assignment
within it to the least loaded agent, hand claims above it only with a supervisor's leave, the
agents' load in the console frames, and queue estimates from free places."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.client import ChatClient
from bot.services.agents import AgentService
from bot.services.config import ConfigError, HumanlineConfig
from bot.services.conversations import AtCapacity, ConversationService, HandoffInfo
from bot.services.queues import QueueService, estimated_wait
from bot.store.db import Database
from bot.store.models import AuditEntry
from tests.hubtools import AgentClient, Frame, GreeterBrain, RunningHub, running_hub


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, GreeterBrain(), agent_reply_timeout_s=300) as srv:
        srv.create_agent("alice", skills=("general",), display_name="Alice Chen")
        srv.create_agent("bob", skills=("general",), display_name="Bob Li")
        srv.create_agent("sue", skills=(), display_name="Sue Boss", role="supervisor")
        yield srv


async def _agent(srv: RunningHub, username: str, available: bool) -> AgentClient:
    token = await asyncio.to_thread(srv.login, username)
    agent = AgentClient(srv.agent_ws_url, token)
    ready = await agent.connect()
    assert ready["type"] == "ready", ready
    if not available:
        await agent.send({"type": "availability", "available": False})
        await agent.wait_for(lambda f: f["type"] == "queue")
    return agent


async def _queued(srv: RunningHub) -> ChatClient:
    chat = ChatClient(srv.ws_url, lang="en")
    await chat.connect()
    await chat.say_and_ack("I want to talk to a human")
    await chat.wait_for(lambda f: f["type"] == "status" and f["status"] in ("queued", "agent"))
    return chat


def _assigned(agent: AgentClient) -> list[str]:
    return [f["conversation_id"] for f in agent.frames if f["type"] == "assigned"]


def _load(frame: Frame, name: str) -> tuple[int, int]:
    row = next(a for a in frame["agents"] if a["display_name"] == name)
    return row["load"], row["max_concurrent"]


def test_the_default_limit_comes_from_the_configuration() -> None:
    assert HumanlineConfig.load().agents.max_concurrent_default == 3
    raw = {"queues": {"general": {}}, "agents": {"max_concurrent_default": 5}}
    assert HumanlineConfig.from_dict(raw).agents.max_concurrent_default == 5
    with pytest.raises(ConfigError):
        HumanlineConfig.from_dict({"queues": {"general": {}}, "agents": {"max_concurrent_default": 0}})


def test_estimated_wait_counts_free_places() -> None:
    assert estimated_wait(0, 300, slots=3, free=1) == 0        # a place is free for it
    assert estimated_wait(1, 300, slots=3, free=1) == 100      # one place must free up: 300 s / 3 places
    assert estimated_wait(0, 300, slots=1, free=0) == 300
    assert estimated_wait(2, 300, slots=6, free=0) == 150


async def test_automatic_assignment_stops_at_the_limit_and_fills_the_least_loaded(server: RunningHub) -> None:
    chats = [await _queued(server) for _ in range(5)]
    alice = await _agent(server, "alice", available=True)
    for _ in range(3):
        await alice.wait_for(lambda f: f["type"] == "assigned")
    await alice.drain(0.5)
    assert _assigned(alice) == [c.conversation_id for c in chats[:3]]      # oldest first, three only
    waiting = await asyncio.to_thread(server.hub.queues.waiting)
    assert [w.conversation_id for w in waiting] == [c.conversation_id for c in chats[3:]]
    # Bob (nothing held) gets the two still waiting.
    bob = await _agent(server, "bob", available=True)
    await bob.wait_for(lambda f: f["type"] == "assigned")
    await bob.wait_for(lambda f: f["type"] == "assigned")
    assert _assigned(bob) == [c.conversation_id for c in chats[3:]]
    # Both consoles see every agent's load.
    queue_frame = await bob.wait_for(lambda f: f["type"] == "queue" and _load(f, "Bob Li") == (2, 3))
    assert _load(queue_frame, "Alice Chen") == (3, 3)
    # A new customer: bob has the fewer conversations.
    sixth = await _queued(server)
    assert (await bob.wait_for(lambda f: f["type"] == "assigned"))["conversation_id"] == sixth.conversation_id
    # Alice resolves one: she has room again and the next customer goes to her (bob is full too).
    seventh = await _queued(server)
    await alice.send({"type": "resolve", "conversation_id": chats[0].conversation_id})
    got = await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == seventh.conversation_id)
    assert got["conversation_id"] == seventh.conversation_id
    for client in (*chats, sixth, seventh, alice, bob):
        await client.close()


async def test_a_full_agent_claims_by_hand_only_when_a_supervisor_allows_it(server: RunningHub) -> None:
    sue = await _agent(server, "sue", available=False)
    alice = await _agent(server, "alice", available=False)
    alice_id = alice.ready["agent"]["id"]  # type: ignore[index]
    # Only supervisors change limits.
    await alice.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 9})
    assert (await alice.wait_for(lambda f: f["type"] == "error"))["code"] == "forbidden"
    await sue.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 0})
    assert (await sue.wait_for(lambda f: f["type"] == "error"))["code"] == "invalid_field"
    await sue.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 1})
    answer = await sue.wait_for(lambda f: f["type"] == "agent_capacity")
    assert answer["agent"]["max_concurrent"] == 1 and answer["agent"]["allow_overflow"] is False
    seen = await alice.wait_for(lambda f: f["type"] == "queue" and _load(f, "Alice Chen") == (0, 1))
    assert seen["agents"]

    first, second = await _queued(server), await _queued(server)
    await alice.send({"type": "claim", "conversation_id": first.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    await alice.send({"type": "claim", "conversation_id": second.conversation_id})
    refused = await alice.wait_for(lambda f: f["type"] == "error")
    assert refused["code"] == "at_capacity" and refused["conversation_id"] == second.conversation_id
    assert (await asyncio.to_thread(server.hub.agents.load, alice_id)) == 1

    await sue.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 1, "allow_overflow": True})
    await sue.wait_for(lambda f: f["type"] == "agent_capacity" and f["agent"]["allow_overflow"])
    await alice.send({"type": "claim", "conversation_id": second.conversation_id})
    got = await alice.wait_for(lambda f: f["type"] == "assigned")
    assert got["conversation_id"] == second.conversation_id
    load = await alice.wait_for(lambda f: f["type"] == "queue" and _load(f, "Alice Chen") == (2, 1))
    assert load

    with server.db.session() as s:
        audited = s.execute(select(AuditEntry).where(AuditEntry.action == "agent_capacity")).scalars().all()
        assert [(a.actor, a.target) for a in audited] == [("agent:sue", "agent:alice")] * 2
    for client in (first, second, alice, sue):
        await client.close()


async def test_capacity_over_rest_is_for_supervisors(server: RunningHub) -> None:
    alice_id = server.hub.agents.all()[0].id

    def post(token: str | None, body: object) -> tuple[int, object]:
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(f"{server.url}/api/supervisor/agents/{alice_id}/capacity",
                                     data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert (await asyncio.to_thread(post, None, {"max_concurrent": 2}))[0] == 401
    alice_token = await asyncio.to_thread(server.login, "alice")
    assert (await asyncio.to_thread(post, alice_token, {"max_concurrent": 2}))[0] == 403
    sue_token = await asyncio.to_thread(server.login, "sue")
    assert (await asyncio.to_thread(post, sue_token, {}))[0] == 400
    assert (await asyncio.to_thread(post, sue_token, {"max_concurrent": "lots"}))[0] == 400
    status, body = await asyncio.to_thread(post, sue_token, {"max_concurrent": 5})
    assert status == 200 and body["agent"]["max_concurrent"] == 5  # type: ignore[index]
    status, body = await asyncio.to_thread(post, sue_token, {"max_concurrent": None})
    assert status == 200 and body["agent"]["max_concurrent"] is None  # type: ignore[index]
    status, overview = await asyncio.to_thread(
        server.get, "/api/supervisor/overview", {"Authorization": f"Bearer {sue_token}"}
    )
    alice_row = next(a for a in json.loads(overview)["agents"] if a["display_name"] == "Alice Chen")
    assert alice_row["max_concurrent"] == 3 and alice_row["own_max_concurrent"] is None and alice_row["load"] == 0


async def test_the_queue_estimate_counts_places_not_agents(server: RunningHub) -> None:
    sue = await _agent(server, "sue", available=False)
    alice = await _agent(server, "alice", available=True)
    alice_id = alice.ready["agent"]["id"]  # type: ignore[index]
    await sue.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 1})
    await sue.wait_for(lambda f: f["type"] == "agent_capacity")
    held = await _queued(server)
    await alice.wait_for(lambda f: f["type"] == "assigned")
    # Alice is full (1 of 1): the next customer waits for her one place to free up (5 min
    # without history), the one after for two.
    second, third = await _queued(server), await _queued(server)
    s2 = [f for f in second.frames if f["type"] == "status" and f.get("position") == 1][-1]
    s3 = [f for f in third.frames if f["type"] == "status" and f.get("position") == 2][-1]
    assert (s2["eta_seconds"], s3["eta_seconds"]) == (300, 600)
    assert s2["agents_online"] == 1
    # Two places (one free): the second customer is assigned, the third waits for one place of two.
    await sue.send({"type": "set_capacity", "agent_id": alice_id, "max_concurrent": 2})
    await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == second.conversation_id)
    moved = await third.wait_for(lambda f: f["type"] == "status" and f.get("position") == 1)
    assert moved["eta_seconds"] == 150
    for client in (held, second, third, alice, sue):
        await client.close()


def test_assignment_checks_the_limit_in_its_transaction(db: Database) -> None:
    """Hubs that assign to the same agent at the same moment take turns on the agent's row
    (PostgreSQL): of two conversations offered to an agent with one free place, one is taken."""
    conversations, agents = ConversationService(db), AgentService(db)
    alice = agents.create("alice", "Alice", "password-123", ["general"])
    cids = []
    for _ in range(3):
        cid = conversations.create_conversation(conversations.create_visitor("en")).id
        conversations.queue(cid, "general", "customer_request")
        cids.append(cid)
    assert conversations.assign(cids[0], alice.id, max_load=2) is not None
    results: list[object] = []
    barrier = threading.Barrier(2)

    def take(cid: str) -> None:
        barrier.wait()
        try:
            results.append(conversations.assign(cid, alice.id, max_load=2))
        except AtCapacity as e:
            results.append(e)
        except Exception as e:  # noqa: BLE001 - SQLite refuses the loser's stale write instead
            results.append(e)

    threads = [threading.Thread(target=take, args=(cid,)) for cid in cids[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    taken = [r for r in results if isinstance(r, HandoffInfo)]
    assert len(taken) == 1, results
    if db.url.get_backend_name() == "postgresql":
        assert any(isinstance(r, AtCapacity) for r in results), results
    assert agents.load(alice.id) == 2
    left = next(w.conversation_id for w in QueueService(db, HumanlineConfig.load()).waiting())
    with pytest.raises(AtCapacity):
        conversations.assign(left, alice.id, max_load=2)
    assert conversations.assign(left, alice.id) is not None    # no limit given (a supervisor's overflow)
