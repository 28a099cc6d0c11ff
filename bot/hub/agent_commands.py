"""Agent commands: what an agent's socket asks of the hub (issue #15's split of
:class:`bot.hub.core.Hub`).

Claim a queued conversation, reply in one it holds, transfer it to another queue, hand it back to
the bot, resolve it, and set its own availability. Each command checks that the agent may do it
(it holds the conversation, or serves the queue) and takes the conversation's lock. Claim,
reply, transfer, hand back and resolve are each one unit of work (see
:meth:`AgentCommandsMixin._audited`): the change, its audit entry, the customer's system notice
and the events it emits (in the transactional outbox, :mod:`bot.hub.outbox`) commit in one
transaction, all or none; the events are published after the commit — by the relay if this hub
dies first. The queue announcements that follow (positions, waiting lists) are recomputed views.
Moved here from ``core.py``; :class:`AgentCommandsMixin` is a base of ``Hub``, whose state it uses
(declared below).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from bot.guard import GuardState, HandoffGuard
from bot.hub.errors import HubError
from bot.hub.outbox import EventOutbox, Unit
from bot.i18n import t
from bot.services.agents import AgentInfo, AgentService
from bot.services.cases import CaseError, CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import (
    Appended,
    AtCapacity,
    ConversationInfo,
    ConversationService,
    HandoffInfo,
    MessageRecord,
)
from bot.services.hub_outbox import OutboxEvent
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
    outbox: EventOutbox
    _agent_locks: dict[int, asyncio.Lock]
    run: Any
    lock: Any
    emit: Any
    notice: Any
    refresh_queue: Any
    broadcast_queues: Any
    auto_assign: Any
    agents_for: Any
    capacity_of: Any
    _agent_lock: Any
    _refill: Any
    _announce_queued: Any

    async def _held(self, agent: AgentInfo, cid: str) -> ConversationInfo:
        conv = await self.run(self.conversations.get, cid)
        if conv is None:
            raise HubError("not_found", "no such conversation")
        if conv.status != "agent" or conv.agent_id != agent.id:
            raise HubError("forbidden", "this conversation is not assigned to you")
        return conv

    def _audited(
        self, agent: AgentInfo | str, action: str, target: str, change: Callable[[Unit], T],
        detail: Callable[[T], dict[str, Any]] | None = None,
    ) -> tuple[T, list[OutboxEvent]]:
        """One command as one unit of work (blocking: run it in a worker thread): ``change`` —
        which writes, in the :class:`~bot.hub.outbox.Unit`'s transaction, the customer's notice
        and the events to emit — and, when it happened (a result other than ``None`` or
        ``False``), the audit entry ``action`` on ``target`` with ``detail(result)``, committed
        together: all or nothing. Returns the result and the events, for the caller to publish
        after the commit (:meth:`_command`)."""
        with self.db.session() as s:
            unit = Unit(s)
            out = change(unit)
            if out is not None and out is not False:
                self.agents.record(agent, action, target, session=s, **(detail(out) if detail else {}))
            return out, unit.events

    async def _command(
        self, agent: AgentInfo | str, action: str, target: str, change: Callable[[Unit], T],
        detail: Callable[[T], dict[str, Any]] | None = None,
    ) -> T:
        """:meth:`_audited` in a worker thread, then its events published (after the commit)."""
        out, events = await self.run(self._audited, agent, action, target, change, detail)
        await self.outbox.publish(events)
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
            others = [a.id for a in self.agents_for(conv.queue) if a.id != agent.id]
            joined = t("agent_joined", conv.lang or "en", name=agent.display_name)

            def change(u: Unit) -> HandoffInfo | None:
                h = self.conversations.assign(cid, agent.id, max_load=limit, session=u.session)
                if h is not None:
                    # The conversation and the customer's status are built when published.
                    u.to_agents([agent.id], {"type": "assigned", "conversation_id": cid, "_view": True})
                    u.to_agents(others, {"type": "claimed", "conversation_id": cid, "agent_name": agent.display_name})
                    self.notice(u, cid, joined)
                    u.to_customers(cid, {"type": "status", "_view": True})
                return h

            async with self._agent_lock(agent.id):
                try:
                    h, events = await self.run(
                        self._audited, agent, "auto_assigned" if automatic else "claim", cid, change,
                        lambda h: {"queue": h.queue},
                    )
                except AtCapacity as e:
                    raise HubError("at_capacity", f"you already hold {e.load} conversations (your limit is "
                                                  f"{e.limit}); resolve one or ask a supervisor") from None
            if h is None:
                raise HubError("already_claimed", "another agent took this conversation")
            await self.outbox.publish(events)
        await self.refresh_queue(h.queue)

    async def agent_message(self, agent: AgentInfo, cid: str, text: str, client_msg_id: str | None) -> MessageRecord:
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            key = f"agent:{agent.id}:{client_msg_id}" if client_msg_id else None
            number = await self.run(self.conversations.case_number, conv.case_id)
            before = await self.run(self.cases.get, number) if number else None

            def echo(message: MessageRecord) -> dict[str, Any]:
                frame = message.agent_frame()
                frame.pop("client_msg_id", None)
                if client_msg_id:
                    frame["client_msg_id"] = client_msg_id
                return frame

            def change() -> tuple[Appended, list[OutboxEvent]]:
                # One unit of work: the message, the handoff's reply mark, the case's first
                # response, the audit entry and the frames to send commit together (all or none).
                with self.db.session() as s:
                    u = Unit(s)
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
                        if before is not None and before.first_responded_at is None:
                            # The first-response clock stopped: the case panel shows it at once.
                            u.to_agents([agent.id], {"type": "case", "conversation_id": cid,
                                                     "case_id": conv.case_id, "_view": True})
                        u.to_customers(cid, appended.message.customer_frame())
                        u.to_agents([agent.id], echo(appended.message))
                    return appended, u.events

            try:
                appended, events = await self.run(change)
            except IntegrityError:
                # The same message was stored concurrently: answer with the stored one.
                existing = await self.run(self.conversations.find_client_msg, cid, key) if key else None
                if existing is None:
                    raise
                appended, events = Appended(existing, created=False), []
            if appended.created:
                await self.outbox.publish(events)
            else:  # a resend: the agent's echo only
                await self.emit(agent.id, echo(appended.message))
            return appended.message

    async def transfer(self, agent: AgentInfo, cid: str, queue: str) -> None:
        if queue not in self.config.queues:
            raise HubError("unknown_queue", f"no queue named {queue!r}")
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            lang = conv.lang or "en"

            def change(u: Unit) -> HandoffInfo | None:
                h = self.conversations.queue(
                    cid, queue, "transfer", from_statuses=("agent",), end_outcome="transferred", session=u.session,
                )
                if h is not None:
                    u.to_agents([agent.id], {"type": "released", "conversation_id": cid, "reason": "transferred"})
                    self.notice(u, cid, t("transferred", lang, queue=self.queues.display(queue, lang)))
                return h

            h = await self._command(agent, "transfer", cid, change, lambda _: {"from_queue": conv.queue,
                                                                                "to_queue": queue})
            if h is None:
                raise HubError("conflict", "the conversation changed meanwhile")
            await self._announce_queued(cid, h, lang, first=False)
        if conv.queue and conv.queue != queue:
            await self.refresh_queue(conv.queue)
        self._refill(agent.id)

    async def hand_back(self, agent: AgentInfo, cid: str) -> None:
        """The agent returns the conversation to the bot; the guard's budget starts afresh."""
        async with self.lock(cid):
            conv = await self._held(agent, cid)

            def change(u: Unit) -> bool:
                s = u.session
                if not self.conversations.release(cid, agent.id, "bot", "handed_back", session=s):
                    return False
                state: GuardState = self.conversations.load_guard_state(cid, session=s)
                self.conversations.save_guard_state(cid, self.guard.hand_back(state), session=s)
                u.to_agents([agent.id], {"type": "released", "conversation_id": cid, "reason": "handed_back"})
                self.notice(u, cid, t("handed_back", conv.lang or "en"))
                u.to_customers(cid, {"type": "status", "status": "bot"})
                return True

            if not await self._command(agent, "hand_back", cid, change):
                raise HubError("conflict", "the conversation changed meanwhile")
        await self.broadcast_queues()
        self._refill(agent.id)

    async def resolve(self, agent: AgentInfo, cid: str, case_resolution: str | None = None) -> None:
        """The agent closes the conversation (status ``closed``; a new customer message reopens
        it to the bot with a fresh budget).

        With ``case_resolution`` the conversation's open case is resolved too, with that text for
        the customer (:meth:`CaseService.resolve_with`), in the same unit of work: the release,
        the case's stage change, its ``resolution`` event and customer notification, both audit
        entries (``resolve`` and ``case_stage``) and the events commit together or not at all — a
        refused or failed case step leaves the conversation held. Without it the case, if any,
        stays as it is (the agent keeps it open, e.g. while another team works on it)."""
        if case_resolution is not None and not case_resolution.strip():
            raise HubError("missing_field", "case.resolution: a resolution the customer can read is required")
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            number = None
            if case_resolution is not None:
                number = await self.run(self.conversations.case_number, conv.case_id)
                if number is None:
                    raise HubError("invalid_case", "this conversation has no case to resolve")

            def change(u: Unit) -> bool:
                if not self.conversations.release(cid, agent.id, "closed", "resolved", session=u.session):
                    return False
                if number is not None and case_resolution is not None:
                    self.cases.resolve_with(number, agent.actor, case_resolution, session=u.session)
                    self.agents.record(agent, "case_stage", number, session=u.session, stage="resolved",
                                       conversation_id=cid)
                u.to_agents([agent.id], {"type": "released", "conversation_id": cid, "reason": "resolved"})
                self.notice(u, cid, t("resolved", conv.lang or "en"))
                # "closed", with the case and its link: built when published.
                u.to_customers(cid, {"type": "status", "_view": True})
                return True

            try:
                done = await self._command(agent, "resolve", cid, change,
                                           (lambda _: {"case": number}) if number else None)
            except (CaseError, ValueError) as e:
                raise HubError("invalid_case", str(e)) from e
            if not done:
                raise HubError("conflict", "the conversation changed meanwhile")
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
