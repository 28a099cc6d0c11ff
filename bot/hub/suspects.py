"""The hub's side of :mod:`bot.services.handoff_dedupe`: where each conversation's anonymous
visitor came from, the count of handoffs per address, and which queued conversations are held
as "suspected automated".

* **The source of a conversation** is this hub's memory of the socket that opened it (bounded,
  least recently written forgotten). A handoff made by a hub that does not know it (a turn
  resumed elsewhere) has no known source and is ordinary.
* **The count per address** is shared by every hub on one Redis (``REDIS_URL``):
  :class:`RedisHandoffCounter`, the policy's rule in one script — a sliding window per address,
  and "supervisors already told of this burst" as a mark set once, so that they are told once
  however many hubs the burst is spread over. While Redis does not answer, each hub counts
  alone (the pure policy); without Redis it always does.
* **Which handoffs are held** is in the database (``handoffs.held_source``, written with the
  handoff): every hub's auto-assignment skips them, a supervisor's release on any hub makes them
  ordinary everywhere, and a restart forgets nothing. Claiming one ends the hold too.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from bot.hub.events import LRUDict
from bot.hub.ratelimit import Limiter, RateLimiter
from bot.services.conversations import ConversationService
from bot.services.handoff_dedupe import ORDINARY, HandoffDedupe, Verdict, counted_source
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.hub.core import Hub
    from bot.services.agents import AgentInfo

logger = logging.getLogger(__name__)

#: conversations whose source address is remembered at most (the least recently written forgotten)
MAX_SOURCES = 50_000

# One handoff of a source, by Redis's clock (µs). KEYS: the source's window (sorted set), its
# "supervisors told" mark. ARGV: window µs, handoffs per window, a unique member. Under the
# limit: counted, the mark cleared (a later burst is news), 0. Over it: not counted; 2 when
# this set the mark (the first held handoff of the burst), else 1. The mark lives one window:
# by then the counted handoffs have left the window and the next one clears it anyway.
_HANDOFF_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local ttl = math.ceil(window / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('DEL', KEYS[2])
  return 0
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ttl) then
  return 2
end
return 1
"""


class RedisHandoffCounter:
    """:class:`~bot.services.handoff_dedupe.HandoffDedupe`'s rule with its count in Redis, shared
    by every hub (keys ``<prefix>:n:<source>`` and ``<prefix>:told:<source>``).

    While Redis does not answer, ``fallback`` (this hub's own policy) decides: the threshold then
    holds per hub, and supervisors may be told once per hub.
    """

    def __init__(self, redis: Any, fallback: HandoffDedupe, limit: int, window_s: float,
                 prefix: str = "hl:dedupe") -> None:
        self.redis = redis
        self.fallback = fallback
        self.limit = limit
        self.window_s = window_s
        self.prefix = prefix
        self._script = redis.register_script(_HANDOFF_WINDOW)
        self._ids = itertools.count()
        self._member = uuid.uuid4().hex[:8]

    async def consider(self, source: str | None, reason: str, *, identified: bool = False) -> Verdict:
        """As :meth:`HandoffDedupe.consider`, counted on every hub together."""
        counted = counted_source(source, reason, identified=identified)
        if counted is None:
            return ORDINARY
        try:
            outcome = int(await self._script(
                keys=[f"{self.prefix}:n:{counted}", f"{self.prefix}:told:{counted}"],
                args=[int(self.window_s * 1_000_000), self.limit, f"{self._member}:{next(self._ids)}"],
            ))
        except Exception:  # noqa: BLE001 - Redis away: this hub's own count
            logger.warning("the shared handoff count is unavailable; counting in this hub", exc_info=True)
            return self.fallback.consider(counted, reason, identified=identified)
        if outcome == 0:
            return Verdict(held=False, source=counted)
        return Verdict(held=True, source=counted, first_held=outcome == 2)


class SuspectHandoffs:
    """Sources of conversations and the count of their handoffs (see the module docstring)."""

    def __init__(self, settings: Settings, conversations: ConversationService, redis: Any = None) -> None:
        limit, window_s = max(1, settings.handoffs_per_address), max(1.0, settings.handoff_window_s)
        self.counter: Limiter = RateLimiter(limit, window_s)
        self.policy = HandoffDedupe(self.counter)
        self.shared = RedisHandoffCounter(redis, self.policy, limit, window_s) if redis is not None else None
        self.conversations = conversations
        self._sources: LRUDict[str, str] = LRUDict(MAX_SOURCES)

    def remember(self, conversation_id: str, address: str) -> None:
        """An anonymous visitor's socket from ``address`` opened ``conversation_id``."""
        self._sources[conversation_id] = address

    def address_of(self, conversation_id: str) -> str | None:
        return self._sources.get(conversation_id)

    async def consider(self, conversation_id: str, reason: str) -> Verdict:
        """The verdict for a new handoff of ``conversation_id`` (counted against its source; the
        caller writes a held one with the handoff: ``ConversationService.queue(held_source=…)``)."""
        source = self._sources.get(conversation_id)
        if self.shared is not None:
            return await self.shared.consider(source, reason)
        return self.policy.consider(source, reason)

    def is_held(self, conversation_id: str) -> bool:
        """Whether the conversation's open handoff is held (blocking: a database read)."""
        h = self.conversations.open_handoff(conversation_id)
        return h is not None and h.held_source is not None


async def release_held(hub: Hub, supervisor: AgentInfo, conversation_id: str | None = None,
                       source: str | None = None) -> list[str]:
    """A supervisor releases a held conversation, or every held one of ``source``: each becomes
    an ordinary handoff (a case when no agent is available, the agents of its queue notified,
    auto-assignment). Audited. Works for handoffs held by any hub (the hold is in the database).
    Returns the conversations released."""
    from bot.hub.core import HubError

    if supervisor.role != "supervisor":
        raise HubError("forbidden", "only a supervisor can release held conversations")
    if (conversation_id is None) == (source is None) or not isinstance(conversation_id or source, str):
        raise HubError("missing_field", "conversation_id or source (one of them) is required")
    if source is not None:
        wanted = await hub.run(hub.conversations.held_of_source, source)
    else:
        wanted = [str(conversation_id)]
        if not await hub.run(hub.suspects.is_held, wanted[0]):
            raise HubError("not_held", "this conversation is not held")
    released = []
    for cid in wanted:
        async with hub.lock(cid):
            conv = await hub.run(hub.conversations.get, cid)
            if conv is None or conv.status != "queued":
                continue
            h = await hub.run(hub.conversations.release_held, cid)
            if h is None:  # released or claimed meanwhile (on any hub)
                continue
            lang = conv.lang or "en"
            if (h.case_id is None and not hub.agents_for(h.queue, available_only=True)
                    and await hub._open_case_for(cid, h.queue, h.reason, lang, None) is not None):
                h = await hub.run(hub.conversations.open_handoff, cid) or h
            await hub.run(hub.agents.record, supervisor, "released_held", cid, queue=h.queue)
            # first=False: the customer already has their place and answer; the agents hear of it now.
            await hub._announce_queued(cid, h, lang, first=False)
            released.append(cid)
    return released
