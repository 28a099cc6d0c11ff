"""A Python client of the customer WebSocket protocol (docs/protocol.md).

Used by ``python -m bot chat``, by app backends written in Python, and by the tests::

    async with ChatClient("ws://127.0.0.1:8080/ws/chat", lang="en") as chat:
        await chat.say("I want to talk to a person")
        frame = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")

The client keeps the visitor token, the conversation id and the highest ``seq`` it has seen, so
:meth:`ChatClient.reconnect` resumes the conversation and receives exactly what it missed.
Every frame received is appended to :attr:`ChatClient.frames`; :meth:`wait_for` consumes frames
in order and keeps the ones it skipped available for later calls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import websockets

Frame = dict[str, Any]


class FrameStream:
    """JSON frames of one WebSocket, received in order and kept: every frame is appended to
    :attr:`frames`; :meth:`wait_for` consumes them and keeps the ones it skipped for later calls.
    Subclasses see every received frame in :meth:`_track` and set ``_ws`` when they connect."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._pending: list[Frame] = []
        self._ws: Any = None

    def _track(self, frame: Frame) -> None:
        """Called with every received frame (state such as the last seq seen)."""

    async def _receive(self, timeout: float) -> Frame:
        frame: Frame = json.loads(await asyncio.wait_for(self._ws.recv(), timeout))
        self.frames.append(frame)
        self._track(frame)
        return frame

    async def recv(self, timeout: float = 10) -> Frame:
        """The next frame (one skipped by :meth:`wait_for` first)."""
        if self._pending:
            return self._pending.pop(0)
        return await self._receive(timeout)

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10) -> Frame:
        """The first frame matching ``predicate``; earlier non-matching frames stay queued."""
        for i, frame in enumerate(self._pending):
            if predicate(frame):
                return self._pending.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no matching frame within {timeout} s; got {self.frames[-5:]}")
            frame = await self._receive(remaining)
            if predicate(frame):
                return frame
            self._pending.append(frame)

    async def drain(self, quiet: float = 0.3) -> list[Frame]:
        """Every frame that arrives until nothing has come for ``quiet`` seconds."""
        out = list(self._pending)
        self._pending = []
        while True:
            try:
                out.append(await self._receive(quiet))
            except asyncio.TimeoutError:
                return out


class ChatClient(FrameStream):
    """One customer connection (and its resumable state)."""

    def __init__(
        self,
        url: str,
        *,
        lang: str | None = None,
        visitor_token: str | None = None,
        conversation_id: str | None = None,
        identity: dict[str, str] | None = None,
        origin: str | None = None,
        channel: str | None = None,
    ):
        super().__init__()
        self.url = url
        self.lang = lang
        self.visitor_token = visitor_token
        self.conversation_id = conversation_id
        self.identity = identity
        self.origin = origin
        self.channel = channel
        self.last_seq = 0
        self.status: str | None = None
        self.welcome: Frame | None = None

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the socket without sending ``hello`` (for tests of the handshake)."""
        # A closing handshake the server does not finish within 2 s is cut short (the default
        # 10 s would make a client that leaves without closing linger that long).
        kwargs: dict[str, Any] = {"open_timeout": 30, "max_size": 2**22, "close_timeout": 2}
        if self.origin:
            kwargs["origin"] = self.origin
        self._ws = await websockets.connect(self.url, **kwargs)  # type: ignore[attr-defined]
        self._pending = []

    async def connect(self, last_seq: int | None = None, **extra: Any) -> Frame:
        """Open the socket, send ``hello`` and return the ``welcome`` frame.

        :raises ConnectionError: the hub answered with an error frame (the frame is attached).
        """
        await self.open()
        hello: Frame = {"type": "hello", "last_seq": self.last_seq if last_seq is None else last_seq}
        if self.lang:
            hello["lang"] = self.lang
        if self.visitor_token:
            hello["visitor_token"] = self.visitor_token
        if self.conversation_id:
            hello["conversation_id"] = self.conversation_id
        if self.identity:
            hello["identity"] = self.identity
        if self.channel:
            hello["channel"] = self.channel
        hello.update(extra)
        await self.send_frame(hello)
        first = await self.wait_for(lambda f: f["type"] in ("welcome", "error"))
        if first["type"] == "error":
            raise ConnectionError(first)
        self.welcome = first
        self.visitor_token = first["visitor_token"]
        self.conversation_id = first["conversation_id"]
        self.status = first["status"]
        return first

    async def reconnect(self) -> Frame:
        """Close and resume the same conversation from the last seq seen."""
        await self.close()
        return await self.connect()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def send_frame(self, frame: Frame | str) -> None:
        await self._ws.send(frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False))

    async def say(self, text: str, client_msg_id: str | None = None) -> str:
        """Send a customer message; returns its ``client_msg_id`` (the ack arrives as a frame)."""
        cmid = client_msg_id or uuid.uuid4().hex
        await self.send_frame({"type": "message", "client_msg_id": cmid, "text": text})
        return cmid

    async def typing(self) -> None:
        """Tell the agent holding the conversation that the customer is typing (the hub relays at
        most one every 2 s and stores nothing; call it as often as keys are pressed)."""
        await self.send_frame({"type": "typing"})

    async def settle(self, timeout: float = 60) -> Frame:
        """Return once the hub has finished the turns of every message sent so far and all they
        sent has arrived: ``{"type": "ping", "settle": true}`` is answered only after them, so
        "nothing more arrives" is a signal, not a guess. Returns the ``pong`` (``settled`` is
        False when the hub gave up waiting; see docs/protocol.md)."""
        await self.send_frame({"type": "ping", "settle": True})
        return await self.wait_for(lambda f: f["type"] == "pong" and "settled" in f, timeout)

    async def say_and_ack(self, text: str, client_msg_id: str | None = None, timeout: float = 10) -> Frame:
        """Send a message and wait for its ``ack``."""
        cmid = await self.say(text, client_msg_id)
        return await self.wait_for(lambda f: f["type"] == "ack" and f["client_msg_id"] == cmid, timeout)

    def _track(self, frame: Frame) -> None:
        seq = frame.get("seq")
        if frame.get("type") in ("message", "ack") and isinstance(seq, int) and seq > self.last_seq:
            self.last_seq = seq
        if frame.get("type") == "status":
            self.status = frame.get("status")

    def messages(self, sender: str | None = None) -> list[Frame]:
        """Message frames received so far (optionally from one sender)."""
        return [f for f in self.frames if f.get("type") == "message" and (sender is None or f["sender"] == sender)]
