"""Who is online: agents connected to this hub or to any other (issue #15).

:class:`Presence` owns the hub's view of online agents (``online``: agent id → the agent as the
database has it now), the agent sockets opened with each login token, and revocation.

* One hub (no Redis): ``online`` is the agents with a socket here.
* Several hubs (:class:`~bot.hub.bus.RedisBus`): each hub keeps an expiring key
  ``hl:presence:<agent>:<hub>`` per agent connected to it (renewed every
  :data:`HEARTBEAT_S`, gone :data:`TTL_S` after a hub dies), and every hub's ``online`` is the
  union of those keys, read back with the agents' rows (availability, skills and limits come
  from the database). A connect or disconnect is announced on the bus's control channel, so the
  other hubs' views change at once, not at the next heartbeat: auto-assignment on any hub sees
  agents connected anywhere.
* A logout closes the sockets opened with the token on every hub: revoked in the database
  first, then announced (``revoke`` with the token's SHA-256), and each hub closes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.hub.bus import LocalBus, RedisBus
from bot.services.agents import AgentInfo, AgentService

logger = logging.getLogger(__name__)

PREFIX = "hl:presence:"
TTL_S = 10
HEARTBEAT_S = 2.0

Runner = Callable[..., Awaitable[Any]]


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Presence:
    def __init__(self, bus: LocalBus | RedisBus, agents: AgentService, run: Runner) -> None:
        self.bus = bus
        self.agents = agents
        self.run = run
        self.online: dict[int, AgentInfo] = {}
        self.local: dict[int, AgentInfo] = {}
        self._by_token: dict[str, set[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._redis = bus.redis if isinstance(bus, RedisBus) else None
        bus.on_control(self._on_control)

    # ---- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._redis is not None and self._task is None:
            self._task = asyncio.ensure_future(self._heartbeat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._redis is not None and self.local:
            with contextlib.suppress(Exception):
                await self._redis.delete(*(self._key(a) for a in self.local))
                await self.bus.publish_control({"k": "presence"})

    def _key(self, agent_id: int) -> str:
        return f"{PREFIX}{agent_id}:{self.bus.hub_id}"

    # ---- sockets ---------------------------------------------------------------------------

    async def connected(self, agent: AgentInfo, ws: Any, token: str | None) -> None:
        self.bus.agents.add(agent.id, ws)
        self.online[agent.id] = agent
        self.local[agent.id] = agent
        if token is not None:
            self._by_token.setdefault(token_key(token), set()).add(ws)
        if self._redis is not None:
            try:
                await self._redis.set(self._key(agent.id), "1", ex=TTL_S)
            except Exception:  # noqa: BLE001 - the heartbeat writes it again
                logger.warning("writing the presence of agent %s failed", agent.id, exc_info=True)
            await self.bus.publish_control({"k": "presence"})

    async def disconnected(self, agent: AgentInfo, ws: Any) -> None:
        for key, sockets in list(self._by_token.items()):
            sockets.discard(ws)
            if not sockets:
                del self._by_token[key]
        self.bus.agents.discard(agent.id, ws)
        if self.bus.agents.has(agent.id):
            return
        self.local.pop(agent.id, None)
        self.online.pop(agent.id, None)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.delete(self._key(agent.id))
            await self.bus.publish_control({"k": "presence"})
            await self.refresh()  # it may still be connected to another hub

    async def revoke(self, token: str) -> None:
        """Close the sockets opened with ``token`` here and on every other hub (4001)."""
        key = token_key(token)
        await self._close(key)
        await self.bus.publish_control({"k": "revoke", "t": key})

    async def _close(self, key: str) -> None:
        for ws in list(self._by_token.pop(key, set())):
            with contextlib.suppress(Exception):
                await ws.send('{"type":"error","code":"unauthorized","message":"logged out"}')
                await asyncio.wait_for(ws.close(code=4001, reason="logged out"), 2)

    async def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("k")
        if kind == "revoke" and isinstance(message.get("t"), str):
            await self._close(message["t"])
        elif kind == "presence":
            await self.refresh()

    # ---- the shared view ---------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read every hub's presence keys and the agents' rows (several hubs only)."""
        if self._redis is None:
            return
        try:
            ids = set(self.local)
            async for raw in self._redis.scan_iter(match=f"{PREFIX}*", count=1000):
                with contextlib.suppress(ValueError, IndexError):
                    ids.add(int(raw.decode().split(":")[2]))
            everyone = await self.run(self.agents.all)
        except Exception:  # noqa: BLE001 - keep the current view until Redis or the database answers
            logger.warning("reading the agents online failed", exc_info=True)
            return
        fresh = {a.id: a for a in everyone if a.id in ids}
        for agent_id in list(self.online):
            if agent_id not in fresh:
                del self.online[agent_id]
        self.online.update(fresh)

    async def _heartbeat(self) -> None:
        while True:
            try:
                if self.local and self._redis is not None:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for agent_id in list(self.local):
                            pipe.set(self._key(agent_id), "1", ex=TTL_S)
                        await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: try again
                logger.warning("renewing the presence keys failed", exc_info=True)
            await self.refresh()
            await asyncio.sleep(HEARTBEAT_S)
