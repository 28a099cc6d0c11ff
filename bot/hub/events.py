"""In-process fan-out: customer sockets per conversation, agent sockets per agent, and the
numbered agent event log.

Agent events are numbered like Zulip's event queue: every event gets the next ``event_id`` of
the process (starting at the wall-clock milliseconds at start, so ids also increase across
restarts) and is kept in a bounded ring with the agents it was addressed to. An agent that
reconnects with ``last_event_id`` receives, in order, every event addressed to it with a larger
id that is still in the ring; anything older is covered by the ``ready`` snapshot, which is built
from the database (queues, the agent's conversations with their transcripts).

A socket is anything with an ``async send(str)``; a failed send drops the socket from the
registry and never disturbs the sender. A send that does not complete within
:data:`SEND_TIMEOUT_S` (a client that stopped reading: the socket's write buffer is full and the
send waits for it to drain) counts as failed and the connection is cut (1008), so a slow reader
cannot hold a conversation's lock, or the hub, for longer than that; the client reconnects and
gets what it missed by ``last_seq`` / ``last_event_id``.

:meth:`AgentEventLog.missed` also says whether the ring still reached back to the agent's last
event; when it did not, the agent socket sends an ``events_truncated`` frame so the console knows
the ``ready`` snapshot, not the replay, is the complete picture.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")

logger = logging.getLogger(__name__)

RING_SIZE = 5000
SEND_TIMEOUT_S = 5.0


class LRUDict(OrderedDict[K, V]):
    """A dict that keeps at most ``max_size`` keys, forgetting the least recently written.

    For the hub's per-conversation memos (the last status frame sent, the agents who timed out
    on a conversation): without a bound they would grow with every conversation the process ever
    saw. Forgetting an entry only costs a repeated status frame or a repeated offer.
    """

    def __init__(self, max_size: int) -> None:
        super().__init__()
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.max_size:
            self.popitem(last=False)


class Socket(Protocol):
    async def send(self, data: str) -> None: ...


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def send_frame(ws: Socket, frame: dict[str, Any]) -> bool:
    """Send one JSON frame; False when the socket is gone (or too slow: see the module docstring)."""
    return await _send_raw(ws, dumps(frame))


def _cut(ws: Socket) -> None:
    """Abort a connection whose client does not read (synchronous: it cannot block in turn)."""
    fail = getattr(ws, "fail_connection", None)
    if fail is not None:
        try:
            fail(1008, "client too slow")
        except Exception:  # noqa: BLE001 - already gone
            logger.debug("failing a slow connection failed", exc_info=True)


class Registry:
    """Sockets by key (conversation id or agent id). A key may have several sockets (tabs)."""

    def __init__(self) -> None:
        self._sockets: dict[Any, set[Socket]] = {}

    def add(self, key: Any, ws: Socket) -> None:
        self._sockets.setdefault(key, set()).add(ws)

    def discard(self, key: Any, ws: Socket) -> None:
        group = self._sockets.get(key)
        if group is not None:
            group.discard(ws)
            if not group:
                del self._sockets[key]

    def keys(self) -> list[Any]:
        return list(self._sockets)

    def has(self, key: Any) -> bool:
        return bool(self._sockets.get(key))

    def sockets(self) -> list[Socket]:
        return [ws for group in self._sockets.values() for ws in group]

    def count(self) -> int:
        return sum(len(g) for g in self._sockets.values())

    async def send(self, key: Any, frame: dict[str, Any], exclude: Socket | None = None) -> int:
        """Send ``frame`` to every socket of ``key`` but ``exclude``; returns how many got it."""
        group = [ws for ws in self._sockets.get(key, ()) if ws is not exclude]
        if not group:
            return 0
        data = dumps(frame)
        results = await asyncio.gather(*(_send_raw(ws, data) for ws in group))
        for ws, ok in zip(group, results, strict=True):
            if not ok:
                self.discard(key, ws)
        return sum(results)


async def _send_raw(ws: Socket, data: str) -> bool:
    try:
        await asyncio.wait_for(ws.send(data), SEND_TIMEOUT_S)
        return True
    except asyncio.TimeoutError:
        logger.info("cutting a connection that stopped reading")
        _cut(ws)
        return False
    except Exception:  # noqa: BLE001 - a closed or broken socket is simply skipped
        logger.debug("send failed", exc_info=True)
        return False


@dataclass(frozen=True)
class AgentEvent:
    event_id: int
    recipients: frozenset[int]
    frame: dict[str, Any]


class AgentEventLog:
    """Numbered agent events in a bounded ring (see the module docstring)."""

    def __init__(self, size: int = RING_SIZE, start: int | None = None):
        self._ids = itertools.count((int(time.time() * 1000) if start is None else start) + 1)
        self._ring: deque[AgentEvent] = deque(maxlen=size)
        self._dropped_up_to: int | None = None

    def add(self, recipients: Iterable[int], frame: dict[str, Any]) -> dict[str, Any]:
        """Number ``frame`` (a copy with ``event_id``) and remember it for ``recipients``."""
        numbered = {**frame, "event_id": next(self._ids)}
        if len(self._ring) == self._ring.maxlen:
            self._dropped_up_to = self._ring[0].event_id  # about to be pushed out
        self._ring.append(AgentEvent(numbered["event_id"], frozenset(recipients), numbered))
        return numbered

    def missed(self, agent_id: int, last_event_id: int) -> list[dict[str, Any]]:
        """Events for ``agent_id`` after ``last_event_id``, oldest first (see :meth:`complete_since`)."""
        return [e.frame for e in self._ring if e.event_id > last_event_id and agent_id in e.recipients]

    def complete_since(self, last_event_id: int) -> bool:
        """Whether the ring still holds every event after ``last_event_id`` (none was pushed out)."""
        return self._dropped_up_to is None or last_event_id >= self._dropped_up_to

    def oldest_id(self) -> int | None:
        return self._ring[0].event_id if self._ring else None
