"""The notification outbox: written in the caller's transaction, delivered later.

Every change of a case writes an :class:`~bot.store.models.OutboxNotification` in the *same*
transaction as the change (:class:`Outbox`), so a notification exists exactly when the change
committed. :func:`deliver_pending` hands pending rows to a :class:`Sender` and records the result
(``sent_at``, ``attempts``, ``last_error``); a row that keeps failing is retried until
``max_attempts``.

Channels: ``sms``, ``email``, ``webhook``, ``chat``. Recipients: a phone number, an address, a
URL/name, or a visitor id for ``chat``.

Personal data: the :class:`LoggingSender` (no webhook configured) logs only what identifies the
case — event, case number, category, stage, queue, times — and a masked recipient; phone numbers
and message texts reach the log only with ``HUMANLINE_LOG_PERSONAL_DATA=1``. The
:class:`WebhookSender` signs every request like payment providers do: header
``Humanline-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``; receivers check
it with :func:`verify_webhook_signature` (or the same three lines in their language) and refuse
old timestamps, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.store.db import Database
from bot.store.models import OutboxNotification, utcnow

logger = logging.getLogger(__name__)

CHANNELS = frozenset({"sms", "email", "webhook", "chat"})


class Outbox:
    """Writes notifications into the caller's session (never commits by itself)."""

    def __init__(self, session: Session, *, clock: Any = utcnow) -> None:
        self.session = session
        self.clock = clock

    def add(
        self,
        *,
        channel: str,
        recipient: str,
        payload: dict[str, Any],
        case_id: int | None = None,
    ) -> OutboxNotification:
        """Queue one notification; it commits or rolls back with the caller's transaction.

        :raises ValueError: unknown channel or empty recipient.
        """
        if channel not in CHANNELS:
            raise ValueError(f"unknown notification channel {channel!r}; expected one of {sorted(CHANNELS)}")
        if not recipient:
            raise ValueError("a notification needs a recipient")
        row = OutboxNotification(
            case_id=case_id,
            channel=channel,
            recipient=recipient,
            payload=payload,
            created_at=self.clock(),
            attempts=0,
        )
        self.session.add(row)
        return row


@runtime_checkable
class Sender(Protocol):
    """Delivers one notification; raises any exception when delivery failed."""

    def send(self, channel: str, recipient: str, payload: dict[str, Any]) -> None: ...


#: payload fields the redacting :class:`LoggingSender` keeps: they identify a case, not a person
LOGGABLE_FIELDS = ("event", "case_number", "category", "stage", "queue", "lang", "expected_by", "at")


def mask(recipient: str) -> str:
    """A recipient with all but its last two characters hidden (``*********00``)."""
    return "*" * max(0, len(recipient) - 2) + recipient[-2:] if len(recipient) > 4 else "*" * len(recipient)


class LoggingSender:
    """The default sender: logs each notification (for a single machine without an SMS gateway).

    Redacted unless ``personal_data``: see the module docstring.
    """

    def __init__(self, logger_name: str = "humanline.outbox", *, personal_data: bool = False) -> None:
        self.log = logging.getLogger(logger_name)
        self.personal_data = personal_data

    def send(self, channel: str, recipient: str, payload: dict[str, Any]) -> None:
        if not self.personal_data:
            recipient = mask(recipient)
            payload = {k: payload[k] for k in LOGGABLE_FIELDS if k in payload}
        self.log.info("notify %s %s %s", channel, recipient, json.dumps(payload, ensure_ascii=False, default=str))


SIGNATURE_HEADER = "Humanline-Signature"


def webhook_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Humanline-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_webhook_signature(
    secret: str, header: str | None, body: bytes, *, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """What a webhook receiver checks: a ``v1`` HMAC of ``"<t>.<body>"`` with a recent ``t``."""
    if not header:
        return False
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = webhook_signature(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


class WebhookSender:
    """POSTs every notification as JSON ``{"channel", "recipient", "payload"}`` to ``url``, signed
    with ``secret`` (header :data:`SIGNATURE_HEADER`) when one is given.

    Any status outside 2xx, a network error or a timeout raises, so the row is retried later.
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None, secret: str | None = None,
        clock: Any = time.time,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook URL must be http(s)")
        self.url = url
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        self.secret = secret
        self.clock = clock

    def send(self, channel: str, recipient: str, payload: dict[str, Any]) -> None:
        body = json.dumps({"channel": channel, "recipient": recipient, "payload": payload}, default=str).encode()
        headers = dict(self.headers)
        if self.secret:
            headers[SIGNATURE_HEADER] = webhook_signature(self.secret, body, int(self.clock()))
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                status = response.status
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webhook answered HTTP {exc.code}") from exc
        if not 200 <= status < 300:
            raise RuntimeError(f"webhook answered HTTP {status}")


@dataclass
class DeliveryReport:
    """What one :func:`deliver_pending` run did."""

    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def deliver_pending(
    db: Database,
    sender: Sender,
    limit: int = 100,
    *,
    max_attempts: int = 5,
    clock: Any = utcnow,
) -> DeliveryReport:
    """Send up to ``limit`` pending notifications, oldest first, one transaction per row.

    A row is pending while ``sent_at`` is null and ``attempts < max_attempts``. Success sets
    ``sent_at``; failure increments ``attempts`` and stores ``last_error``. On PostgreSQL rows are
    claimed with ``FOR UPDATE SKIP LOCKED``, so several deliverers never send the same row twice.
    """
    report = DeliveryReport()
    skipped: set[int] = set()
    for _ in range(limit):
        with db.session() as session:
            stmt = (
                select(OutboxNotification)
                .where(OutboxNotification.sent_at.is_(None), OutboxNotification.attempts < max_attempts)
                .order_by(OutboxNotification.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if skipped:
                stmt = stmt.where(OutboxNotification.id.not_in(skipped))
            row = session.execute(stmt).scalar_one_or_none()
            if row is None:
                break
            row.attempts = (row.attempts or 0) + 1
            try:
                sender.send(row.channel, row.recipient, dict(row.payload or {}))
            except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried later
                row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                skipped.add(row.id)  # not again in this run
                report.failed += 1
                report.errors.append(row.last_error)
                logger.warning("outbox %s to %s failed: %s", row.id, row.channel, row.last_error)
            else:
                row.sent_at = clock()
                row.last_error = None
                report.sent += 1
    return report


@dataclass(frozen=True)
class NotificationView:
    """One outbox row, detached from any session."""

    id: int
    case_id: int | None
    channel: str
    recipient: str
    payload: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None


def pending(db: Database, limit: int = 100) -> list[NotificationView]:
    """Notifications not yet sent, oldest first (for operators and tests)."""
    with db.session() as session:
        rows = session.execute(
            select(OutboxNotification)
            .where(OutboxNotification.sent_at.is_(None))
            .order_by(OutboxNotification.id)
            .limit(limit)
        ).scalars()
        return [_view(r) for r in rows]


def _view(r: OutboxNotification) -> NotificationView:
    return NotificationView(
        r.id,
        r.case_id,
        r.channel,
        r.recipient,
        dict(r.payload or {}),
        r.created_at,
        r.sent_at,
        r.attempts,
        r.last_error,
    )


__all__ = [
    "CHANNELS",
    "DeliveryReport",
    "LoggingSender",
    "NotificationView",
    "Outbox",
    "Sender",
    "WebhookSender",
    "deliver_pending",
    "mask",
    "pending",
    "verify_webhook_signature",
    "webhook_signature",
]
