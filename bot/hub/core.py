"""The hub's core: who holds each conversation, and every transition between bot, queue and agent.

The socket handlers (:mod:`bot.hub.customer_ws`, :mod:`bot.hub.agent_ws`) parse frames and call
:class:`Hub`; the hub stores first, then fans out. Rules it enforces:

* **Turns in order.** Customer messages of one conversation are processed one after another by a
  per-conversation worker, under the conversation's :class:`asyncio.Lock` (which the agent-side
  transitions take too).
* **Turns survive.** A message awaits its turn durably (a mark stored with it before the ack);
  a turn a crash or a database outage interrupted is resumed, and a fail-safe handoff the
  database refused is retried until written (see "turns: in order, durable, resumed" below).
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
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from bot.brain import Brain
from bot.guard import GuardConfig, HandoffGuard
from bot.hub.agent_commands import AgentCommandsMixin
from bot.hub.assignment import AssignmentMixin
from bot.hub.bus import make_bus
from bot.hub.case_commands import CaseCommandsMixin
from bot.hub.errors import HubError  # noqa: F401 - importable from here (agent_ws, app, canned)
from bot.hub.events import LRUDict
from bot.hub.locks import ConversationLocks
from bot.hub.metrics import Metrics
from bot.hub.outbox import EventOutbox, Unit
from bot.hub.presence import Presence
from bot.hub.ratelimit import make_limiter
from bot.hub.security import HubSecurity
from bot.hub.suspects import SuspectHandoffs
from bot.hub.turns import TurnPipelineMixin
from bot.i18n import t
from bot.services.agents import AgentInfo, AgentService
from bot.services.canned import CannedService
from bot.services.case_links import CaseLinks
from bot.services.cases import CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import (
    ConversationInfo,
    ConversationService,
    HandoffInfo,
    MessageRecord,
)
from bot.services.hub_outbox import HubOutboxStore, OutboxEvent
from bot.services.queues import QueueService
from bot.services.summary import SummaryService
from bot.settings import Settings
from bot.store.db import Database

logger = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

# At most one typing signal a side relays per conversation in this many seconds.
TYPING_INTERVAL_S = 2.0

MAX_CONVERSATION_MEMOS = 50_000


def settled_status_frame(
    conv: ConversationInfo, case_number: str | None, agent_name: str | None, case_url: str | None = None
) -> dict[str, Any]:
    """The ``status`` frame of a conversation that is not queued (a queued one also gets its
    position and wait: :meth:`Hub.customer_status`)."""
    frame: dict[str, Any] = {"type": "status", "status": conv.status}
    if conv.status == "agent" and conv.agent_id is not None:
        if agent_name is not None:  # optional string in the protocol: absent rather than null
            frame["agent_name"] = agent_name
        frame["queue"] = conv.queue
    if case_number:
        frame["case_id"] = case_number
        if case_url:  # the signed link to the customer's case page (bot.services.case_links)
            frame["case_url"] = case_url
    return frame


class Hub(TurnPipelineMixin, AgentCommandsMixin, CaseCommandsMixin, AssignmentMixin):
    """State and transitions of every conversation served by this process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        brain: Brain | None,
        config: HumanlineConfig | None = None,
        guard: HandoffGuard | None = None,
    ):
        self.settings = settings
        self.db = db
        self.brain = brain
        self.config = config or HumanlineConfig.load(settings.config_path)
        self.guard: HandoffGuard = guard or HandoffGuard(
            GuardConfig(max_unresolved_turns=settings.max_unresolved_turns, brain_timeout_s=settings.brain_timeout_s)
        )
        self.metrics = Metrics()
        self.conversations = ConversationService(db, on_stored=self.metrics.message_stored)
        self.agents = AgentService(db, settings.agent_token_ttl_s)
        self.queues = QueueService(db, self.config)
        # Signed links to the customer's case page (bot.services.case_links), carried by every
        # customer notification and by status frames that name a case.
        self.links: CaseLinks | None = CaseLinks(
            (settings.secret, *settings.previous_secrets), settings.public_url, settings.case_link_ttl_s
        ) if settings.secret else None
        self.cases = CaseService(db, self.config, links=self.links)
        self.summaries = SummaryService(db, self.config, self.conversations)
        self.canned = CannedService(db, self.conversations, self.queues)  # canned replies (bot/hub/canned.py)
        # Frames to sockets wherever they are connected: this process, or every hub on Redis
        # (bot.hub.bus); its registries hold this hub's own sockets.
        self.bus = make_bus(settings.redis_url)
        redis = getattr(self.bus, "redis", None)
        self.customers = self.bus.customers  # conversation id -> customer sockets here
        # The events of agent commands, stored with their change and published after the commit
        # (bot.hub.outbox); its relay publishes those a crashed hub left behind.
        self.outbox = EventOutbox(
            HubOutboxStore(db), self.bus, self.outbox_view, settings.outbox_relay_grace_s, settings.outbox_max_age_s,
        )
        self.agent_sockets = self.bus.agents  # agent id -> agent sockets here
        # Agents online on any hub, logins' sockets, revocation (bot.hub.presence).
        self.presence = Presence(self.bus, self.agents, self.run)
        self.online: dict[int, AgentInfo] = self.presence.online
        # Customer messages per visitor (all its sockets together, on every hub); per-address and
        # login limits and the password-hashing executor are in bot.hub.security.
        self.message_limiter = make_limiter(redis, "messages", max(1, settings.rate_limit_per_10s), 10.0)
        self.security = HubSecurity(settings, redis)
        # One turn at a time per conversation, across hubs (several hubs share Redis).
        self.locks = ConversationLocks(db, shared=settings.redis_url is not None)
        # Handoffs of anonymous visitors held as "suspected automated" (bot.services.handoff_dedupe):
        # counted per address on every hub (Redis), the hold itself in the database.
        self.suspects = SuspectHandoffs(settings, self.conversations, redis)
        self._turns: dict[str, asyncio.Queue[MessageRecord]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Turns queued or running here, by (conversation, seq): never scheduled twice.
        self._scheduled: set[tuple[str, int]] = set()
        # Conversations whose fail-safe handoff could not be written (the database was away),
        # with the seq of the failed turn: retried until the database takes it.
        self._owed_handoffs: dict[str, int] = {}
        # Per-conversation memos, bounded (they would otherwise grow with every conversation seen).
        self._last_status: LRUDict[str, tuple[Any, ...]] = LRUDict(MAX_CONVERSATION_MEMOS)
        self._timed_out: LRUDict[str, set[int]] = LRUDict(MAX_CONVERSATION_MEMOS)
        # Per agent: its load check and the assignment happen under this lock, so two claims for
        # different conversations cannot both see room for one more.
        self._agent_locks: dict[int, asyncio.Lock] = {}
        self._typing_relayed: dict[tuple[str, str], float] = {}  # (conversation, side) -> last relay
        self._background: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None

    # ---- plumbing -------------------------------------------------------------------------

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def lock(self, conversation_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The conversation's lock, held by every turn and agent transition (bot.hub.locks)."""
        return self.locks(conversation_id)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        """Start the agent reply-timeout watcher, the outbox/SLA maintenance loop and the turn
        recovery loop (which first resumes every turn left pending by an earlier run)."""
        if self._watcher is None:
            await self.bus.start()
            self.presence.start()
            await self.run(self.queues.sync_catalogue)
            self._watcher = asyncio.ensure_future(self._watch_reply_timeouts())
            from bot.hub.maintenance import run_maintenance, run_turn_recovery

            self.spawn(run_maintenance(self.db, self.cases, self.settings))
            self.spawn(run_turn_recovery(self, self.settings.turn_recovery_interval_s))
            self.spawn(self.outbox.run_relay(self.settings.outbox_relay_interval_s))

    async def stop(self) -> None:
        tasks = [*self._background, *self._workers.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.presence.stop()
        await self.bus.stop()
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
        await self.bus.send_customers(conversation_id, frame)

    async def store_customer_message(
        self, conversation: ConversationInfo, client_msg_id: str, text: str
    ) -> tuple[MessageRecord, bool]:
        """Store a customer message (idempotent by ``client_msg_id``); returns it and whether new."""
        appended = await self.run(
            self.conversations.append, conversation.id, "customer", text, client_msg_id=client_msg_id,
            awaiting_turn=True,
        )
        assert appended is not None
        return appended.message, appended.created

    async def system_message(self, cid: str, text: str) -> MessageRecord:
        appended = await self.run(self.conversations.append, cid, "system", text)
        assert appended is not None
        await self.send_customers(cid, appended.message.customer_frame())
        return appended.message

    def notice(self, unit: Unit, cid: str, text: str) -> MessageRecord:
        """A system notice to the customer inside a command's unit of work (blocking): stored in
        its transaction, its frame in the outbox (sent after the commit: :mod:`bot.hub.outbox`)."""
        appended = self.conversations.append(cid, "system", text, session=unit.session)
        assert appended is not None
        unit.to_customers(cid, appended.message.customer_frame())
        return appended.message

    async def outbox_view(self, event: OutboxEvent) -> dict[str, Any] | None:
        """The frame to publish for an outbox event: as stored, or — marked ``_view`` — built
        now from the database (``assigned``: the conversation; ``status``: the customer's status;
        ``case``: the case panel); ``None`` when its subject is gone."""
        frame = event.frame
        if not frame.get("_view"):
            return frame
        cid = frame.get("conversation_id") or event.conversation_id
        kind = frame["type"]
        if kind == "case":
            details = await self.run(self.conversations.case_details, frame.get("case_id"))
            return None if details is None else {"type": "case", "conversation_id": cid, "case": details}
        conv = await self.run(self.conversations.get, cid) if isinstance(cid, str) else None
        if conv is None:
            return None
        if kind == "assigned":
            if conv.status != "agent" or conv.agent_id not in (event.recipients or ()):
                return None  # released meanwhile (a late relay): no stale assignment
            return {"type": "assigned", **await self._conversation_view(conv)}
        if kind == "status":
            self._last_status.pop(conv.id, None)
            return await self.customer_status(conv)
        raise ValueError(f"no view named {kind!r}")

    # ---- handoff and queues ---------------------------------------------------------------

    async def handoff(
        self, cid: str, queue: str, reason: str, *, case_id: int | None = None, lang: str | None = None,
        intent: str | None = None,
    ) -> HandoffInfo | None:
        """Queue a conversation the bot holds. The caller holds the conversation's lock.

        When no agent of the queue is available, the conversation gets a case (P4): the open
        case an action already created for it, or a new one of the category of ``intent``.
        """
        # Held as suspected automated: a place and a case (P4 holds for a real customer behind a
        # shared address too), but no agent is woken or assigned until a supervisor releases it.
        # Decided first, so that the handoff is written held and no hub offers it meanwhile.
        verdict = await self.suspects.consider(cid, reason)
        h = await self.run(self.conversations.queue, cid, queue, reason, case_id,
                           held_source=verdict.source if verdict.held else None)
        if h is None:
            return None
        if h.case_id is None and not self.agents_for(queue, available_only=True):
            new_case = await self._open_case_for(cid, queue, reason, lang or "en", intent)
            if new_case is not None:
                h = await self.run(self.conversations.open_handoff, cid) or h
        await self._announce_queued(cid, h, lang, first=True, tell_supervisors=verdict.first_held)
        return h

    def _request_queue(self, cid: str, intent: str | None = None) -> str:
        """The queue of a new handoff of ``cid``: it follows the conversation's request — the
        category of its open case, else of the last understood request (``intent``, this turn's,
        then the stored intents of its customer messages, newest first), else the default queue
        (:func:`bot.services.routing.handoff_queue`). Blocking: run it in a worker thread."""
        from bot.services.routing import handoff_queue

        case = self.cases.open_for_conversation(cid)
        stored = [m.intent for m in reversed(self.conversations.messages_after(cid, 0)) if m.sender == "customer"]
        return handoff_queue(case.category if case is not None else None, [intent, *stored], self.config)

    def _danger_text(self, lang: str | None) -> str:
        number = self.config.emergency_number(self.settings.region)
        return t("danger", lang, number=number) if number else t("danger_no_number", lang)

    async def _danger_handoff(self, cid: str, lang: str) -> None:
        """Promise 9: the customer reported danger. Tell them, in their script, to call the local
        emergency number if in immediate danger, then queue the conversation — in the danger
        queue, where it is served first with its own (short) first-response target."""
        await self.system_message(cid, self._danger_text(lang))
        await self.handoff(cid, self.config.danger_queue or self.config.default_queue, "danger", lang=lang)

    async def _escalate_danger(self, conv: ConversationInfo, message: MessageRecord, lang: str) -> None:
        """A customer already waiting in another queue reports danger: move the conversation to the
        danger queue (served first) and give the emergency advice. The caller holds the lock."""
        from bot.signals import read_signals

        queue = self.config.danger_queue or self.config.default_queue
        if conv.queue == queue or read_signals(message.text).danger is None:
            return
        h = await self.run(
            self.conversations.queue, conv.id, queue, "danger", from_statuses=("queued",), end_outcome="transferred"
        )
        if h is None:  # (the new handoff is not held: danger never is)
            return
        await self.system_message(conv.id, self._danger_text(lang))
        await self._announce_queued(conv.id, h, lang, first=True)
        if conv.queue:
            await self.refresh_queue(conv.queue)

    async def _announce_queued(
        self, cid: str, h: HandoffInfo, lang: str | None, *, first: bool, tell_supervisors: bool = False
    ) -> None:
        """Tell the agents of a queued handoff and the customer their place. A held one (``h.
        held_source``) reaches the supervisors only, when ``tell_supervisors`` (once per burst)."""
        def reads() -> tuple[ConversationInfo | None, str | None, list[AgentInfo]]:
            # One trip to a worker thread for the three reads the notification needs (three
            # thread hops cost agents a measurable part of the notification latency under load).
            return self.conversations.get(cid), self.conversations.case_number(h.case_id), self.agents.all()

        conv, number, everyone = await self.run(reads)
        lang = lang or (conv.lang if conv else None) or "en"
        entry: dict[str, Any] = {"conversation_id": cid, "queue": h.queue, "reason": h.reason,
                                 "case_id": number, "ts": h.requested_at.isoformat()}
        # Agents first (the handoff is stored): every agent with the skill, online or not — one
        # who reconnects gets it from the ring.
        recipients = [a.id for a in everyone if h.queue in a.skills or a.role == "supervisor"]
        if h.held_source is not None:  # suspected automated: supervisors only, once per burst
            recipients = [a.id for a in everyone if a.role == "supervisor"] if tell_supervisors else []
            entry.update(held=True, source=h.held_source)
        await self.emit_many(recipients, {"type": "handoff", **entry})
        display = self.queues.display(h.queue, lang)
        online, slots, free = await self.queue_capacity(h.queue)
        positions = await self.run(self.queues.positions, h.queue, online, slots, free)
        pos = positions.get(cid)
        if first:  # a handoff (a transfer or a requeue announces again with first=False)
            self.metrics.handoff(h.reason)
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
            self._add_case_url(frame, number)
        return frame

    async def refresh_queue(self, queue: str, positions: dict[str, Any] | None = None) -> None:
        """Push changed positions to the queue's customers and a snapshot to every agent
        (``positions``: as just read by the caller, to save reading them twice)."""
        if positions is None:
            online, slots, free = await self.queue_capacity(queue)
            current: dict[str, Any] = await self.run(self.queues.positions, queue, online, slots, free)
        else:
            current = positions
        for cid, pos in current.items():
            key = (pos.queue, pos.position, pos.eta_seconds, pos.agents_online, pos.entry.case_number)
            if self._last_status.get(cid) == key or not self.bus.may_reach(cid):
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
            online, slots, free = await self.queue_capacity(conv.queue)
            positions = await self.run(self.queues.positions, conv.queue, online, slots, free)
            if conv.id in positions:
                pos = positions[conv.id]
                return self._status_frame(pos, lang, pos.entry.case_number)
        agent = None
        if conv.status == "agent" and conv.agent_id is not None:
            agent = await self.run(self.agents.get, conv.agent_id)
        number = await self.run(self.conversations.case_number, conv.case_id)
        return settled_status_frame(conv, number, agent.display_name if agent is not None else None,
                                    self.case_url(number))

    def case_url(self, number: str | None) -> str | None:
        """The signed link to case ``number``'s page (``None`` without a case or a secret)."""
        return self.links.url(number) if number and self.links is not None else None

    def _add_case_url(self, frame: dict[str, Any], number: str) -> None:
        """A status frame naming a case also carries the signed link to its page."""
        url = self.case_url(number)
        if url:
            frame["case_url"] = url

    async def broadcast_queues(self) -> None:
        if not self.online:
            return
        snapshot = await self.run(self.queues.snapshot)
        waiting = await self.run(self.queues.waiting)
        agents = await self.agents_load()
        for agent in list(self.online.values()):
            mine = [{**w.frame(), **({"held": True} if w.held_source is not None else {})}
                    for w in waiting if w.queue in agent.skills or agent.role == "supervisor"]
            await self.emit(agent.id, {"type": "queue", "queues": snapshot, "waiting": mine, "agents": agents})

    # ---- typing indicators ----------------------------------------------------------------

    def _typing_due(self, cid: str, side: str) -> bool:
        """Whether a typing signal of ``side`` in ``cid`` may be relayed now (at most one per
        :data:`TYPING_INTERVAL_S`); the rest are dropped without an error."""
        now = time.monotonic()
        key = (cid, side)
        if now - self._typing_relayed.get(key, -TYPING_INTERVAL_S) < TYPING_INTERVAL_S:
            return False
        if len(self._typing_relayed) > 10_000:  # forget conversations nobody types in any more
            self._typing_relayed = {k: v for k, v in self._typing_relayed.items() if now - v < TYPING_INTERVAL_S}
        self._typing_relayed[key] = now
        return True

    async def customer_typing(self, cid: str) -> None:
        """The customer is typing: tell the agent holding the conversation (not stored, not put
        in the agent's event ring: a replayed "typing…" would be stale)."""
        if not self._typing_due(cid, "customer"):
            return
        conv = await self.run(self.conversations.get, cid)
        if conv is None or conv.status != "agent" or conv.agent_id is None:
            return
        await self.bus.send_agent(conv.agent_id, {"type": "typing", "conversation_id": cid, "sender": "customer"})
        self.metrics.typing_relayed("customer")

    async def agent_typing(self, agent: AgentInfo, cid: str) -> None:
        """The agent is typing in a conversation it holds: tell the customer (never stored).
        Ignored for a conversation the agent does not hold (it may just have been released)."""
        if not self._typing_due(cid, f"agent:{agent.id}"):
            return
        conv = await self.run(self.conversations.get, cid)
        if conv is None or conv.status != "agent" or conv.agent_id != agent.id:
            return
        await self.send_customers(cid, {"type": "typing", "sender": "agent", "agent_name": agent.display_name})
        self.metrics.typing_relayed("agent")

    # ---- agents ---------------------------------------------------------------------------

    async def emit(self, agent_id: int, frame: dict[str, Any]) -> None:
        """A numbered event for one agent (kept for replay even when the agent is offline)."""
        await self.bus.emit([agent_id], frame)

    async def emit_many(self, agent_ids: list[int], frame: dict[str, Any]) -> None:
        if not agent_ids:
            return
        await self.bus.emit(agent_ids, frame)

    async def agent_connected(self, agent: AgentInfo, ws: Any, token: str | None = None) -> None:
        await self.presence.connected(agent, ws, token)

    async def agent_disconnected(self, agent: AgentInfo, ws: Any) -> None:
        await self.presence.disconnected(agent, ws)
        if agent.id not in self.online:
            for queue in agent.skills:
                if queue in self.config.queues:
                    await self.refresh_queue(queue)

    async def logout(self, token: str) -> bool:
        """Revoke an agent token and close the sockets opened with it, on every hub (code 4001)."""
        agent = await self.run(self.agents.logout, token)
        await self.presence.revoke(token)
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
            "agents": await self.agents_load(),
            "last_event_id": await self.bus.oldest_event_id(),
        }

    async def _conversation_view(self, conv: ConversationInfo) -> dict[str, Any]:
        transcript = await self.run(self.conversations.messages_after, conv.id, 0)
        case = await self.run(self.conversations.case_details, conv.case_id)
        # The handoff summary above the transcript: best effort, a failure leaves it out.
        try:
            summary = await self.run(self.summaries.summary, conv.id)
        except Exception:  # noqa: BLE001 - the conversation opens without its summary
            logger.exception("summarising conversation %s failed", conv.id)
            summary = None
        return {
            "conversation_id": conv.id,
            "queue": conv.queue,
            "status": conv.status,
            "lang": conv.lang,
            "transcript": [m.agent_frame() for m in transcript],
            "case": case,
            "summary": summary,
        }

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
