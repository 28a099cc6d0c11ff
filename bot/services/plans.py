"""Plan changes: proposed, confirmed, then recorded — symmetric by construction (promise 5).

Nothing about an account changes on a guess. A request becomes a :class:`PlanChangeProposal`
first (:meth:`PlanChangeService.propose`: the plan in effect now → the target, the effective
date, the monthly price difference, the scheduled change it would replace); the proposal writes
nothing. Only :meth:`PlanChangeService.confirm`, called once the customer has said yes to exactly
that proposal, records it. Upgrades, downgrades, cancellations and the withdrawal of a scheduled
change all go through these same two steps, with the same effective-date rule
(``plans.effective_rule: next_billing_cycle`` — the first day of the next calendar month, from
the injected clock), the same record in the account backend and a ``plan_change`` case. Nothing
here produces a retention offer; no result has a field for one.

**Pending is not current.** A recorded change takes effect on its effective date; until then it
is *scheduled* (:class:`ScheduledChange`) and the customer is still on the plan in effect
(:meth:`AccountBackend.current_plan`). At most one change is scheduled at a time: confirming
another one replaces it, asking for the same one again is answered with its status
(:class:`AlreadyScheduled`), and asking to stay on the plan in effect proposes to withdraw it.

The kind is never taken from the customer's wording alone: it is derived by comparing plan ranks
(the target against the plan in effect — the backend's, else ``plans.default_current_plan``);
no target plan means a cancellation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.services import audit
from bot.services.cases import CaseService, CaseView
from bot.services.config import HumanlineConfig, PlanConfig, PlansConfig
from bot.services.notifications import Outbox
from bot.store.db import Database
from bot.store.models import Case, PlanChange, utcnow

KINDS: tuple[str, ...] = ("upgrade", "downgrade", "cancel")
WITHDRAW = "withdraw"
"""The kind of a proposal (and of its record) that takes back the scheduled change."""
PROPOSAL_KINDS: tuple[str, ...] = (*KINDS, WITHDRAW)

Clock = Callable[[], datetime]


class PlanChangeError(ValueError):
    """A plan change that cannot be recorded as asked."""


class UnknownPlan(PlanChangeError):
    """The target plan is not in the catalogue."""


class SamePlan(PlanChangeError):
    """The customer already has (or has already cancelled) that plan, and nothing is scheduled."""


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


# "How do I …" in the three scripts, on folded text (Traditional is folded to Simplified, so
# 點樣/怎樣/哪裡 match as 点样/怎样/哪里). A false positive only adds the how-to sentence before
# the same proposal, so the patterns may be generous.
_HOW_TO = re.compile(
    r"\bhow (do|can|could|would|should|does|is) (i|we|you|one|it|that|this|my)\b"
    r"|\bhow to\b"
    r"|\bwhat (would|do|should|will) (i|we) (need|have) to do\b"
    r"|\bwhere (do|can|could|would|should) (i|we)\b"
    r"|\bwhat (are|is) the (steps?|process|procedure)\b"
    r"|\bwhat happens (if|when)\b"
    r"|怎么|怎样|如何|点样|点做|咋|要去哪|去哪里|在哪|哪里(可以|办|改|操作|设置)|哪儿|什么步骤|流程|手续|要点|系边度|喺边度|边度",
)


def is_how_to_question(text: str | None) -> bool:
    """True when ``text`` asks *how* a plan change works rather than asking for one."""
    return bool(text) and bool(_HOW_TO.search(_fold(str(text))))


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

    def price(self, plan_id: str | None) -> float:
        """The plan's monthly price (0 for no plan)."""
        return 0.0 if plan_id is None else float(self.get(plan_id).monthly_price)

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
    """What the account backend is asked to record.

    ``kind`` is ``upgrade``/``downgrade``/``cancel``, or ``withdraw``: the scheduled change
    ``(from_plan → …)`` is taken back and the customer stays on ``to_plan`` from ``effective_date``
    (the withdrawn change's date), so the last record for a date is what applies on it.
    """

    visitor_id: str
    from_plan: str | None
    to_plan: str | None
    kind: str
    requested_at: datetime
    effective_date: date
    case_id: int | None


