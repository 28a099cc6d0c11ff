"""The customer WebSocket ``/ws/chat`` (docs/protocol.md; the binding subset is PROTOCOL.md).

One :class:`CustomerSession` per socket. Frames are validated here; a bad frame (also JSON nested
too deeply to parse) gets an ``error`` frame and the socket stays usable. Only credential, origin
and abuse-limit failures close it: ``4001`` (``unauthorized``: bad, expired or revoked visitor
token, bad identity token), ``4003`` (``forbidden``: origin not allowed, or someone else's
conversation) and ``4029`` (``rate_limited``: too many sockets, hellos or new visitors from one
client address, see :mod:`bot.hub.security`; a hello with a valid identity token is vouched for
by the app's backend and exempt, so a backend relaying many users from one address works).
Until ``hello`` succeeded a frame may be at most :data:`PRE_HELLO_MAX_BYTES` (larger: close
``1009``), so an anonymous socket cannot make the hub buffer the full frame limit.

A ``message`` is stored first and acknowledged after; a resend with the same ``client_msg_id``
gets the same ``ack`` and nothing else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from bot.hub.auth import VisitorClaim, identity_user, origin_allowed, sign_visitor, verify_visitor_claim
from bot.hub.core import Hub, settled_status_frame
from bot.hub.events import send_frame
from bot.hub.security import request_address
from bot.i18n import LANGS
from bot.services.conversations import ConversationInfo, MessageRecord
from bot.services.credentials import VisitorCredentials

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_RATE_LIMITED = 4029
PRE_HELLO_MAX_BYTES = 64 * 1024
CHANNELS = ("web", "app", "cli")
MAX_CLIENT_MSG_ID = 128
#: how long a ``{"type": "ping", "settle": true}`` waits for the conversation's turns at most
SETTLE_TIMEOUT_S = 60.0


class Closing(Exception):
    """Raised to end the session after an auth or origin error frame."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class CustomerSession:
    """The state of one customer socket: its conversation, once ``hello`` succeeded."""

    def __init__(self, hub: Hub, ws: Any, address: str = "?"):
        self.hub = hub
        self.ws = ws
        self.address = address
        #: whether this socket counts against its address's open-socket cap
        self.counted_socket = False
        self.conversation: ConversationInfo | None = None

    async def error(self, code: str, message: str) -> None:
        await send_frame(self.ws, {"type": "error", "code": code, "message": message})

    async def deny(self, code: str, message: str, close_code: int) -> None:
        await self.error(code, message)
        raise Closing(close_code, code)

    async def on_text(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            await self.error("invalid_json", "frames must be JSON objects")
            return
        if not isinstance(frame, dict):
            await self.error("invalid_json", "frames must be JSON objects")
            return
        kind = frame.get("type")
        if kind == "hello":
            await self.on_hello(frame)
        elif kind == "message":
            await self.on_message(frame)
        elif kind == "typing":
            # Relayed to the agent holding the conversation (rate-limited there), never stored.
            if self.conversation is None:
                await self.error("not_ready", "send hello first")
            else:
                await self.hub.customer_typing(self.conversation.id)
        elif kind == "ping":
            if frame.get("settle") is True:
                # Answered once this conversation's turns so far are done here (and their frames sent).
                settled = self.conversation is not None and await self.hub.turns_settled(
                    self.conversation.id, SETTLE_TIMEOUT_S)
                await send_frame(self.ws, {"type": "pong", "settled": settled})
            else:
                await send_frame(self.ws, {"type": "pong"})
        else:
            await self.error("unknown_type", f"unknown frame type {kind!r}")

    # ---- hello ----------------------------------------------------------------------------

    async def on_hello(self, frame: dict[str, Any]) -> None:
        """Authenticate, admit and resume or start a conversation.

        Everything that costs no database work comes first — identity and token signatures,
        the per-address hello and new-visitor caps — so that a flood is refused cheaply. The
        database work is then one trip to the hello pool (:meth:`HubSecurity.run_hello`), at
        most :data:`~bot.hub.security.HELLO_CONCURRENCY` at once, never in the threads that
        established customers' turns use.
        """
        if self.conversation is not None:
            await self.error("already_started", "hello was already sent on this connection")
            return
        hub, settings = self.hub, self.hub.settings
        lang = frame.get("lang") if frame.get("lang") in LANGS else None
        channel = frame.get("channel") if frame.get("channel") in CHANNELS else "web"
        user_id: str | None = None
        claim: VisitorClaim | None = None
        identity = frame.get("identity")
        token = frame.get("visitor_token")
        if identity is not None:
            user_id = identity_user(settings.identity_secret, identity, legacy=settings.identity_legacy_hmac)
            if user_id is None:
                await self.deny("unauthorized", "the identity token is not valid or has expired", CLOSE_UNAUTHORIZED)
            channel = "app" if frame.get("channel") not in CHANNELS else channel
            # Vouched for by the app's backend, which may relay many users from one address:
            # not an anonymous socket, so not under the per-address caps.
            if self.counted_socket:
                hub.security.close_socket(self.address)
                self.counted_socket = False
        elif not await hub.security.hellos.ahit(self.address):
            await self.deny("rate_limited", "too many chats from your network; try again in a minute",
                            CLOSE_RATE_LIMITED)
        elif token is not None:
            claim = verify_visitor_claim((settings.secret, *settings.previous_secrets), token)
            if claim is None:
                await self.deny("unauthorized", "the visitor token is not valid or has expired", CLOSE_UNAUTHORIZED)
        # Anonymous visitors cost a row, a conversation and possibly a handoff each: capped
        # per client address (the per-visitor message limit does not bound how many exist).
        elif not await hub.security.new_visitors.ahit(self.address):
            await self.deny("rate_limited", "too many new chats from your network; try again in a minute",
                            CLOSE_RATE_LIMITED)
        wanted = frame.get("conversation_id")
        if wanted is not None and not isinstance(wanted, str):
            await self.error("missing_field", "conversation_id must be a string")
            return
        last_seq = frame.get("last_seq", 0)
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            last_seq = 0

        async with hub.security.hello_slots:
            if _is_gone(self.ws):  # the client left while waiting for a slot: nothing to do
                return
            opened = await hub.security.run_hello(_open_conversation, hub, user_id, claim, lang, channel,
                                                  wanted, last_seq)
        if opened.refused == "unauthorized":
            await self.deny("unauthorized", "the visitor token is not valid or has expired", CLOSE_UNAUTHORIZED)
        if opened.refused == "forbidden":
            await self.deny("forbidden", "this conversation belongs to someone else", CLOSE_FORBIDDEN)
        conv = opened.conversation
        assert conv is not None and opened.visitor_id is not None

        self.conversation = conv
        if user_id is None:  # anonymous: its handoffs count against this address (handoff_dedupe)
            hub.suspects.remember(conv.id, self.address)
        _frame_limit(self.ws, None)  # the app's frame limit from now on
        # Subscribed (on every hub's bus) before the stored messages are read: no frame between.
        await hub.bus.attach_customer(conv.id, self.ws)
        await send_frame(
            self.ws,
            {
                "type": "welcome",
                "conversation_id": conv.id,
                "visitor_token": sign_visitor(settings.secret, opened.visitor_id, settings.visitor_token_ttl_s),
                "status": conv.status,
                "last_seq": conv.last_seq,
            },
        )
        for message in opened.replay:
            await send_frame(self.ws, message.customer_frame())
        fresh = opened.fresh or conv
        if opened.status is not None:
            await send_frame(self.ws, opened.status)
        else:  # queued: positions and waits come from the hub's live view of the queue
            await send_frame(self.ws, await hub.customer_status(fresh))

    # ---- message --------------------------------------------------------------------------

    async def _rate_limited(self) -> bool:
        # Counted per visitor, not per socket (nor per hub): more sockets do not buy more messages.
        assert self.conversation is not None
        return not await self.hub.message_limiter.ahit(self.conversation.visitor_id)

    async def on_message(self, frame: dict[str, Any]) -> None:
        if self.conversation is None:
            await self.error("not_ready", "send hello first")
            return
        client_msg_id, text = frame.get("client_msg_id"), frame.get("text")
        if not isinstance(client_msg_id, str) or not client_msg_id or len(client_msg_id) > MAX_CLIENT_MSG_ID:
            await self.error("missing_field", "client_msg_id (a string of 1-128 characters) is required")
            return
        if not isinstance(text, str) or not text.strip():
            await self.error("missing_field", "text (a non-empty string) is required")
            return
        if len(text) > self.hub.settings.max_text_chars:
            await self.error("text_too_long", f"text is limited to {self.hub.settings.max_text_chars} characters")
            return
        if await self._rate_limited():
            await self.error("rate_limited", "too many messages; wait a few seconds and send again")
            return
        try:
            message, created = await self.hub.store_customer_message(self.conversation, client_msg_id, text)
        except Exception:  # noqa: BLE001 - not stored means not acknowledged: the client resends
            logger.exception("storing a customer message failed")
            await self.error("unavailable", "the message could not be stored; send it again")
            return
        await send_frame(self.ws, {"type": "ack", "client_msg_id": client_msg_id, "seq": message.seq})
        if created:
            await self.hub.bus.send_customers(self.conversation.id, message.customer_frame(), exclude=self.ws)
            self.hub.schedule_turn(message)


async def serve_customer(hub: Hub, request: Any, ws: Any) -> None:
    """The Sanic WebSocket handler body of ``/ws/chat``."""
    address = request_address(request, hub.security.trusted_proxies)
    session = CustomerSession(hub, ws, address)
    try:
        if not origin_allowed(request.headers.get("origin"), request.headers.get("host"),
                              hub.settings.allowed_origins):
            await session.deny("forbidden", "this origin may not open a chat", CLOSE_FORBIDDEN)
        session.counted_socket = hub.security.open_socket(address)
        if not session.counted_socket:
            await session.deny("rate_limited", "too many open chats from your network", CLOSE_RATE_LIMITED)
        _frame_limit(ws, PRE_HELLO_MAX_BYTES)
        while True:
            raw = await ws.recv()
            if raw is None:
                continue
            await session.on_text(raw)
    except Closing as closing:
        await ws.close(code=closing.code, reason=closing.reason)
    except Exception as exc:  # noqa: BLE001 - ConnectionClosed and friends end the session
        if not _is_closed(exc):
            logger.exception("customer socket failed")
    finally:
        if session.counted_socket:
            hub.security.close_socket(address)
        if session.conversation is not None:
            hub.bus.detach_customer(session.conversation.id, ws)


@dataclass
class _Opened:
    """What a hello's database work found (see :func:`_open_conversation`)."""

    refused: str | None = None  # "unauthorized" | "forbidden"
    visitor_id: str | None = None
    conversation: ConversationInfo | None = None
    replay: list[MessageRecord] = field(default_factory=list)
    fresh: ConversationInfo | None = None
    #: the status frame, unless the conversation is queued (see :meth:`Hub.customer_status`)
    status: dict[str, Any] | None = None


def _open_conversation(
    hub: Hub, user_id: str | None, claim: VisitorClaim | None, lang: str | None, channel: str,
    wanted: str | None, last_seq: int,
) -> _Opened:
    """A hello's database work in one trip to a worker thread (blocking): the visitor (an app
    user's, a token's still-valid one, or a new one), the conversation (the one asked for, the
    visitor's latest open one, or a new one), what the client missed and the current status."""
    conversations = hub.conversations
    if user_id is None and claim is None and wanted is None:
        # A new anonymous visitor: one transaction, nothing to replay, held by the bot.
        new = conversations.create_visitor_and_conversation(channel, lang)
        return _Opened(None, new.visitor_id, new, [], new, settled_status_frame(new, None, None, hub.case_url(None)))
    if user_id is not None:
        visitor_id = conversations.visitor_for_user(user_id, lang)
    elif claim is not None:
        if not VisitorCredentials(hub.db).accepts(claim.visitor_id, claim.issued_ms):
            return _Opened(refused="unauthorized")
        visitor_id = claim.visitor_id
    else:
        visitor_id = conversations.create_visitor(lang)
    conv: ConversationInfo | None = None
    if wanted is not None:
        conv = conversations.get(wanted)
        if conv is not None and conv.visitor_id != visitor_id:
            return _Opened(refused="forbidden")
    elif user_id is not None or claim is not None:
        latest = conversations.latest_for_visitor(visitor_id)
        conv = latest if latest is not None and latest.status != "closed" else None
    if conv is None:
        conv = conversations.create_conversation(visitor_id, channel, lang)
    replay = conversations.messages_after(conv.id, last_seq)
    fresh = conversations.get(conv.id) or conv
    status = None
    if fresh.status != "queued":
        agent = hub.agents.get(fresh.agent_id) if fresh.status == "agent" and fresh.agent_id is not None else None
        number = conversations.case_number(fresh.case_id)
        status = settled_status_frame(fresh, number, agent.display_name if agent is not None else None,
                                      hub.case_url(number))
    return _Opened(None, visitor_id, conv, replay, fresh, status)


def _is_gone(ws: Any) -> bool:
    """Whether the client already closed (or is closing) the socket."""
    state = getattr(getattr(ws, "connection", None), "state", None)
    return getattr(state, "name", "OPEN") in ("CLOSING", "CLOSED")


def _frame_limit(ws: Any, limit: int | None) -> None:
    """Set the largest frame the socket accepts (``None``: the app's ``WEBSOCKET_MAX_SIZE``).

    Sanic's socket wraps a sans-I/O ``websockets`` connection whose ``max_size`` is read for
    every frame; the frame already being read keeps the limit it started with.
    """
    connection = getattr(ws, "connection", None)
    if connection is None or not hasattr(connection, "max_size"):
        return
    if limit is None:
        limit = getattr(ws, "_humanline_max_size", connection.max_size)
    else:
        ws._humanline_max_size = connection.max_size
    connection.max_size = limit


def _is_closed(exc: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed

    return isinstance(exc, ConnectionClosed) or type(exc).__name__ in ("WebsocketClosed", "CancelledError")
