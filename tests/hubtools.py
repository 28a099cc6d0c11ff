"""Test helpers: a real hub on a free port, fake brains, and agent/customer clients.

:func:`running_hub` starts :func:`bot.hub.create_app` in a background thread with its own event
loop (a real Sanic server, real WebSockets) on a fresh, migrated SQLite database, and stops it
afterwards. Tests talk to it over the network exactly as the widget and the console do.

The fake brains implement :class:`bot.brain.Brain`: :class:`ScriptedBrain` (replies from a
function), :class:`LoopingBrain` (always the same unresolved reply), :class:`RaisingBrain`,
:class:`HangingBrain` and :class:`RandomBrain`.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import websockets

from bot.brain import BotReply, BrainTurn
from bot.client import FrameStream
from bot.settings import Settings
from bot.store.db import Database

Frame = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- fake brains ---------------------------------------------------------------------------


@dataclass
class ScriptedBrain:
    """Answers with ``script(text, call_number) -> BrainTurn``; records every call."""

    script: Callable[[str, int], BrainTurn]
    calls: list[str] = field(default_factory=list)
    delay_s: float = 0.0

    async def ready(self) -> bool:
        return True

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        self.calls.append(text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self.script(text, len(self.calls))


def turn(
    *replies: str, intent: str | None = "out_of_scope", confidence: float = 0.9, resolved: bool = False,
    slots_set: dict[str, Any] | None = None, actions: list[str] | None = None,
) -> BrainTurn:
    """A :class:`BrainTurn` with the given reply texts."""
    slots = dict(slots_set or {})
    return BrainTurn(
        replies=[BotReply(r) for r in replies], intent=intent, confidence=confidence, entities=[],
        actions=actions or [], slots=slots, resolved=resolved, slots_set=slots,
    )


def LoopingBrain() -> ScriptedBrain:  # noqa: N802 - a factory named like the class it stands for
    """Always the same canned, unresolved reply (the retention-script loop)."""
    return ScriptedBrain(
        lambda text, n: turn("Have you tried our premium plan? It has great value!", intent=f"intent_{n}")
    )


def VaryingBrain() -> ScriptedBrain:  # noqa: N802
    """A different unresolved reply every turn (so only the turn budget stops it)."""
    return ScriptedBrain(lambda text, n: turn(f"Unhelpful answer number {n}.", intent=f"intent_{n}"))


RESOLVING_INTENTS = ("check_case_status", "rate_case", "reopen_case")


def GreeterBrain() -> ScriptedBrain:  # noqa: N802
    """Resolves every turn with a friendly reply, different each time: each turn a different
    completed request without a case category (a status given, a case rated, a case reopened), so
    neither the re-ask rule nor the small-talk cap of the guard's resolution rule applies and a
    handoff still goes to the default queue."""
    return ScriptedBrain(
        lambda text, n: turn(f"Hello! (#{n})", intent=RESOLVING_INTENTS[n % len(RESOLVING_INTENTS)], resolved=True)
    )


class RaisingBrain(ScriptedBrain):
    def __init__(self) -> None:
        super().__init__(lambda text, n: turn())

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        self.calls.append(text)
        raise RuntimeError("the model exploded")


class HangingBrain(ScriptedBrain):
    def __init__(self, hang_s: float = 30.0) -> None:
        super().__init__(lambda text, n: turn("too late"))
        self.hang_s = hang_s

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        self.calls.append(text)
        await asyncio.sleep(self.hang_s)
        return turn("a reply that arrives far too late")


class RandomBrain(ScriptedBrain):
    """Random replies, intents, resolutions, handoff requests, errors and delays (seeded)."""

    def __init__(self, seed: int = 0, max_delay_s: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.max_delay_s = max_delay_s
        super().__init__(lambda text, n: turn())

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        self.calls.append(text)
        rng = self.rng
        await asyncio.sleep(rng.random() * self.max_delay_s)
        roll = rng.random()
        if roll < 0.05:
            raise ValueError("random failure")
        replies = [f"reply {rng.randint(0, 5)}" for _ in range(rng.randint(0, 2))]
        slots = {"handoff_queue": "general"} if rng.random() < 0.05 else {}
        return turn(*replies, intent=rng.choice(["greet", "out_of_scope", "nlu_fallback", "inform"]),
                    resolved=rng.random() < 0.3, slots_set=slots)


# ---- the server ----------------------------------------------------------------------------


@dataclass
class RunningHub:
    """A hub serving on ``url`` from a background thread."""

    url: str
    settings: Settings
    db: Database
    app: Any
    loop: asyncio.AbstractEventLoop

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/chat"

    @property
    def agent_ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws/agent"

    @property
    def hub(self) -> Any:
        return self.app.ctx.hub

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (to inspect or drive the hub directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def create_agent(
        self, username: str, password: str = "password-123", skills: tuple[str, ...] = ("general",),
        display_name: str | None = None, role: str = "agent",
    ) -> Any:
        from bot.services.agents import AgentService

        return AgentService(self.db).create(username, display_name or username.title(), password, list(skills), role)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
                return r.status, body
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def login(self, username: str, password: str = "password-123") -> str:
        status, body = self.post("/api/agents/login", {"username": username, "password": password})
        assert status == 200, body
        return str(body["token"])


@contextmanager
def running_hub(tmp_path: Path, brain: Any, db: Database | None = None, **overrides: Any) -> Iterator[RunningHub]:
    """Start a hub with ``brain`` on ``db`` (default: a fresh SQLite file); ``overrides`` are
    :class:`Settings` fields. A given ``db`` is migrated and left open for its owner."""
    from sanic import Sanic

    from bot.hub import create_app

    # Several apps in one process: Sanic re-applies its method touch-ups only in test mode.
    Sanic.test_mode = True
    port = free_port()
    own_db = db is None
    if db is None:
        db = Database(f"sqlite:///{tmp_path / f'hub-{port}.db'}")
    database_url = str(db.url)
    # Every test client comes from 127.0.0.1: the per-address abuse limits are lifted unless a
    # test sets them (tests/test_security.py does).
    limits = {"new_visitors_per_minute": 100_000, "hellos_per_minute": 100_000, "sockets_per_address": 100_000,
              "handoffs_per_address": 100_000}
    settings = replace(
        Settings(), host="127.0.0.1", port=port, database_url=database_url, action_endpoint=None,
        secret="test-secret", identity_secret="identity-secret", **{**limits, **overrides},
    )
    db.migrate()
    app = create_app(settings, brain=brain, db=db)
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 0.5
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False)
            )
            loop.run_until_complete(server.startup())
            loop.run_until_complete(server.before_start())
            loop.run_until_complete(server.after_start())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            started.set()
            return
        started.set()

        async def wait_stop() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)

        loop.run_until_complete(wait_stop())
        loop.run_until_complete(server.before_stop())
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.run_until_complete(server.after_stop())
        loop.close()

    thread = threading.Thread(target=serve, name=f"hub-{port}", daemon=True)
    thread.start()
    started.wait(30)
    if errors:
        raise errors[0]
    try:
        yield RunningHub(f"http://127.0.0.1:{port}", settings, db, app, loop)
    finally:
        stop.set()
        thread.join(30)
        if own_db:
            db.dispose()


# ---- waiting for a conversation to settle ----------------------------------------------------


async def _pong(chat: FrameStream) -> None:
    await chat._ws.send(json.dumps({"type": "ping"}))
    await chat.wait_for(lambda f: f["type"] == "pong")


async def settle(srv: RunningHub, chat: Any, timeout: float = 15.0) -> None:
    """Return once the hub has processed every message ``chat`` sent and every frame it sent
    meanwhile has arrived — instead of waiting a fixed time and hoping.

    A socket's frames are handled in order, so a ``pong`` proves the earlier messages were stored
    and their turns scheduled; then the conversation's turn worker must be gone (every turn done,
    its frames written); a second ``pong`` comes after every frame those turns sent. Frames that
    arrived meanwhile stay in ``chat.frames`` (and are still returned by ``wait_for``).
    """
    await _pong(chat)
    cid = chat.conversation_id

    async def busy() -> bool:
        return cid in srv.hub._workers or cid in srv.hub._turns

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(busy(), srv.loop)):
        if loop.time() > deadline:
            raise asyncio.TimeoutError(f"conversation {cid} still has turns after {timeout} s")
        await asyncio.sleep(0.01)
    await _pong(chat)


# ---- agent client --------------------------------------------------------------------------


class AgentClient(FrameStream):
    """A console stand-in over ``/ws/agent``; frames are kept in order like :class:`ChatClient`."""

    def __init__(self, url: str, token: str):
        super().__init__()
        self.url = url
        self.token = token
        self.ready: Frame | None = None
        self.last_event_id = 0

    @property
    def ws(self) -> Any:
        """The socket (``None`` when closed)."""
        return self._ws

    def _track(self, frame: Frame) -> None:
        if isinstance(frame.get("event_id"), int):
            self.last_event_id = max(self.last_event_id, frame["event_id"])

    async def connect(self, last_event_id: int | None = None) -> Frame:
        self._ws = await websockets.connect(self.url, open_timeout=30, close_timeout=1)
        self._pending = []
        auth: Frame = {"type": "auth", "token": self.token}
        if last_event_id is not None:
            auth["last_event_id"] = last_event_id
        await self.send(auth)
        self.ready = await self.wait_for(lambda f: f["type"] in ("ready", "error"))
        return self.ready

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def send(self, frame: Frame) -> None:
        await self._ws.send(json.dumps(frame))