@dataclass(frozen=True)
class ScheduledChange:
    """A recorded change that is not in effect yet (pending)."""

    kind: str
    from_plan: str | None
    to_plan: str | None
    effective_date: date
    requested_at: datetime
    case_id: int | None


@runtime_checkable
class AccountBackend(Protocol):
    """The system of record for subscriptions (a billing API, or :class:`LocalAccountBackend`).

    ``current_plan`` is the plan **in effect now** — never a change that is only scheduled.
    ``record_change`` receives the transaction of the case; a backend that writes to the store
    uses it (so the change and its case commit together), an external one may ignore it and
    raise to abort the whole request. It also receives ``withdraw`` records (see
    :class:`PlanChangeRecord`).
    """

    def current_plan(self, visitor_id: str) -> str | None: ...

    def record_change(self, change: PlanChangeRecord, session: Session) -> None: ...


@runtime_checkable
class SchedulingBackend(Protocol):
    """Optional: a backend that can also say which change is scheduled. Without it, nothing is
    ever shown as pending (the backend's ``current_plan`` is all the service knows)."""

    def scheduled_change(self, visitor_id: str) -> ScheduledChange | None: ...


class LocalAccountBackend:
    """Plan changes kept in the ``plan_changes`` table of the store.

    The plan in effect on a day is the target of the record with the latest effective date on or
    before that day (the latest request first among records of the same date, so a replacement
    or a withdrawal overrides what it replaces); a visitor without any such record has
    ``default_plan``. The scheduled change is the latest record with a later effective date,
    unless that record is a withdrawal.
    """

    def __init__(self, db: Database, default_plan: str | None = None, clock: Clock = utcnow) -> None:
        self.db = db
        self.default_plan = default_plan
        self.clock = clock

    def _latest(self, s: Session, visitor_id: str, *, in_effect: bool) -> PlanChange | None:
        today = self.clock().date()
        stmt = select(PlanChange).where(PlanChange.visitor_id == visitor_id)
        stmt = stmt.where(PlanChange.effective_date <= today if in_effect else PlanChange.effective_date > today)
        stmt = stmt.order_by(
            PlanChange.effective_date.desc(), PlanChange.requested_at.desc(), PlanChange.id.desc()
        ).limit(1)
        return s.execute(stmt).scalar_one_or_none()

    def current_plan(self, visitor_id: str) -> str | None:
        with self.db.session() as s:
            latest = self._latest(s, visitor_id, in_effect=True)
            return self.default_plan if latest is None else latest.to_plan

    def scheduled_change(self, visitor_id: str) -> ScheduledChange | None:
        with self.db.session() as s:
            latest = self._latest(s, visitor_id, in_effect=False)
            if latest is None or latest.kind == WITHDRAW:
                return None
            return ScheduledChange(
                latest.kind,
                latest.from_plan,
                latest.to_plan,
                latest.effective_date,
                latest.requested_at,
                latest.case_id,
            )

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
class PlanChangeProposal:
    """What the customer is asked to confirm; computing it records nothing.

    :ivar kind: ``upgrade``/``downgrade``/``cancel``, or ``withdraw`` (take back ``pending``).
    :ivar from_plan: the plan in effect now. :ivar to_plan: the plan from ``effective_date``
        (``None``: no plan, a cancellation; for ``withdraw``: the plan in effect, kept).
    :ivar pending: the scheduled change this proposal replaces (or withdraws), if any.
    :ivar price_difference: new monthly price minus the current one (0 for ``withdraw``).
    """

    kind: str
    from_plan: str | None
    to_plan: str | None
    effective_date: date
    from_price: float
    to_price: float
    pending: ScheduledChange | None

    @property
    def price_difference(self) -> float:
        return self.to_price - self.from_price

    def as_slot(self) -> dict[str, Any]:
        """The proposal as a JSON-friendly dict (kept in a slot until the customer answers)."""
        return {
            "kind": self.kind,
            "from_plan": self.from_plan,
            "to_plan": self.to_plan,
            "effective_date": self.effective_date.isoformat(),
            "replaces": _pending_key(self.pending),
        }


def _pending_key(pending: ScheduledChange | None) -> list[Any] | None:
    if pending is None:
        return None
    return [pending.kind, pending.to_plan, pending.effective_date.isoformat()]


