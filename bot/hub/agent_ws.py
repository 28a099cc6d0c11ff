"""The agent WebSocket ``/ws/agent`` (frames in docs/architecture.md and docs/hub.md).

The first frame must be ``{"type":"auth","token",...}`` with a login token from
``POST /api/agents/login``; a bad or expired token gets an ``unauthorized`` error and close code
``4001`` (the console then asks for the password again); so does the end of the token's life, or
a logout (``POST /api/agents/logout``), on a socket that is already open; so does a disabled
account or a revoked token, checked before every frame and every :data:`SESSION_RECHECK_S`. A
change of the agent's role or queues closes the socket with ``4005`` (``session_changed``) and the
console reconnects with the new rights. With ``last_event_id`` the agent gets,
after the ``ready`` snapshot, every event addressed to it since that id (see
:mod:`bot.hub.events`). Every action is audited by the hub.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from bot.hub import canned
from bot.hub.core import Hub, HubError
from bot.hub.events import send_frame
from bot.hub.suspects import release_held
from bot.services.agents import AgentInfo
from bot.services.cases import MAX_RESOLUTION
from bot.store.models import utcnow

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4001
#: the agent's role or queues changed: reconnect (the console does) to get a fresh ``ready``
CLOSE_SESSION_CHANGED = 4005
AUTH_TIMEOUT_S = 15.0
SESSION_RECHECK_S = 30.0
MAX_AGENT_TEXT = 8000


def _str(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value.strip():
        raise HubError("missing_field", f"{name} (a non-empty string) is required")
    return value


def _case_resolution(frame: dict[str, Any]) -> str | None:
    """The ``resolve`` frame's optional ``case``: ``{"resolution": text}`` resolves the
    conversation's open case too, with ``text`` for the customer; absent (or ``null``) leaves the
    case as it is."""
    case = frame.get("case")
    if case is None:
        return None
    resolution = case.get("resolution") if isinstance(case, dict) else None
    if not isinstance(resolution, str) or not resolution.strip():
        raise HubError("missing_field", "case.resolution (a non-empty string) is required to resolve the case")
    if len(resolution) > MAX_RESOLUTION:
        raise HubError("text_too_long", f"case.resolution is limited to {MAX_RESOLUTION} characters")
    return resolution


class AgentSession:
    """One authenticated agent socket."""

    def __init__(self, hub: Hub, ws: Any, agent: AgentInfo):
        self.hub = hub
        self.ws = ws
        self.agent = agent

    async def on_text(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
            if not isinstance(frame, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError, RecursionError):
            await send_frame(self.ws, {"type": "error", "code": "invalid_json", "message": "frames must be JSON"})
            return
        try:
            await self.dispatch(frame)
        except HubError as e:
            await send_frame(self.ws, {"type": "error", "code": e.code, "message": e.message,
                                       "conversation_id": frame.get("conversation_id")})

    async def dispatch(self, frame: dict[str, Any]) -> None:
        hub, kind = self.hub, frame.get("type")
        # Role and skills may have changed since login: use the hub's current view.
        self.agent = hub.online.get(self.agent.id, self.agent)
        if kind == "claim":
            await hub.claim(self.agent, _str(frame, "conversation_id"))
        elif kind == "message":
            text = _str(frame, "text")
            if len(text) > MAX_AGENT_TEXT:
                raise HubError("text_too_long", f"text is limited to {MAX_AGENT_TEXT} characters")
            cmid = frame.get("client_msg_id")
            await canned.before_send(hub, _str(frame, "conversation_id"), text, frame.get("check_script") is True)
            await hub.agent_message(self.agent, _str(frame, "conversation_id"), text,
                                    cmid if isinstance(cmid, str) and cmid else None)
        elif kind == "transfer":
            await hub.transfer(self.agent, _str(frame, "conversation_id"), _str(frame, "queue"))
        elif kind == "hand_back":
            await hub.hand_back(self.agent, _str(frame, "conversation_id"))
        elif kind == "resolve":
            await hub.resolve(self.agent, _str(frame, "conversation_id"), _case_resolution(frame))
        elif kind == "availability":
            if not isinstance(frame.get("available"), bool):
                raise HubError("missing_field", "available (true or false) is required")
            self.agent = await hub.set_availability(self.agent, frame["available"])
        elif kind == "case_stage":
            await hub.case_stage(self.agent, _str(frame, "case_number"), _str(frame, "stage"),
                                 frame.get("conversation_id"))
        elif kind == "note":
            await hub.case_note(self.agent, _str(frame, "case_number"), _str(frame, "text"),
                                frame.get("conversation_id"))
        elif kind == "case_progress":
            await hub.case_progress(self.agent, _str(frame, "case_number"), _str(frame, "text"),
                                    frame.get("conversation_id"))
        elif kind == "case_extend":
            hours = frame.get("hours", 24)
            if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 30:
                raise HubError("invalid_field", "hours must be a number above 0 and at most 720")
            await hub.case_extend(self.agent, _str(frame, "case_number"), _str(frame, "reason"), float(hours),
                                  frame.get("conversation_id"))
        elif kind == "typing":
            await hub.agent_typing(self.agent, _str(frame, "conversation_id"))
        elif kind == "set_capacity":
            if "max_concurrent" not in frame:
                raise HubError("missing_field", "max_concurrent (a number, or null for the default) is required")
            updated = await hub.set_capacity(self.agent, frame.get("agent_id"), frame["max_concurrent"],
                                             frame.get("allow_overflow"))
            await send_frame(self.ws, {"type": "agent_capacity", "agent": updated})
        elif kind in canned.FRAMES:
            await send_frame(self.ws, await canned.handle(hub, self.agent, frame))
        elif kind == "release_held":
            released = await release_held(hub, self.agent, frame.get("conversation_id"), frame.get("source"))
            await send_frame(self.ws, {"type": "held_released", "conversation_ids": released})
        elif kind == "ping":
            await send_frame(self.ws, {"type": "pong"})
        else:
            raise HubError("unknown_type", f"unknown frame type {kind!r}")


async def _session_changed(hub: Hub, token: str, agent: AgentInfo) -> tuple[str, str, int] | None:
    """Why the socket of ``agent`` opened with ``token`` must end now (error code, message, close
    code), or ``None`` while the token is valid and the role and queues are those it began with."""
    found = await hub.run(hub.agents.session_of, token)
    if found is None:
        return "unauthorized", "the session has ended; log in again", CLOSE_UNAUTHORIZED
    current = found[0]
    if current.role != agent.role or set(current.skills) != set(agent.skills):
        return "session_changed", "your role or queues changed; reconnecting", CLOSE_SESSION_CHANGED
    return None


async def serve_agent(hub: Hub, request: Any, ws: Any) -> None:
    """The Sanic WebSocket handler body of ``/ws/agent``."""
    agent: AgentInfo | None = None
    try:
        try:
            raw = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S)
            frame = json.loads(raw) if raw else None
        except (asyncio.TimeoutError, ValueError, RecursionError):
            frame = None
        if not isinstance(frame, dict) or frame.get("type") != "auth":
            await send_frame(ws, {"type": "error", "code": "unauthorized", "message": "send auth with a token first"})
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
            return
        token = frame.get("token")
        found = await hub.run(hub.agents.session_of, token)
        if found is None:
            await send_frame(ws, {"type": "error", "code": "unauthorized", "message": "the token is not valid"})
            await ws.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
            return
        agent, expires_at = found
        assert isinstance(token, str)
        await hub.agent_connected(agent, ws, token)
        await send_frame(ws, await hub.ready_frame(agent))
        last = frame.get("last_event_id")
        if isinstance(last, int) and not isinstance(last, bool):
            replay = await hub.bus.replay(agent.id, last)  # from any hub (bot.hub.bus)
            if not replay.complete:
                # Some events after `last` were pushed out of the ring (or lost with Redis): the
                # replay below is only part of them, and the ready snapshot is the complete picture.
                await send_frame(ws, {"type": "events_truncated", "last_event_id": last,
                                      "oldest_event_id": replay.oldest_event_id})
            for missed in replay.frames:
                await send_frame(ws, missed)
        if agent.available:
            for queue in agent.skills:
                if queue in hub.config.queues:
                    hub.spawn(hub.auto_assign(queue))
        hub.spawn(hub.broadcast_queues())
        session = AgentSession(hub, ws, agent)
        while True:
            # The session ends with its token: the socket does not outlive the login.
            remaining = (expires_at - utcnow()).total_seconds()
            if remaining <= 0:
                await send_frame(ws, {"type": "error", "code": "unauthorized",
                                      "message": "the session has expired; log in again"})
                await ws.close(code=CLOSE_UNAUTHORIZED, reason="session expired")
                return
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=min(remaining, SESSION_RECHECK_S))
            except asyncio.TimeoutError:
                raw = None
            if remaining > SESSION_RECHECK_S or raw is not None:
                # Before every frame and every SESSION_RECHECK_S: the token may have been revoked,
                # the agent disabled or given another role or other queues — by this hub or by
                # the CLI in another process — and the socket must not keep the old rights.
                ended = await _session_changed(hub, token, agent)
                if ended is not None:
                    code, message, close = ended
                    await send_frame(ws, {"type": "error", "code": code, "message": message})
                    await ws.close(code=close, reason=code)
                    return
            if raw is not None:
                await session.on_text(raw)
    except Exception as exc:  # noqa: BLE001
        from bot.hub.customer_ws import _is_closed

        if not _is_closed(exc):
            logger.exception("agent socket failed")
    finally:
        if agent is not None:
            await hub.agent_disconnected(agent, ws)
