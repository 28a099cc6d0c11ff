"""Customer credentials: signed visitor tokens, app-user identity signatures, origin checks.

A *visitor token* proves that a WebSocket client is the anonymous visitor it claims to be. It is
``<visitor_id>.<expires_unix>.<hex HMAC-SHA256(secret, "<visitor_id>.<expires_unix>")>``; it
carries no other data and expires (``Settings.visitor_token_ttl_s``). Signed-in app users prove
their identity with ``hex(HMAC-SHA256(identity_secret, user_id))``, computed by the app's backend.

Every comparison of secrets is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

_SEP = "."


def _mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_visitor(secret: str, visitor_id: str, ttl_s: int, *, now: float | None = None) -> str:
    """A token for ``visitor_id`` valid for ``ttl_s`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{visitor_id}{_SEP}{expires}"
    return f"{body}{_SEP}{_mac(secret, body)}"


def verify_visitor(secret: str, token: str, *, now: float | None = None) -> str | None:
    """The visitor id of a valid, unexpired token; ``None`` for anything else."""
    if not isinstance(token, str) or len(token) > 256:
        return None
    parts = token.split(_SEP)
    if len(parts) != 3:
        return None
    visitor_id, expires, mac = parts
    if not hmac.compare_digest(_mac(secret, f"{visitor_id}{_SEP}{expires}"), mac):
        return None
    try:
        if int(expires) < (time.time() if now is None else now):
            return None
    except ValueError:
        return None
    return visitor_id or None


def identity_signature(identity_secret: str, user_id: str) -> str:
    """What an app backend sends as ``identity.signature`` for ``user_id``."""
    return _mac(identity_secret, user_id)


def verify_identity(identity_secret: str | None, user_id: object, signature: object) -> bool:
    """True when ``signature`` is the HMAC of ``user_id``; always False without a secret."""
    if not identity_secret or not isinstance(user_id, str) or not isinstance(signature, str):
        return False
    if not user_id or len(user_id) > 128:
        return False
    return hmac.compare_digest(identity_signature(identity_secret, user_id), signature.lower())


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a browser from ``origin`` may open a customer socket.

    No ``Origin`` header (non-browser clients: apps, the Python client) is always allowed. With an
    allow-list, the origin must be on it (``*`` allows all); without one only the hub's own origin
    (same host and port) is.
    """
    if not origin:
        return True
    origin = origin.rstrip("/")
    if allowed:
        return "*" in allowed or origin in {o.rstrip("/") for o in allowed}
    parsed = urlsplit(origin)
    return bool(host) and parsed.netloc.lower() == (host or "").lower()