class AlreadyScheduled(PlanChangeError):
    """The change asked for is the one already scheduled: nothing to record, tell its status.

    :ivar pending: the scheduled change. :ivar current_plan: the plan in effect until then.
    :ivar case_number: the case of the scheduled change, if known.
    """

    def __init__(self, pending: ScheduledChange, current_plan: str | None, case_number: str | None) -> None:
        super().__init__(f"a {pending.kind} to {pending.to_plan!r} is already scheduled for {pending.effective_date}")
        self.pending = pending
        self.current_plan = current_plan
        self.case_number = case_number


class ProposalOutdated(PlanChangeError):
    """The account changed since the proposal was shown (another device, an agent, the effective
    date passed): nothing was recorded. :ivar proposal: the proposal as it stands now, or ``None``
    when there is nothing to propose any more."""

    def __init__(self, proposal: PlanChangeProposal | None) -> None:
        super().__init__("the proposal no longer matches the account")
        self.proposal = proposal


@dataclass(frozen=True)
class PlanChangeResult:
    """A recorded plan change and its case. There is deliberately no retention-offer field.

    ``from_plan`` stays in effect until ``effective_date``; for ``withdraw``, ``to_plan`` is the
    plan kept and the case is the one of the withdrawn change.
    """

    kind: str
    from_plan: str | None
    to_plan: str | None
    from_name: str | None
    to_name: str | None
    effective_date: date
    case: CaseView
    lang: str
    replaced: ScheduledChange | None = None

    @property
    def case_number(self) -> str:
        return self.case.number


@dataclass(frozen=True)
class PlanStatus:
    """The plan in effect and the change scheduled after it, if any."""

    current_plan: str | None
    pending: ScheduledChange | None


_DESCRIPTIONS = {
    "upgrade": "Plan change (upgrade): {from_plan} → {to_plan}, scheduled for {date} ({from_plan} until then)",
    "downgrade": "Plan change (downgrade): {from_plan} → {to_plan}, scheduled for {date} ({from_plan} until then)",
    "cancel": "Plan change (cancel): {from_plan} → none, scheduled for {date} ({from_plan} until then)",
}

_MESSAGES = {
    "en": "Your plan change ({kind}: {from_name} → {to_name}) is recorded as case {number}. It takes effect on "
    "{date}; you are on {from_name} until then.",
    "zh-Hans": "您的套餐变更（{kind}：{from_name} → {to_name}）已登记，工单号 {number}，{date} 起生效，"
    "在此之前仍为{from_name}。",
    "zh-Hant": "您的方案變更（{kind}：{from_name} → {to_name}）已登記，案件編號 {number}，{date} 起生效，"
    "在此之前仍為{from_name}。",
}
_WITHDRAWN_MESSAGES = {
    "en": "Your scheduled {kind} ({from_name} → {to_name}, case {number}) is withdrawn. You keep {from_name}.",
    "zh-Hans": "您预约的{kind}（{from_name} → {to_name}，工单号 {number}）已撤销，您继续使用{from_name}。",
    "zh-Hant": "您預約的{kind}（{from_name} → {to_name}，案件編號 {number}）已撤銷，您繼續使用{from_name}。",
}
KIND_NAMES = {
    "en": {"upgrade": "upgrade", "downgrade": "downgrade", "cancel": "cancellation", WITHDRAW: "withdrawal"},
    "zh-Hans": {"upgrade": "升级", "downgrade": "降级", "cancel": "取消", WITHDRAW: "撤销"},
    "zh-Hant": {"upgrade": "升級", "downgrade": "降級", "cancel": "取消", WITHDRAW: "撤銷"},
}
NO_PLAN = {"en": "no plan", "zh-Hans": "无套餐", "zh-Hant": "無方案"}


