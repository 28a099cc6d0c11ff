"""The bus: frames delivered to sockets wherever they are connected (issue #15).

A hub holds the sockets of the customers and agents connected to it (:class:`Registry`), but
the conversation's next frame may be produced by any hub. :class:`Bus` is what the hub sends
through; two backends, chosen by ``REDIS_URL`` (:func:`make_bus`):

* :class:`LocalBus` — one process (the embedded default: ``make run`` needs no Redis). Customer
  frames go to this process's sockets; agent events are numbered by an in-memory
  :class:`~bot.hub.events.AgentEventLog`.
* :class:`RedisBus` — several hubs sharing one Redis:

  - **customer frames** are fanned out by conversation: every hub subscribes to the channel
    ``hl:conv:<id>`` of each conversation it holds a socket of, and a frame is sent to the local
    sockets at once and published there for the others (each hub skips its own publications).
    Customers still resume from the stored ``seq`` (the database is the record; the bus only
    carries live frames).
  - **agent events** go into one Redis Stream, ``hl:agent-events``, whose entry ids *are* the
    event ids (``<event_id>-0``): a Lua script takes the next number (never below the clock in
    milliseconds, so ids keep increasing across a Redis restart) and appends the entry in one
    step, so ids are gap-free and in stream order. Every hub reads the stream (``XREAD BLOCK``)
    and delivers each event to its local sockets of the recipients — the one path for live
    delivery, so every hub sees the same order. The stream keeps the last :data:`RING_SIZE`
    events (exact ``MAXLEN``); an agent resuming with ``last_event_id`` on any hub gets the
    events after it, and when some of them were trimmed (or lost with a Redis restart) it is
    told so (``events_truncated``) before a replay that is then only a supplement to the
    ``ready`` snapshot — never a silently partial replay.
  - **control messages** (``hl:control``): token revocations and presence changes, for every hub.

Redis failures never break a turn: a frame that cannot be published is logged and dropped (the
database has it; clients resume from ``seq`` / the snapshot), and the reading loops reconnect
with a back-off and resubscribe. The refusal is reported (``send_customers`` returns False,
``emit`` returns the frame without an ``event_id``), so the events of an agent command, kept in
the transactional outbox until published (:mod:`bot.hub.outbox`), are relayed later instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.hub.events import RING_SIZE, AgentEventLog, Registry, Socket, dumps

logger = logging.getLogger(__name__)

STREAM = "hl:agent-events"
COUNTER = "hl:agent-event-id"
CONTROL = "hl:control"
CONV_PREFIX = "hl:conv:"
RECONNECT_MAX_S = 2.0

ControlHandler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Replay:
    """What an agent resuming after ``last_event_id`` gets: ``complete`` is False when events
    after it are gone (trimmed, or lost with Redis); ``oldest_event_id`` the oldest still kept."""

    frames: list[dict[str, Any]]
    complete: bool
    oldest_event_id: int | None


class Bus(Protocol):
    """Where the hub sends frames (see the module docstring)."""

    customers: Registry
    agents: Registry
    hub_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def attach_customer(self, conversation_id: str, ws: Socket) -> None: ...

    def may_reach(self, conversation_id: str) -> bool:
        """Whether a frame for the conversation's customers may reach a socket (False: skip it)."""
        ...

    def detach_customer(self, conversation_id: str, ws: Socket) -> None: ...

    async def send_customers(self, conversation_id: str, frame: dict[str, Any], exclude: Socket | None = None) -> bool:
        """Send ``frame`` to the conversation's customer sockets; False when it could not be
        handed on (Redis away: only this hub's sockets got it)."""
        ...

    async def emit(self, recipients: list[int], frame: dict[str, Any]) -> dict[str, Any]:
        """Number ``frame`` (``event_id``) and deliver it to ``recipients``; without an
        ``event_id`` when it could not be numbered (Redis away: not delivered)."""
        ...

    async def send_agent(self, agent_id: int, frame: dict[str, Any]) -> None: ...

    async def replay(self, agent_id: int, last_event_id: int) -> Replay: ...

    async def oldest_event_id(self) -> int | None: ...

    async def publish_control(self, message: dict[str, Any]) -> None: ...

    def on_control(self, handler: ControlHandler) -> None: ...


