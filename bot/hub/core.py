"""The hub's core: who holds each conversation, and every transition between bot, queue and agent.

The socket handlers (:mod:`bot.hub.customer_ws`, :mod:`bot.hub.agent_ws`) parse frames and call
:class:`Hub`; the hub stores first, then fans out. Rules it enforces:

* **Turns in order.** Customer messages of one conversation are processed one after another by a
  per-conversation worker, under the conversation's :class:`asyncio.Lock` (which the agent-side
  transitions take too).
* **The guard decides (P1).** While the bot holds a conversation each message goes through
  ``guard.before_turn``, the brain (under ``brain_timeout_s``, every exception caught) and
  ``guard.after_turn``; only ``Decision.deliver`` is sent, and ``Decision.handoff`` queues the
  conversation.
* **Silence after handoff (P2).** A bot reply is stored with a conditional seq allocation that
  succeeds only while the status is still ``bot`` — checked after the reply was generated.
* **Transparent queues (P4).** Every queued customer gets a ``status`` frame with queue, position,
  estimated wait and the allocation rule whenever one of them changes.

Database calls run in worker threads (``asyncio.to_thread``); nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from bot.brain import BotReply, Brain, BrainTurn
from bot.hub.events import AgentEventLog, LRUDict, Registry
from bot.hub.ratelimit import RateLimiter
from bot.hub.security import HubSecurity
from bot.i18n import detect_script, resolve_script, t
from bot.services.agents import AgentInfo, AgentService
from bot.services.cases import CaseError, CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationInfo, ConversationService, HandoffInfo, MessageRecord
from bot.services.queues import QueueService
from bot.settings import Settings
from bot.store.db import Database

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CONVERSATION_MEMOS = 50_000


class HubError(Exception):
    """A request an agent or customer may not make; ``code`` goes into the error frame."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _guard_module() -> Any:
    import bot.guard as guard

    return guard