class PlanChangeService:
    """Proposes and records plan changes — every kind through the same two steps, with the same
    effective date.

    :param db: the store. :param config: business configuration (default: loaded).
    :param backend: the account backend (default: :class:`LocalAccountBackend` on the same clock).
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
        self.backend: AccountBackend = backend or LocalAccountBackend(
            db, self.catalogue.plans.default_current_plan, clock=clock
        )
        self.cases = cases or CaseService(db, self.config, clock=clock)
        self.clock = clock

    # -- reading -------------------------------------------------------------------------

    def current_plan(self, visitor_id: str) -> str | None:
        """The plan in effect now (a scheduled change is not)."""
        return self.backend.current_plan(visitor_id)

    def scheduled_change(self, visitor_id: str) -> ScheduledChange | None:
        """The recorded change that is not in effect yet, if the backend knows of one."""
        if isinstance(self.backend, SchedulingBackend):
            return self.backend.scheduled_change(visitor_id)
        return None

    def status(self, visitor_id: str) -> PlanStatus:
        """The plan in effect and the scheduled change, if any."""
        return PlanStatus(self.current_plan(visitor_id), self.scheduled_change(visitor_id))

    def case_number_of(self, pending: ScheduledChange | None) -> str | None:
        """The case number of a scheduled change (``None`` when it has no case)."""
        if pending is None or pending.case_id is None:
            return None
        view = self.cases.get_by_id(pending.case_id)
        return view.number if view else None

    # -- step 1: the proposal ------------------------------------------------------------

    def propose(self, visitor_id: str, target_plan: str | None, kind_hint: str | None = None) -> PlanChangeProposal:
        """What the request would change, for the customer to confirm. Writes nothing.

        :param target_plan: the plan the customer wants (id, name or alias in any script), or
            ``None`` to cancel.
        :param kind_hint: the intent's reading (``upgrade``/``downgrade``/``cancel``). It only
            decides two things: a missing target is asked for (upgrade/downgrade), and with
            ``cancel`` a named plan is read as the plan being left unless it is a cheaper one
            (the customer "cancels" Premium to get Basic) or the scheduled one (take it back).
            The kind proposed always comes from the ranks.
        :raises UnknownPlan: the target names no plan of the catalogue.
        :raises PlanTargetRequired: an upgrade/downgrade hint without a target.
        :raises AlreadyScheduled: exactly this change is already scheduled.
        :raises SamePlan: nothing would change and nothing is scheduled.
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
        pending = self.scheduled_change(visitor_id)
        if target is None and kind_hint in ("upgrade", "downgrade"):
            raise PlanTargetRequired(f"which plan should the {kind_hint} go to?", self._options(current, kind_hint))
        if kind_hint == "cancel" and target is not None:
            target = self._cancel_target(current, target, pending)
        if pending is not None and pending.to_plan == target:
            raise AlreadyScheduled(pending, current, self.case_number_of(pending))
        price = self.catalogue.price
        if pending is not None and target == current:
            # Back to the plan in effect: take the scheduled change back.
            return PlanChangeProposal(
                WITHDRAW, current, current, pending.effective_date, price(current), price(current), pending
            )
        kind = self.catalogue.kind(current, target)
        effective = effective_date(self.catalogue.plans.effective_rule, self.clock())
        return PlanChangeProposal(kind, current, target, effective, price(current), price(target), pending)

    def _cancel_target(self, current: str | None, named: str, pending: ScheduledChange | None) -> str | None:
        """With a cancellation request naming a plan: the plan the customer wants, or ``None``."""
        if pending is not None and named == pending.to_plan:
            return current  # "cancel the Basic I asked for": back to the plan in effect
        rank = self.catalogue.get(named).rank
        if current is not None and named != current and rank < self.catalogue.get(current).rank:
            return named  # "cancel Premium, Basic is enough": a downgrade, still confirmed first
        return None

    # -- step 2: the confirmation --------------------------------------------------------

    def confirm(
        self,
        visitor_id: str,
        proposal: PlanChangeProposal | dict[str, Any],
        lang: str = "en",
        *,
        conversation_id: str | None = None,
        phone: str | None = None,
        actor: str = "bot",
    ) -> PlanChangeResult:
        """Record the proposal the customer confirmed — exactly that one.

        The proposal is computed again; if it no longer matches what was shown (the account or the
        scheduled change moved meanwhile), nothing is recorded.

        :param proposal: the proposal, or its :meth:`PlanChangeProposal.as_slot` form.
        :raises ProposalOutdated: the account changed since the proposal was made.
        """
        shown = proposal.as_slot() if isinstance(proposal, PlanChangeProposal) else dict(proposal)
        if shown.get("kind") not in PROPOSAL_KINDS:
            raise PlanChangeError(f"not a plan change proposal: {shown!r}")
        try:
            fresh = self.propose(visitor_id, shown.get("to_plan"))
        except (AlreadyScheduled, SamePlan):
            raise ProposalOutdated(None) from None
        if fresh.as_slot() != shown:
            raise ProposalOutdated(fresh)
        return self._record(visitor_id, fresh, lang, conversation_id=conversation_id, phone=phone, actor=actor)

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
        """Propose and record in one call — for callers that have the customer's confirmation
        already (an agent acting on the customer's written request, imports, tests). The same
        path as :meth:`propose` then :meth:`confirm`; the bot never calls it."""
        proposal = self.propose(visitor_id, target_plan, kind_hint)
        return self._record(visitor_id, proposal, lang, conversation_id=conversation_id, phone=phone, actor=actor)

    def _record(
        self,
        visitor_id: str,
        proposal: PlanChangeProposal,
        lang: str,
        *,
        conversation_id: str | None,
        phone: str | None,
        actor: str,
    ) -> PlanChangeResult:
        lang = lang if lang in _MESSAGES else "en"
        if proposal.kind == WITHDRAW:
            return self._withdraw(visitor_id, proposal, lang, phone=phone, actor=actor)
        kind, current, target, effective = proposal.kind, proposal.from_plan, proposal.to_plan, proposal.effective_date
        now = self.clock()
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
            if proposal.pending is not None and proposal.pending.case_id is not None:
                self.cases.record_event(
                    proposal.pending.case_id,
                    "plan_change_replaced",
                    actor,
                    f"replaced by {case.number} ({kind} → {target or 'none'}) before it took effect",
                    session=s,
                )
            from_name = self.catalogue.name(current, lang)
            to_name = self.catalogue.name(target, lang)
            message = _MESSAGES[lang].format(
                kind=KIND_NAMES[lang][kind],
                from_name=from_name or NO_PLAN[lang],
                to_name=to_name or NO_PLAN[lang],
                number=case.number,
                date=effective.isoformat(),
            )
            self._notify(s, now, case, phone, visitor_id, lang, "plan_change_recorded", proposal, message)
            audit.record(
                s,
                actor,
                "plan_change",
                case.number,
                {
                    "visitor_id": visitor_id,
                    "kind": kind,
                    "from": current,
                    "to": target,
                    "effective": str(effective),
                    "replaces": _pending_key(proposal.pending),
                },
                at=now,
            )
        return PlanChangeResult(kind, current, target, from_name, to_name, effective, case, lang, proposal.pending)

    def _withdraw(
        self, visitor_id: str, proposal: PlanChangeProposal, lang: str, *, phone: str | None, actor: str
    ) -> PlanChangeResult:
        pending = proposal.pending
        if pending is None or pending.case_id is None:
            raise PlanChangeError("only a scheduled change with a case can be withdrawn")
        now = self.clock()
        current = proposal.from_plan
        case = self.cases.get_by_id(pending.case_id)
        if case is None:
            raise PlanChangeError(f"the case of the scheduled change ({pending.case_id}) is gone")
        with self.db.session() as s:
            record = PlanChangeRecord(
                visitor_id, pending.to_plan, current, WITHDRAW, now, pending.effective_date, pending.case_id
            )
            self.backend.record_change(record, s)
            self.cases.record_event(
                pending.case_id,
                "plan_change_withdrawn",
                actor,
                f"{pending.kind} → {pending.to_plan or 'none'} withdrawn by the customer before "
                f"{pending.effective_date.isoformat()}; keeps {current or 'none'}",
                session=s,
            )
            current_name = self.catalogue.name(current, lang)
            pending_name = self.catalogue.name(pending.to_plan, lang)
            message = _WITHDRAWN_MESSAGES[lang].format(
                kind=KIND_NAMES[lang][pending.kind],
                to_name=pending_name or NO_PLAN[lang],
                number=case.number,
                from_name=current_name or NO_PLAN[lang],
            )
            self._notify(s, now, case, phone, visitor_id, lang, "plan_change_withdrawn", proposal, message)
            audit.record(
                s,
                actor,
                "plan_change_withdrawn",
                case.number,
                {"visitor_id": visitor_id, "withdrawn": _pending_key(pending), "stays_on": current},
                at=now,
            )
        return PlanChangeResult(
            WITHDRAW, current, current, current_name, current_name, pending.effective_date, case, lang, pending
        )

    def _notify(
        self,
        s: Session,
        now: datetime,
        case: CaseView,
        phone: str | None,
        visitor_id: str,
        lang: str,
        event: str,
        proposal: PlanChangeProposal,
        message: str,
    ) -> None:
        channel, recipient = ("sms", phone) if phone else ("chat", visitor_id)
        Outbox(s, clock=lambda: now).add(
            channel=channel,
            recipient=recipient,
            case_id=case.id,
            payload={
                "event": event,
                "case_number": case.number,
                "kind": proposal.kind,
                "from_plan": proposal.from_plan,
                "to_plan": proposal.to_plan,
                "effective_date": proposal.effective_date.isoformat(),
                "queue": case.queue,
                "queue_display": case.queue_display,
                "specialist": case.queue_display,
                "expected_by": case.first_response_due_at.isoformat() if case.first_response_due_at else None,
                "lang": lang,
                "message": message,
            },
        )

    def _options(self, current: str | None, direction: str) -> tuple[str, ...]:
        plans = self.catalogue.ordered()
        if current is None:
            return tuple(p.id for p in plans)
        rank = self.catalogue.get(current).rank
        if direction == "upgrade":
            return tuple(p.id for p in plans if p.rank > rank)
        return tuple(p.id for p in reversed(plans) if p.rank < rank)


