"""The handoff dedupe across hubs and restarts (issue #15, docs/security.md 1b): the count per
client address in Redis, shared by every hub (``RedisHandoffCounter``, against the machine's
Redis on 127.0.0.1:6379 under a key prefix of its own, removed afterwards), with each hub's own
policy as the fallback while Redis is away; and the hold itself in the database, so a restarted
hub still skips a held handoff. The two real hubs behind HAProxy are in
``tests/test_cluster.py::test_scripted_handoffs_are_counted_and_released_across_hubs``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.client import ChatClient
from bot.hub.ratelimit import RateLimiter
from bot.hub.suspects import RedisHandoffCounter
from bot.services.handoff_dedupe import HandoffDedupe, Verdict
from bot.store.db import Database
from tests.hubtools import AgentClient, GreeterBrain, free_port, running_hub

ADDRESS, OTHER = "203.0.113.7", "198.51.100.2"


@pytest.fixture
async def redis() -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception:  # noqa: BLE001
        await client.close()
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield client
    await client.close()


@pytest.fixture
async def prefix(redis: Any) -> AsyncIterator[str]:
    """A key prefix no other run uses; its keys are deleted afterwards."""
    name = f"hl:test:dedupe:{uuid.uuid4().hex}"
    yield name
    keys = [k async for k in redis.scan_iter(match=f"{name}:*")]
    if keys:
        await redis.delete(*keys)


def hub_counter(redis: Any, prefix: str, limit: int = 5, window_s: float = 600.0) -> RedisHandoffCounter:
    """One hub's counter: the shared one over its own in-memory policy (the fallback)."""
    return RedisHandoffCounter(redis, HandoffDedupe(RateLimiter(limit, window_s)), limit, window_s, prefix=prefix)


async def test_two_hubs_count_one_address_together_and_supervisors_are_told_once(redis: Any, prefix: str) -> None:
    hubs = [hub_counter(redis, prefix), hub_counter(redis, prefix)]
    # Seven handoffs from one address, alternating between the hubs: each hub alone would have
    # seen at most 4 (under its threshold of 5); together the 6th and 7th are held.
    verdicts = [await hubs[i % 2].consider(ADDRESS, "customer_request") for i in range(7)]
    assert [v.held for v in verdicts] == [False] * 5 + [True, True]
    assert [v.first_held for v in verdicts] == [False] * 5 + [True, False]  # once, whichever hub
    assert all(v.source == ADDRESS for v in verdicts)
    # Another address has its own budget; danger, app users and unknown sources are never held
    # nor counted.
    assert await hubs[0].consider(OTHER, "customer_request") == Verdict(held=False, source=OTHER)
    assert not (await hubs[1].consider(ADDRESS, "danger")).held
    assert not (await hubs[1].consider(ADDRESS, "customer_request", identified=True)).held
    assert await hubs[0].consider(None, "customer_request") == Verdict(held=False)
    # The in-memory fallbacks counted nothing: the count was Redis's.
    assert all(len(h.fallback.counter) == 0 for h in hubs)  # type: ignore[arg-type]


async def test_a_later_burst_is_news_again(redis: Any, prefix: str) -> None:
    hubs = [hub_counter(redis, prefix, limit=2, window_s=0.4), hub_counter(redis, prefix, limit=2, window_s=0.4)]
    first = [await hubs[i % 2].consider(ADDRESS, "turn_budget") for i in range(4)]
    assert [(v.held, v.first_held) for v in first] == [(False, False), (False, False), (True, True), (True, False)]
    await asyncio.sleep(0.5)  # the window has passed: ordinary again, and the next burst is told again
    second = [await hubs[(i + 1) % 2].consider(ADDRESS, "turn_budget") for i in range(3)]
    assert [(v.held, v.first_held) for v in second] == [(False, False), (False, False), (True, True)]


async def test_while_redis_is_away_each_hub_counts_alone() -> None:
    import redis.asyncio as aioredis

    away = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        hub = hub_counter(away, "hl:test:dedupe:away", limit=2)
        verdicts = [await hub.consider(ADDRESS, "customer_request") for _ in range(4)]
        assert [(v.held, v.first_held) for v in verdicts] == [(False, False), (False, False), (True, True),
                                                              (True, False)]
    finally:
        await away.close()


async def test_a_held_handoff_stays_held_after_a_restart_until_a_supervisor_releases_it(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'restart.db'}")
    try:
        with running_hub(tmp_path, GreeterBrain(), db=db, handoffs_per_address=1) as srv:
            srv.create_agent("sam", role="supervisor", skills=())  # no queue to be assigned from at login
            srv.create_agent("alice")
            chats = []
            for _ in range(2):
                chat = ChatClient(srv.ws_url, lang="en")
                await chat.connect()
                await chat.say_and_ack("I want to talk to a human")
                await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=15)
                chats.append(chat)
            ordinary, held = (str(c.conversation_id) for c in chats)
            assert srv.hub.suspects.is_held(held) and not srv.hub.suspects.is_held(ordinary)
            for chat in chats:
                await chat.close()
        # A new hub process on the same database: the hold is still there.
        with running_hub(tmp_path, GreeterBrain(), db=db, handoffs_per_address=1) as srv:
            assert srv.hub.suspects.is_held(held)
            sam = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, "sam"))
            await sam.connect()
            await sam.send({"type": "availability", "available": False})  # not a candidate itself
            await sam.send({"type": "ping"})
            await sam.wait_for(lambda f: f["type"] == "pong")
            alice = AgentClient(srv.agent_ws_url, await asyncio.to_thread(srv.login, "alice"))
            await alice.connect()
            # Becoming available assigns before the hub reads alice's next frame.
            await alice.send({"type": "availability", "available": True})
            await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == ordinary)
            await alice.send({"type": "ping"})
            await alice.wait_for(lambda f: f["type"] == "pong")
            assert [f["conversation_id"] for f in alice.frames if f["type"] == "assigned"] == [ordinary]
            queue = await sam.wait_for(lambda f: f["type"] == "queue" and any(
                w["conversation_id"] == held for w in f["waiting"]))
            assert [w.get("held") for w in queue["waiting"] if w["conversation_id"] == held] == [True]
            await sam.send({"type": "release_held", "conversation_id": held})
            assert (await sam.wait_for(lambda f: f["type"] == "held_released"))["conversation_ids"] == [held]
            await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == held)
            assert not srv.hub.suspects.is_held(held)
            await alice.close()
            await sam.close()
    finally:
        db.dispose()
