"""The analytics routes through the real hub: supervisors only, ``days`` validated, the JSON and the
CSV built from real traffic (a conversation the bot handled alone, one handed to a person)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.client import ChatClient
from bot.store.db import Database
from tests.hubtools import GreeterBrain, RunningHub, running_hub, settle


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice", skills=("general",), display_name="Alice Chen")
        srv.create_agent("sue", skills=(), display_name="Sue Boss", role="supervisor")
        yield srv


@pytest.fixture
def server_on_db(tmp_path: Path, db: Database) -> Iterator[RunningHub]:
    """The hub on ``db``: SQLite and PostgreSQL."""
    with running_hub(tmp_path, GreeterBrain(), db=db) as srv:
        srv.create_agent("sue", skills=(), display_name="Sue Boss", role="supervisor")
        yield srv


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _traffic(srv: RunningHub) -> None:
    alone = ChatClient(srv.ws_url, lang="en")
    await alone.connect()
    await alone.say_and_ack("hello")
    await settle(srv, alone)
    person = ChatClient(srv.ws_url, lang="en")
    await person.connect()
    await person.say_and_ack("I want to talk to a human")
    await person.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")
    await settle(srv, person)
    await alone.close()
    await person.close()


def test_only_supervisors_get_the_figures(server: RunningHub) -> None:
    for path in ("/api/analytics", "/api/analytics.csv"):
        status, body = server.get(path)
        assert status == 401 and json.loads(body)["error"] == "unauthorized"
        status, body = server.get(path, _auth("not-a-token"))
        assert status == 401
        status, body = server.get(path, _auth(server.login("alice")))
        assert status == 403 and json.loads(body)["error"] == "forbidden"


@pytest.mark.parametrize("days", ["0", "91", "-1", "abc", "7.5", ""])
def test_days_must_be_1_to_90(server: RunningHub, days: str) -> None:
    token = server.login("sue")
    for path in ("/api/analytics", "/api/analytics.csv"):
        status, body = server.get(f"{path}?days={days}", _auth(token))
        if days == "":  # no value: the default
            assert status == 200
            continue
        assert status == 400, (path, days)
        assert json.loads(body) == {"error": "bad_request", "message": json.loads(body)["message"]}
        assert "1 to 90" in json.loads(body)["message"]


def test_json_and_csv_from_real_traffic(server_on_db: RunningHub) -> None:
    server = server_on_db
    asyncio.run(_traffic(server))
    token = server.login("sue")
    status, body = server.get("/api/analytics?days=7", _auth(token))
    assert status == 200
    report = json.loads(body)
    today = datetime.now(timezone.utc).date().isoformat()
    assert report["timezone"] == "UTC" and report["days"] == 7 and report["to"] == today
    assert len(report["series"]) == 7 and report["empty"] is False
    last = report["series"][-1]
    assert last["day"] == today
    assert (last["conversations"], last["contained"], last["containment_rate"]) == (2, 1, 0.5)
    assert last["handoffs"] == 1 and last["handoffs_by_reason"] == {"customer_request": 1}
    assert last["handoffs_by_queue"] == {"general": 1}
    assert report["labels"]["reasons"]["customer_request"] == "Asked for a person"
    assert report["labels"]["queues"]["general"] == "Customer care"
    assert sum(d["conversations"] for d in report["series"][:-1]) == 0

    status, raw = server.get("/api/analytics.csv?days=7", _auth(token))
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    assert [r["day"] for r in rows] == [d["day"] for d in report["series"]]
    for row, day in zip(rows, report["series"], strict=True):
        for key in ("conversations", "contained", "handoffs", "reached_person", "assignments", "peak_load",
                    "first_response_met", "first_response_breached", "update_met", "update_breached", "ratings"):
            assert int(row[key]) == day[key], key
        for reason in report["reasons"]:
            assert int(row[f"handoffs_reason_{reason}"]) == day["handoffs_by_reason"].get(reason, 0)
        for queue in report["queues"]:
            assert int(row[f"handoffs_queue_{queue}"]) == day["handoffs_by_queue"].get(queue, 0)
        assert row["containment_rate"] == ("" if day["containment_rate"] is None else str(day["containment_rate"]))


def test_csv_is_a_download_and_the_page_is_served(server: RunningHub) -> None:
    import urllib.request

    req = urllib.request.Request(server.url + "/api/analytics.csv", headers=_auth(server.login("sue")))
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/csv")
        assert r.headers["Content-Disposition"].startswith('attachment; filename="humanline-analytics-')
        header = r.read().decode().splitlines()[0].split(",")
    assert header[:5] == ["day", "conversations", "contained", "containment_rate", "handoffs"]
    assert "handoffs_reason_danger" in header and "handoffs_queue_safety" in header and header[-1] == "peak_load"
    with urllib.request.urlopen(server.url + "/console/analytics", timeout=10) as r:
        policy = r.headers["Content-Security-Policy"]
        page = r.read().decode()
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "unsafe-inline" not in policy
    assert '<script src="/analytics.js"></script>' in page and "://" not in page   # no CDN, nothing external
    for asset in ("/analytics.js", "/analytics.css"):
        with urllib.request.urlopen(server.url + asset, timeout=10) as r:
            assert r.status == 200 and b"http://" not in r.read().replace(b"http://www.w3.org/2000/svg", b"")
