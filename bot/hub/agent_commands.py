"""Agent commands: what an agent's socket asks of the hub (issue #15's split of
:class:`bot.hub.core.Hub`).

Claim a queued conversation, reply in one it holds, transfer it to another queue, hand it back to
the bot, resolve it, and set its own availability. Each command checks that the agent may do it
(it holds the conversation, or serves the queue) and takes the conversation's lock. Claim,
reply, transfer, hand back and resolve are each one unit of work (see
:meth:`AgentCommandsMixin._audited`): the change and its audit entry commit in one transaction,
both or neither, and the agent, the other agents and the customer are told only after the commit.
Moved here from ``core.py``; :class:`AgentCommandsMixin` is a base of ``Hub``, whose state it uses
(declared below).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.guard import GuardState, HandoffGuard
from bot.hub.errors import HubError
from bot.hub.events import LRUDict
from bot.i18n import t
from bot.services.agents import AgentInfo, AgentService
from bot.services.cases import CaseError, CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import (
    Appended,
    AtCapacity,
    ConversationInfo,
    ConversationService,
    MessageRecord,
)
from bot.services.queues import QueueService
from bot.store.db import Database

T = TypeVar("T")


class AgentCommandsMixin:
    # The hub's state and the transitions this part uses (bot.hub.core.Hub).
    config: HumanlineConfig
    db: Database
    guard: HandoffGuard
    online: dict[int, AgentInfo]
    agents: AgentService
    queues: QueueService
    cases: CaseService
    conversations: ConversationService
    _last_status: LRUDict[str, tuple[Any, ...]]
    _agent_locks: dict[int, asyncio.Lock]
    run: Any
    lock: Any
    emit: Any
    emit_many: Any
    send_customers: Any
    system_message: Any
    customer_status: Any
    refresh_queue: Any
    broadcast_queues: Any
    auto_assign: Any
    agents_for: Any
    capacity_of: Any
    _agent_lock: Any
    _refill: Any
    _announce_queued: Any
    _conversation_view: Any
    _add_case_url: Any
    _push_case: Any

    async def _held(self, agent: AgentInfo, cid: str) -> ConversationInfo:
        conv = await self.run(self.conversations.get, cid)
        if conv is None:
            raise HubError("not_found", "no such conversation")
        if conv.status != "agent" or conv.agent_id != agent.id:
            raise HubError("forbidden", "this conversation is not assigned to you")
        return conv

    def _audited(
        self, agent: AgentInfo, action: str, target: str, change: Callable[[Session], T],
        detail: Callable[[T], dict[str, Any]] | None = None,
    ) -> T:
        """One command as one unit of work (blocking: run it in a worker thread): ``change`` and,
        when it happened (a result other than ``None`` or ``False``), the agent's audit entry
        ``action`` on ``target`` with ``detail(result)``, committed together — both or neither.
        The callers send their events after it returned, i.e. after the commit."""
        with self.db.session() as s:
            out = change(s)
            if out is not None and out is not False:
                self.agents.record(agent, action, target, session=s, **(detail(out) if detail else {}))
            return out

    async def claim(self, agent: AgentInfo, cid: str, *, automatic: bool = False) -> None:
        """Take a queued conversation. Of racing claims exactly one wins. An agent at its limit
        gets ``at_capacity`` (by hand: unless a supervisor allowed it to overflow)."""
        async with self.lock(cid):
            conv = await self.run(self.conversations.get, cid)
            if conv is None:
                raise HubError("not_found", "no such conversation")
            if conv.status != "queued":
                raise HubError("already_claimed", "this conversation is not waiting any more")
            if conv.queue not in agent.skills and agent.role != "supervisor":
                raise HubError("forbidden", "this conversation is in a queue you do not serve")
            # Capacity: automatic assignment never goes above the limit; a claim by hand only
            # when a supervisor allowed this agent to overflow. Checked in the assigning
            # transaction (the agent's row locked) and, in this hub, under the agent's lock.
            limit = None if agent.allow_overflow and not automatic else self.capacity_of(agent)
            async with self._agent_lock(agent.id):
                try:
                    h = await self.run(
                        self._audited, agent, "auto_assigned" if automatic else "claim", cid,
                        lambda s: self.conversations.assign(cid, agent.id, max_load=limit, session=s),
                        lambda h: {"queue": h.queue},
                    )
                except AtCapacity as e:
                    raise HubError("at_capacity", f"you already hold {e.load} conversations (your limit is "
                                                  f"{e.limit}); resolve one or ask a supervisor") from None
            if h is None:
                raise HubError("already_claimed", "another agent took this conversation")
            conv = await self.run(self.conversations.get, cid)
            assert conv is not None
            view = await self._conversation_view(conv)
            await self.emit(agent.id, {"type": "assigned", **view})
            others = [a.id for a in self.agents_for(h.queue) if a.id != agent.id]
            await self.emit_many(others, {"type": "claimed", "conversation_id": cid, "agent_name": agent.display_name})
            lang = conv.lang or "en"
            await self.system_message(cid, t("agent_joined", lang, name=agent.display_name))
            frame = await self.customer_status(conv)
            self._last_status.pop(cid, None)
            await self.send_customers(cid, frame)
        await self.refresh_queue(h.queue)

    async def agent_message(self, agent: AgentInfo, cid: str, text: str, client_msg_id: str | None) -> MessageRecord:
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            key = f"agent:{agent.id}:{client_msg_id}" if client_msg_id else None
            number = await self.run(self.conversations.case_number, conv.case_id)
            before = await self.run(self.cases.get, number) if number else None

            def change() -> Appended:
                # One unit of work: the message, the handoff's reply mark, the case's first
                # response and the audit entry commit together (both or neither).
                with self.db.session() as s:
                    appended = self.conversations.append(
                        cid, "agent", text, agent_id=agent.id, client_msg_id=key, session=s
                    )
                    assert appended is not None
                    if appended.created:
                        self.conversations.mark_agent_reply(cid, session=s)
                        if number:
                            with contextlib.suppress(CaseError, ValueError):  # checked before any write
                                self.cases.record_first_response(number, agent.actor, session=s)
                        self.agents.record(agent, "message", cid, session=s, seq=appended.message.seq)
                    return appended

            try:
                appended = await self.run(change)
            except IntegrityError:
                # The same message was stored concurrently: answer with the stored one.
                existing = await self.run(self.conversations.find_client_msg, cid, key) if key else None
                if existing is None:
                    raise
                appended = Appended(existing, created=False)
            if appended.created:
                if before is not None and before.first_responded_at is None:
                    # The first-response clock stopped: the case panel shows it at once.
                    await self._push_case(agent, conv.case_id, cid)
                await self.send_customers(cid, appended.message.customer_frame())
            frame = appended.message.agent_frame()
            frame.pop("client_msg_id", None)
            if client_msg_id:
                frame["client_msg_id"] = client_msg_id
            await self.emit(agent.id, frame)
            return appended.message

    async def transfer(self, agent: AgentInfo, cid: str, queue: str) -> None:
        if queue not in self.config.queues:
            raise HubError("unknown_queue", f"no queue named {queue!r}")
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            h = await self.run(
                self._audited, agent, "transfer", cid,
                lambda s: self.conversations.queue(
                    cid, queue, "transfer", from_statuses=("agent",), end_outcome="transferred", session=s,
                ),
                lambda _: {"from_queue": conv.queue, "to_queue": queue},
            )
            if h is None:
                raise HubError("conflict", "the conversation changed meanwhile")
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "transferred"})
            lang = conv.lang or "en"
            await self.system_message(cid, t("transferred", lang, queue=self.queues.display(queue, lang)))
            await self._announce_queued(cid, h, lang, first=False)
        if conv.queue and conv.queue != queue:
            await self.refresh_queue(conv.queue)
        self._refill(agent.id)

    async def hand_back(self, agent: AgentInfo, cid: str) -> None:
        """The agent returns the conversation to the bot; the guard's budget starts afresh."""
        async with self.lock(cid):
            conv = await self._held(agent, cid)

            def change(s: Session) -> bool:
                if not self.conversations.release(cid, agent.id, "bot", "handed_back", session=s):
                    return False
                state: GuardState = self.conversations.load_guard_state(cid, session=s)
                self.conversations.save_guard_state(cid, self.guard.hand_back(state), session=s)
                return True

            if not await self.run(self._audited, agent, "hand_back", cid, change):
                raise HubError("conflict", "the conversation changed meanwhile")
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "handed_back"})
            await self.system_message(cid, t("handed_back", conv.lang or "en"))
            await self.send_customers(cid, {"type": "status", "status": "bot"})
        await self.broadcast_queues()
        self._refill(agent.id)

    async def resolve(self, agent: AgentInfo, cid: str) -> None:
        """The agent closes the conversation (status ``closed``; a new customer message reopens
        it to the bot with a fresh budget)."""
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            if not await self.run(
                self._audited, agent, "resolve", cid,
                lambda s: self.conversations.release(cid, agent.id, "closed", "resolved", session=s),
            ):
                raise HubError("conflict", "the conversation changed meanwhile")
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "resolved"})
            await self.system_message(cid, t("resolved", conv.lang or "en"))
            number = await self.run(self.conversations.case_number, conv.case_id)
            frame: dict[str, Any] = {"type": "status", "status": "closed"}
            if number:
                frame["case_id"] = number
                self._add_case_url(frame, number)
            await self.send_customers(cid, frame)
        await self.broadcast_queues()
        self._refill(agent.id)

    async def set_availability(self, agent: AgentInfo, available: bool) -> AgentInfo:
        updated = await self.run(self.agents.set_available, agent, available)
        if updated.id in self.online:
            self.online[updated.id] = updated
        for queue in updated.skills:
            if queue in self.config.queues:
                await self.refresh_queue(queue)
                if available:
                    await self.auto_assign(queue)
        return updated
