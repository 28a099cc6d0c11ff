"""``GET /metrics`` through the real hub: protected by a token, Prometheus text format, and the
numbers follow what happened (messages, bot turns, handoffs by reason, brain latency, queue
lengths, SLA breaches, open sockets)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from bot.client import ChatClient
from bot.store.models import Case, utcnow
from tests.hubtools import RunningHub, ScriptedBrain, running_hub, turn

TOKEN = "scrape-me-please"
LINE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+|\+Inf)$')


def _scrape(srv: RunningHub, token: str | None = TOKEN) -> tuple[int, dict[str, float], str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body = srv.get("/metrics", headers)
    samples: dict[str, float] = {}
    if status == 200:
        for line in body.decode().splitlines():
            if line.startswith("#"):
                assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
                continue
            m = LINE.match(line)
            assert m, f"not Prometheus text format: {line!r}"
            samples[line.rsplit(" ", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return status, samples, body.decode(errors="replace")


def test_without_a_configured_token_there_is_no_metrics_route(tmp_path: Path) -> None:
    brain = ScriptedBrain(lambda text, n: turn("hi", intent="greet", resolved=True))
    with running_hub(tmp_path, brain) as srv:
        assert _scrape(srv)[0] == 404
        assert _scrape(srv, None)[0] == 404


async def test_metrics_count_what_happened(tmp_path: Path) -> None:
    # 60 ms a call: the latency lands above the 50 ms bucket and within the 100 ms one.
    brain = ScriptedBrain(lambda text, n: turn(f"Hello! (#{n})", intent="greet", resolved=True), delay_s=0.06)
    with running_hub(tmp_path, brain, metrics_token=TOKEN) as srv:
        assert (await asyncio.to_thread(_scrape, srv, None))[0] == 401
        assert (await asyncio.to_thread(_scrape, srv, "wrong"))[0] == 401
        status, before, _ = await asyncio.to_thread(_scrape, srv)
        assert status == 200 and before['humanline_sockets_open{kind="customer"}'] == 0

        chat = ChatClient(srv.ws_url, lang="en")
        await chat.connect()
        await chat.say_and_ack("hello")
        await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
        await chat.say_and_ack("I want to talk to a human")
        await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")
        waiting = await asyncio.to_thread(srv.hub.queues.waiting)
        assert len(waiting) == 1
        # Nobody was online: the handoff opened a case; its first response is now overdue.
        with srv.db.session() as s:
            s.execute(update(Case).values(first_response_due_at=utcnow() - timedelta(minutes=1)))

        status, m, text = await asyncio.to_thread(_scrape, srv)
        assert status == 200
        assert m['humanline_messages_total{sender="customer"}'] == 2
        assert m['humanline_messages_total{sender="bot"}'] == 1
        assert m['humanline_messages_total{sender="system"}'] >= 1          # the queue notice
        assert m['humanline_bot_turns_total{outcome="ok"}'] == 1            # the guard handed off before the brain
        assert m[f'humanline_handoffs_total{{reason="{waiting[0].reason}"}}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("humanline_handoffs_total")) == 1
        assert m['humanline_brain_latency_seconds_bucket{le="0.05"}'] == 0
        assert m['humanline_brain_latency_seconds_bucket{le="0.1"}'] == 1
        assert m['humanline_brain_latency_seconds_bucket{le="+Inf"}'] == 1
        assert m["humanline_brain_latency_seconds_count"] == 1
        # The brain sleeps 0.06 s; asyncio may wake a timer up to its clock resolution early, so
        # the measured latency can be a hair under it (0.0597 s seen on a fresh clone).
        assert 0.055 <= m["humanline_brain_latency_seconds_sum"] < 1
        assert m['humanline_queue_waiting{queue="general"}'] == 1
        assert m['humanline_queue_waiting{queue="finance_compliance"}'] == 0
        assert m['humanline_sla_breaches{kind="first_response"}'] == 1
        assert m['humanline_sockets_open{kind="customer"}'] == 1
        assert m['humanline_sockets_open{kind="agent"}'] == 0
        assert "# TYPE humanline_brain_latency_seconds histogram" in text
        assert "# TYPE humanline_handoffs_total counter" in text
        await chat.close()
