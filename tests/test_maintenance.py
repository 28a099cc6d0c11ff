"""The hub's maintenance loop delivers the notification outbox (here to a webhook), records
SLA breaches and sends due follow-ups, without anyone asking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.services.cases import CaseService
from bot.store.models import CaseEvent, OutboxNotification, utcnow
from tests.hubtools import GreeterBrain, running_hub


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/notify", received
    server.shutdown()


def _wait(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_outbox_is_delivered_and_breaches_are_recorded(tmp_path: Path, webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    with running_hub(tmp_path, GreeterBrain(), webhook_url=url, outbox_interval_s=0.1,
                     sla_check_interval_s=0.1) as srv:
        # A case whose first response was due an hour ago.
        past = utcnow() - timedelta(hours=1)
        case = CaseService(srv.db, clock=lambda: past).open_case(
            "billing", visitor_id="v-1", description="charged twice", phone="13812345678", lang="en"
        )
        _wait(lambda: any(case.number in json.dumps(r, ensure_ascii=False) for r in received))
        _wait(lambda: _breached(srv.db, case.id))
        # Every notification of the case — the customer's and the internal breach alert written
        # meanwhile by the SLA check — is delivered by the loop, with nobody asking.
        _wait(lambda: not _pending(srv.db, case.id))
        delivered = [r["payload"]["event"] for r in received if r["payload"].get("case_number") == case.number]
        assert "created" in delivered and "sla_breached" in delivered


def _pending(db, case_id: int) -> list[OutboxNotification]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return list(s.execute(select(OutboxNotification).where(
            OutboxNotification.sent_at.is_(None), OutboxNotification.case_id == case_id)).scalars())


def _breached(db, case_id: int) -> bool:  # type: ignore[no-untyped-def]
    with db.session() as s:
        kinds = s.execute(select(CaseEvent.kind).where(CaseEvent.case_id == case_id)).scalars().all()
    return "sla_breached" in kinds


def test_a_due_follow_up_is_sent_by_the_loop(tmp_path: Path, webhook: tuple[str, list[dict]]) -> None:
    url, received = webhook
    with running_hub(tmp_path, GreeterBrain(), webhook_url=url, outbox_interval_s=0.1,
                     sla_check_interval_s=0.1) as srv:
        eight_days_ago = utcnow() - timedelta(days=8)
        service = CaseService(srv.db, clock=lambda: eight_days_ago)
        case = service.open_case("service", visitor_id="v-2", description="no signal", lang="en")
        service.advance(case.number, "resolved", "agent:alice")
        _wait(lambda: any(r.get("payload", r).get("event") == "follow_up" and case.number in json.dumps(r)
                          for r in received))