class Hub:
    """State and transitions of every conversation served by this process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        brain: Brain | None,
        config: HumanlineConfig | None = None,
        guard: Any = None,
    ):
        self.settings = settings
        self.db = db
        self.brain = brain
        self.config = config or HumanlineConfig.load(settings.config_path)
        g = _guard_module()
        self.guard = guard or g.HandoffGuard(
            g.GuardConfig(max_unresolved_turns=settings.max_unresolved_turns, brain_timeout_s=settings.brain_timeout_s)
        )
        self.conversations = ConversationService(db)
        self.agents = AgentService(db, settings.agent_token_ttl_s)
        self.queues = QueueService(db, self.config)
        self.cases = CaseService(db, self.config)
        self.customers = Registry()  # conversation id -> customer sockets
        self.agent_sockets = Registry()  # agent id -> agent sockets
        self.online: dict[int, AgentInfo] = {}  # agents with at least one socket
        self._sockets_by_token: dict[str, set[Any]] = {}  # agent token -> its open sockets (logout)
        self.events = AgentEventLog()
        # Customer messages per visitor (all its sockets together); per-address and login limits
        # and the password-hashing executor are in bot.hub.security.
        self.message_limiter = RateLimiter(max(1, settings.rate_limit_per_10s), 10.0)
        self.security = HubSecurity(settings)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._turns: dict[str, asyncio.Queue[MessageRecord]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Per-conversation memos, bounded (they would otherwise grow with every conversation seen).
        self._last_status: LRUDict[str, tuple[Any, ...]] = LRUDict(MAX_CONVERSATION_MEMOS)
        self._timed_out: LRUDict[str, set[int]] = LRUDict(MAX_CONVERSATION_MEMOS)
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    # ---- plumbing -------------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        """Start the agent reply-timeout watcher and the outbox/SLA maintenance loop."""
        if self._watcher is None:
            await self.run(self.queues.sync_catalogue)
            self._watcher = asyncio.ensure_future(self._watch_reply_timeouts())
            from bot.hub.maintenance import run_maintenance

            self.spawn(run_maintenance(self.db, self.cases, self.settings))

    async def stop(self) -> None:
        tasks = [*self._background, *self._workers.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.security.close()
        # Going away (1001): clients reconnect to another hub or after the restart.
        sockets = [*self.customers.sockets(), *self.agent_sockets.sockets()]
        await asyncio.gather(
            *(asyncio.wait_for(ws.close(code=1001, reason="server shutting down"), 2) for ws in sockets),  # type: ignore[attr-defined]
            return_exceptions=True,
        )

    async def ready(self) -> bool:
        """The brain is loaded and the database answers."""
        if self.brain is None:
            return False
        try:
            brain_ok = await self.brain.ready()
        except Exception:  # noqa: BLE001
            brain_ok = False
        return brain_ok and await self.run(self.db.ping)

    # ---- customers ------------------------------------------------------------------------

    async def send_customers(self, conversation_id: str, frame: dict[str, Any]) -> None:
        await self.customers.send(conversation_id, frame)

    async def store_customer_message(
        self, conversation: ConversationInfo, client_msg_id: str, text: str
    ) -> tuple[MessageRecord, bool]:
        """Store a customer message (idempotent by ``client_msg_id``); returns it and whether new."""
        appended = await self.run(
            self.conversations.append, conversation.id, "customer", text, client_msg_id=client_msg_id
        )
        assert appended is not None
        return appended.message, appended.created

    def schedule_turn(self, message: MessageRecord) -> None:
        """Queue a stored customer message for its conversation's worker (in seq order)."""
        cid = message.conversation_id
        queue = self._turns.get(cid)
        if queue is None:
            queue = self._turns[cid] = asyncio.Queue()
        queue.put_nowait(message)
        if cid not in self._workers:
            self._workers[cid] = asyncio.ensure_future(self._worker(cid))

    async def _worker(self, cid: str) -> None:
        queue = self._turns[cid]
        try:
            while not queue.empty():
                message = queue.get_nowait()
                try:
                    await self.process_customer_message(message)
                except Exception:  # noqa: BLE001 - one bad turn must not stop the conversation
                    logger.exception("turn of conversation %s failed", cid)
                    await self._fail_safe(cid)
        finally:
            self._workers.pop(cid, None)
            if queue.empty():
                self._turns.pop(cid, None)
            else:  # something arrived while we were finishing
                self._workers[cid] = asyncio.ensure_future(self._worker(cid))

    async def _fail_safe(self, cid: str) -> None:
        """A turn failed outside the brain (database, unreadable guard state…): P1 says hand off.

        The message is already stored. If the handoff cannot be written either, the customer
        is at least told, with an ``error`` frame, that the message is kept and a person will
        answer — never silence.
        """
        try:
            async with self.lock(cid):
                conv = await self.run(self.conversations.get, cid)
                if conv is not None and conv.status == "bot":
                    await self.handoff(cid, self.config.default_queue, "brain_error", lang=conv.lang)
                    return
        except Exception:  # noqa: BLE001 - the database itself may be down
            logger.exception("handing off conversation %s after a failed turn failed too", cid)
        with contextlib.suppress(Exception):
            await self.send_customers(
                cid, {"type": "error", "code": "unavailable",
                      "message": "We could not process your message automatically. It is saved and a person will "
                                 "answer you as soon as possible."},
            )

    async def process_customer_message(self, message: MessageRecord) -> None:
        """What happens after a customer message is stored and acknowledged."""
        cid = message.conversation_id
        g = _guard_module()
        async with self.lock(cid):
            got = await self.run(self.conversations.get_with_guard_state, cid, g.GuardState)
            if got is None:
                return
            conv, state = got
            lang = resolve_script(message.text, conv.lang) or conv.lang or detect_script(message.text)
            if lang != conv.lang:
                await self.run(self.conversations.set_lang, cid, lang)
            if conv.status == "closed" and await self.run(self.conversations.reopen, cid):
                state = self.guard.hand_back(state)
                await self.run(self.conversations.save_guard_state, cid, state)
                await self.send_customers(cid, {"type": "status", "status": "bot"})
                got = await self.run(self.conversations.get_with_guard_state, cid, g.GuardState)
                assert got is not None
                conv, state = got
            if conv.status == "agent" and conv.agent_id is not None:
                await self.emit(conv.agent_id, message.agent_frame())
                self.spawn(self._annotate(message))
            elif conv.status == "bot":
                await self._bot_turn(conv, message, lang, state)
            elif conv.status == "queued":
                self.spawn(self._annotate(message))

    async def _annotate(self, message: MessageRecord) -> None:
        """Give a customer message the bot did not handle its intent and confidence, for the
        agent's transcript: parsed by the NLU only (no dialogue, no tracker), when the brain
        can do that. Best effort: a failure or a slow parse only leaves the fields empty."""
        parse = getattr(self.brain, "parse", None)
        if parse is None:
            return
        try:
            intent, confidence = await asyncio.wait_for(parse(message.text), timeout=self.settings.brain_timeout_s)
        except Exception:  # noqa: BLE001 - the transcript just shows no intent
            logger.info("parsing a message for the agent's transcript failed", exc_info=True)
            return
        if intent is None:
            return
        await self.run(self.conversations.set_nlu, message.conversation_id, message.seq, intent, confidence)
        conv = await self.run(self.conversations.get, message.conversation_id)
        if conv is not None and conv.status == "agent" and conv.agent_id is not None:
            await self.emit(conv.agent_id, {"type": "nlu", "conversation_id": conv.id, "seq": message.seq,
                                            "intent": intent, "confidence": confidence})

    async def _bot_turn(self, conv: ConversationInfo, message: MessageRecord, lang: str, state: Any) -> None:
        g = _guard_module()
        before = self.guard.before_turn(state, message.text)
        if before.handoff:
            await self.run(self.conversations.save_guard_state, conv.id, before.state)
            await self.handoff(conv.id, self.config.default_queue, before.reason or "customer_request", lang=lang)
            self.spawn(self._annotate(message))  # the brain never saw it: the transcript still gets its intent
            return
        turn, error = await self._call_brain(conv, message.text, lang)
        outcome = g.TurnOutcome(
            intent=turn.intent if turn else None,
            confidence=turn.confidence if turn else None,
            replies=tuple(r.text for r in turn.replies) if turn else (),
            resolved=bool(turn and turn.resolved),
            handoff_requested=bool(turn and turn.handoff_requested),
            handoff_queue=turn.handoff_queue if turn else None,
            error=error,
        )
        # Reload: the state as persisted now (the guard's contract), not as it was before the call;
        # read, decide, save and record the NLU in one transaction.
        decision = await self.run(
            self.conversations.finish_turn, conv.id, g.GuardState,
            lambda current: self.guard.after_turn(current, outcome), message.seq,
            turn.intent if turn is not None else None, turn.confidence if turn is not None else None,
        )
        await self._deliver(conv.id, decision.deliver, turn.replies if turn else [])
        if decision.handoff:
            slots = turn.slots if turn else {}
            queue = (
                getattr(decision, "queue", None) or outcome.handoff_queue or slots.get("handoff_queue")
                or self.config.default_queue
            )
            if queue not in self.config.queues:
                queue = self.config.default_queue
            case_id = await self.run(self.conversations.case_id_for_number, slots.get("case_number"))
            if error is not None or (turn is not None and turn.slots_set.get("handoff_reason") == "action_error"):
                # The brain or an action failed: say so plainly before the queue notice (the
                # action's own apology is withheld with the rest of the turn, by the guard).
                await self.system_message(conv.id, t("technical_problem", lang))
            await self.handoff(conv.id, queue, decision.reason or "turn_budget", case_id=case_id, lang=lang,
                               intent=turn.intent if turn is not None else None)

    async def _call_brain(self, conv: ConversationInfo, text: str, lang: str) -> tuple[BrainTurn | None, str | None]:
        if self.brain is None:
            return None, "brain_error"
        metadata = {"visitor_id": conv.visitor_id, "lang": lang, "conversation_id": conv.id}
        try:
            turn = await asyncio.wait_for(
                self.brain.handle(conv.id, text, metadata), timeout=self.settings.brain_timeout_s
            )
            return turn, None
        except asyncio.TimeoutError:
            logger.warning("brain timed out on conversation %s", conv.id)
            return None, "timeout"
        except Exception:  # noqa: BLE001 - any brain failure hands off (P1)
            logger.exception("brain failed on conversation %s", conv.id)
            return None, "brain_error"

    async def _deliver(self, cid: str, texts: tuple[str, ...], replies: list[BotReply]) -> None:
        """Store and send the bot replies the guard let through, while the bot still holds the
        conversation (P2: the status is checked in the statement that allocates the seq)."""
        pool = list(replies)
        for text in texts:
            match = next((r for r in pool if r.text == text), None)
            if match is not None:
                pool.remove(match)
            appended = await self.run(
                self.conversations.append, cid, "bot", text,
                buttons=match.buttons if match else None, only_if_status="bot",
            )
            if appended is None:
                logger.info("bot reply dropped: conversation %s is no longer with the bot", cid)
                return
            await self.send_customers(cid, appended.message.customer_frame())

    async def system_message(self, cid: str, text: str) -> MessageRecord:
        appended = await self.run(self.conversations.append, cid, "system", text)
        assert appended is not None
        await self.send_customers(cid, appended.message.customer_frame())
        return appended.message

    # ---- handoff and queues ---------------------------------------------------------------

    def agents_for(self, queue: str, *, available_only: bool = False) -> list[AgentInfo]:
        """Online agents with the skill for ``queue`` (supervisors see every queue)."""
        return [
            a for a in self.online.values()
            if (queue in a.skills or a.role == "supervisor") and (a.available or not available_only)
        ]

    async def handoff(
        self, cid: str, queue: str, reason: str, *, case_id: int | None = None, lang: str | None = None,
        intent: str | None = None,
    ) -> HandoffInfo | None:
        """Queue a conversation the bot holds. The caller holds the conversation's lock.

        When no agent of the queue is available, the conversation gets a case (P4): the open
        case an action already created for it, or a new one of the category of ``intent``.
        """
        h = await self.run(self.conversations.queue, cid, queue, reason, case_id)
        if h is None:
            return None
        if h.case_id is None and not self.agents_for(queue, available_only=True):
            new_case = await self._open_case_for(cid, queue, reason, lang or "en", intent)
            if new_case is not None:
                h = await self.run(self.conversations.open_handoff, cid) or h
        await self._announce_queued(cid, h, lang, first=True)
        return h

    async def _announce_queued(self, cid: str, h: HandoffInfo, lang: str | None, *, first: bool) -> None:
        def reads() -> tuple[ConversationInfo | None, str | None, list[AgentInfo]]:
            # One trip to a worker thread for the three reads the notification needs (three
            # thread hops cost agents a measurable part of the notification latency under load).
            return self.conversations.get(cid), self.conversations.case_number(h.case_id), self.agents.all()

        conv, number, everyone = await self.run(reads)
        lang = lang or (conv.lang if conv else None) or "en"
        entry = {"conversation_id": cid, "queue": h.queue, "reason": h.reason, "case_id": number,
                 "ts": h.requested_at.isoformat()}
        # Agents first (the handoff is stored): every agent with the skill, online or not — one
        # who reconnects gets it from the ring.
        recipients = [a.id for a in everyone if h.queue in a.skills or a.role == "supervisor"]
        await self.emit_many(recipients, {"type": "handoff", **entry})
        display = self.queues.display(h.queue, lang)
        online = len(self.agents_for(h.queue, available_only=True))
        positions = await self.run(self.queues.positions, h.queue, online)
        pos = positions.get(cid)
        if first:
            if online:
                minutes = max(1, round((pos.eta_seconds if pos else 0) / 60))
                text = t("queued", lang, queue=display, position=pos.position if pos else 1, minutes=minutes,
                         rule=t("rule", lang, queue=display))
            else:
                case = t("case_ref", lang, case=number) if number else ""
                text = t("no_agent", lang, queue=display, case=case,
                         minutes=self.queues.first_response_minutes(h.queue))
            await self.system_message(cid, text)
        self._last_status.pop(cid, None)
        # The positions just read (any later change to the queue refreshes it again itself).
        await self.refresh_queue(h.queue, positions)
        # Not awaited here: the caller holds the conversation's lock, which a claim takes.
        self.spawn(self.auto_assign(h.queue))

    def _status_frame(self, pos: Any, lang: str, number: str | None) -> dict[str, Any]:
        display = self.queues.display(pos.queue, lang)
        frame: dict[str, Any] = {
            "type": "status",
            "status": "queued",
            "queue": pos.queue,
            "queue_display": display,
            "position": pos.position,
            "eta_seconds": pos.eta_seconds,
            "reason": pos.entry.reason,
            "rule": t("rule", lang, queue=display),
            "agents_online": pos.agents_online,
            "first_response_minutes": self.queues.first_response_minutes(pos.queue),
        }
        if number:
            frame["case_id"] = number
        return frame

    async def refresh_queue(self, queue: str, positions: dict[str, Any] | None = None) -> None:
        """Push changed positions to the queue's customers and a snapshot to every agent
        (``positions``: as just read by the caller, to save reading them twice)."""
        if positions is None:
            online = len(self.agents_for(queue, available_only=True))
            current: dict[str, Any] = await self.run(self.queues.positions, queue, online)
        else:
            current = positions
        for cid, pos in current.items():
            key = (pos.queue, pos.position, pos.eta_seconds, pos.agents_online, pos.entry.case_number)
            if self._last_status.get(cid) == key or not self.customers.has(cid):
                self._last_status[cid] = key
                continue
            self._last_status[cid] = key
            conv = await self.run(self.conversations.get, cid)
            lang = (conv.lang if conv else None) or "en"
            await self.send_customers(cid, self._status_frame(pos, lang, pos.entry.case_number))
        await self.broadcast_queues()

    async def customer_status(self, conv: ConversationInfo) -> dict[str, Any]:
        """The current ``status`` frame of a conversation (sent after ``welcome``)."""
        lang = conv.lang or "en"
        if conv.status == "queued" and conv.queue:
            online = len(self.agents_for(conv.queue, available_only=True))
            positions = await self.run(self.queues.positions, conv.queue, online)
            if conv.id in positions:
                pos = positions[conv.id]
                return self._status_frame(pos, lang, pos.entry.case_number)
        frame: dict[str, Any] = {"type": "status", "status": conv.status}
        if conv.status == "agent" and conv.agent_id is not None:
            agent = await self.run(self.agents.get, conv.agent_id)
            if agent is not None:  # optional string in the protocol: absent rather than null
                frame["agent_name"] = agent.display_name
            frame["queue"] = conv.queue
        number = await self.run(self.conversations.case_number, conv.case_id)
        if number:
            frame["case_id"] = number
        return frame

    async def broadcast_queues(self) -> None:
        if not self.online:
            return
        snapshot = await self.run(self.queues.snapshot)
        waiting = await self.run(self.queues.waiting)
        for agent in list(self.online.values()):
            mine = [w.frame() for w in waiting if w.queue in agent.skills or agent.role == "supervisor"]
            await self.emit(agent.id, {"type": "queue", "queues": snapshot, "waiting": mine})

    async def auto_assign(self, queue: str) -> None:
        """Give waiting conversations of ``queue``, oldest first, to the least busy available agent
        online with the skill (an agent who let the conversation time out is skipped for it)."""
        candidates = self.agents_for(queue, available_only=True)
        if not candidates:
            return
        for entry in await self.run(self.queues.waiting, [queue]):
            skip = self._timed_out.get(entry.conversation_id, set())
            pool = [a for a in self.agents_for(queue, available_only=True) if a.id not in skip]
            if not pool:
                continue
            loads = {a.id: await self.run(self.agents.load, a.id) for a in pool}
            agent = min(pool, key=lambda a: (loads[a.id], a.id))
            try:
                await self.claim(agent, entry.conversation_id, automatic=True)
            except HubError:
                continue

    # ---- agents ---------------------------------------------------------------------------

    async def emit(self, agent_id: int, frame: dict[str, Any]) -> None:
        """A numbered event for one agent (kept for replay even when the agent is offline)."""
        numbered = self.events.add([agent_id], frame)
        await self.agent_sockets.send(agent_id, numbered)

    async def emit_many(self, agent_ids: list[int], frame: dict[str, Any]) -> None:
        if not agent_ids:
            return
        numbered = self.events.add(agent_ids, frame)
        await asyncio.gather(*(self.agent_sockets.send(a, numbered) for a in agent_ids))

    async def agent_connected(self, agent: AgentInfo, ws: Any, token: str | None = None) -> None:
        self.agent_sockets.add(agent.id, ws)
        self.online[agent.id] = agent
        if token is not None:
            self._sockets_by_token.setdefault(token, set()).add(ws)

    async def agent_disconnected(self, agent: AgentInfo, ws: Any) -> None:
        for token, sockets in list(self._sockets_by_token.items()):
            sockets.discard(ws)
            if not sockets:
                del self._sockets_by_token[token]
        self.agent_sockets.discard(agent.id, ws)
        if not self.agent_sockets.has(agent.id):
            self.online.pop(agent.id, None)
            for queue in agent.skills:
                if queue in self.config.queues:
                    await self.refresh_queue(queue)

    async def logout(self, token: str) -> bool:
        """Revoke an agent token and close the sockets opened with it (code 4001)."""
        agent = await self.run(self.agents.logout, token)
        for ws in list(self._sockets_by_token.pop(token, set())):
            with contextlib.suppress(Exception):
                await ws.send('{"type":"error","code":"unauthorized","message":"logged out"}')
                await asyncio.wait_for(ws.close(code=4001, reason="logged out"), 2)
        return agent is not None

    async def ready_frame(self, agent: AgentInfo) -> dict[str, Any]:
        snapshot = await self.run(self.queues.snapshot)
        waiting = await self.run(self.queues.waiting)
        mine = []
        for conv in await self.run(self.conversations.by_agent, agent.id):
            mine.append(await self._conversation_view(conv))
        return {
            "type": "ready",
            "agent": agent.to_dict(),
            "queues": snapshot,
            "waiting": [w.frame() for w in waiting if w.queue in agent.skills or agent.role == "supervisor"],
            "conversations": mine,
            "last_event_id": self.events.oldest_id(),
        }

    async def _conversation_view(self, conv: ConversationInfo) -> dict[str, Any]:
        transcript = await self.run(self.conversations.messages_after, conv.id, 0)
        case = await self.run(self.conversations.case_details, conv.case_id)
        return {
            "conversation_id": conv.id,
            "queue": conv.queue,
            "status": conv.status,
            "lang": conv.lang,
            "transcript": [m.agent_frame() for m in transcript],
            "case": case,
        }

    async def _held(self, agent: AgentInfo, cid: str) -> ConversationInfo:
        conv = await self.run(self.conversations.get, cid)
        if conv is None:
            raise HubError("not_found", "no such conversation")
        if conv.status != "agent" or conv.agent_id != agent.id:
            raise HubError("forbidden", "this conversation is not assigned to you")
        return conv

    async def claim(self, agent: AgentInfo, cid: str, *, automatic: bool = False) -> None:
        """Take a queued conversation. Of racing claims exactly one wins."""
        async with self.lock(cid):
            conv = await self.run(self.conversations.get, cid)
            if conv is None:
                raise HubError("not_found", "no such conversation")
            if conv.status != "queued":
                raise HubError("already_claimed", "this conversation is not waiting any more")
            if conv.queue not in agent.skills and agent.role != "supervisor":
                raise HubError("forbidden", "this conversation is in a queue you do not serve")
            h = await self.run(self.conversations.assign, cid, agent.id)
            if h is None:
                raise HubError("already_claimed", "another agent took this conversation")
            await self.run(self.agents.record, agent, "auto_assigned" if automatic else "claim", cid, queue=h.queue)
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
            appended = await self.run(
                self.conversations.append, cid, "agent", text, agent_id=agent.id,
                client_msg_id=f"agent:{agent.id}:{client_msg_id}" if client_msg_id else None,
            )
            assert appended is not None
            if appended.created:
                await self.run(self.conversations.mark_agent_reply, cid)
                number = await self.run(self.conversations.case_number, conv.case_id)
                if number:
                    with contextlib.suppress(CaseError, ValueError):
                        before = await self.run(self.cases.get, number)
                        await self.run(self.cases.record_first_response, number, agent.actor)
                        if before is not None and before.first_responded_at is None:
                            # The first-response clock stopped: the case panel shows it at once.
                            await self._push_case(agent, conv.case_id, cid)
                await self.run(self.agents.record, agent, "message", cid, seq=appended.message.seq)
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
                self.conversations.queue, cid, queue, "transfer",
                from_statuses=("agent",), end_outcome="transferred",
            )
            if h is None:
                raise HubError("conflict", "the conversation changed meanwhile")
            await self.run(self.agents.record, agent, "transfer", cid, from_queue=conv.queue, to_queue=queue)
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "transferred"})
            lang = conv.lang or "en"
            await self.system_message(cid, t("transferred", lang, queue=self.queues.display(queue, lang)))
            await self._announce_queued(cid, h, lang, first=False)
        if conv.queue and conv.queue != queue:
            await self.refresh_queue(conv.queue)

    async def hand_back(self, agent: AgentInfo, cid: str) -> None:
        """The agent returns the conversation to the bot; the guard's budget starts afresh."""
        g = _guard_module()
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            if not await self.run(self.conversations.release, cid, agent.id, "bot", "handed_back"):
                raise HubError("conflict", "the conversation changed meanwhile")
            state = await self.run(self.conversations.load_guard_state, cid, g.GuardState)
            await self.run(self.conversations.save_guard_state, cid, self.guard.hand_back(state))
            await self.run(self.agents.record, agent, "hand_back", cid)
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "handed_back"})
            await self.system_message(cid, t("handed_back", conv.lang or "en"))
            await self.send_customers(cid, {"type": "status", "status": "bot"})
        await self.broadcast_queues()

    async def resolve(self, agent: AgentInfo, cid: str) -> None:
        """The agent closes the conversation (status ``closed``; a new customer message reopens
        it to the bot with a fresh budget)."""
        async with self.lock(cid):
            conv = await self._held(agent, cid)
            if not await self.run(self.conversations.release, cid, agent.id, "closed", "resolved"):
                raise HubError("conflict", "the conversation changed meanwhile")
            await self.run(self.agents.record, agent, "resolve", cid)
            await self.emit(agent.id, {"type": "released", "conversation_id": cid, "reason": "resolved"})
            await self.system_message(cid, t("resolved", conv.lang or "en"))
            number = await self.run(self.conversations.case_number, conv.case_id)
            frame: dict[str, Any] = {"type": "status", "status": "closed"}
            if number:
                frame["case_id"] = number
            await self.send_customers(cid, frame)
        await self.broadcast_queues()

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

    async def _case_for(self, agent: AgentInfo, number: str) -> Any:
        """The case ``number`` if ``agent`` may work on it: a supervisor, the agent holding a
        conversation of the case, or an agent serving the case's queue."""
        # One answer for "no such case" and "not yours": case numbers are sequential, so a
        # different error would let an agent map every other queue's cases by probing.
        refusal = HubError("invalid_case", f"no case {number!r} that you may work on")
        case = await self.run(self.cases.get, number)
        if case is None:
            raise refusal
        if agent.role == "supervisor" or case.queue in agent.skills:
            return case
        held = await self.run(self.conversations.by_agent, agent.id)
        if any(c.case_id == case.id for c in held):
            return case
        raise refusal

    async def _case_action(
        self, agent: AgentInfo, number: str, action: str, cid: Any, fn: Callable[..., Any], *args: Any,
        **audit: Any,
    ) -> None:
        """Run a case-service change for an agent: authorised, audited, the case panel refreshed."""
        case = await self._case_for(agent, number)
        try:
            await self.run(fn, case.number, *args)
        except (CaseError, ValueError) as e:
            raise HubError("invalid_case", str(e)) from e
        await self.run(self.agents.record, agent, action, case.number, **audit)
        await self._push_case(agent, case.id, cid)

    async def case_stage(self, agent: AgentInfo, number: str, stage: str, cid: Any = None) -> None:
        """Move a case to ``stage`` (the case service checks the lifecycle)."""
        await self._case_action(agent, number, "case_stage", cid, self.cases.advance, stage, agent.actor,
                                stage=stage)

    async def case_note(self, agent: AgentInfo, number: str, text: str, cid: Any = None) -> None:
        """An internal note on the case's timeline (never shown to the customer)."""
        await self._case_action(agent, number, "case_note", cid, self.cases.add_note, agent.actor, text)

    async def case_progress(self, agent: AgentInfo, number: str, text: str, cid: Any = None) -> None:
        """A progress update for the customer: notified, and the 24 h update clock restarts."""
        await self._case_action(agent, number, "case_progress", cid, self.cases.record_progress_update,
                                agent.actor, text)

    async def case_extend(self, agent: AgentInfo, number: str, reason: str, hours: float, cid: Any = None) -> None:
        """Extend the progress-update deadline by ``hours``; only with a stated reason."""
        await self._case_action(agent, number, "case_extend", cid, self.cases.extend_sla, reason, agent.actor,
                                hours, reason=reason, hours=hours)

    async def _push_case(self, agent: AgentInfo, case_id: int | None, cid: Any) -> None:
        details = await self.run(self.conversations.case_details, case_id)
        if isinstance(cid, str) and details is not None:
            await self.emit(agent.id, {"type": "case", "conversation_id": cid, "case": details})

    async def _open_case_for(
        self, cid: str, queue: str, reason: str, lang: str, intent: str | None = None
    ) -> int | None:
        """A case for a handoff nobody can take now (P4), when the queue has a category.

        An open case of this conversation comes first: an action may have opened one in a turn
        that then timed out (the customer was never told its number), and a second case for the
        same request would split the work.
        """
        return await self.run(self._open_case_sync, cid, queue, reason, lang, intent)

    def _open_case_sync(self, cid: str, queue: str, reason: str, lang: str, intent: str | None) -> int | None:
        """:meth:`_open_case_for`'s store calls, in order, in one worker thread (it runs before
        agents are notified of the handoff: one thread hop instead of five)."""
        from bot.services.routing import category_for

        existing = self.cases.open_for_conversation(cid)
        if existing is not None:
            self.conversations.set_case(cid, existing.id)
            return int(existing.id)
        category = category_for(intent, queue, self.config)
        conv = self.conversations.get(cid)
        if category is None or conv is None:
            return None
        transcript = self.conversations.messages_after(cid, 0)
        said = " / ".join(m.text for m in transcript if m.sender == "customer")[-1000:]
        try:
            view = self.cases.open_case(
                category, visitor_id=conv.visitor_id, conversation_id=cid,
                description=said or reason, lang=lang, actor="hub",
            )
        except Exception:  # noqa: BLE001 - the handoff goes on without a case
            logger.exception("opening a case for conversation %s failed", cid)
            return None
        self.conversations.set_case(cid, view.id)
        return int(view.id)

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
            new = await self.run(
                self.conversations.queue, cid, h.queue, h.reason, h.case_id,
                from_statuses=("agent",), requested_at=h.requested_at, end_outcome="timeout",
            )
            if new is None:
                return
            assert h.agent_id is not None
            self._timed_out.setdefault(cid, set()).add(h.agent_id)
            await self.run(self.agents.record, f"agent_id:{h.agent_id}", "reply_timeout", cid)
            await self.emit(h.agent_id, {"type": "released", "conversation_id": cid, "reason": "reply_timeout"})
            lang = conv.lang or "en"
            await self.system_message(cid, t("requeued", lang, queue=self.queues.display(h.queue, lang)))
            await self._announce_queued(cid, new, lang, first=False)
