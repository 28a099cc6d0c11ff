"""Customer credentials: signed visitor tokens, app-user identity tokens, origin checks.

A *visitor token* proves that a WebSocket client is the anonymous visitor it claims to be. It is
``<visitor_id>.<issued_ms>.<expires_unix>.<hex HMAC-SHA256(secret, "<visitor_id>.<issued_ms>.<expires_unix>")>``;
it carries no other data, expires (``Settings.visitor_token_ttl_s``, a day by default) and is
replaced by a fresh one on every ``hello``. Because it carries its issue time it can be revoked:
tokens issued before a visitor's ``tokens_not_before`` (or before the global revocation time) are
refused (:mod:`bot.services.credentials`). Tokens of the earlier form ``<visitor_id>.<expires>.<mac>``
are accepted until they expire. Verification tries the current key and then every previous key
(``HUMANLINE_SECRET_PREVIOUS``), so the key can be rotated without logging every visitor out.

Signed-in app users prove their identity with a JWT (HS256) signed by the app's backend with
``HUMANLINE_IDENTITY_SECRET``: ``sub`` is the user id, ``iat`` and ``exp`` are required, and a token
may live at most :data:`MAX_IDENTITY_LIFETIME_S`. The old never-expiring form
``hex(HMAC-SHA256(identity_secret, user_id))`` is accepted only with
``HUMANLINE_IDENTITY_LEGACY_HMAC=1``.

Every comparison of secrets is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

_SEP = "."
#: an identity JWT may be valid for at most this long (``exp - iat``)
MAX_IDENTITY_LIFETIME_S = 24 * 3600
#: clock difference tolerated between the app backend and the hub
CLOCK_LEEWAY_S = 60
MAX_TOKEN_CHARS = 2048


def _mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _keys(secret: str | Sequence[str]) -> list[str]:
    return [secret] if isinstance(secret, str) else [k for k in secret if k]


@dataclass(frozen=True)
class VisitorClaim:
    """What a valid visitor token says: who, and when it was issued (ms since the epoch)."""

    visitor_id: str
    issued_ms: int


def sign_visitor(secret: str, visitor_id: str, ttl_s: int, *, now: float | None = None) -> str:
    """A token for ``visitor_id`` valid for ``ttl_s`` seconds from ``now``."""
    now = time.time() if now is None else now
    body = f"{visitor_id}{_SEP}{int(now * 1000)}{_SEP}{int(now + ttl_s)}"
    return f"{body}{_SEP}{_mac(secret, body)}"


def verify_visitor_claim(
    secret: str | Sequence[str], token: object, *, now: float | None = None
) -> VisitorClaim | None:
    """The claim of a valid, unexpired token signed with one of the keys; ``None`` otherwise."""
    if not isinstance(token, str) or len(token) > 256:
        return None
    parts = token.split(_SEP)
    if len(parts) == 4:
        visitor_id, issued, expires, mac = parts
    elif len(parts) == 3:  # the earlier form, without an issue time: valid until it expires
        visitor_id, expires, mac = parts
        issued = ""
    else:
        return None
    body = _SEP.join(parts[:-1])
    if not any(hmac.compare_digest(_mac(key, body), mac) for key in _keys(secret)):
        return None
    try:
        if int(expires) < (time.time() if now is None else now):
            return None
        issued_ms = int(issued) if issued else 0
    except ValueError:
        return None
    return VisitorClaim(visitor_id, issued_ms) if visitor_id else None


def verify_visitor(secret: str | Sequence[str], token: object, *, now: float | None = None) -> str | None:
    """The visitor id of a valid, unexpired token; ``None`` for anything else."""
    claim = verify_visitor_claim(secret, token, now=now)
    return claim.visitor_id if claim else None


# ---- app-user identity -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def identity_token(identity_secret: str, user_id: str, ttl_s: int = 3600, *, now: float | None = None) -> str:
    """What an app backend sends as ``identity.token``: a JWT (HS256) with ``sub``, ``iat``, ``exp``.

    Any JWT library does the same (``jwt.encode({"sub": …, "iat": …, "exp": …}, secret, "HS256")``).
    """
    issued = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps({"sub": user_id, "iat": issued, "exp": issued + ttl_s},
                                 separators=(",", ":")).encode())
    signature = hmac.new(identity_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def verify_identity_token(identity_secret: str | None, token: object, *, now: float | None = None) -> str | None:
    """The user id (``sub``) of a valid HS256 identity JWT; ``None`` for anything else.

    Checked: three parts; header ``alg`` exactly ``HS256`` (never ``none`` or another algorithm);
    the signature (constant-time); ``sub`` a string of 1–128 characters; ``iat`` and ``exp``
    integers with ``iat`` not in the future, ``exp`` not past and ``exp - iat`` at most
    :data:`MAX_IDENTITY_LIFETIME_S` (all with :data:`CLOCK_LEEWAY_S`); ``nbf`` if present.
    """
    if not identity_secret or not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(payload, dict):
        return None
    expected = hmac.new(identity_secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        return None
    sub, iat, exp, nbf = payload.get("sub"), payload.get("iat"), payload.get("exp"), payload.get("nbf", None)
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (iat, exp)):
        return None
    assert isinstance(iat, int) and isinstance(exp, int)
    current = time.time() if now is None else now
    if iat > current + CLOCK_LEEWAY_S or exp < current - CLOCK_LEEWAY_S or exp - iat > MAX_IDENTITY_LIFETIME_S:
        return None
    if nbf is not None and (not isinstance(nbf, int) or nbf > current + CLOCK_LEEWAY_S):
        return None
    return sub


def identity_signature(identity_secret: str, user_id: str) -> str:
    """The legacy, never-expiring identity form: ``hex(HMAC-SHA256(identity_secret, user_id))``."""
    return _mac(identity_secret, user_id)


def verify_identity(identity_secret: str | None, user_id: object, signature: object) -> bool:
    """True when ``signature`` is the legacy HMAC of ``user_id``; always False without a secret."""
    if not identity_secret or not isinstance(user_id, str) or not isinstance(signature, str):
        return False
    if not user_id or len(user_id) > 128:
        return False
    return hmac.compare_digest(identity_signature(identity_secret, user_id), signature.lower())


def identity_user(identity_secret: str | None, identity: object, *, legacy: bool = False) -> str | None:
    """The user id an ``identity`` object of a ``hello`` proves, or ``None``.

    ``{"token": JWT}`` (or the JWT in ``signature``, the field the protocol always had); a
    ``user_id`` given beside a JWT must equal its ``sub``. ``{"user_id", "signature": hex HMAC}``
    only when ``legacy``.
    """
    if not isinstance(identity, dict):
        return None
    claimed = identity.get("user_id")
    jwt = identity.get("token")
    if jwt is None and isinstance(identity.get("signature"), str) and identity["signature"].count(".") == 2:
        jwt = identity["signature"]
    if jwt is not None:
        sub = verify_identity_token(identity_secret, jwt)
        if sub is None or (claimed is not None and not (isinstance(claimed, str)
                                                        and hmac.compare_digest(claimed.encode(), sub.encode()))):
            return None
        return sub
    if legacy and verify_identity(identity_secret, claimed, identity.get("signature")):
        assert isinstance(claimed, str)
        return claimed
    return None


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
