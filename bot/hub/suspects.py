"""The hub's side of :mod:`bot.services.handoff_dedupe`: where each conversation's anonymous
visitor came from, and which queued conversations are held as "suspected automated".

In memory, per hub process, like the other abuse counters (docs/security.md): after a restart
the held entries are ordinary queue entries again (they fail open — a held customer is never
lost, only no longer flagged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.hub.events import LRUDict
from bot.hub.ratelimit import Limiter, RateLimiter
from bot.services.handoff_dedupe import HandoffDedupe, Verdict
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.hub.core import Hub
    from bot.services.agents import AgentInfo

#: conversations whose source address (and held handoffs) are remembered at most (the least
#: recently written forgotten)
MAX_SOURCES = 50_000


@dataclass
class Held:
    source: str
    queue: str
    #: the supervisors are still to be told (the first held handoff of a burst)
    notice: bool = False


class SuspectHandoffs:
    """Sources of conversations and the held handoffs of one hub."""

    def __init__(self, settings: Settings) -> None:
        # Behind the Limiter interface: a shared (Redis) implementation can replace it (issue #15).
        self.counter: Limiter = RateLimiter(max(1, settings.handoffs_per_address), max(1.0, settings.handoff_window_s))
        self.policy = HandoffDedupe(self.counter)
        self._sources: LRUDict[str, str] = LRUDict(MAX_SOURCES)
        # Bounded too: an entry whose conversation ended some other way is forgotten in time
        # (forgetting one only makes that entry ordinary again).
        self._held: LRUDict[str, Held] = LRUDict(MAX_SOURCES)

    def remember(self, conversation_id: str, address: str) -> None:
        """An anonymous visitor's socket from ``address`` opened ``conversation_id``."""
        self._sources[conversation_id] = address

    def consider(self, conversation_id: str, queue: str, reason: str) -> Verdict:
        """The policy's verdict for a new handoff; a held one is recorded."""
        verdict = self.policy.consider(self._sources.get(conversation_id), reason)
        if verdict.held and verdict.source is not None:
            self._held[conversation_id] = Held(verdict.source, queue, verdict.first_held)
        else:
            self._held.pop(conversation_id, None)
        return verdict

    def is_held(self, conversation_id: str) -> bool:
        return conversation_id in self._held

    def take_notice(self, conversation_id: str) -> bool:
        """Whether supervisors are to be told of this held handoff (True once per burst)."""
        held = self._held.get(conversation_id)
        if held is None or not held.notice:
            return False
        held.notice = False
        return True

    def source_of(self, conversation_id: str) -> str | None:
        held = self._held.get(conversation_id)
        return held.source if held else None

    def release(self, conversation_id: str) -> Held | None:
        """No longer held (released by a supervisor, claimed, escalated, gone from the queue)."""
        return self._held.pop(conversation_id, None)

    def held_of_source(self, source: str) -> list[str]:
        return [cid for cid, h in self._held.items() if h.source == source]

    def __len__(self) -> int:
        return len(self._held)


async def release_held(hub: Hub, supervisor: AgentInfo, conversation_id: str | None = None,
                       source: str | None = None) -> list[str]:
    """A supervisor releases a held conversation, or every held one of ``source``: each becomes
    an ordinary handoff (a case when no agent is available, the agents of its queue notified,
    auto-assignment). Audited. Returns the conversations released."""
    from bot.hub.core import HubError

    if supervisor.role != "supervisor":
        raise HubError("forbidden", "only a supervisor can release held conversations")
    if (conversation_id is None) == (source is None) or not isinstance(conversation_id or source, str):
        raise HubError("missing_field", "conversation_id or source (one of them) is required")
    wanted = hub.suspects.held_of_source(source) if source is not None else [str(conversation_id)]
    if source is None and not hub.suspects.is_held(wanted[0]):
        raise HubError("not_held", "this conversation is not held")
    released = []
    for cid in wanted:
        async with hub.lock(cid):
            if hub.suspects.release(cid) is None:
                continue
            conv = await hub.run(hub.conversations.get, cid)
            h = await hub.run(hub.conversations.open_handoff, cid)
            if conv is None or conv.status != "queued" or h is None:
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
