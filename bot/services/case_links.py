"""Signed links to a customer's case page: ``<public_url>/case/<number>#t=<token>``.

The token is ``v1.<expires_unix>.<mac>`` where ``mac`` is the base64url form of the first 16 bytes
of ``HMAC-SHA256(link_key, "case-link:<number>:<expires_unix>")`` and ``link_key`` is
``HMAC-SHA256(HUMANLINE_SECRET, "humanline case link v1")``: a key derived from the hub's secret
for this one purpose, so a case-link token can never pass as a visitor token or the other way round.

* The token proves "whoever holds this link may see and act on case <number> until <expires>";
  it names no visitor and carries no other data.
* It sits in the URL *fragment* (after ``#``): browsers never send the fragment to the server, so
  the token does not reach access logs, proxies or ``Referer`` headers; the page's script sends it
  in the ``X-Case-Link`` header of its API calls.
* Verification is constant-time (:func:`hmac.compare_digest`) and tries the current key and then
  every previous one (``HUMANLINE_SECRET_PREVIOUS``). Rotating the secret without listing the old
  one there invalidates every case link sent so far: customers then get the "no such case" page
  until the next notification brings a fresh link.
* Lifetime: ``HUMANLINE_CASE_LINK_TTL`` seconds (default 30 days) from the moment the link was
  made; every notification and bot reply carries a freshly made one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from bot.services.cases import normalise_number

logger = logging.getLogger(__name__)

VERSION = "v1"
_KEY_LABEL = b"humanline case link v1"
_MAC_BYTES = 16
MAX_TOKEN_CHARS = 128
DEFAULT_TTL_S = 30 * 24 * 3600
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8080"

#: the line the bot adds under a case reply, in the customer's script
_LINK_LINE = {
    "en": "Follow your case online: {url}",
    "zh-Hans": "在线查看工单处理进度：{url}",
    "zh-Hant": "線上查看案件處理進度：{url}",
}


def _link_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CaseLinks:
    """Makes and checks case-page links.

    :param secret: the hub's signing secret, or the current one followed by previous ones.
    :param public_url: where customers reach the hub (``https://help.example.com``).
    :param ttl_s: how long a link made now stays valid.
    :param clock: seconds since the epoch (tests inject their own).
    """

    def __init__(
        self,
        secret: str | Sequence[str],
        public_url: str = DEFAULT_PUBLIC_URL,
        ttl_s: int = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        secrets = [secret] if isinstance(secret, str) else [s for s in secret if s]
        if not secrets or not secrets[0]:
            raise ValueError("case links need the hub's secret")
        if ttl_s <= 0:
            raise ValueError("a case link lifetime must be positive")
        self._keys = [_link_key(s) for s in secrets]
        self.public_url = public_url.rstrip("/")
        self.ttl_s = int(ttl_s)
        self.clock = clock

    @staticmethod
    def _mac(key: bytes, number: str, expires: int) -> str:
        message = f"case-link:{number}:{expires}".encode()
        return _b64(hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES])

    def token(self, number: str, *, ttl_s: int | None = None) -> str:
        """A token for case ``number`` (canonical form) valid ``ttl_s`` (default: the lifetime) from now."""
        canonical = normalise_number(number)
        if canonical is None:
            raise ValueError(f"not a case number: {number!r}")
        expires = int(self.clock()) + (self.ttl_s if ttl_s is None else int(ttl_s))
        return f"{VERSION}.{expires}.{self._mac(self._keys[0], canonical, expires)}"

    def url(self, number: str) -> str:
        """The full link a customer follows: ``<public_url>/case/<number>#t=<token>``."""
        canonical = normalise_number(number)
        if canonical is None:
            raise ValueError(f"not a case number: {number!r}")
        return f"{self.public_url}/case/{quote(canonical)}#t={self.token(canonical)}"

    def verify(self, number: object, token: object) -> bool:
        """Whether ``token`` is a valid, unexpired link token for exactly case ``number``."""
        if not isinstance(number, str) or not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return False
        # Only ASCII can match (and compare_digest raises on anything else): an é in a header is
        # a refused link like any other, not a server error that escapes the misses limiter.
        if not token.isascii():
            return False
        canonical = normalise_number(number)
        if canonical is None or canonical != number:
            return False
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
            return False
        expires = int(parts[1])
        valid = False
        for key in self._keys:  # every key is tried: the time taken does not tell which matched
            valid |= hmac.compare_digest(self._mac(key, canonical, expires), parts[2])
        return valid and expires >= self.clock()


_TOKEN_IN_LINK = re.compile(r"(/case/HL-[0-9]{8}-[0-9]{4,}#t=)[A-Za-z0-9._-]+")


def redact_links(text: str) -> str:
    """``text`` with the token of every case link replaced by ``…``: what agents see of a bot reply
    that carried the customer's link (the link is the customer's credential, not theirs)."""
    return _TOKEN_IN_LINK.sub(r"\1…", text) if "#t=" in text else text


def link_line(url: str, lang: str | None) -> str:
    """The sentence the bot sends with a case reply: where to follow the case, in ``lang``."""
    return (_LINK_LINE.get(lang or "en") or _LINK_LINE["en"]).format(url=url)


def links_from_env(db: object | None = None) -> CaseLinks | None:
    """Case links for a process other than the hub (the action server), from the environment.

    The secret is ``HUMANLINE_SECRET`` (or ``HUMANLINE_SECRET_FILE``) with ``HUMANLINE_SECRET_PREVIOUS``;
    without one, the embedded SQLite demo's key kept in its database (what the hub uses then).
    ``None`` (and a warning) when no secret is available: replies then go without a link.
    """
    from bot.settings import Settings

    try:
        settings = Settings.from_env()
    except (OSError, ValueError):
        logger.exception("settings unreadable: case links are not available")
        return None
    secret = settings.secret
    if not secret and db is not None and getattr(db, "is_sqlite", False):
        secret = db.stored_secret("visitor_token")  # type: ignore[attr-defined]
    if not secret:
        logger.warning("no HUMANLINE_SECRET: case replies go without a link to the case page")
        return None
    return CaseLinks((secret, *settings.previous_secrets), settings.public_url, settings.case_link_ttl_s)


__all__ = ["CaseLinks", "link_line", "links_from_env", "redact_links"]
