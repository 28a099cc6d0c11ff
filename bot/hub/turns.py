"""The turn pipeline: a customer message → the guard → the brain → delivery (issue #15's split of
:class:`bot.hub.core.Hub`).

Per conversation one worker runs the stored customer messages in ``seq`` order, under the
conversation's lock (across hubs: :mod:`bot.hub.locks`); the guard decides before and after the
brain (:mod:`bot.guard`, pure); a turn records its result, clears its durable pending mark and
stores the replies it lets through in one transaction, and the replies are sent after the commit;
turns a crash or an outage left pending are resumed (:func:`bot.hub.maintenance.run_turn_recovery`);
a turn that fails hands the conversation to a person (the fail-safe). Moved here unchanged from
``core.py``; :class:`TurnPipelineMixin` is a base of ``Hub``, whose state it uses (declared below).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bot.brain import ActionServerError, BotReply, Brain, BrainTurn
from bot.guard import DANGER, GuardState, HandoffGuard, TurnOutcome
from bot.hub.metrics import Metrics
from bot.i18n import detect_script, resolve_script, t
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationInfo, ConversationService, MessageRecord, ReplyRow
from bot.settings import Settings

logger = logging.getLogger("bot.hub.core")  # the same logger name as before the move


def _reply_rows(texts: tuple[str, ...], replies: list[BotReply]) -> list[ReplyRow]:
    """The bot replies the guard let through (``texts``) as ``(text, buttons)``: each text takes
    the buttons of the brain's first unused reply with that text."""
    pool = list(replies)
    rows: list[ReplyRow] = []
    for text in texts:
        match = next((r for r in pool if r.text == text), None)
        if match is not None:
            pool.remove(match)
        rows.append((text, match.buttons if match else None))
    return rows


P = ParamSpec("P")
T = TypeVar("T")


