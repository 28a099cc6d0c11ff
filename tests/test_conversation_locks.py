"""ConversationLocks: the database's advisory lock is taken only when hubs may share the
database (PostgreSQL and REDIS_URL); a hub alone serialises a conversation's turns in process."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.hub.locks import ConversationLocks


class Held:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def release(self) -> None:
        self.log.append("release")


class FakePostgres:
    is_sqlite = False

    def __init__(self) -> None:
        self.log: list[str] = []

    def try_conversation_lock(self, conversation_id: str) -> Any:
        self.log.append(f"lock {conversation_id}")
        return Held(self.log)


async def test_shared_hubs_take_the_database_lock_for_each_turn() -> None:
    db = FakePostgres()
    locks = ConversationLocks(db, shared=True)  # type: ignore[arg-type]
    async with locks("c1"):
        assert db.log == ["lock c1"]
    assert db.log == ["lock c1", "release"]


async def test_a_hub_alone_serialises_turns_without_a_database_round_trip() -> None:
    db = FakePostgres()
    locks = ConversationLocks(db, shared=False)  # type: ignore[arg-type]
    inside: list[str] = []

    async def turn(name: str) -> None:
        async with locks("c1"):
            inside.append(f"{name} in")
            await asyncio.sleep(0.01)
            inside.append(f"{name} out")

    await asyncio.gather(turn("a"), turn("b"))
    assert inside == ["a in", "a out", "b in", "b out"]  # one turn at a time all the same
    assert db.log == []


def test_the_hub_shares_its_locks_only_with_redis() -> None:
    from dataclasses import replace

    from bot.hub.core import Hub
    from bot.settings import Settings
    from bot.store.db import Database

    db = Database("postgresql://postgres@127.0.0.1:5432/test")  # never connected to here
    try:
        alone = replace(Settings.from_env(), database_url=str(db.url), redis_url=None)
        assert Hub(alone, db, None).locks.shared is False
        several = replace(alone, redis_url="redis://127.0.0.1:6379/0")
        assert Hub(several, db, None).locks.shared is True
    finally:
        db.dispose()
