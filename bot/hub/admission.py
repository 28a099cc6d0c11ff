"""A bounded accept pipeline: at most :data:`ADMIT_AT_ONCE` new connections in their opening
handshake at a time; the others wait, unread, in the kernel.

Why: a reconnect storm (thousands of clients at once) used to be accepted in one loop iteration
and handshaken in the next, so the event loop spent seconds on the storm's HTTP upgrades between
two frames of an established customer. Reading a new connection is now paused
(``transport.pause_reading()``) while :data:`ADMIT_AT_ONCE` others are in their handshake; each
one that finishes (upgraded to a WebSocket, answered, closed, or :data:`ADMIT_HOLD_S` seconds
after it was let in) lets the next waiting one in, oldest first. Nothing is refused: a waiting
client's bytes stay in its socket buffer and it is served in turn; the listen backlog
(:data:`bot.hub.security.LISTEN_BACKLOG`) keeps the kernel from dropping the connects meanwhile.
The gate only ever delays *new* connections: established sockets are never paused. A flood of
connections that never finish their handshake (more than 32 a second) would delay other new
connections; limiting raw connection rates is the reverse proxy's job (docs/security.md).

:func:`serve_options` gives ``app.run`` the protocol and the backlog (``python -m bot serve``
and the abuse bench use it). The test servers (``app.create_server``) keep Sanic's defaults.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from bot.hub.security import LISTEN_BACKLOG

#: connections let into their handshake at once (per hub process)
ADMIT_AT_ONCE = 16
#: a connection gives its place back after this long even if it has not upgraded (plain HTTP,
#: keep-alive, or a client that never finishes its request), so at least
#: ``ADMIT_AT_ONCE / ADMIT_HOLD_S`` (32) new connections a second get in whatever they do
ADMIT_HOLD_S = 0.5


class AdmissionGate:
    """At most ``limit`` protocols admitted at once; the rest paused, first come first served."""

    def __init__(self, limit: int = ADMIT_AT_ONCE, hold_s: float = ADMIT_HOLD_S) -> None:
        self.limit, self.hold_s = max(1, limit), hold_s
        self._admitted: dict[Any, asyncio.TimerHandle | None] = {}
        self._waiting: deque[tuple[Any, Any]] = deque()
        self._still_waiting: set[int] = set()  # ids of the protocols in _waiting not gone since
        #: how many connections had to wait (for the abuse bench and /metrics readers)
        self.waited = 0

    @property
    def admitted(self) -> int:
        return len(self._admitted)

    @property
    def waiting(self) -> int:
        return len(self._still_waiting)

    def arrive(self, proto: Any, transport: Any) -> None:
        """A new connection: admitted now, or paused until a place frees."""
        if len(self._admitted) < self.limit and not self._still_waiting:
            self._admit(proto)
            return
        self.waited += 1
        transport.pause_reading()
        self._waiting.append((proto, transport))
        self._still_waiting.add(id(proto))

    def _admit(self, proto: Any) -> None:
        try:
            timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(self.hold_s, self.leave, proto)
        except RuntimeError:  # no running loop (never in the server)
            timer = None
        self._admitted[proto] = timer

    def leave(self, proto: Any) -> None:
        """``proto`` is done with its handshake (or gone): the next waiting one goes in."""
        if proto in self._admitted:
            timer = self._admitted.pop(proto)
            if timer is not None:
                timer.cancel()
        else:
            self._still_waiting.discard(id(proto))  # gone while waiting: skipped when its turn comes
        while self._waiting and len(self._admitted) < self.limit:
            waiting, transport = self._waiting.popleft()
            if id(waiting) not in self._still_waiting:
                continue
            self._still_waiting.discard(id(waiting))
            if transport.is_closing():
                continue
            self._admit(waiting)
            transport.resume_reading()


class AdmittingProtocol(WebSocketProtocol):
    """Sanic's HTTP/WebSocket protocol behind the process's :class:`AdmissionGate`."""

    gate = AdmissionGate()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.gate.arrive(self, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.leave(self)
        super().connection_lost(exc)

    async def websocket_handshake(self, request: Any, subprotocols: Any = None) -> Any:
        try:
            return await super().websocket_handshake(request, subprotocols)
        finally:
            self.gate.leave(self)


def serve_options() -> dict[str, Any]:
    """Keyword arguments for ``Sanic.run``: the gated protocol and the listen backlog."""
    return {"protocol": AdmittingProtocol, "backlog": LISTEN_BACKLOG}
