"""Canned replies and the reply-script check on the agent socket and the REST API.

Agent frames (docs/hub.md), each answered on the same socket:

* ``canned_list`` ``{conversation_id?, lang?}`` → ``canned_list`` ``{replies, customer_lang?}``; with
  a conversation the agent holds, each reply comes rendered for it (``text``, ``missing``);
* ``canned_render`` ``{conversation_id, id | shortcut (+ lang?)}`` → ``canned_rendered``
  ``{reply, text, missing, mismatch}``;
* ``script_check`` ``{conversation_id, text}`` → ``script_check`` ``{conversation_id, text,
  customer_lang, reply_lang, mismatch, missing}``;
* supervisors only: ``canned_save`` ``{id?, shortcut, lang, title?, body}`` → ``canned_saved``
  ``{reply}``; ``canned_delete`` ``{id}`` → ``canned_deleted`` ``{id}``.

A ``message`` frame with ``"check_script": true`` is refused with ``script_mismatch`` when its text is
in another script than the customer's (the console sends it that way first, and again without the
flag once the agent confirms); a text that still holds a ``[[fill in: …]]`` marker is always refused
(``unfilled_placeholder``). Failures are ``error`` frames with the :class:`CannedError` code.
"""

from __future__ import annotations

from typing import Any

from bot.hub.core import Hub, HubError
from bot.i18n import LANGUAGE_NAMES
from bot.services.agents import AgentInfo
from bot.services.canned import CannedError, script_mismatch, unfilled

FRAMES = ("canned_list", "canned_render", "canned_save", "canned_delete", "script_check")


def _int(frame: dict[str, Any], name: str) -> int:
    value = frame.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HubError("missing_field", f"{name} (a canned reply's id) is required")
    return value


def _cid(frame: dict[str, Any]) -> str:
    value = frame.get("conversation_id")
    if not isinstance(value, str) or not value:
        raise HubError("missing_field", "conversation_id (a non-empty string) is required")
    return value


async def _may_see(hub: Hub, agent: AgentInfo, cid: str) -> None:
    """Only the agent holding a conversation (or a supervisor) renders replies for it."""
    conv = await hub.run(hub.conversations.get, cid)
    if conv is None:
        raise HubError("not_found", "no such conversation")
    if agent.role != "supervisor" and conv.agent_id != agent.id:
        raise HubError("forbidden", "this conversation is not assigned to you")


def require_supervisor(agent: AgentInfo) -> None:
    if agent.role != "supervisor":
        raise HubError("forbidden", "only a supervisor can manage canned replies")


async def save(hub: Hub, agent: AgentInfo, body: dict[str, Any], reply_id: int | None = None) -> dict[str, Any]:
    """Create (no ``reply_id``) or update a canned reply as ``agent`` (a supervisor)."""
    require_supervisor(agent)
    try:
        if reply_id is None:
            return await hub.run(hub.canned.create, agent.actor, body.get("shortcut"), body.get("lang"),
                                 body.get("body"), body.get("title"))
        return await hub.run(lambda: hub.canned.update(
            agent.actor, reply_id, shortcut=body.get("shortcut"), lang=body.get("lang"), body=body.get("body"),
            title=body.get("title")))
    except CannedError as e:
        raise HubError(e.code, e.message) from None


async def delete(hub: Hub, agent: AgentInfo, reply_id: int) -> dict[str, Any]:
    require_supervisor(agent)
    try:
        return await hub.run(hub.canned.delete, agent.actor, reply_id)
    except CannedError as e:
        raise HubError(e.code, e.message) from None


async def handle(hub: Hub, agent: AgentInfo, frame: dict[str, Any]) -> dict[str, Any]:
    """The answer to one of :data:`FRAMES`.

    :raises HubError: a bad frame, a conversation the agent does not hold, a non-supervisor
        managing, or the service's refusal (its :class:`CannedError` code).
    """
    kind = frame.get("type")
    try:
        if kind == "canned_save":
            reply_id = frame.get("id")
            reply = await save(hub, agent, frame, None if reply_id is None else _int(frame, "id"))
            return {"type": "canned_saved", "reply": reply}
        if kind == "canned_delete":
            gone = await delete(hub, agent, _int(frame, "id"))
            return {"type": "canned_deleted", "id": gone["id"], "reply": gone}
        if kind == "canned_list":
            cid = frame.get("conversation_id")
            if cid is None:
                lang = frame.get("lang")
                replies = await hub.run(hub.canned.replies, lang if isinstance(lang, str) else None)
                return {"type": "canned_list", "replies": replies}
            cid = _cid(frame)
            await _may_see(hub, agent, cid)
            return {"type": "canned_list",
                    **await hub.run(hub.canned.for_conversation, cid, agent.display_name)}
        cid = _cid(frame)
        await _may_see(hub, agent, cid)
        if kind == "canned_render":
            shortcut, lang = frame.get("shortcut"), frame.get("lang")
            rendered = await hub.run(lambda: hub.canned.render(
                cid, reply_id=_int(frame, "id") if "id" in frame else None,
                shortcut=shortcut if isinstance(shortcut, str) else None,
                lang=lang if isinstance(lang, str) else None, agent_name=agent.display_name))
            return {"type": "canned_rendered", "conversation_id": cid, **rendered}
        if kind == "script_check":
            text = frame.get("text")
            if not isinstance(text, str):
                raise HubError("missing_field", "text (a string) is required")
            return {"type": "script_check", **await hub.run(hub.canned.check, cid, text)}
    except CannedError as e:
        raise HubError(e.code, e.message) from None
    raise HubError("unknown_type", f"unknown frame type {kind!r}")


async def before_send(hub: Hub, cid: str, text: str, check_script: bool) -> None:
    """Refuse an agent reply that still holds a fill-in marker, and — when the console asked for
    the check — one in another script than the customer's."""
    missing = unfilled(text)
    if missing:
        raise HubError("unfilled_placeholder", "fill in " + ", ".join(missing) + " before sending")
    if not check_script:
        return
    conv = await hub.run(hub.conversations.get, cid)
    mismatch = script_mismatch(text, conv.lang if conv else None)
    if mismatch is not None:
        raise HubError("script_mismatch",
                       f"this reply is in {LANGUAGE_NAMES[mismatch.reply_script]} but the customer writes "
                       f"{LANGUAGE_NAMES[mismatch.customer_script]}; send it again to confirm")
