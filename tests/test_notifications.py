"""The outbox: written in the caller's transaction, delivered once, failures recorded and retried."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.services import audit
from bot.services.notifications import (
    LoggingSender,
    Outbox,
    Sender,
    WebhookSender,
    deliver_pending,
    pending,
)
from bot.store.db import Database
from bot.store.models import AuditEntry, OutboxNotification


def _add(db: Database, n: int = 1) -> None:
    with db.session() as s:
        for i in range(n):
            Outbox(s).add(channel="sms", recipient="13800138000", payload={"i": i, "message": "你好"})


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = fail

    def send(self, channel: str, recipient: str, payload: dict[str, Any]) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("gateway down")
        self.sent.append((channel, recipient, payload))


def test_outbox_rows_follow_the_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        Outbox(s).add(channel="chat", recipient="v1", payload={"x": 1})
        raise RuntimeError("the change failed")
    assert pending(db) == []
    _add(db)
    (row,) = pending(db)
    assert (row.channel, row.recipient, row.payload["message"], row.attempts) == ("sms", "13800138000", "你好", 0)


def test_outbox_validates(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(ValueError):
            Outbox(s).add(channel="pigeon", recipient="x", payload={})
        with pytest.raises(ValueError):
            Outbox(s).add(channel="sms", recipient="", payload={})


def test_deliver_pending_sends_each_row_once(db: Database) -> None:
    _add(db, 5)
    sender = Recorder()
    assert isinstance(sender, Sender)
    report = deliver_pending(db, sender, limit=3)
    assert (report.sent, report.failed) == (3, 0)
    report = deliver_pending(db, sender, limit=10)
    assert (report.sent, report.failed) == (2, 0)
    assert [p["i"] for _, _, p in sender.sent] == [0, 1, 2, 3, 4]
    assert pending(db) == []
    with db.session() as s:
        rows = list(s.execute(select(OutboxNotification)).scalars())
        assert all(r.sent_at is not None and r.attempts == 1 and r.last_error is None for r in rows)


def test_failures_are_recorded_and_retried_up_to_max_attempts(db: Database) -> None:
    _add(db, 1)
    report = deliver_pending(db, Recorder(fail=10), limit=10, max_attempts=3)
    assert (report.sent, report.failed) == (0, 1)  # not retried twice in one run
    (row,) = pending(db)
    assert row.attempts == 1 and "gateway down" in (row.last_error or "")
    deliver_pending(db, Recorder(fail=10), max_attempts=3)
    deliver_pending(db, Recorder(fail=10), max_attempts=3)
    assert deliver_pending(db, Recorder(), max_attempts=3).sent == 0  # gave up after 3 attempts
    ok = Recorder()
    assert deliver_pending(db, ok, max_attempts=5).sent == 1
    with db.session() as s:
        row2 = s.execute(select(OutboxNotification)).scalar_one()
        assert row2.attempts == 4 and row2.sent_at is not None and row2.last_error is None


def test_logging_sender_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="humanline.outbox"):
        LoggingSender().send("chat", "v1", {"case_number": "HL-20261104-0001"})
    assert "HL-20261104-0001" in caplog.text


def test_logging_sender_redacts_phone_numbers_and_texts_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    payload = {"case_number": "HL-20261104-0001", "event": "opened", "message": "my address is 5 Elm St",
               "description": "call me on 13800138000"}
    with caplog.at_level(logging.INFO, logger="humanline.outbox"):
        LoggingSender().send("sms", "13800138000", payload)
    assert "HL-20261104-0001" in caplog.text and "opened" in caplog.text and "*********00" in caplog.text
    assert "13800138000" not in caplog.text and "Elm St" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="humanline.outbox"):
        LoggingSender(personal_data=True).send("sms", "13800138000", payload)
    assert "13800138000" in caplog.text and "Elm St" in caplog.text


def test_webhooks_are_signed_with_a_timestamp(webhook: Any) -> None:
    from bot.services.notifications import verify_webhook_signature, webhook_signature

    url, hook = webhook
    WebhookSender(url, secret="hook-key", clock=lambda: 1_700_000_000).send("sms", "x", {"case_number": "HL-1"})
    (headers, body) = hook.raw[-1]
    signature = headers["Humanline-Signature"]
    assert signature.startswith("t=1700000000,v1=")
    assert verify_webhook_signature("hook-key", signature, body, now=1_700_000_010)
    assert not verify_webhook_signature("other-key", signature, body, now=1_700_000_010)
    assert not verify_webhook_signature("hook-key", signature, body + b" ", now=1_700_000_010)
    assert not verify_webhook_signature("hook-key", signature, body, now=1_700_000_000 + 3600)  # replayed late
    assert signature == webhook_signature("hook-key", body, 1_700_000_000)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    raw: list[tuple[dict[str, str], bytes]] = []
    status = 200
    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(type(self).delay)
        type(self).received.append(json.loads(body))
        type(self).raw.append((dict(self.headers.items()), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Any:
    _Hook.received, _Hook.raw, _Hook.status, _Hook.delay = [], [], 200, 0.0
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/notify", _Hook
    server.shutdown()
    server.server_close()


def test_webhook_sender_posts_json(webhook: Any) -> None:
    url, hook = webhook
    WebhookSender(url).send("sms", "13800138000", {"case_number": "HL-20261104-0001"})
    assert hook.received == [
        {"channel": "sms", "recipient": "13800138000", "payload": {"case_number": "HL-20261104-0001"}}
    ]


def test_webhook_sender_raises_on_error_status_and_timeout(webhook: Any) -> None:
    url, hook = webhook
    hook.status = 500
    with pytest.raises(RuntimeError, match="500"):
        WebhookSender(url).send("sms", "x", {})
    hook.status, hook.delay = 200, 1.0
    with pytest.raises(OSError):
        WebhookSender(url, timeout=0.2).send("sms", "x", {})
    with pytest.raises(ValueError):
        WebhookSender("file:///etc/passwd")


def test_webhook_failure_is_recorded_in_the_outbox(db: Database, webhook: Any) -> None:
    url, hook = webhook
    hook.status = 503
    _add(db, 1)
    report = deliver_pending(db, WebhookSender(url, timeout=2))
    assert report.failed == 1 and "503" in report.errors[0]


def test_audit_record_joins_the_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        audit.record(s, "agent:alice", "claim", "conv-1", {"queue": "general"})
        raise RuntimeError("rolled back")
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == 0
        audit.record(s, "agent:alice", "claim", "conv-1", {"queue": "general"})
    with db.session() as s:
        (entry,) = audit.entries(s, actor="agent:alice")
        assert (entry.action, entry.target, entry.detail) == ("claim", "conv-1", {"queue": "general"})
        with pytest.raises(ValueError):
            audit.record(s, "", "claim")
