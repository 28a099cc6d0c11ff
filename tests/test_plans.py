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
    LocalAccountBackend,
    PlanCatalogue,
    PlanChangeResult,
    PlanChangeService,
    PlanTargetRequired,
    SamePlan,
    UnknownPlan,
    effective_date,
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


def test_current_plan_follows_recorded_changes(plans: PlanChangeService, clock) -> None:
    assert plans.current_plan("v") == "standard"
    plans.request_change("v", "基础版", "downgrade", "zh-Hans")
    assert plans.current_plan("v") == "basic"
    clock.advance(minutes=1)
    result = plans.request_change("v", None, "cancel", "zh-Hans")
    assert (result.from_plan, result.to_plan, result.from_name) == ("basic", None, "基础版")
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
