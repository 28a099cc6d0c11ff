"""In-process fan-out: customer sockets per conversation, agent sockets per agent, and the
numbered agent event log.

Agent events are numbered like Zulip's event queue: every event gets the next ``event_id`` of
the process (starting at the wall-clock milliseconds at start, so ids also increase across
restarts) and is kept in a bounded ring with the agents it was addressed to. An agent that
reconnects with ``last_event_id`` receives, in order, every event addressed to it with a larger
id that is still in the ring; anything older is covered by the ``ready`` snapshot, which is built
from the database (queues, the agent's conversations with their transcripts).

A socket is anything with an ``async send(str)``; a failed send drops the socket from the
registry and never disturbs the sender.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

RING_SIZE = 5000


class Socket(Protocol):
    async def send(self, data: str) -> None: ...


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def send_frame(ws: Socket, frame: dict[str, Any]) -> bool:
    """Send one JSON frame; False when the socket is gone."""
    try:
        await ws.send(dumps(frame))
        return True
    except Exception:  # noqa: BLE001 - a closed or broken socket is simply skipped
        logger.debug("send failed", exc_info=True)
        return False


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
        await ws.send(data)
        return True
    except Exception:  # noqa: BLE001
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

    def add(self, recipients: Iterable[int], frame: dict[str, Any]) -> dict[str, Any]:
        """Number ``frame`` (a copy with ``event_id``) and remember it for ``recipients``."""
        numbered = {**frame, "event_id": next(self._ids)}
        self._ring.append(AgentEvent(numbered["event_id"], frozenset(recipients), numbered))
        return numbered

    def missed(self, agent_id: int, last_event_id: int) -> list[dict[str, Any]]:
        """Events for ``agent_id`` after ``last_event_id``, oldest first."""
        return [e.frame for e in self._ring if e.event_id > last_event_id and agent_id in e.recipients]

    def oldest_id(self) -> int | None:
        return self._ring[0].event_id if self._ring else None
