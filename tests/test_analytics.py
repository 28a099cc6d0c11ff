"""Supervisor analytics (bot/services/analytics.py): daily figures from data written by the real
services at fixed clocks over three days, on SQLite and PostgreSQL; the pure helpers on their own."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone

import pytest

from bot.services import conversations as conversations_module
from bot.services.agents import AgentService
from bot.services.analytics import (
    AnalyticsService,
    check_days,
    percentile,
)
from bot.services.cases import CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationService
from bot.services.sla import case_clocks
from bot.store.db import Database
from tests.conftest import FakeClock

D1, D2, D3 = date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=timezone.utc)


class World:
    """The services of one test, all on one fake clock."""

    def __init__(self, db: Database, config: HumanlineConfig, clock: FakeClock) -> None:
        self.clock = clock
        self.convs = ConversationService(db)
        self.cases = CaseService(db, config, clock=clock)
        agents = AgentService(db)
        self.alice = agents.create("alice", "Alice Chen", "password-123", ["general", "finance_compliance"]).id
        self.bob = agents.create("bob", "Bob Li", "password-123", ["general"]).id
        self.carol = agents.create("carol", "Carol Wu", "password-123", ["safety"]).id
        agents.set_capacity(self.bob, "agent:sue", max_concurrent=5)
        self.analytics = AnalyticsService(db, config, cases=self.cases, clock=clock)

    def when(self, moment: datetime) -> None:
        self.clock.set(moment)

    def conversation(self, moment: datetime, *, says: bool = True) -> str:
        self.when(moment)
        visitor = self.convs.create_visitor("en")
        cid = self.convs.create_conversation(visitor, lang="en").id
        if says:
            self.convs.append(cid, "customer", "hello")
        return cid

    def hand_off(self, cid: str, moment: datetime, queue: str, reason: str) -> None:
        self.when(moment)
        assert self.convs.queue(cid, queue, reason) is not None

    def assign(self, cid: str, agent: int, moment: datetime) -> None:
        self.when(moment)
        assert self.convs.assign(cid, agent) is not None

    def reply(self, cid: str, agent: int, moment: datetime) -> None:
        self.when(moment)
        self.convs.append(cid, "agent", "Hello, I am here.", agent_id=agent)
        self.convs.mark_agent_reply(cid)


@pytest.fixture
def world(db: Database, config: HumanlineConfig, monkeypatch: pytest.MonkeyPatch) -> World:
    clock = FakeClock(at(D1, 0))
    # The conversation service reads the time from bot.store.models.utcnow: the fake clock instead.
    monkeypatch.setattr(conversations_module, "utcnow", clock)
    return World(db, config, clock)


def seed(w: World) -> None:
    """Three days of traffic and cases; the expected figures are spelled out in the tests."""
    # Day 1 — A: the bot alone. B: a person, handed back, then handed off again. C: never said a
    # word. D: frustrated, alice takes it, transfers it to general, bob answers.
    w.conversation(at(D1, 9))
    b = w.conversation(at(D1, 10))
    w.hand_off(b, at(D1, 10), "general", "customer_request")
    w.assign(b, w.alice, at(D1, 10, 1))
    d = w.conversation(at(D1, 10, 2))
    w.hand_off(d, at(D1, 10, 2), "finance_compliance", "frustration")
    w.reply(b, w.alice, at(D1, 10, 3))                            # 180 s to a person
    w.assign(d, w.alice, at(D1, 10, 5))                            # alice holds two at once
    w.when(at(D1, 10, 6))
    assert w.convs.queue(d, "general", "transfer", from_statuses=("agent",), end_outcome="transferred")
    w.assign(d, w.bob, at(D1, 10, 7))
    w.reply(d, w.bob, at(D1, 10, 12))                              # 600 s from the handoff
    w.when(at(D1, 10, 30))
    assert w.convs.release(b, w.alice, "bot", "handed_back")
    w.when(at(D1, 11, 30))
    w.convs.append(b, "customer", "still broken")
    w.hand_off(b, at(D1, 11, 30), "general", "turn_budget")      # a new handoff, nobody takes it
    w.when(at(D1, 13))
    assert w.convs.release(d, w.bob, "closed", "resolved")
    w.conversation(at(D1, 14), says=False)

    # Day 2 — E: danger, carol answers after 120 s, then goes silent: requeued (same handoff), and
    # bob takes it over (still holding it at the end).
    e = w.conversation(at(D2, 8))
    w.hand_off(e, at(D2, 8), "safety", "danger")
    w.assign(e, w.carol, at(D2, 8, 1))
    w.reply(e, w.carol, at(D2, 8, 2))
    w.when(at(D2, 8, 20))
    assert w.convs.queue(e, "safety", "danger", from_statuses=("agent",), requested_at=at(D2, 8),
                         end_outcome="timeout")
    w.assign(e, w.bob, at(D2, 8, 30))                              # bob takes it and keeps it
    w.reply(e, w.bob, at(D2, 8, 31))                               # the first reply still counts
    w.conversation(at(D2, 9))
    w.conversation(at(D2, 9, 30))

    # Day 3 — H: an action asks for a person; still waiting.
    h = w.conversation(at(D3, 9))
    w.hand_off(h, at(D3, 9), "account_services", "action_request")

    # Cases (first response due after 10 min, a progress update every 24 h).
    c = w.cases
    w.when(at(D1, 9))
    one = c.open_case("billing", visitor_id="v1", description="double charge").number
    w.when(at(D1, 9, 5))
    c.advance(one, "verifying", "agent:alice")                     # FR met, update met (day 1)
    w.when(at(D2, 10))
    c.record_progress_update(one, "agent:alice", "bank asked")     # update due D2 09:05: breached
    w.when(at(D1, 14))
    four = c.open_case("service", visitor_id="v4", description="rude").number
    w.when(at(D1, 14, 5))
    c.advance(four, "resolved", "agent:bob")                       # FR met, update met (day 1)
    w.when(at(D1, 15))
    c.rate(four, "v4", 4)                                          # replaced by the next rating
    w.when(at(D1, 15))
    five = c.open_case("refund", visitor_id="v5", description="refund").number
    w.when(at(D1, 15, 30))
    c.advance(five, "resolved", "agent:alice")                     # FR late (breached 15:10), update met
    w.when(at(D2, 10))
    c.rate(four, "v4", 5)                                          # counts on day 2
    w.when(at(D2, 11))
    c.reopen(four, "v4", "not fixed")                              # fresh clocks
    w.when(at(D2, 11, 20))
    c.advance(four, "resolved", "agent:bob")                       # FR late (breached 11:10), update met
    w.when(at(D2, 12))
    c.open_case("service", visitor_id="v2", description="no answer")  # nobody ever answers
    w.when(at(D3, 9))
    c.rate(four, "v4", 2)
    w.when(at(D3, 10))
    c.rate(five, "v5", 4)
    w.when(at(D3, 16))
    three = c.open_case("privacy", visitor_id="v3", description="data").number
    w.when(at(D3, 16, 20))
    c.record_first_response(three, "agent:alice")                  # late: breached at 16:10
    w.when(at(D3, 16, 30))
    c.extend_sla(three, "waiting for the bank", "agent:alice", hours=48)  # update clock still running
    w.when(at(D3, 18))


def by_day(report: object) -> dict[str, dict[str, object]]:
    return {row["day"]: row for row in report.as_dict()["series"]}  # type: ignore[attr-defined]


def test_daily_figures(world: World) -> None:
    seed(world)
    report = world.analytics.report(days=3)
    days = by_day(report)
    assert list(days) == ["2026-11-02", "2026-11-03", "2026-11-04"]
    one, two, three = days["2026-11-02"], days["2026-11-03"], days["2026-11-04"]

    # Containment: conversations in which the customer wrote, and those never handed off.
    assert (one["conversations"], one["contained"], one["containment_rate"]) == (3, 1, 0.3333)
    assert (two["conversations"], two["contained"], two["containment_rate"]) == (3, 2, 0.6667)
    assert (three["conversations"], three["contained"], three["containment_rate"]) == (1, 0, 0.0)

    # Handoffs: B twice (handed back between), D once (its transfer continues it), E once (the
    # requeue continues it), H once.
    assert one["handoffs"] == 3
    assert one["handoffs_by_reason"] == {"customer_request": 1, "frustration": 1, "turn_budget": 1}
    assert one["handoffs_by_queue"] == {"general": 2, "finance_compliance": 1}
    assert (two["handoffs"], two["handoffs_by_reason"], two["handoffs_by_queue"]) == (1, {"danger": 1}, {"safety": 1})
    assert three["handoffs_by_reason"] == {"action_request": 1}
    assert three["handoffs_by_queue"] == {"account_services": 1}

    # Time to a person: B 180 s, D 600 s (from its handoff, across the transfer), E 120 s.
    assert (one["reached_person"], one["time_to_person_p50_s"], one["time_to_person_p90_s"]) == (2, 180.0, 600.0)
    assert (two["reached_person"], two["time_to_person_p50_s"], two["time_to_person_p90_s"]) == (1, 120.0, 120.0)
    assert (three["reached_person"], three["time_to_person_p50_s"], three["time_to_person_p90_s"]) == (0, None, None)

    # SLA clocks, on the day they were met or breached.
    sla = [(d["first_response_met"], d["first_response_breached"], d["update_met"], d["update_breached"])
           for d in (one, two, three)]
    assert sla == [(2, 1, 3, 0), (0, 2, 1, 1), (0, 1, 0, 2)]

    # Satisfaction: 4 then 5 for the same resolution (the 5 counts), then 2 and 4 on day 3.
    assert [(d["ratings"], d["satisfaction_avg"]) for d in (one, two, three)] == [(0, None), (1, 5.0), (2, 3.0)]

    # Agent load: alice held B and D together on day 1; bob holds E from day 2 into day 3.
    assert [(d["assignments"], d["active_agents"], d["peak_load"]) for d in (one, two, three)] == [
        (3, 2, 2), (2, 2, 1), (0, 1, 1)]
    assert [(a["display_name"], a["assignments"], a["peak_load"], a["limit"]) for a in report.as_dict()["agents"]] == [
        ("Alice Chen", 2, 2, 3), ("Bob Li", 2, 1, 5), ("Carol Wu", 1, 1, 3)]
    assert not report.empty


def test_the_window_is_utc_days_ending_today(world: World) -> None:
    seed(world)
    report = world.analytics.report(days=30)
    rows = report.as_dict()["series"]
    assert len(rows) == 30 and rows[0]["day"] == "2026-10-06" and rows[-1]["day"] == "2026-11-04"
    assert sum(r["handoffs"] for r in rows) == 5
    assert all(r["conversations"] == 0 and r["containment_rate"] is None for r in rows[:27])
    # One day: today only; yesterday's traffic is not in it.
    today = world.analytics.report(days=1).as_dict()
    assert [r["day"] for r in today["series"]] == ["2026-11-04"] and today["series"][0]["handoffs"] == 1
    # A report as of the end of day 1 sees only what had happened by then.
    then = by_day(world.analytics.report(days=1, now=at(D1, 23, 59)))["2026-11-02"]
    assert (then["conversations"], then["handoffs"]) == (3, 3)
    with pytest.raises(ValueError):
        world.analytics.report(days=0)
    with pytest.raises(ValueError):
        world.analytics.report(days=91)


def test_csv_has_one_row_per_day_matching_the_json(world: World) -> None:
    seed(world)
    report = world.analytics.report(days=3)
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["day"] for r in rows] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    first = rows[0]
    assert first["handoffs_reason_customer_request"] == "1" and first["handoffs_reason_danger"] == "0"
    assert first["handoffs_queue_general"] == "2" and first["handoffs_queue_safety"] == "0"
    assert (first["time_to_person_p50_s"], first["satisfaction_avg"], rows[2]["time_to_person_p50_s"]) == (
        "180.0", "", "")
    for row, day in zip(rows, report.as_dict()["series"], strict=True):
        for key in ("conversations", "contained", "handoffs", "update_breached", "peak_load"):
            assert int(row[key]) == day[key]


def test_an_empty_store_gives_zero_days(world: World) -> None:
    world.when(at(D3, 12))
    report = world.analytics.report(days=7)
    assert report.empty and len(report.days) == 7
    assert all(d.handoffs == 0 and d.containment_rate is None for d in report.days)
    assert report.as_dict()["empty"] is True


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 90) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 11)], 90) == 9.0
    assert percentile([float(v) for v in range(1, 12)], 90) == 10.0


def test_days_parameter() -> None:
    assert check_days(None) == 30 and check_days("1") == 1 and check_days("90") == 90
    for bad in ("0", "91", "-3", "abc", "7.5", "1e2", "²", "٣", "３０", " "):
        with pytest.raises(ValueError, match="1 to 90"):
            check_days(bad)


def test_clocks_follow_extensions_and_closing() -> None:
    t0 = at(D1, 9)
    events = [
        ("created", "accepted", None, t0),
        ("sla_extended", None, f"bank (+48 h, due {(t0 + timedelta(hours=72)).isoformat()})", t0 + timedelta(hours=1)),
        ("progress_update", None, "done", t0 + timedelta(hours=50)),      # within the extension: met
        ("stage_changed", "resolved", None, t0 + timedelta(hours=80)),    # 30 h after the update: breached
    ]
    got = [(c.kind, c.outcome, c.at) for c in case_clocks(events, first_response_minutes=10, update_hours=24,
                                                          now=t0 + timedelta(days=9))]
    assert got == [
        ("progress_update", "met", t0 + timedelta(hours=50)),
        ("progress_update", "breached", t0 + timedelta(hours=74)),
        # closed by nobody human, after the first-response deadline: breached at the deadline
        ("first_response", "breached", t0 + timedelta(minutes=10)),
    ]
    # Closed before its deadline without a human answer: that clock settles nothing.
    quick = [("created", "accepted", None, t0), ("stage_changed", "resolved", None, t0 + timedelta(minutes=5))]
    assert [(c.kind, c.outcome) for c in case_clocks(quick, first_response_minutes=10, update_hours=24,
                                                     now=t0 + timedelta(days=1))] == [("progress_update", "met")]
