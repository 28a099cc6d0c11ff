"""Assignment: who takes a waiting conversation, and when an agent loses it (issue #15's split of
:class:`bot.hub.core.Hub`).

The agents able to serve a queue (online on any hub: :mod:`bot.hub.presence`), their places
(capacity) and load, auto-assignment (oldest conversation first, to the least loaded available
agent with room), refilling an agent that has room again, a supervisor's capacity change, and the
reply clock (an assigned agent who leaves the customer waiting loses the conversation). Moved
here unchanged from ``core.py``; :class:`AssignmentMixin` is a base of ``Hub``, whose state it uses
(declared below).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from bot.hub.errors import HubError
from bot.hub.events import LRUDict
from bot.hub.outbox import Unit
from bot.i18n import t
from bot.services.agents import AgentInfo, AgentService
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationService, HandoffInfo
from bot.services.queues import QueueService
from bot.settings import Settings

logger = logging.getLogger(__name__)


class AssignmentMixin:
    # The hub's state and the transitions this part uses (bot.hub.core.Hub).
    settings: Settings
    config: HumanlineConfig
    online: dict[int, AgentInfo]
    agents: AgentService
    queues: QueueService
    conversations: ConversationService
    _timed_out: LRUDict[str, set[int]]
    _agent_locks: dict[int, asyncio.Lock]
    run: Any
    spawn: Any
    lock: Any
    claim: Any
    emit: Any
    notice: Any
    _command: Any
    broadcast_queues: Any
    _announce_queued: Any

    def agents_for(self, queue: str, *, available_only: bool = False) -> list[AgentInfo]:
        """Online agents with the skill for ``queue`` (supervisors see every queue)."""
        return [
            a for a in self.online.values()
            if (queue in a.skills or a.role == "supervisor") and (a.available or not available_only)
        ]

    def capacity_of(self, agent: AgentInfo) -> int:
        """How many conversations ``agent`` may hold at once (its own limit or the default)."""
        return agent.capacity(self.config.agents.max_concurrent_default)

    def _agent_lock(self, agent_id: int) -> asyncio.Lock:
        lock = self._agent_locks.get(agent_id)
        if lock is None:
            lock = self._agent_locks[agent_id] = asyncio.Lock()
        return lock

    async def queue_capacity(self, queue: str) -> tuple[int, int, int]:
        """``(agents, places, free places)`` of the available agents online with the skill for
        ``queue``: the queue estimate counts places, not heads."""
        pool = self.agents_for(queue, available_only=True)
        if not pool:
            return 0, 0, 0
        loads = await self.run(self.agents.loads, [a.id for a in pool])
        caps = {a.id: self.capacity_of(a) for a in pool}
        return len(pool), sum(caps.values()), sum(max(0, caps[a] - loads[a]) for a in caps)

    async def agents_load(self) -> list[dict[str, Any]]:
        """Every agent with its load for the console: ``{id, display_name, role, online,
        available, load, max_concurrent (the limit in force), own_max_concurrent (``None``: the
        default), allow_overflow}``; online agents first."""
        def read() -> tuple[list[AgentInfo], dict[int, int]]:
            return self.agents.all(), self.agents.loads()

        everyone, loads = await self.run(read)
        rows: list[dict[str, Any]] = []
        for a in everyone:
            current = self.online.get(a.id)
            rows.append({
                "id": a.id, "display_name": a.display_name, "role": a.role, "online": current is not None,
                "available": (current or a).available, "load": loads.get(a.id, 0),
                "max_concurrent": self.capacity_of(a), "own_max_concurrent": a.max_concurrent,
                "allow_overflow": a.allow_overflow,
            })
        rows.sort(key=lambda r: (not r["online"], str(r["display_name"]).lower()))
        return rows

    async def auto_assign(self, queue: str) -> None:
        """Give waiting conversations of ``queue``, oldest first, to the least loaded available
        agent online with the skill who has room for one more (fewest conversations, then most
        free places); an agent who let the conversation time out is skipped for it. Stops when
        nobody has room."""
        candidates = self.agents_for(queue, available_only=True)
        if not candidates:
            return
        loads = await self.run(self.agents.loads, [a.id for a in candidates])
        for entry in await self.run(self.queues.waiting, [queue]):
            if entry.held_source is not None:  # waits for a supervisor's release (on any hub)
                continue
            # The hub's current view: availability, skills or limits may have changed meanwhile.
            pool = [a for a in self.agents_for(queue, available_only=True) if a.id in loads]
            room = [a for a in pool if loads[a.id] < self.capacity_of(a)]
            if not room:
                return
            skip = self._timed_out.get(entry.conversation_id, set())
            room = [a for a in room if a.id not in skip]
            if not room:
                continue
            agent = min(room, key=lambda a: (loads[a.id], loads[a.id] - self.capacity_of(a), a.id))
            try:
                await self.claim(agent, entry.conversation_id, automatic=True)
            except HubError as e:
                if e.code == "at_capacity":  # it took conversations elsewhere meanwhile
                    loads[agent.id] = self.capacity_of(agent)
                continue
            loads[agent.id] += 1

    def _refill(self, agent_id: int | None) -> None:
        """An agent has room again (released a conversation, got a higher limit): offer it the
        waiting conversations of its queues."""
        agent = self.online.get(agent_id) if agent_id is not None else None
        if agent is None or not agent.available:
            return
        queues = self.config.queues if agent.role == "supervisor" else agent.skills
        for queue in queues:
            if queue in self.config.queues:
                self.spawn(self.auto_assign(queue))

    async def set_capacity(
        self, supervisor: AgentInfo, agent_id: Any, max_concurrent: Any, allow_overflow: Any = None
    ) -> dict[str, Any]:
        """A supervisor sets an agent's limit (``None``: the configured default) and, when given,
        whether the agent may claim by hand above it. Audited; every console gets the new load
        table; a raised limit fills the agent from its queues."""
        if supervisor.role != "supervisor":
            raise HubError("forbidden", "only a supervisor can change an agent's capacity")
        if isinstance(agent_id, bool) or not isinstance(agent_id, int):
            raise HubError("invalid_field", "agent_id must be an agent's id")
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or not 1 <= max_concurrent <= 100
        ):
            raise HubError("invalid_field", "max_concurrent must be a whole number from 1 to 100, or null")
        if allow_overflow is not None and not isinstance(allow_overflow, bool):
            raise HubError("invalid_field", "allow_overflow must be true or false")
        updated = await self.run(
            self.agents.set_capacity, agent_id, supervisor.actor, max_concurrent=max_concurrent,
            allow_overflow=allow_overflow,
        )
        if updated is None:
            raise HubError("not_found", "no such agent")
        if updated.id in self.online:
            self.online[updated.id] = replace(self.online[updated.id], max_concurrent=updated.max_concurrent,
                                              allow_overflow=updated.allow_overflow)
        await self.broadcast_queues()
        self._refill(updated.id)
        return updated.to_dict()

    # ---- agent reply timeout --------------------------------------------------------------

    async def _watch_reply_timeouts(self) -> None:
        timeout = self.settings.agent_reply_timeout_s
        interval = max(0.05, min(1.0, timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                for h in await self.run(self.conversations.overdue_assignments, timeout):
                    await self.release_overdue(h)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep watching
                logger.exception("reply-timeout watcher failed")

    async def release_overdue(self, h: HandoffInfo) -> None:
        """An assigned agent did not reply in time: back to the queue, same place in line."""
        cid = h.conversation_id
        async with self.lock(cid):
            conv = await self.run(self.conversations.get, cid)
            if conv is None or conv.status != "agent" or conv.agent_id != h.agent_id:
                return
            assert h.agent_id is not None
            agent_id, lang = h.agent_id, conv.lang or "en"

            def change(u: Unit) -> HandoffInfo | None:
                # One unit of work: the requeue, its audit entry, the customer's notice and the
                # agent's "released" (bot.hub.agent_commands, bot.hub.outbox).
                new = self.conversations.queue(
                    cid, h.queue, h.reason, h.case_id, from_statuses=("agent",), requested_at=h.requested_at,
                    end_outcome="timeout", session=u.session,
                )
                if new is not None:
                    u.to_agents([agent_id], {"type": "released", "conversation_id": cid, "reason": "reply_timeout"})
                    self.notice(u, cid, t("requeued", lang, queue=self.queues.display(h.queue, lang)))
                return new

            new = await self._command(f"agent_id:{agent_id}", "reply_timeout", cid, change)
            if new is None:
                return
            self._timed_out.setdefault(cid, set()).add(agent_id)
            await self._announce_queued(cid, new, lang, first=False)
        self._refill(h.agent_id)