class LocalBus:
    """One process: the registries and the in-memory event ring."""

    def __init__(self) -> None:
        self.customers = Registry()
        self.agents = Registry()
        self.events = AgentEventLog()
        self.hub_id = "local"
        self._handlers: list[ControlHandler] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def attach_customer(self, conversation_id: str, ws: Socket) -> None:
        self.customers.add(conversation_id, ws)

    def may_reach(self, conversation_id: str) -> bool:
        return self.customers.has(conversation_id)

    def detach_customer(self, conversation_id: str, ws: Socket) -> None:
        self.customers.discard(conversation_id, ws)

    async def send_customers(self, conversation_id: str, frame: dict[str, Any], exclude: Socket | None = None) -> bool:
        await self.customers.send(conversation_id, frame, exclude=exclude)
        return True

    async def emit(self, recipients: list[int], frame: dict[str, Any]) -> dict[str, Any]:
        numbered = self.events.add(recipients, frame)
        await asyncio.gather(*(self.agents.send(a, numbered) for a in recipients))
        return numbered

    async def send_agent(self, agent_id: int, frame: dict[str, Any]) -> None:
        await self.agents.send(agent_id, frame)

    async def replay(self, agent_id: int, last_event_id: int) -> Replay:
        return Replay(self.events.missed(agent_id, last_event_id), self.events.complete_since(last_event_id),
                      self.events.oldest_id())

    async def oldest_event_id(self) -> int | None:
        return self.events.oldest_id()

    async def publish_control(self, message: dict[str, Any]) -> None:
        return None  # nobody else to tell

    def on_control(self, handler: ControlHandler) -> None:
        self._handlers.append(handler)


# Next event id (never below the clock's milliseconds) and the stream entry, in one step.
_EMIT = """
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  n = floor
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], string.format('%d-0', n), 'r', ARGV[3], 'f', ARGV[4])
return n
"""


def _event_id(stream_id: bytes | str) -> int:
    raw = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(raw.split("-", 1)[0])


def _decode_entry(stream_id: Any, fields: dict[Any, Any]) -> tuple[int, set[int], dict[str, Any]]:
    event_id = _event_id(stream_id)
    recipients = {int(r) for r in (fields.get(b"r") or fields.get("r") or b"").decode().split(",") if r}
    frame = json.loads(fields.get(b"f") or fields.get("f") or "{}")
    return event_id, recipients, {**frame, "event_id": event_id}


