"""Plan changes: one path, one effective-date rule, a case every time, no retention pitch (promise 5)."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import func, select

from bot.services import plans as plans_module
from bot.services.config import HumanlineConfig
from bot.services.plans import (
    AlreadyScheduled,
    LocalAccountBackend,
    PlanCatalogue,
    PlanChangeError,
    PlanChangeProposal,
    PlanChangeResult,
    PlanChangeService,
    PlanStatus,
    PlanTargetRequired,
    ProposalOutdated,
    SamePlan,
    UnknownPlan,
    case_plan_change,
    effective_date,
    is_how_to_question,
)
from bot.store.db import Database
from bot.store.models import AuditEntry, Case, OutboxNotification, PlanChange

RETENTION_WORDS = ("offer", "discount", "retention", "stay", "instead", "优惠", "優惠", "挽留", "折扣")


@pytest.fixture
def catalogue(config: HumanlineConfig) -> PlanCatalogue:
    return PlanCatalogue.from_config(config)


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("basic", "basic"),
        ("BASIC", "basic"),
        ("Ｂａｓｉｃ", "basic"),
        ("基础版", "basic"),
        ("基礎版", "basic"),  # Traditional spelling of a Simplified alias
        ("基本方案", "basic"),
        ("標準方案", "standard"),
        ("标准套餐", "standard"),
        ("高級方案", "premium"),
        ("Premium", "premium"),
        ("家庭方案", "family"),
        ("I'd like the family plan please", "family"),
        ("我想换成基础套餐", "basic"),
        ("nothing", None),
        ("", None),
        (None, None),
    ],
)
def test_catalogue_resolves_aliases_in_every_script(
    catalogue: PlanCatalogue, text: str | None, plan: str | None
) -> None:
    assert catalogue.resolve(text) == plan


def test_kind_comes_from_rank(catalogue: PlanCatalogue) -> None:
    assert catalogue.kind("standard", "premium") == "upgrade"
    assert catalogue.kind("standard", "basic") == "downgrade"
    assert catalogue.kind("standard", None) == "cancel"
    assert catalogue.kind(None, "basic") == "upgrade"
    with pytest.raises(SamePlan):
        catalogue.kind("standard", "standard")
    with pytest.raises(SamePlan):
        catalogue.kind(None, None)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 4, 9, tzinfo=timezone.utc), date(2026, 12, 1)),
        (datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc), date(2027, 1, 1)),
        (datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc), date(2026, 2, 1)),
    ],
)
def test_effective_date_is_first_of_next_month(now: datetime, expected: date) -> None:
    assert effective_date("next_billing_cycle", now) == expected


def _count(db: Database, model: type) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


@pytest.mark.parametrize(
    ("target", "hint", "kind"),
    [("premium", "upgrade", "upgrade"), ("basic", "downgrade", "downgrade"), (None, "cancel", "cancel")],
)
def test_every_kind_takes_the_same_path(
    plans: PlanChangeService, db: Database, monkeypatch, target: str | None, hint: str, kind: str
) -> None:
    calls: list[str] = []
    original = plans.cases.open_case

    def spy(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[0])
        return original(*args, **kw)

    monkeypatch.setattr(plans.cases, "open_case", spy)
    result = plans.request_change("visitor-1", target, hint, "en")
    assert isinstance(result, PlanChangeResult)
    assert result.kind == kind
    assert result.from_plan == "standard"  # config default
    assert result.to_plan == target
    assert result.effective_date == date(2026, 12, 1)
    assert calls == ["plan_change"]  # exactly one case, one call
    assert result.case.category == "plan_change" and result.case.queue == "account_services"
    with db.session() as s:
        (row,) = s.execute(select(PlanChange)).scalars()
        assert (row.kind, row.from_plan, row.to_plan, row.effective_date, row.case_id) == (
            kind,
            "standard",
            target,
            date(2026, 12, 1),
            result.case.id,
        )
        assert s.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == 1
    # same number of rows for every kind: 1 case, 1 plan change, 2 notifications (case + plan change)
    assert (_count(db, Case), _count(db, PlanChange), _count(db, OutboxNotification)) == (1, 1, 2)


def test_downgrade_and_cancel_are_never_slower_or_pitched(plans: PlanChangeService, db: Database) -> None:
    up = plans.request_change("u", "premium", "upgrade", "en")
    down = plans.request_change("d", "basic", "downgrade", "en")
    cancel = plans.request_change("c", None, "cancel", "en")
    assert up.effective_date == down.effective_date == cancel.effective_date
    assert {f.name for f in fields(PlanChangeResult)}.isdisjoint({"offer", "retention_offer", "discount"})
    with db.session() as s:
        payloads = [n.payload for n in s.execute(select(OutboxNotification)).scalars()]
    text = json.dumps(payloads, ensure_ascii=False).lower()
    for word in RETENTION_WORDS:
        assert word not in text, word
    source = inspect.getsource(plans_module).lower()
    assert "retention_offer" not in source and "discount" not in source


def test_kind_hint_does_not_override_ranks(plans: PlanChangeService) -> None:
    # "downgrade" said, but premium is above standard: recorded as what it is
    assert plans.request_change("v", "premium", "downgrade", "en").kind == "upgrade"


def test_missing_target_is_asked_the_same_way_both_directions(plans: PlanChangeService, db: Database) -> None:
    with pytest.raises(PlanTargetRequired) as up:
        plans.request_change("v", None, "upgrade", "en")
    with pytest.raises(PlanTargetRequired) as down:
        plans.request_change("v", None, "downgrade", "en")
    assert up.value.options == ("premium", "family")
    assert down.value.options == ("basic",)
    assert _count(db, Case) == 0


def test_unknown_and_same_plan_record_nothing(plans: PlanChangeService, db: Database) -> None:
    with pytest.raises(UnknownPlan):
        plans.request_change("v", "platinum", "upgrade", "en")
    with pytest.raises(SamePlan):
        plans.request_change("v", "標準方案", None, "zh-Hant")
    assert (_count(db, Case), _count(db, PlanChange)) == (0, 0)


def test_current_plan_follows_recorded_changes_once_they_take_effect(plans: PlanChangeService, clock) -> None:
    assert plans.current_plan("v") == "standard"
    plans.request_change("v", "基础版", "downgrade", "zh-Hans")
    assert plans.current_plan("v") == "standard"  # scheduled for 1 December, not in effect yet
    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=timezone.utc))
    assert plans.current_plan("v") == "basic" and plans.scheduled_change("v") is None
    result = plans.request_change("v", None, "cancel", "zh-Hans")
    assert (result.from_plan, result.to_plan, result.from_name) == ("basic", None, "基础版")
    assert result.effective_date == date(2027, 1, 1)
    assert plans.current_plan("v") == "basic"
    clock.set(datetime(2027, 1, 1, 0, 0, tzinfo=timezone.utc))
    assert plans.current_plan("v") is None
    with pytest.raises(SamePlan):
        plans.request_change("v", None, "cancel", "en")


def test_localised_messages(plans: PlanChangeService, db: Database) -> None:
    result = plans.request_change("v", "基本方案", "downgrade", "zh-Hant", phone="0912345678")
    assert result.to_name == "基本方案" and result.case.lang == "zh-Hant"
    with db.session() as s:
        note = s.execute(select(OutboxNotification).order_by(OutboxNotification.id.desc()).limit(1)).scalar_one()
        assert (note.channel, note.recipient) == ("sms", "0912345678")
        assert note.payload["event"] == "plan_change_recorded"
        assert "2026-12-01" in note.payload["message"] and result.case.number in note.payload["message"]


def test_backend_failure_rolls_back_the_case(db: Database, config: HumanlineConfig, clock) -> None:
    class Broken(LocalAccountBackend):
        def record_change(self, change, session):  # noqa: ANN001, ANN201
            super().record_change(change, session)
            raise ConnectionError("billing system down")

    service = PlanChangeService(db, config, backend=Broken(db, "standard"), clock=clock)
    with pytest.raises(ConnectionError):
        service.request_change("v", "basic", "downgrade", "en")
    assert (_count(db, Case), _count(db, PlanChange), _count(db, OutboxNotification)) == (0, 0, 0)


class _BillingApiStub:
    """An external account backend as an operator would plug it in (records in memory)."""

    def __init__(self, db: Database, config: HumanlineConfig) -> None:
        self.changes: list[object] = []

    def current_plan(self, visitor_id: str) -> str | None:
        return "premium"

    def record_change(self, change: object, session: object) -> None:
        self.changes.append(change)


def _not_a_backend(db: Database, config: HumanlineConfig) -> object:
    return object()


def test_the_account_backend_is_pluggable_by_setting(db: Database, config: HumanlineConfig) -> None:
    from bot.services.plans import LocalAccountBackend, load_account_backend

    assert isinstance(load_account_backend(None, db, config), LocalAccountBackend)
    backend = load_account_backend(f"{__name__}:_BillingApiStub", db, config)
    assert isinstance(backend, _BillingApiStub)
    service = PlanChangeService(db, config, backend=backend)
    result = service.request_change("visitor-7", "basic", "downgrade")
    assert result.from_plan == "premium" and len(backend.changes) == 1
    for bad in ("no_colon", f"{__name__}:missing", f"{__name__}:_not_a_backend"):
        with pytest.raises(ValueError):
            load_account_backend(bad, db, config)
    with pytest.raises(ImportError):
        load_account_backend("no.such.module:X", db, config)


# ----------------------------------------------------------------------------- confirm before commit


@pytest.mark.parametrize(
    ("target", "hint", "kind", "to_price"),
    [("premium", "upgrade", "upgrade", 299), ("basic", "downgrade", "downgrade", 99), (None, "cancel", "cancel", 0)],
)
def test_a_proposal_states_the_change_and_records_nothing(
    plans: PlanChangeService, db: Database, target: str | None, hint: str, kind: str, to_price: float
) -> None:
    proposal = plans.propose("v", target, hint)
    assert isinstance(proposal, PlanChangeProposal)
    assert (proposal.kind, proposal.from_plan, proposal.to_plan) == (kind, "standard", target)
    assert proposal.effective_date == date(2026, 12, 1)
    assert (proposal.from_price, proposal.to_price, proposal.price_difference) == (199, to_price, to_price - 199)
    assert proposal.pending is None
    assert (_count(db, Case), _count(db, PlanChange), _count(db, OutboxNotification), _count(db, AuditEntry)) == (
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize(("target", "hint"), [("premium", "upgrade"), ("basic", "downgrade"), (None, "cancel")])
def test_confirm_records_exactly_the_proposal_shown(
    plans: PlanChangeService, db: Database, target: str | None, hint: str
) -> None:
    shown = plans.propose("v", target, hint).as_slot()
    result = plans.confirm("v", json.loads(json.dumps(shown)), "en", conversation_id="c1")  # through a slot
    assert (result.kind, result.from_plan, result.to_plan) == (shown["kind"], "standard", target)
    assert result.effective_date.isoformat() == shown["effective_date"]
    with db.session() as s:
        (row,) = s.execute(select(PlanChange)).scalars()
        assert (row.kind, row.from_plan, row.to_plan, row.case_id) == (
            shown["kind"],
            "standard",
            target,
            result.case.id,
        )


def test_confirming_a_proposal_the_account_has_moved_past_records_nothing(
    plans: PlanChangeService, db: Database
) -> None:
    shown = plans.propose("v", "basic", "downgrade").as_slot()
    plans.request_change("v", "premium", "upgrade", actor="agent:alice")  # meanwhile, elsewhere
    with pytest.raises(ProposalOutdated) as outdated:
        plans.confirm("v", shown)
    assert outdated.value.proposal is not None and outdated.value.proposal.pending is not None
    assert _count(db, PlanChange) == 1
    with pytest.raises(PlanChangeError):
        plans.confirm("v", {"kind": "refund", "to_plan": None})


# ----------------------------------------------------------------------------- pending is not current


def test_a_scheduled_change_is_pending_not_current(plans: PlanChangeService, db: Database, clock) -> None:
    result = plans.request_change("v", "basic", "downgrade")
    status = plans.status("v")
    assert status.current_plan == "standard"
    assert status.pending is not None
    assert (status.pending.kind, status.pending.to_plan, status.pending.effective_date) == (
        "downgrade",
        "basic",
        date(2026, 12, 1),
    )
    with db.session() as s:
        assert case_plan_change(s, result.case.id, clock().date())["state"] == "pending"
        assert case_plan_change(s, result.case.id, date(2026, 12, 1))["state"] == "in_effect"
    assert "scheduled for 2026-12-01" in result.case.description


@pytest.mark.parametrize(("target", "hint"), [("basic", "downgrade"), ("基本方案", None), (None, "cancel")])
def test_asking_again_for_the_scheduled_change_is_recognised(
    plans: PlanChangeService, db: Database, target: str | None, hint: str | None
) -> None:
    first = plans.request_change("v", target, hint or "downgrade")
    with pytest.raises(AlreadyScheduled) as again:
        plans.propose("v", target, hint)
    assert again.value.pending.to_plan == first.to_plan
    assert again.value.current_plan == "standard" and again.value.case_number == first.case_number
    assert _count(db, PlanChange) == 1


def test_a_downgrade_after_a_pending_cancellation_is_a_downgrade_that_replaces_it(
    plans: PlanChangeService, db: Database, clock
) -> None:
    cancel = plans.request_change("v", None, "cancel")
    clock.advance(minutes=5)
    proposal = plans.propose("v", "basic", "downgrade")
    assert (proposal.kind, proposal.from_plan, proposal.to_plan) == ("downgrade", "standard", "basic")
    assert proposal.pending is not None and proposal.pending.kind == "cancel"
    down = plans.confirm("v", proposal.as_slot())
    assert down.kind == "downgrade" and down.replaced is not None
    assert plans.status("v").pending.to_plan == "basic"
    clock.set(datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert plans.current_plan("v") == "basic"  # the cancellation never takes effect
    with db.session() as s:
        old = case_plan_change(s, cancel.case.id, date(2026, 12, 1))
        assert (old["state"], old["replaced_by"]) == ("replaced", down.case_number)
        assert case_plan_change(s, down.case.id, date(2026, 12, 1))["state"] == "in_effect"
    kinds = [e.kind for e in plans.cases.timeline(cancel.case_number, visitor_id="v")]
    assert "plan_change_replaced" in kinds  # the customer sees it too


@pytest.mark.parametrize(
    ("first", "first_hint", "back"), [("basic", "downgrade", "standard"), (None, "cancel", "标准版")]
)
def test_a_confirmed_change_can_be_withdrawn_the_same_way(
    plans: PlanChangeService, db: Database, clock, first: str | None, first_hint: str, back: str
) -> None:
    recorded = plans.request_change("v", first, first_hint)
    clock.advance(minutes=2)
    proposal = plans.propose("v", back)
    assert (proposal.kind, proposal.from_plan, proposal.to_plan) == ("withdraw", "standard", "standard")
    assert proposal.price_difference == 0 and proposal.effective_date == date(2026, 12, 1)
    assert _count(db, PlanChange) == 1  # proposing the withdrawal wrote nothing
    result = plans.confirm("v", proposal.as_slot(), "zh-Hant")
    assert result.kind == "withdraw" and result.case_number == recorded.case_number
    assert plans.status("v") == PlanStatus("standard", None)
    clock.set(datetime(2026, 12, 2, tzinfo=timezone.utc))
    assert plans.current_plan("v") == "standard"
    with db.session() as s:
        assert case_plan_change(s, recorded.case.id, date(2026, 12, 2))["state"] == "withdrawn"
        note = s.execute(select(OutboxNotification).order_by(OutboxNotification.id.desc()).limit(1)).scalar_one()
        assert note.payload["event"] == "plan_change_withdrawn" and "撤銷" in note.payload["message"]
    assert "plan_change_withdrawn" in [e.kind for e in plans.cases.timeline(recorded.case_number, visitor_id="v")]
    with pytest.raises(SamePlan):  # nothing scheduled any more, already on it
        plans.propose("v", "standard")


def test_cancel_naming_a_cheaper_plan_proposes_that_plan_not_a_cancellation(plans: PlanChangeService) -> None:
    # "cancel my plan, Basic is enough" / "取消标准版" (the plan being left) / "cancel the Basic I asked for"
    assert plans.propose("v", "basic", "cancel").kind == "downgrade"
    assert plans.propose("v", "standard", "cancel").kind == "cancel"
    assert plans.propose("v", "premium", "cancel").kind == "cancel"
    plans.request_change("v", "basic", "downgrade")
    assert plans.propose("v", "basic", "cancel").kind == "withdraw"


# ----------------------------------------------------------------------------- "how do I …"


@pytest.mark.parametrize(
    "text",
    [
        "what would I need to do to move to Basic?",
        "How do I downgrade to the basic plan",
        "how can I cancel my subscription?",
        "Where do I change my plan?",
        "请问降档要去哪里操作",
        "怎么取消订阅",
        "如何升级到高级版",
        "降級方案要怎樣做？",
        "點樣轉去基本方案",
        "去邊度取消訂閱",
    ],
)
def test_how_to_questions_are_recognised_in_every_script(text: str) -> None:
    assert is_how_to_question(text)


@pytest.mark.parametrize(
    "text",
    ["I want to downgrade to Basic", "please cancel my subscription", "我要降级套餐", "幫我升級到高級方案", "", None],
)
def test_requests_are_not_how_to_questions(text: str | None) -> None:
    assert not is_how_to_question(text)


def test_the_console_gets_a_plan_change_case_with_its_state(db: Database, config: HumanlineConfig) -> None:
    from bot.services.conversations import ConversationService
    from bot.store.models import utcnow

    plans = PlanChangeService(db, config, clock=utcnow)  # the console reads "today" from the real clock
    down = plans.request_change("v", "basic", "downgrade")
    details = ConversationService(db).case_details(down.case.id)
    assert details is not None and details["plan_change"]["state"] == "pending"
    assert (details["plan_change"]["from_plan"], details["plan_change"]["to_plan"]) == ("standard", "basic")
    plans.confirm("v", plans.propose("v", "standard").as_slot())  # withdrawn
    assert ConversationService(db).case_details(down.case.id)["plan_change"]["state"] == "withdrawn"
    other = plans.cases.open_case("service", visitor_id="v", description="no signal", lang="en")
    assert "plan_change" not in ConversationService(db).case_details(other.id)
