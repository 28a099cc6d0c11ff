"""Plan changes, symmetric by construction (promise 5).

Upgrades, downgrades and cancellations go through **one** code path,
:meth:`PlanChangeService.request_change`: the same number of steps, the same effective-date rule
(``plans.effective_rule: next_billing_cycle`` — the first day of the next calendar month, from
the injected clock), the same record in the account backend and the same ``plan_change`` case.
Nothing here produces a retention offer; the result has no field for one.

The kind is never taken from the customer's wording alone: it is derived by comparing plan ranks
(the target against the current plan — the backend's, else ``plans.default_current_plan``);
no target plan means a cancellation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.services import audit
from bot.services.cases import CaseService, CaseView
from bot.services.config import HumanlineConfig, PlanConfig, PlansConfig
from bot.services.notifications import Outbox
from bot.store.db import Database
from bot.store.models import PlanChange, utcnow

KINDS: tuple[str, ...] = ("upgrade", "downgrade", "cancel")

Clock = Callable[[], datetime]


class PlanChangeError(ValueError):
    """A plan change that cannot be recorded as asked."""


class UnknownPlan(PlanChangeError):
    """The target plan is not in the catalogue."""


class SamePlan(PlanChangeError):
    """The customer already has (or has already cancelled) that plan."""


class PlanTargetRequired(PlanChangeError):
    """An upgrade or downgrade without a target plan: ask which one.

    :ivar options: the plan ids in that direction (by rank), to offer as buttons — the same
        question for an upgrade and for a downgrade.
    """

    def __init__(self, message: str, options: tuple[str, ...]) -> None:
        super().__init__(message)
        self.options = options


def _fold(text: str) -> str:
    from bot.i18n import to_simplified

    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    return to_simplified(re.sub(r"\s+", " ", folded))


class PlanCatalogue:
    """The plans of ``config/humanline.yml`` and their names in every script."""

    def __init__(self, plans: PlansConfig) -> None:
        self.plans = plans
        self._aliases: dict[str, str] = {}
        for plan in plans.catalogue.values():
            for alias in (plan.id, *plan.aliases, *plan.names.values()):
                self._aliases.setdefault(_fold(alias), plan.id)
        # longest first, so "基本方案" wins over "基本" inside a sentence
        self._by_length = sorted(self._aliases, key=len, reverse=True)

    @classmethod
    def from_config(cls, config: HumanlineConfig) -> PlanCatalogue:
        if config.plans is None:
            raise PlanChangeError("the configuration has no plan catalogue")
        return cls(config.plans)

    def get(self, plan_id: str) -> PlanConfig:
        """The plan with this id. :raises UnknownPlan: not in the catalogue."""
        try:
            return self.plans.catalogue[plan_id]
        except KeyError:
            raise UnknownPlan(f"unknown plan {plan_id!r}") from None

    def resolve(self, text: str | None) -> str | None:
        """The plan id meant by ``text`` (an id, a name or an alias in English, Simplified or
        Traditional Chinese, any case or width, alone or inside a sentence), else ``None``."""
        if not text or not text.strip():
            return None
        folded = _fold(text)
        if folded in self._aliases:
            return self._aliases[folded]
        for alias in self._by_length:
            if alias.isascii():
                if re.search(rf"(?<![a-z0-9]){re.escape(alias)}(?![a-z0-9])", folded):
                    return self._aliases[alias]
            elif alias in folded:
                return self._aliases[alias]
        return None

    def name(self, plan_id: str | None, lang: str | None) -> str | None:
        """The plan's display name in ``lang`` (``None`` for no plan)."""
        return None if plan_id is None else self.get(plan_id).name_for(lang)

    def ordered(self) -> list[PlanConfig]:
        """Plans by rank, smallest first."""
        return sorted(self.plans.catalogue.values(), key=lambda p: p.rank)

    def kind(self, current: str | None, target: str | None) -> str:
        """``upgrade``/``downgrade``/``cancel`` from the rank comparison (no target: ``cancel``;
        no current plan: ``upgrade`` — a new subscription).

        :raises SamePlan: target equals current, or cancelling without a plan.
        """
        if target is None:
            if current is None:
                raise SamePlan("there is no active plan to cancel")
            return "cancel"
        if current is None:
            return "upgrade"
        if target == current:
            raise SamePlan(f"already on plan {target!r}")
        return "upgrade" if self.get(target).rank > self.get(current).rank else "downgrade"


def effective_date(rule: str, now: datetime) -> date:
    """The day a plan change takes effect — the same for every kind of change.

    ``next_billing_cycle``: the first day of the calendar month after ``now`` (UTC date).
    """
    if rule != "next_billing_cycle":
        raise PlanChangeError(f"unsupported effective rule {rule!r}")
    today = now.date()
    return date(today.year + 1, 1, 1) if today.month == 12 else date(today.year, today.month + 1, 1)


