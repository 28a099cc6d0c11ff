"""``python -m tests.cluster_hub``: the real hub process (``bot.hub.create_app`` served by Sanic,
settings from the environment as ``python -m bot serve`` reads them, ``REDIS_URL`` included)
with a fake brain in the hub's own process, for the cluster tests (``tests/test_cluster.py``).

The brain echoes (``echo <text>``, a resolved small-talk turn); ``sleep <s> …`` answers after
``s`` seconds. It also checks, through the cluster's Redis, that no two turns of one
conversation ever run at once on any hub: each turn marks its conversation
(``SET hl:test:turn:<id> NX``) for its whole length; a mark already there counts an overlap
(``INCR hl:test:overlaps``), and every turn counts itself per hub (``hl:test:turns:<port>``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from bot.brain import BotReply, BrainTurn
from bot.hub import create_app
from bot.settings import Settings


class ClusterTestBrain:
    def __init__(self, redis_url: str | None, name: str) -> None:
        import redis.asyncio as aioredis

        # Without Redis (the one-hub baseline of bench/cluster.py) there is nothing to check.
        self.redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self.name = name

    async def ready(self) -> bool:
        return True

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        key = f"hl:test:turn:{conversation_id}"
        marked = False
        if self.redis is not None:
            marked = bool(await self.redis.set(key, self.name, nx=True, px=60_000))
            if not marked:
                await self.redis.incr("hl:test:overlaps")
            await self.redis.incr(f"hl:test:turns:{self.name}")
        try:
            words = text.split()
            if len(words) >= 2 and words[0] == "sleep":
                await asyncio.sleep(float(words[1]))
            # A different completed request every turn (as tests/test_brain_pool.py's fake brain
            # does), so that no rule of the guard hands the conversation off.
            intent = "request_" + "_".join("".join(c for c in w if c.isalnum()) for w in words)
            return BrainTurn(replies=[BotReply(f"echo {text}")], intent=intent, confidence=0.99, entities=[],
                             actions=["action_echo"], slots={}, resolved=True,
                             slots_set={"resolution": "echoed"})
        finally:
            if marked and self.redis is not None:
                await self.redis.delete(key)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    brain = ClusterTestBrain(settings.redis_url, os.environ.get("HUMANLINE_PORT", "hub"))
    app = create_app(settings, brain=brain)
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 1
    app.run(host=settings.host, port=settings.port, access_log=False)


if __name__ == "__main__":
    main()
