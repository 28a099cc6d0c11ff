"""The hub's transactional outbox: a command's events survive a crash between its commit and
their publication (issue #15).

**Why.** An agent command (claim, reply, transfer, hand back, resolve, a case change, the reply
clock's requeue) changes the database and then tells people: the agent events (``assigned``,
``claimed``, ``released``, ``case``, ``message``) and the customer's frames (the system notice
"Alice has joined", the new status). Sent from memory after the commit, they were lost when the
hub died (or its bus failed) in between: a conversation assigned that its agent never heard of,
a customer never told.

**How.**

* A command is one unit of work (:class:`Unit`): its change, its audit entry, the customer's
  system notice (a stored message) and every event it emits — rows of ``hub_outbox``
  (:mod:`bot.services.hub_outbox`) — commit in one transaction, or none of them does.
* After the commit the hub publishes the rows through the bus (:mod:`bot.hub.bus`, local or
  Redis) in their order and deletes them (:meth:`EventOutbox.publish`). A row is leased to the
  hub that wrote it (``claimed_at`` = commit time).
* A relay (:meth:`EventOutbox.run_relay`: at hub start, then every
  ``outbox_relay_interval_s``) takes over the rows whose lease is older than
  ``outbox_relay_grace_s`` — left by a hub that crashed, or whose bus refused them — renews
  their lease and publishes them. On PostgreSQL the take-over locks the rows ``FOR UPDATE SKIP
  LOCKED``, so of several hubs exactly one relays each row; SQLite serves one process.
* Some frames are *views* of the database, marked ``"_view": true`` when stored and built when
  published (:meth:`bot.hub.core.Hub.outbox_view`): the ``assigned`` conversation (transcript,
  case, summary), the customer's ``status``, the ``case`` panel. A late view shows the state at
  delivery, never a stale one.

**Guarantees.** At-least-once, not exactly-once: a row is deleted after it was published, so a
hub dying between the two (or a publication slower than the grace period) lets the relay
publish it again. Clients absorb duplicates: customers keep messages by ``seq`` and a ``status``
frame carries the whole state; a republished agent event gets a new ``event_id`` (ids number the
stream), and the console applies events idempotently (``assigned`` merges the transcript by
``seq``, ``message`` is dropped when its ``seq`` is known, ``released``/``claimed`` remove,
``case`` replaces). A relayed event may arrive after a newer one of the same conversation; the
``ready`` snapshot and the customer's ``hello`` are built from the database and are the truth.

Not in the outbox: the queue announcements (a ``handoff`` entry in agents' waiting lists, queue
positions, queue snapshots), which every queue change and every reconnect recompute; typing
signals; and the turn pipeline's messages, stored before they are sent (customers resume by
``seq``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy.orm import Session

from bot.services.hub_outbox import HubOutboxStore, OutboxEvent, add
from bot.store.models import utcnow

logger = logging.getLogger(__name__)

#: rows a relay takes over at once
RELAY_BATCH = 200

Resolver = Callable[[OutboxEvent], Awaitable[dict[str, Any] | None]]


class Unit:
    """One command's transaction and the events it will emit (written in it)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: list[OutboxEvent] = []

    def to_agents(self, recipients: Iterable[int], frame: dict[str, Any]) -> None:
        """A numbered agent event for ``recipients`` (none: nothing)."""
        recipients = list(recipients)
        if recipients:
            self.events.append(add(self.session, frame, recipients=recipients))

    def to_customers(self, conversation_id: str, frame: dict[str, Any]) -> None:
        """A frame for the customer's sockets of ``conversation_id``."""
        self.events.append(add(self.session, frame, conversation_id=conversation_id))


class EventOutbox:
    """Publishes stored events through the bus: a command's after its commit, and the relay's."""

    def __init__(
        self, store: HubOutboxStore, bus: Any, resolve: Resolver, grace_s: float, max_age_s: float = 600.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.resolve = resolve
        self.grace_s = grace_s
        self.max_age_s = max_age_s
        #: events given up after ``max_age_s`` (``/metrics``: humanline_outbox_dropped_total)
        self.dropped = 0

    async def publish(self, events: list[OutboxEvent]) -> int:
        """Publish ``events`` in order and delete the published ones; returns how many are done
        with (published or dropped). An event the bus refuses (or whose view cannot be built)
        stays for the relay, and so do the later events of its conversation, to keep their order;
        others go on — unless it is older than ``max_age_s``: then it is dropped (logged as an
        error, counted), so that one frame that can never go out does not hold its conversation
        back for ever. Never raises: the command has committed, and what is not published here is
        the relay's."""
        done: list[int] = []
        blocked: set[Any] = set()
        for event in events:
            key = event.conversation_id or event.frame.get("conversation_id") or event.recipients
            if key in blocked:
                continue
            try:
                ok = await self._publish_one(event)
            except Exception:  # noqa: BLE001 - left for the relay
                logger.warning("publishing outbox event %s failed; the relay will", event.id, exc_info=True)
                ok = False
            if ok:
                done.append(event.id)
            elif (utcnow() - event.created_at).total_seconds() > self.max_age_s:
                logger.error("dropping outbox event %s (%s), unpublished for over %.0f s",
                             event.id, event.frame.get("type"), self.max_age_s)
                self.dropped += 1
                done.append(event.id)
            else:
                blocked.add(key)
        if done:
            try:
                await asyncio.to_thread(self.store.delete, done)
            except Exception:  # noqa: BLE001 - published again by the relay: a harmless duplicate
                logger.warning("deleting published outbox events failed", exc_info=True)
        return len(done)

    async def _publish_one(self, event: OutboxEvent) -> bool:
        frame = await self.resolve(event)
        if frame is None:  # a view of something that no longer exists: nothing to say
            return True
        if event.recipients is not None:
            numbered = await self.bus.emit(list(event.recipients), frame)
            return "event_id" in numbered  # RedisBus: not numbered when Redis refused it
        assert event.conversation_id is not None
        return await self.bus.send_customers(event.conversation_id, frame) is not False

    async def relay_once(self) -> int:
        """Publish every event whose lease ran out; returns how many were published."""
        total = 0
        while True:
            events = await asyncio.to_thread(self.store.claim_stale, self.grace_s, RELAY_BATCH)
            if not events:
                return total
            logger.info("relaying %d outbox events left unpublished", len(events))
            published = await self.publish(events)
            total += published
            if published < len(events) or len(events) < RELAY_BATCH:
                return total

    async def run_relay(self, interval_s: float) -> None:
        """The relay loop: at once (a restart publishes what the crash left), then every
        ``interval_s``."""
        while True:
            try:
                await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be away: try again later
                logger.warning("the outbox relay failed; retrying", exc_info=True)
            await asyncio.sleep(interval_s)