class TurnPipelineMixin:
    # The hub's state and the transitions this part uses (bot.hub.core.Hub).
    settings: Settings
    config: HumanlineConfig
    brain: Brain | None
    guard: HandoffGuard
    metrics: Metrics
    conversations: ConversationService
    _turns: dict[str, asyncio.Queue[MessageRecord]]
    _workers: dict[str, asyncio.Task[None]]
    _scheduled: set[tuple[str, int]]
    _owed_handoffs: Any
    lock: Any
    spawn: Any
    emit: Any
    send_customers: Any
    system_message: Any
    handoff: Any
    customer_status: Any
    _danger_handoff: Any
    _escalate_danger: Any
    _request_queue: Any

    if TYPE_CHECKING:
        async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
            """:meth:`bot.hub.core.Hub.run`, declared so that a store call's arguments and result
            keep their types here (the guard state and decision among them)."""

    # ---- turns: in order, durable, resumed -------------------------------------------------
    #
    # A customer message is stored with a durable "awaiting its turn" mark
    # (``messages.turn_pending_since``) before it is acknowledged. The mark is cleared in the
    # transaction that records the turn's result (the guard state after a brain call, see
    # ``ConversationService.finish_turn``), or once the turn ended otherwise (forwarded to the
    # agent, queued, handed off by the fail-safe). A turn that never got there — the hub was
    # killed, the database went away — keeps its mark, and the recovery loop
    # (:func:`bot.hub.maintenance.run_turn_recovery`) schedules it again: at start-up every
    # pending turn, later those pending for more than ``turn_retry_after_s``.

    def schedule_turn(self, message: MessageRecord) -> None:
        """Queue a stored customer message for its conversation's worker (in seq order). A
        message already queued or running here is not queued again."""
        cid = message.conversation_id
        key = (cid, message.seq)
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        queue = self._turns.get(cid)
        if queue is None:
            queue = self._turns[cid] = asyncio.Queue()
        queue.put_nowait(message)
        if cid not in self._workers:
            self._start_worker(cid)

    async def turns_settled(self, cid: str, timeout: float) -> bool:
        """Wait until no turn of ``cid`` is queued or running on this hub (a worker that finds
        more work starts its successor before it ends); False after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (worker := self._workers.get(cid)) is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait({worker}, timeout=remaining)
        return True

    def _start_worker(self, cid: str) -> None:
        self._workers[cid] = asyncio.ensure_future(self._worker(cid))

    async def _worker(self, cid: str) -> None:
        queue = self._turns.setdefault(cid, asyncio.Queue())
        stalled = False
        try:
            while True:
                # A handoff the customer was promised comes before any further turn: the bot
                # must not answer a conversation it said a person would take.
                if cid in self._owed_handoffs and not await self._settle_handoff(cid):
                    stalled = True  # the database is still away: the recovery loop comes back
                    return
                if queue.empty():
                    return
                message = queue.get_nowait()
                try:
                    mark_cleared = await self.process_customer_message(message)
                except Exception:  # noqa: BLE001 - one bad turn must not stop the conversation
                    logger.exception("turn of conversation %s failed", cid)
                    await self._fail_safe(cid, message.seq)
                else:
                    if mark_cleared:  # by the transaction that recorded the turn (finish_bot_turn)
                        continue
                    try:
                        await self.run(self.conversations.turn_done, cid, message.seq)
                    except Exception:  # noqa: BLE001 - the turn ran; a resume would only repeat a no-op
                        logger.warning("clearing the pending mark of %s/%d failed", cid, message.seq, exc_info=True)
                finally:
                    self._scheduled.discard((cid, message.seq))
        finally:
            self._workers.pop(cid, None)
            if queue.empty():
                self._turns.pop(cid, None)
            elif not stalled:  # something arrived while we were finishing
                self._start_worker(cid)

    async def _fail_safe(self, cid: str, seq: int) -> None:
        """A turn failed outside the brain (database, unreadable guard state…): P1 says hand off.

        The message is already stored. If the handoff cannot be written now (the database is
        away), it is owed: the customer is told, with an ``error`` frame, that the message is
        kept and a person will answer, and the handoff is retried — before any later turn of
        the conversation, and by the recovery loop — until the database takes it.
        """
        if await self._settle_handoff(cid, seq):
            return
        self._owed_handoffs[cid] = max(seq, self._owed_handoffs.get(cid, 0))
        with contextlib.suppress(Exception):
            await self.send_customers(
                cid, {"type": "error", "code": "unavailable",
                      "message": "We could not process your message automatically. It is saved and a person will "
                                 "answer you as soon as possible."},
            )

    async def _settle_handoff(self, cid: str, seq: int | None = None) -> bool:
        """Hand a conversation whose turn failed to a person, if the bot still holds it, and
        clear the pending marks up to the failed turn. False when the database refused."""
        seq = seq if seq is not None else self._owed_handoffs.get(cid)
        try:
            async with self.lock(cid):
                conv = await self.run(self.conversations.get, cid)
                if conv is not None and conv.status == "bot":
                    await self.handoff(cid, self.config.default_queue, "brain_error", lang=conv.lang)
                if seq is not None:
                    await self.run(self.conversations.turn_done, cid, seq)
        except Exception:  # noqa: BLE001 - the database itself may be down
            logger.warning("handing off conversation %s after a failed turn failed too", cid, exc_info=True)
            return False
        if self._owed_handoffs.pop(cid, None) is not None:
            logger.info("conversation %s handed off after the failure of its turn", cid)
        return True

    async def resume_pending_turns(self, older_than_s: float) -> int | None:
        """Retry the owed handoffs, then schedule the turns whose mark is older than
        ``older_than_s`` and that no worker of this hub has. Returns how many were resumed, or
        ``None`` when the brain is not ready yet (a model still loading after a restart): the
        turns wait for it rather than fail and hand off.

        Each resumed turn is first taken with a conditional ``UPDATE`` that moves its mark to
        now (:meth:`ConversationService.claim_pending_turn`): when several hubs share the
        database, one of them takes it. A turn running on another hub for longer than
        ``older_than_s`` could be taken too; ``turn_retry_after_s`` is therefore several
        times ``brain_timeout_s``.
        """
        for cid in list(self._owed_handoffs):
            if cid not in self._workers:
                self._start_worker(cid)
        try:
            brain_ready = self.brain is not None and await self.brain.ready()
        except Exception:  # noqa: BLE001 - not ready
            brain_ready = False
        if not brain_ready:
            return None
        resumed = 0
        for message in await self.run(self.conversations.pending_turns, older_than_s):
            if (message.conversation_id, message.seq) in self._scheduled:
                continue
            if await self.run(self.conversations.claim_pending_turn, message.conversation_id, message.seq,
                              older_than_s):
                logger.warning("resuming the turn of message %d of conversation %s", message.seq,
                               message.conversation_id)
                self.schedule_turn(message)
                resumed += 1
        return resumed

    async def process_customer_message(self, message: MessageRecord) -> bool:
        """What happens after a customer message is stored and acknowledged. True when the
        turn's pending mark is already cleared (a bot turn records it with its result)."""
        cid = message.conversation_id
        async with self.lock(cid):
            got = await self.run(self.conversations.get_with_guard_state, cid)
            if got is None:
                return False
            conv, state = got
            lang = resolve_script(message.text, conv.lang) or conv.lang or detect_script(message.text)
            if lang != conv.lang:
                await self.run(self.conversations.set_lang, cid, lang)
            if conv.status == "closed" and await self.run(self.conversations.reopen, cid):
                state = self.guard.hand_back(state)
                await self.run(self.conversations.save_guard_state, cid, state)
                await self.send_customers(cid, {"type": "status", "status": "bot"})
                got = await self.run(self.conversations.get_with_guard_state, cid)
                assert got is not None
                conv, state = got
            if conv.status == "agent" and conv.agent_id is not None:
                await self.emit(conv.agent_id, message.agent_frame())
                self.spawn(self._annotate(message))
            elif conv.status == "bot":
                return await self._bot_turn(conv, message, lang, state)
            elif conv.status == "queued":
                await self._escalate_danger(conv, message, lang)
                self.spawn(self._annotate(message))
        return False

    async def _annotate(self, message: MessageRecord, timeout_s: float | None = None) -> str | None:
        """Give a customer message the bot did not handle its intent and confidence, for the
        agent's transcript: parsed by the NLU only (no dialogue, no tracker), when the brain
        can do that. Best effort: a failure or a slow parse only leaves the fields empty.
        Returns the intent (``None`` when unknown)."""
        parse = getattr(self.brain, "parse", None)
        if parse is None:
            return None
        try:
            intent, confidence = await asyncio.wait_for(
                parse(message.text), timeout=timeout_s or self.settings.brain_timeout_s
            )
        except Exception:  # noqa: BLE001 - the transcript just shows no intent
            logger.info("parsing a message for the agent's transcript failed", exc_info=True)
            return None
        if intent is None:
            return None
        await self.run(self.conversations.set_nlu, message.conversation_id, message.seq, intent, confidence)
        conv = await self.run(self.conversations.get, message.conversation_id)
        if conv is not None and conv.status == "agent" and conv.agent_id is not None:
            await self.emit(conv.agent_id, {"type": "nlu", "conversation_id": conv.id, "seq": message.seq,
                                            "intent": intent, "confidence": confidence})
        return str(intent)

    async def _bot_turn(self, conv: ConversationInfo, message: MessageRecord, lang: str, state: GuardState) -> bool:
        """One bot turn; True when it went as far as recording its result (which clears the
        turn's pending mark)."""
        before = self.guard.before_turn(state, message.text)
        if before.handoff:
            await self.run(self.conversations.save_guard_state, conv.id, before.state)
            if before.reason == DANGER:
                await self._danger_handoff(conv.id, lang)
                self.spawn(self._annotate(message))  # the transcript still gets its intent
                return False
            # The brain never saw the message: the NLU alone finds the request in it, so that the
            # queue and the case follow it (an angry refund request goes to finance, not general).
            intent = await self._annotate(message, timeout_s=min(1.0, self.settings.brain_timeout_s))
            request_queue = await self.run(self._request_queue, conv.id, intent)
            await self.handoff(conv.id, request_queue, before.reason or "customer_request", lang=lang, intent=intent)
            return False
        turn, error = await self._call_brain(conv, message.text, lang)
        outcome = TurnOutcome(
            intent=turn.intent if turn else None,
            confidence=turn.confidence if turn else None,
            replies=tuple(r.text for r in turn.replies) if turn else (),
            resolved=bool(turn and turn.resolved),
            handoff_requested=bool(turn and turn.handoff_requested),
            handoff_queue=turn.handoff_queue if turn else None,
            error=error,
        )
        # Reload: the state as persisted now (the guard's contract), not as it was before the call;
        # read, decide, save, record the NLU, clear the pending mark and store the replies the
        # guard lets through (while the bot holds the conversation, P2) in one transaction.
        finished = await self.run(
            self.conversations.finish_bot_turn, conv.id,
            lambda current: self.guard.after_turn(current, outcome), message.seq,
            turn.intent if turn is not None else None, turn.confidence if turn is not None else None,
            lambda decided: _reply_rows(decided.deliver, turn.replies if turn else []),
        )
        decision = finished.decision
        for stored in finished.stored:
            await self.send_customers(conv.id, stored.customer_frame())
        if finished.dropped:
            logger.info("bot reply dropped: conversation %s is no longer with the bot", conv.id)
        if decision.handoff:
            slots = turn.slots if turn else {}
            queue = (
                decision.queue or outcome.handoff_queue or slots.get("handoff_queue")
                or await self.run(self._request_queue, conv.id, outcome.intent)
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
        return True

    async def _call_brain(self, conv: ConversationInfo, text: str, lang: str) -> tuple[BrainTurn | None, str | None]:
        if self.brain is None:
            return None, "brain_error"
        metadata = {"visitor_id": conv.visitor_id, "lang": lang, "conversation_id": conv.id}
        started = time.perf_counter()
        try:
            turn = await asyncio.wait_for(
                self.brain.handle(conv.id, text, metadata), timeout=self.settings.brain_timeout_s
            )
            self.metrics.bot_turn("ok", time.perf_counter() - started)
            return turn, None
        except asyncio.TimeoutError:
            self.metrics.bot_turn("timeout", time.perf_counter() - started)
            logger.warning("brain timed out on conversation %s", conv.id)
            return None, "timeout"
        except ActionServerError:
            logger.exception("a custom action failed on conversation %s", conv.id)
            return None, "action_error"
        except Exception:  # noqa: BLE001 - any brain failure hands off (P1)
            self.metrics.bot_turn("brain_error", time.perf_counter() - started)
            logger.exception("brain failed on conversation %s", conv.id)
            return None, "brain_error"