class RedisBus:
    """Several hubs on one Redis (see the module docstring)."""

    def __init__(self, url: str, ring_size: int = RING_SIZE) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.ring_size = ring_size
        self.customers = Registry()
        self.agents = Registry()
        self.hub_id = uuid.uuid4().hex[:12]
        # Commands; a separate connection pool for the blocking stream read.
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10,
                                             health_check_interval=5)
        self._reader = aioredis.Redis.from_url(url, socket_connect_timeout=2, health_check_interval=5)
        self._emit_script = self.redis.register_script(_EMIT)
        self._handlers: list[ControlHandler] = []
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed: set[str] = set()
        #: set once the reading loops are connected (tests and the start-up wait on it)
        self.connected = asyncio.Event()

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.ensure_future(self._read_stream()), asyncio.ensure_future(self._read_pubsub())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await self._pubsub.close()
        for client in (self.redis, self._reader):
            with contextlib.suppress(Exception):
                await client.close()

    # ---- customers -------------------------------------------------------------------------

    async def attach_customer(self, conversation_id: str, ws: Socket) -> None:
        """Add a customer socket; returns once this hub is subscribed to the conversation (the
        caller reads the stored messages after that, so no frame falls between the two)."""
        first = not self.customers.has(conversation_id)
        self.customers.add(conversation_id, ws)
        if first:
            self._subscribed.add(conversation_id)
            await self._subscribe(CONV_PREFIX + conversation_id)

    def may_reach(self, conversation_id: str) -> bool:
        return True  # the customer may be connected to another hub: publish, whoever listens

    def detach_customer(self, conversation_id: str, ws: Socket) -> None:
        self.customers.discard(conversation_id, ws)
        if not self.customers.has(conversation_id) and conversation_id in self._subscribed:
            self._subscribed.discard(conversation_id)
            asyncio.ensure_future(self._unsubscribe(CONV_PREFIX + conversation_id))

    async def _subscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):  # a broken connection resubscribes everything
            if self._pubsub is not None:
                await self._pubsub.subscribe(channel)

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await self._pubsub.unsubscribe(channel)

    async def send_customers(self, conversation_id: str, frame: dict[str, Any], exclude: Socket | None = None) -> bool:
        await self.customers.send(conversation_id, frame, exclude=exclude)
        return await self._publish(CONV_PREFIX + conversation_id, {"o": self.hub_id, "f": frame})

    async def _publish(self, channel: str, message: dict[str, Any]) -> bool:
        try:
            await self.redis.publish(channel, dumps(message))
            return True
        except Exception:  # noqa: BLE001 - the database has it; the client resumes from seq
            logger.warning("publishing on %s failed (Redis away?)", channel, exc_info=True)
            return False

    # ---- agents ----------------------------------------------------------------------------

    async def emit(self, recipients: list[int], frame: dict[str, Any]) -> dict[str, Any]:
        """Number ``frame`` in the stream; every hub's reader delivers it to its sockets."""
        try:
            event_id = int(await self._emit_script(
                keys=[COUNTER, STREAM],
                args=[int(time.time() * 1000), self.ring_size, ",".join(str(a) for a in recipients), dumps(frame)],
            ))
        except Exception:  # noqa: BLE001 - live delivery lost; the ready snapshot has the truth
            logger.warning("numbering an agent event failed (Redis away?); the event is not delivered",
                           exc_info=True)
            return dict(frame)
        return {**frame, "event_id": event_id}

    async def send_agent(self, agent_id: int, frame: dict[str, Any]) -> None:
        """An unnumbered frame (``typing``) to an agent's sockets on any hub; never replayed."""
        await self.agents.send(agent_id, frame)
        await self._publish(CONTROL, {"o": self.hub_id, "k": "agent", "a": agent_id, "f": frame})

    async def replay(self, agent_id: int, last_event_id: int) -> Replay:
        try:
            counter = await self.redis.get(COUNTER)
            first = await self.redis.xrange(STREAM, "-", "+", count=1)
            entries = await self.redis.xrange(STREAM, f"{last_event_id + 1}-0", "+")
        except Exception:  # noqa: BLE001 - no replay: say so, the snapshot is the picture
            logger.warning("reading missed agent events failed", exc_info=True)
            return Replay([], False, None)
        oldest = _event_id(first[0][0]) if first else None
        newest = int(counter) if counter is not None else None
        complete = (newest is not None and last_event_id >= newest) or (
            oldest is not None and oldest <= last_event_id + 1
        )
        frames = []
        for stream_id, fields in entries:
            _, recipients, frame = _decode_entry(stream_id, fields)
            if agent_id in recipients:
                frames.append(frame)
        return Replay(frames, complete, oldest)

    async def oldest_event_id(self) -> int | None:
        with contextlib.suppress(Exception):
            first = await self.redis.xrange(STREAM, "-", "+", count=1)
            return _event_id(first[0][0]) if first else None
        return None

    async def _read_stream(self) -> None:
        """Deliver every event of the stream to this hub's sockets of its recipients."""
        last: str | None = None
        delay = 0.1
        while True:
            try:
                if last is None:
                    newest = await self._reader.xrevrange(STREAM, "+", "-", count=1)
                    last = newest[0][0].decode() if newest else "0-0"
                got = await self._reader.xread({STREAM: last}, block=2000, count=500)
                delay = 0.1
                self.connected.set()
                for _stream, entries in got or []:
                    for stream_id, fields in entries:
                        last = stream_id.decode()
                        _, recipients, frame = _decode_entry(stream_id, fields)
                        targets = [a for a in recipients if self.agents.has(a)]
                        if targets:
                            await asyncio.gather(*(self.agents.send(a, frame) for a in targets))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: retry with a back-off
                logger.warning("reading the agent event stream failed; retrying", exc_info=True)
                self.connected.clear()
                # After a Redis restart the stream is new, but ids keep increasing (never below
                # the clock), so reading on from the last id seen is right.
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)

    # ---- control and pub/sub ----------------------------------------------------------------

    async def publish_control(self, message: dict[str, Any]) -> None:
        await self._publish(CONTROL, {"o": self.hub_id, **message})

    def on_control(self, handler: ControlHandler) -> None:
        self._handlers.append(handler)

    async def _read_pubsub(self) -> None:
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CONTROL, *(CONV_PREFIX + c for c in list(self._subscribed)))
                self._pubsub = pubsub
                delay = 0.1
                # Subscriptions made while the connection was down are in _subscribed: above.
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    await self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: reconnect and resubscribe
                logger.warning("the Redis subscription failed; reconnecting", exc_info=True)
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.close()
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        try:
            channel = message["channel"].decode()
            body = json.loads(message["data"])
        except (KeyError, ValueError, AttributeError):
            return
        if body.get("o") == self.hub_id:
            return
        if channel.startswith(CONV_PREFIX):
            await self.customers.send(channel[len(CONV_PREFIX):], body["f"])
        elif body.get("k") == "agent":
            if self.agents.has(body.get("a")):
                await self.agents.send(body["a"], body["f"])
        else:
            for handler in self._handlers:
                try:
                    await handler(body)
                except Exception:  # noqa: BLE001 - one bad handler must not stop the bus
                    logger.exception("a control handler failed")


def make_bus(redis_url: str | None) -> LocalBus | RedisBus:
    """:class:`RedisBus` when ``redis_url`` is set, else :class:`LocalBus`."""
    return RedisBus(redis_url) if redis_url else LocalBus()