def case_plan_change(session: Session, case_id: int, today: date) -> dict[str, Any] | None:
    """The plan change of a ``plan_change`` case as the agent console shows it, with its state
    *today*: ``pending`` (scheduled, not in effect), ``in_effect``, ``withdrawn`` or ``replaced``
    (another record for the same date came later). ``None`` when the local backend has no record
    for the case (an external backend keeps its own)."""
    rows = list(
        session.execute(
            select(PlanChange).where(PlanChange.case_id == case_id).order_by(PlanChange.requested_at, PlanChange.id)
        ).scalars()
    )
    change = next((r for r in rows if r.kind != WITHDRAW), None)
    if change is None:
        return None
    later = session.execute(
        select(PlanChange)
        .where(
            PlanChange.visitor_id == change.visitor_id,
            PlanChange.effective_date == change.effective_date,
            PlanChange.id != change.id,
            PlanChange.requested_at >= change.requested_at,
        )
        .order_by(PlanChange.requested_at, PlanChange.id)
    ).scalars()
    overriding = next((r for r in later if r.id > change.id or r.requested_at > change.requested_at), None)
    if overriding is not None:
        state = "withdrawn" if overriding.kind == WITHDRAW else "replaced"
    else:
        state = "in_effect" if change.effective_date <= today else "pending"
    replaced_by = None
    if overriding is not None and overriding.kind != WITHDRAW and overriding.case_id is not None:
        replaced_by = session.execute(select(Case.number).where(Case.id == overriding.case_id)).scalar_one_or_none()
    return {
        "kind": change.kind,
        "from_plan": change.from_plan,
        "to_plan": change.to_plan,
        "effective_date": change.effective_date.isoformat(),
        "state": state,
        "replaced_by": replaced_by,
    }


__all__ = [
    "KINDS",
    "KIND_NAMES",
    "NO_PLAN",
    "PROPOSAL_KINDS",
    "WITHDRAW",
    "AccountBackend",
    "AlreadyScheduled",
    "LocalAccountBackend",
    "PlanCatalogue",
    "PlanChangeError",
    "PlanChangeProposal",
    "PlanChangeRecord",
    "PlanChangeResult",
    "PlanChangeService",
    "PlanStatus",
    "PlanTargetRequired",
    "ProposalOutdated",
    "SamePlan",
    "ScheduledChange",
    "SchedulingBackend",
    "UnknownPlan",
    "case_plan_change",
    "effective_date",
    "is_how_to_question",
]
