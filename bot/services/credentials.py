"""Revocation of visitor tokens: per visitor, and for every visitor at once.

A visitor token carries its issue time (:mod:`bot.hub.auth`). It is accepted only while the
visitor exists and the token was issued after both the visitor's ``tokens_not_before`` and the
global revocation time (the ``hub_secrets`` row :data:`GLOBAL_NOT_BEFORE`, milliseconds since the
epoch). ``python -m bot rotate-tokens --visitor ID`` / ``--all-visitors`` set them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from bot.store.db import Database
from bot.store.models import HubSecret, Visitor, utcnow

GLOBAL_NOT_BEFORE = "visitor_tokens_not_before"


def _ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp() * 1000)


class VisitorCredentials:
    """Which visitor tokens are still good, over one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def accepts(self, visitor_id: str, issued_ms: int) -> bool:
        """Whether a correctly signed, unexpired token of ``visitor_id`` issued at ``issued_ms``
        is still good (the visitor exists and nothing revoked it since)."""
        with self.db.session() as s:
            visitor = s.get(Visitor, visitor_id)
            if visitor is None:
                return False
            if visitor.tokens_not_before is not None and issued_ms < _ms(visitor.tokens_not_before):
                return False
            row = s.get(HubSecret, GLOBAL_NOT_BEFORE)
            return row is None or issued_ms >= int(row.value)

    def revoke(self, visitor_id: str) -> bool:
        """Refuse every token of ``visitor_id`` issued until now; False for an unknown visitor."""
        with self.db.session() as s:
            visitor = s.get(Visitor, visitor_id)
            if visitor is None:
                return False
            visitor.tokens_not_before = utcnow()
            return True

    def revoke_all(self) -> None:
        """Refuse every visitor token issued until now (each visitor starts a new identity)."""
        now_ms = str(int(time.time() * 1000))
        with self.db.session() as s:
            row = s.get(HubSecret, GLOBAL_NOT_BEFORE)
            if row is None:
                s.add(HubSecret(name=GLOBAL_NOT_BEFORE, value=now_ms, created_at=utcnow()))
            else:
                row.value = now_ms