@dataclass(frozen=True)
class PlanChangeRecord:
    """What the account backend is asked to record."""

    visitor_id: str
    from_plan: str | None
    to_plan: str | None
    kind: str
    requested_at: datetime
    effective_date: date
    case_id: int | None


@runtime_checkable
class AccountBackend(Protocol):
    """The system of record for subscriptions (a billing API, or :class:`LocalAccountBackend`).

    ``record_change`` receives the transaction of the case; a backend that writes to the store
    uses it (so the change and its case commit together), an external one may ignore it and
    raise to abort the whole request.
    """

    def current_plan(self, visitor_id: str) -> str | None: ...

    def record_change(self, change: PlanChangeRecord, session: Session) -> None: ...


class LocalAccountBackend:
    """Plan changes kept in the ``plan_changes`` table of the store.

    The current plan is the target of the visitor's latest recorded change (``None`` after a
    cancellation); a visitor without any change has ``default_plan``.
    """

    def __init__(self, db: Database, default_plan: str | None = None) -> None:
        self.db = db
        self.default_plan = default_plan

    def current_plan(self, visitor_id: str) -> str | None:
        with self.db.session() as s:
            latest = s.execute(
                select(PlanChange)
                .where(PlanChange.visitor_id == visitor_id)
                .order_by(PlanChange.requested_at.desc(), PlanChange.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is None:
                return self.default_plan
            return latest.to_plan

    def record_change(self, change: PlanChangeRecord, session: Session) -> None:
        session.add(
            PlanChange(
                visitor_id=change.visitor_id,
                from_plan=change.from_plan,
                to_plan=change.to_plan,
                kind=change.kind,
                requested_at=change.requested_at,
                effective_date=change.effective_date,
                case_id=change.case_id,
            )
        )


def load_account_backend(spec: str | None, db: Database, config: HumanlineConfig) -> AccountBackend:
    """The account backend named by ``spec`` (``HUMANLINE_ACCOUNT_BACKEND``).

    ``spec`` is ``"package.module:name"``, where ``name`` is a class or a function called as
    ``name(db, config)`` that returns an :class:`AccountBackend` (e.g. a client of the carrier's
    billing API). Empty or ``None``: :class:`LocalAccountBackend` on ``db``.

    :raises ValueError: a malformed spec, or what it names does not build an AccountBackend.
    :raises ImportError: the module cannot be imported.
    """
    if not spec:
        return LocalAccountBackend(db, config.plans.default_current_plan if config.plans else None)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"HUMANLINE_ACCOUNT_BACKEND must look like 'package.module:Name', not {spec!r}")
    import importlib

    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        raise ValueError(f"HUMANLINE_ACCOUNT_BACKEND: {spec!r} is not a class or function")
    backend = factory(db, config)
    if not isinstance(backend, AccountBackend):
        raise ValueError(f"HUMANLINE_ACCOUNT_BACKEND: {spec!r} did not return an AccountBackend "
                         "(current_plan and record_change)")
    return backend


@dataclass(frozen=True)
class PlanChangeResult:
    """A recorded plan change and its case. There is deliberately no retention-offer field."""

    kind: str
    from_plan: str | None
    to_plan: str | None
    from_name: str | None
    to_name: str | None
    effective_date: date
    case: CaseView
    lang: str

    @property
    def case_number(self) -> str:
        return self.case.number


_DESCRIPTIONS = {
    "upgrade": "Plan change (upgrade): {from_plan} → {to_plan}, effective {date}",
    "downgrade": "Plan change (downgrade): {from_plan} → {to_plan}, effective {date}",
    "cancel": "Plan change (cancel): {from_plan} → none, effective {date}",
}

_MESSAGES = {
    "en": "Your plan change ({kind}: {from_name} → {to_name}) is recorded as case {number}. It takes effect on {date}.",
    "zh-Hans": "您的套餐变更（{kind}：{from_name} → {to_name}）已登记，工单号 {number}，{date} 起生效。",
    "zh-Hant": "您的方案變更（{kind}：{from_name} → {to_name}）已登記，案件編號 {number}，{date} 起生效。",
}
_KIND_NAMES = {
    "en": {"upgrade": "upgrade", "downgrade": "downgrade", "cancel": "cancellation"},
    "zh-Hans": {"upgrade": "升级", "downgrade": "降级", "cancel": "取消"},
    "zh-Hant": {"upgrade": "升級", "downgrade": "降級", "cancel": "取消"},
}
_NONE = {"en": "none", "zh-Hans": "无", "zh-Hant": "無"}


class PlanChangeService:
    """Records plan changes — every kind through the same path, with the same effective date.

    :param db: the store. :param config: business configuration (default: loaded).
    :param backend: the account backend (default: :class:`LocalAccountBackend`).
    :param cases: the case service (default: a new one on the same store, config and clock).
    :param clock: "now", timezone-aware UTC.
    """

    def __init__(
        self,
        db: Database,
        config: HumanlineConfig | None = None,
        backend: AccountBackend | None = None,
        cases: CaseService | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.db = db
        self.config = config or HumanlineConfig.load()
        self.catalogue = PlanCatalogue.from_config(self.config)
        self.backend: AccountBackend = backend or LocalAccountBackend(db, self.catalogue.plans.default_current_plan)
        self.cases = cases or CaseService(db, self.config, clock=clock)
        self.clock = clock

    def current_plan(self, visitor_id: str) -> str | None:
        """The visitor's plan according to the backend."""
        return self.backend.current_plan(visitor_id)

    def request_change(
        self,
        visitor_id: str,
        target_plan: str | None,
        kind_hint: str | None = None,
        lang: str = "en",
        *,
        conversation_id: str | None = None,
        phone: str | None = None,
        actor: str = "bot",
    ) -> PlanChangeResult:
        """Record an upgrade, downgrade or cancellation and open its ``plan_change`` case.

        :param target_plan: the plan the customer wants (id, name or alias in any script), or
            ``None`` to cancel.
        :param kind_hint: the intent's reading (``upgrade``/``downgrade``/``cancel``); only used
            to ask for a missing target — the recorded kind comes from the rank comparison.
        :raises UnknownPlan: the target names no plan of the catalogue.
        :raises PlanTargetRequired: an upgrade/downgrade hint without a target (the options in
            that direction are attached; the same question either way).
        :raises SamePlan: nothing would change.
        """
        if not visitor_id:
            raise PlanChangeError("a plan change needs the visitor")
        if kind_hint is not None and kind_hint not in KINDS:
            raise PlanChangeError(f"unknown kind hint {kind_hint!r}; expected one of {KINDS}")
        target: str | None = None
        if target_plan is not None and str(target_plan).strip():
            target = self.catalogue.resolve(str(target_plan))
            if target is None:
                raise UnknownPlan(f"no plan called {target_plan!r}")
        current = self.backend.current_plan(visitor_id)
        if target is None and kind_hint in ("upgrade", "downgrade"):
            raise PlanTargetRequired(f"which plan should the {kind_hint} go to?", self._options(current, kind_hint))
        kind = self.catalogue.kind(current, target)
        now = self.clock()
        effective = effective_date(self.catalogue.plans.effective_rule, now)
        lang = lang if lang in _MESSAGES else "en"
        description = _DESCRIPTIONS[kind].format(
            from_plan=current or "none", to_plan=target, date=effective.isoformat()
        )

        with self.db.session() as s:
            case = self.cases.open_case(
                "plan_change",
                visitor_id=visitor_id,
                conversation_id=conversation_id,
                description=description,
                phone=phone,
                lang=lang,
                actor=actor,
                session=s,
            )
            record = PlanChangeRecord(visitor_id, current, target, kind, now, effective, case.id)
            self.backend.record_change(record, s)
            from_name = self.catalogue.name(current, lang)
            to_name = self.catalogue.name(target, lang)
            message = _MESSAGES[lang].format(
                kind=_KIND_NAMES[lang][kind],
                from_name=from_name or _NONE[lang],
                to_name=to_name or _NONE[lang],
                number=case.number,
                date=effective.isoformat(),
            )
            channel, recipient = ("sms", phone) if phone else ("chat", visitor_id)
            Outbox(s, clock=lambda: now).add(
                channel=channel,
                recipient=recipient,
                case_id=case.id,
                payload={
                    "event": "plan_change_recorded",
                    "case_number": case.number,
                    "kind": kind,
                    "from_plan": current,
                    "to_plan": target,
                    "effective_date": effective.isoformat(),
                    "queue": case.queue,
                    "queue_display": case.queue_display,
                    "specialist": case.queue_display,
                    "expected_by": case.first_response_due_at.isoformat() if case.first_response_due_at else None,
                    "lang": lang,
                    "message": message,
                },
            )
            audit.record(
                s,
                actor,
                "plan_change",
                case.number,
                {"visitor_id": visitor_id, "kind": kind, "from": current, "to": target, "effective": str(effective)},
                at=now,
            )
        return PlanChangeResult(kind, current, target, from_name, to_name, effective, case, lang)

    def _options(self, current: str | None, direction: str) -> tuple[str, ...]:
        plans = self.catalogue.ordered()
        if current is None:
            return tuple(p.id for p in plans)
        rank = self.catalogue.get(current).rank
        if direction == "upgrade":
            return tuple(p.id for p in plans if p.rank > rank)
        return tuple(p.id for p in reversed(plans) if p.rank < rank)


__all__ = [
    "KINDS",
    "AccountBackend",
    "LocalAccountBackend",
    "PlanCatalogue",
    "PlanChangeError",
    "PlanChangeRecord",
    "PlanChangeResult",
    "PlanChangeService",
    "PlanTargetRequired",
    "SamePlan",
    "UnknownPlan",
    "effective_date",
]
