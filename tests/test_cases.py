"""CaseService: numbers, routing, stages, SLA clocks, reopen, rating, privacy, atomicity (promise 6)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.services import sla
from bot.services.cases import (
    STAGES,
    CaseNotFound,
    CaseService,
    CaseStateError,
    CaseView,
    normalise_number,
)
from bot.services.config import HumanlineConfig
from bot.store.db import Database
from bot.store.models import Case, CaseCounter, CaseEvent, OutboxNotification

ROUTES = {
    "service": "service_supervision",
    "billing": "finance_compliance",
    "refund": "finance_compliance",
    "privacy": "data_protection",
    "plan_change": "account_services",
}


def _count(db: Database, model: type) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def _outbox(db: Database) -> list[OutboxNotification]:
    with db.session() as s:
        return list(s.execute(select(OutboxNotification).order_by(OutboxNotification.id)).scalars())


def _open(cases: CaseService, category: str = "service", **kw: object) -> CaseView:
    args: dict[str, object] = {"visitor_id": "visitor-1", "description": "the network drops every evening"}
    args.update(kw)
    return cases.open_case(category, **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- opening


@pytest.mark.parametrize("category", sorted(ROUTES))
def test_open_case_routes_numbers_and_sets_clocks(cases: CaseService, db: Database, clock, category: str) -> None:
    view = _open(cases, category, lang="zh-Hant")
    assert view.number == "HL-20261104-0001"
    assert view.queue == ROUTES[category]
    assert view.queue_display == HumanlineConfig.load().queues[ROUTES[category]].display["zh-Hant"]
    assert view.stage == "accepted"
    assert view.created_at == clock.now
    assert view.first_response_due_at == clock.now + timedelta(minutes=10)
    assert view.next_update_due_at == clock.now + timedelta(hours=24)
    assert view.reopen_count == 0 and view.satisfaction is None and view.is_open
    events = cases.timeline(view.number)
    assert [e.kind for e in events] == ["created"]
    (note,) = _outbox(db)
    assert note.case_id == view.id
    assert (note.channel, note.recipient) == ("chat", "visitor-1")
    assert note.payload["case_number"] == view.number
    assert note.payload["queue_display"] == view.queue_display
    assert note.payload["expected_by"] == view.first_response_due_at.isoformat()
    assert view.number in note.payload["message"]


def test_open_case_with_phone_notifies_by_sms(cases: CaseService, db: Database) -> None:
    view = _open(cases, "refund", phone="13800138000", order_id="SO20261104", amount="300")
    (note,) = _outbox(db)
    assert (note.channel, note.recipient) == ("sms", "13800138000")
    assert view.order_id == "SO20261104" and view.amount == "300"


def test_unknown_category_is_a_clear_value_error(cases: CaseService, db: Database) -> None:
    with pytest.raises(ValueError, match="unknown case category 'weather'"):
        _open(cases, "weather")
    assert _count(db, Case) == 0


def test_numbers_are_consecutive_per_utc_day(cases: CaseService, clock) -> None:
    first = [_open(cases).number for _ in range(3)]
    clock.advance(days=1)
    second = _open(cases).number
    assert first == ["HL-20261104-0001", "HL-20261104-0002", "HL-20261104-0003"]
    assert second == "HL-20261105-0001"


@pytest.mark.slow
def test_concurrent_creation_gives_80_distinct_consecutive_numbers(
    db: Database, config: HumanlineConfig, clock
) -> None:
    service = CaseService(db, config, clock=clock)
    numbers: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(10):
                view = service.open_case("billing", visitor_id=f"v{i}", description=f"charge {j}")
                with lock:
                    numbers.append(view.number)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(numbers) == 80 == len(set(numbers))
    assert sorted(numbers) == [f"HL-20261104-{n:04d}" for n in range(1, 81)]
    with db.session() as s:
        assert s.execute(select(CaseCounter.value)).scalar_one() == 80
    assert _count(db, OutboxNotification) == 80


def test_failure_mid_transaction_leaves_nothing(cases: CaseService, db: Database, monkeypatch) -> None:
    _open(cases)  # one committed case: the counter row exists with value 1
    from bot.services import notifications

    def broken_add(self, **kw):  # noqa: ANN001, ANN202 - the injected failure
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(notifications.Outbox, "add", broken_add)
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        _open(cases, "refund", visitor_id="visitor-2")
    assert _count(db, Case) == 1
    assert _count(db, CaseEvent) == 1
    assert _count(db, OutboxNotification) == 1
    with db.session() as s:
        assert s.execute(select(CaseCounter.value)).scalar_one() == 1  # the increment rolled back too
    monkeypatch.undo()
    assert _open(cases).number == "HL-20261104-0002"  # no gap


def test_failure_during_advance_rolls_back_stage_and_event(cases: CaseService, db: Database, monkeypatch) -> None:
    view = _open(cases)
    from bot.services import notifications

    monkeypatch.setattr(notifications.Outbox, "add", lambda self, **kw: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        cases.advance(view.number, "verifying", "agent:alice")
    assert cases.get(view.number).stage == "accepted"  # type: ignore[union-attr]
    assert [e.kind for e in cases.timeline(view.number)] == ["created"]


# ----------------------------------------------------------------------------- stages


def test_stages_move_forward_with_time_stamped_events(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    times = {}
    for stage in STAGES[1:4]:
        clock.advance(hours=1)
        times[stage] = clock.now
        view = cases.advance(view.number, stage, "agent:alice")
        assert view.stage == stage
    assert view.resolved_at == times["resolved"]
    assert view.follow_up_at == times["resolved"] + timedelta(days=7)
    view = cases.confirm(view.number, "visitor-1")
    assert view.stage == "confirmed" and view.confirmed_at == clock.now
    changes = [e for e in cases.timeline(view.number) if e.kind == "stage_changed"]
    assert [(e.from_stage, e.to_stage) for e in changes] == list(zip(STAGES, STAGES[1:], strict=False))
    assert [e.created_at for e in changes[:3]] == [times[s] for s in STAGES[1:4]]
    assert all(e.actor == "agent:alice" for e in changes[:3])
    assert changes[3].actor == "customer:visitor-1"
    kinds = [e.kind for e in cases.timeline(view.number)]
    assert "follow_up_scheduled" in kinds
    resolved_note = [n for n in _outbox(db) if n.payload["event"] == "resolved"]
    assert len(resolved_note) == 1 and resolved_note[0].payload["follow_up_at"] == view.follow_up_at.isoformat()
    # every change wrote exactly one customer notification
    assert [n.payload["event"] for n in _outbox(db)] == [
        "created",
        "stage_changed",
        "stage_changed",
        "resolved",
        "confirmed",
    ]


def test_a_resolved_case_is_followed_up_once_when_due(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    view = cases.advance(view.number, "resolved", "agent:alice")
    assert view.follow_up_at is not None
    clock.advance(days=7, seconds=-1)
    assert cases.send_due_follow_ups() == []  # not yet
    clock.advance(seconds=1)
    assert cases.send_due_follow_ups() == [view.number]
    assert cases.send_due_follow_ups() == []  # once
    notes = [n for n in _outbox(db) if n.payload["event"] == "follow_up"]
    assert len(notes) == 1 and view.number in notes[0].payload["message"]
    assert [e.kind for e in cases.timeline(view.number)].count("follow_up") == 1
    # Reopened and resolved again: a new follow-up at the new time.
    cases.reopen(view.number, "visitor-1", "still broken")
    again = cases.advance(view.number, "resolved", "agent:alice")
    assert cases.send_due_follow_ups() == []
    clock.set(again.follow_up_at)  # type: ignore[arg-type]
    assert cases.send_due_follow_ups() == [view.number]


def test_a_confirmed_case_is_not_followed_up(cases: CaseService, clock) -> None:
    view = _open(cases)
    cases.advance(view.number, "resolved", "agent:alice")
    cases.confirm(view.number, "visitor-1")
    clock.advance(days=8)
    assert cases.send_due_follow_ups() == []


def test_stage_may_skip_forward_but_never_go_back(cases: CaseService) -> None:
    view = _open(cases)
    view = cases.advance(view.number, "solution_proposed", "agent:bob")
    assert view.stage == "solution_proposed"
    for back in ("accepted", "verifying", "solution_proposed"):
        with pytest.raises(CaseStateError):
            cases.advance(view.number, back, "agent:bob")
    with pytest.raises(CaseStateError, match="resolved before"):
        cases.advance(view.number, "confirmed", "agent:bob")
    with pytest.raises(CaseStateError, match="unknown stage"):
        cases.advance(view.number, "closed", "agent:bob")
    with pytest.raises(CaseNotFound):
        cases.advance("HL-20261104-0999", "verifying", "agent:bob")


def test_human_move_counts_as_first_response_but_bot_move_does_not(cases: CaseService, clock) -> None:
    view = _open(cases)
    assert cases.advance(view.number, "verifying", "bot").first_responded_at is None
    clock.advance(minutes=3)
    assert cases.advance(view.number, "solution_proposed", "agent:alice").first_responded_at == clock.now


# ----------------------------------------------------------------------------- SLA


def test_first_response_is_recorded_once(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    clock.advance(minutes=4)
    first = cases.record_first_response(view.number, "agent:alice")
    clock.advance(minutes=4)
    again = cases.record_first_response(view.number, "agent:bob")
    assert first.first_responded_at == again.first_responded_at == clock.now - timedelta(minutes=4)
    assert [e.kind for e in cases.timeline(view.number)].count("first_response") == 1


def test_progress_update_resets_the_clock(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    clock.advance(hours=20)
    updated = cases.record_progress_update(view.number, "agent:alice", "We asked the network team.")
    assert updated.next_update_due_at == clock.now + timedelta(hours=24)
    assert updated.first_responded_at == clock.now
    note = _outbox(db)[-1]
    assert note.payload["event"] == "progress_update"
    assert "network team" in note.payload["message"]
    with pytest.raises(ValueError):
        cases.record_progress_update(view.number, "agent:alice", "   ")


def test_breaches_are_recorded_once_per_breach(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    assert cases.check_breaches() == []
    clock.advance(minutes=11)
    (late,) = cases.check_breaches()
    assert (late.number, late.kind, late.overdue_s) == (view.number, "first_response", 60.0)
    assert cases.check_breaches() == []  # once
    assert [b.kind for b in cases.breaches()] == ["first_response"]
    clock.advance(hours=24)
    kinds = [b.kind for b in cases.check_breaches()]
    assert kinds == ["progress_update"]
    assert cases.check_breaches() == []
    # an update restarts the clock; missing the new deadline is a new breach
    cases.record_progress_update(view.number, "agent:alice", "still checking")
    clock.advance(hours=25)
    assert [b.kind for b in cases.check_breaches(clock.now)] == ["progress_update"]
    events = [e for e in cases.timeline(view.number) if e.kind == "sla_breached"]
    assert len(events) == 3 and all(e.internal for e in events)
    internal = [n for n in _outbox(db) if n.payload["event"] == "sla_breached"]
    assert len(internal) == 3 and {n.channel for n in internal} == {"webhook"}


def test_resolved_cases_do_not_breach_progress(cases: CaseService, clock) -> None:
    view = _open(cases)
    cases.record_first_response(view.number, "agent:alice")
    cases.advance(view.number, "resolved", "agent:alice")
    clock.advance(days=5)
    assert cases.check_breaches() == [] and cases.breaches() == []


def test_extension_needs_a_reason(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    for reason in ("", "   ", None):
        with pytest.raises(ValueError, match="reason"):
            cases.extend_sla(view.number, reason, "agent:alice", hours=48)  # type: ignore[arg-type]
    before = _count(db, OutboxNotification)
    extended = cases.extend_sla(view.number, "waiting for the bank", "agent:alice", hours=48)
    assert extended.next_update_due_at == view.next_update_due_at + timedelta(hours=48)
    (event,) = [e for e in cases.timeline(view.number) if e.kind == "sla_extended"]
    assert "waiting for the bank" in (event.detail or "") and event.actor == "agent:alice"
    assert _count(db, OutboxNotification) == before + 1
    assert _outbox(db)[-1].payload["reason"] == "waiting for the bank"


def test_sla_pure_functions() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert sla.first_response_due(t0, 10) == t0 + timedelta(minutes=10)
    assert sla.first_response_breached(t0, None, t0 + timedelta(minutes=1))
    assert not sla.first_response_breached(t0, t0, t0 + timedelta(days=1))
    assert sla.first_response_breached(t0, t0 + timedelta(seconds=1), t0 + timedelta(days=1))
    assert not sla.progress_update_breached(t0, "resolved", t0 + timedelta(days=9))
    assert sla.extend(t0, t0 + timedelta(hours=5), 2, "why") == t0 + timedelta(hours=7)
    with pytest.raises(ValueError):
        sla.extend(t0, t0, 0, "why")
    with pytest.raises(ValueError):
        sla.first_response_due(datetime(2026, 1, 1), 10)


# ----------------------------------------------------------------------------- customer side


def test_reopen_only_after_resolution_with_fresh_clocks(cases: CaseService, db: Database, clock) -> None:
    view = _open(cases)
    with pytest.raises(CaseStateError, match="still open"):
        cases.reopen(view.number, "visitor-1", "not fixed")
    cases.advance(view.number, "resolved", "agent:alice")
    cases.rate(view.number, "visitor-1", 2)
    clock.advance(days=2)
    with pytest.raises(CaseNotFound):
        cases.reopen(view.number, "someone-else", "not fixed")
    reopened = cases.reopen(view.number, "visitor-1", "still drops every evening")
    assert reopened.stage == "verifying"
    assert reopened.reopen_count == 1
    assert reopened.resolved_at is None and reopened.follow_up_at is None and reopened.satisfaction is None
    assert reopened.first_response_due_at == clock.now + timedelta(minutes=10)
    assert reopened.next_update_due_at == clock.now + timedelta(hours=24)
    (event,) = [e for e in cases.timeline(view.number) if e.kind == "reopened"]
    assert (event.from_stage, event.to_stage, event.detail) == ("resolved", "verifying", "still drops every evening")
    assert _outbox(db)[-1].payload["event"] == "reopened"
    cases.advance(reopened.number, "resolved", "agent:alice")
    assert cases.reopen(view.number, "visitor-1", "again").reopen_count == 2


def test_rating_only_after_resolution_and_within_1_to_5(cases: CaseService) -> None:
    view = _open(cases)
    with pytest.raises(CaseStateError):
        cases.rate(view.number, "visitor-1", 5)
    cases.advance(view.number, "resolved", "agent:alice")
    for bad in (0, 6, -1, 3.5, True, "5"):
        with pytest.raises(ValueError):
            cases.rate(view.number, "visitor-1", bad)  # type: ignore[arg-type]
    with pytest.raises(CaseNotFound):
        cases.rate(view.number, "intruder", 1)
    assert cases.rate(view.number, "visitor-1", 4).satisfaction == 4


def test_visitors_only_see_their_own_cases(cases: CaseService) -> None:
    mine = _open(cases, visitor_id="alice")
    other = _open(cases, visitor_id="bob")
    assert cases.get_for_visitor(mine.number, "alice") == cases.get(mine.number)
    assert cases.get_for_visitor(other.number, "alice") is None
    assert cases.get_for_visitor("HL-20261104-0999", "alice") is None
    assert cases.get_for_visitor("nonsense", "alice") is None
    assert cases.get_for_visitor(mine.number.lower().replace("-", " "), "alice") is not None
    with pytest.raises(CaseNotFound):
        cases.timeline(other.number, visitor_id="alice")


def test_notes_are_internal(cases: CaseService, db: Database) -> None:
    view = _open(cases)
    cases.add_note(view.number, "agent:alice", "customer sounded upset; check the router firmware")
    agent_view = cases.timeline(view.number)
    customer_view = cases.timeline(view.number, visitor_id="visitor-1")
    assert [e.kind for e in agent_view] == ["created", "note"]
    assert [e.kind for e in customer_view] == ["created"]
    note = _outbox(db)[-1]
    assert (note.channel, note.recipient) == ("webhook", "internal")
    assert "firmware" not in str(note.payload)


def test_list_open_breaches_and_satisfaction(cases: CaseService, clock) -> None:
    a = _open(cases, "service")
    b = _open(cases, "refund")
    c = _open(cases, "privacy")
    assert [v.number for v in cases.list_open()] == [a.number, b.number, c.number]
    assert [v.number for v in cases.list_open("finance_compliance")] == [b.number]
    for view, score in ((a, 5), (b, 2)):
        cases.advance(view.number, "resolved", "agent:alice")
        cases.rate(view.number, "visitor-1", score)
    assert [v.number for v in cases.list_open()] == [c.number]
    summary = cases.satisfaction_summary()
    assert summary.count == 2 and summary.average == 3.5
    assert summary.distribution == {1: 0, 2: 1, 3: 0, 4: 0, 5: 1}
    assert summary.by_queue["finance_compliance"]["average"] == 2.0
    clock.advance(hours=1)
    assert [(x.number, x.kind) for x in cases.breaches()] == [(c.number, "first_response")]


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "text",
    [
        "HL-20261104-0001",
        "hl-20261104-0001",
        " HL 20261104 0001 ",
        "HL202611040001",
        "hl20261104-0001",
        "ＨＬ－２０２６１１０４－０００１",
        "HL–20261104–0001",
    ],
)
def test_normalise_number_accepts_customer_spellings(text: str) -> None:
    assert normalise_number(text) == "HL-20261104-0001"


@pytest.mark.parametrize(
    "text", ["", "HL-2026110-0001", "HL-20261304-0001", "HL-20261104-0000", "XX-20261104-0001", "HL-20261104", "abc"]
)
def test_normalise_number_rejects_malformed(text: str) -> None:
    assert normalise_number(text) is None


@given(
    day=st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2099, 12, 31).date()),
    seq=st.integers(min_value=1, max_value=9999),
    sep=st.sampled_from(["-", " ", "", "－", "—"]),
    lower=st.booleans(),
    wide=st.booleans(),
)
def test_normalise_number_round_trips(day, seq, sep, lower, wide) -> None:  # type: ignore[no-untyped-def]
    canonical = f"HL-{day:%Y%m%d}-{seq:04d}"
    text = f"HL{sep}{day:%Y%m%d}{sep}{seq:04d}"
    if lower:
        text = text.lower()
    if wide:
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    assert normalise_number(text) == canonical
    assert normalise_number(canonical) == canonical


# ----------------------------------------------------------------------------- one SLA rule


def test_breaches_overview_and_analytics_agree(cases: CaseService, clock) -> None:
    """CaseService.breaches (the supervisor overview and /metrics list it) and the analytics'
    case_clocks use one rule (issue #15, item 6). The overview used to show one breach per case
    (the first-response one hid a missed progress update) and the case's creation time as "since";
    a case late on both clocks is late twice, each since its own due time."""
    late = _open(cases, "service")
    extended = _open(cases, "refund")
    cases.extend_sla(extended.number, "waiting for the bank (see note)", "agent:alice", hours=48)
    cases.record_first_response(extended.number, "agent:alice")
    clock.advance(hours=25)
    now = clock.now
    got = {(b.number, b.kind): b for b in cases.breaches()}
    assert set(got) == {(late.number, "first_response"), (late.number, "progress_update")}
    assert got[(late.number, "progress_update")].to_dict()["due_at"] == late.next_update_due_at.isoformat()
    assert got[(late.number, "first_response")].overdue_s == (now - late.first_response_due_at).total_seconds()
    for view in (late, extended):
        current = cases.get(view.number)
        assert current is not None
        events = [(e.kind, e.to_stage, e.detail, e.created_at) for e in cases.timeline(view.number)]
        clocks = sla.case_clocks(events, first_response_minutes=cases.first_response_minutes(current.queue),
                                 update_hours=24, now=now, current_first_response_due=current.first_response_due_at,
                                 current_update_due=current.next_update_due_at)
        assert {c.kind for c in clocks if c.outcome == sla.BREACHED} == {k for n, k in got if n == view.number}


def test_extension_detail_round_trips() -> None:
    due = datetime(2026, 1, 3, 9, 30, tzinfo=timezone.utc)
    detail = sla.extension_detail("waiting (for) the bank", 48, due)
    assert sla.parse_extension(detail) == sla.Extension("waiting (for) the bank", 48.0, due)
    assert sla.parse_extension("free text") == sla.Extension("free text", None, None)


def test_the_console_reads_the_timeline_the_case_service_reads(cases: CaseService, db: Database) -> None:
    """ConversationService.case_details (the agent console) and CaseService.timeline read a case's
    events through one function (issue #15, item 6): same entries, same order, notes included."""
    from bot.services.conversations import ConversationService

    view = _open(cases)
    cases.add_note(view.number, "agent:alice", "called the bank")
    cases.advance(view.number, "verifying", "agent:alice")
    details = ConversationService(db).case_details(view.id)
    assert details is not None and details["number"] == view.number
    assert [(e["kind"], e["to_stage"], e["detail"], e["created_at"]) for e in details["timeline"]] == [
        (e.kind, e.to_stage, e.detail, e.created_at.isoformat()) for e in cases.timeline(view.number)
    ]
    assert [e["kind"] for e in details["timeline"]] == ["created", "note", "first_response", "stage_changed"]
    assert ConversationService(db).case_details(None) is None
