"""Property and stateful tests of the handoff guard against adversarial brains (P1, P2).

A tiny driver plays the hub: for every customer message it loads the persisted state (through
JSON, as the store does), calls ``before_turn``; if allowed, the brain answers and the driver
reloads the state and calls ``after_turn``; every decision's state is persisted. Two messages
may also arrive at once (both pass ``before_turn`` before either ``after_turn`` runs), and an
agent may hand the conversation back. :func:`check_log` is the oracle: it knows nothing of the
guard's state and judges only what the customer would have seen.

Properties, for every N in 1..6:

(a) between two hand-backs the bot delivers answers to at most N unresolved turns, and once
    the brain has handled N unresolved turns no further message is allowed;
(b) no reply is delivered after a handoff until a hand-back, nor with the handoff itself;
(c) no reply text (normalised) is delivered twice in a conversation;
(d) once handed off, every later ``before_turn`` refuses until a hand-back;
(e) between two hand-backs, at most N + ``max_small_talk_turns`` turns in a row are handled
    without real progress (a turn an action resolved), and a message reporting danger is never
    let through to the brain.

"Unresolved" is judged by the oracle's own statement of the rule in ``docs/guard.md``
(:class:`ResolutionRule`), not by the guard's state, and never by the brain's word alone: a brain
that answers everything as small talk, or claims every turn resolved, is among the adversaries.

The last tests show the oracle is not vacuous: deliberately broken guards are caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bot.guard import (
    ACTION_REQUEST,
    ERROR_KINDS,
    REASONS,
    Decision,
    GuardConfig,
    GuardState,
    HandoffGuard,
    TurnOutcome,
    normalize_reply,
)
from bot.signals import read_signals

# ---- the simulated hub ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    text: str
    outcome: TurnOutcome  # what the brain will answer if it is asked


@dataclass(frozen=True)
class Pair:
    """Two messages of the same customer processed concurrently."""

    first: Message
    second: Message


@dataclass(frozen=True)
class HandBack:
    """An agent hands the conversation back to the bot (ignored unless it is handed off)."""


Event = Message | Pair | HandBack


@dataclass(frozen=True)
class Step:
    kind: Literal["before", "after", "hand_back"]
    decision: Decision | None = None
    outcome: TurnOutcome | None = None
    text: str | None = None


class Driver:
    """The hub's use of the guard, with a JSON column standing in for ``conversations.guard_state``."""

    def __init__(self, guard: HandoffGuard) -> None:
        self.guard = guard
        self.stored: str = json.dumps(GuardState().to_json())
        self.log: list[Step] = []

    def load(self) -> GuardState:
        return GuardState.from_json(json.loads(self.stored))

    def save(self, state: GuardState) -> None:
        self.stored = json.dumps(state.to_json())

    def before(self, text: str) -> bool:
        d = self.guard.before_turn(self.load(), text)
        self.save(d.state)
        self.log.append(Step("before", d, text=text))
        return not d.handoff

    def after(self, outcome: TurnOutcome) -> None:
        d = self.guard.after_turn(self.load(), outcome)  # reloaded: the state may have changed meanwhile
        self.save(d.state)
        self.log.append(Step("after", d, outcome))

    def message(self, m: Message) -> None:
        if self.before(m.text):
            self.after(m.outcome)

    def pair(self, p: Pair) -> None:
        first, second = self.before(p.first.text), self.before(p.second.text)
        if first:
            self.after(p.first.outcome)
        if second:
            self.after(p.second.outcome)

    def hand_back(self) -> None:
        state = self.load()
        if state.handed_off:  # the hub only accepts a hand-back of a conversation a human holds
            self.save(self.guard.hand_back(state))
            self.log.append(Step("hand_back"))

    def run(self, events: list[Event]) -> list[Step]:
        for event in events:
            if isinstance(event, Message):
                self.message(event)
            elif isinstance(event, Pair):
                self.pair(event)
            else:
                self.hand_back()
        return self.log


def drive(guard: HandoffGuard, events: list[Event]) -> list[Step]:
    return Driver(guard).run(events)


# ---- the oracle ------------------------------------------------------------------------------------


SMALL_TALK = frozenset({"greet", "goodbye", "thank", "bot_challenge"})
ANSWERS = frozenset({"affirm", "deny"})
FALLBACKS = frozenset({"nlu_fallback", "out_of_scope"})
SMALL_TALK_CAP = GuardConfig().max_small_talk_turns


class ResolutionRule:
    """The oracle's statement of "resolved means resolved" (docs/guard.md), turn by turn."""

    def __init__(self) -> None:
        self.prev_intent: str | None = None
        self.prev_claim = False
        self.small_talk = 0

    def judge(self, o: TurnOutcome) -> tuple[bool, bool]:
        """(resolved, real progress: resolved by an action) for the next handled turn."""
        claim = o.error is None and o.resolved
        intent = o.intent or ""
        if not claim or intent in FALLBACKS or (self.prev_claim and intent == self.prev_intent):
            ok = False
        elif intent in ANSWERS:
            ok = self.prev_intent is not None and not self.prev_claim and self.prev_intent not in FALLBACKS
        elif intent in SMALL_TALK:
            ok = self.small_talk < SMALL_TALK_CAP
        else:
            ok = True
        progress = ok and intent not in SMALL_TALK
        if progress:
            self.small_talk = 0
        elif ok:
            self.small_talk += 1
        self.prev_intent, self.prev_claim = intent, claim
        return ok, progress


def check_log(log: list[Step], n: int) -> list[str]:
    """Every violation of properties (a)–(e) in a driver log, as readable strings (empty: all good)."""
    problems: list[str] = []
    handed = False
    brain_unresolved = 0  # unresolved turns the guard let the brain handle since the last hand-back
    answered_unresolved = 0  # unresolved turns whose replies reached the customer, same span
    idle = 0  # turns handled in a row without real progress, same span
    rule = ResolutionRule()
    delivered: set[str] = set()
    for i, step in enumerate(log):
        if step.kind == "hand_back":
            handed, brain_unresolved, answered_unresolved, idle = False, 0, 0, 0
            rule = ResolutionRule()
            continue
        d = step.decision
        assert d is not None
        confirms_action = (
            d.new_handoff and d.reason == ACTION_REQUEST and step.outcome is not None and step.outcome.resolved
        )
        if d.handoff and d.deliver and not confirms_action:
            problems.append(f"(b) step {i}: delivered {d.deliver!r} together with a handoff")
        if d.handoff and d.new_handoff and d.reason not in REASONS:
            problems.append(f"step {i}: unknown handoff reason {d.reason!r}")
        if step.kind == "before":
            if d.deliver:
                problems.append(f"step {i}: before_turn delivered {d.deliver!r}")
            if handed and not d.handoff:
                problems.append(f"(d) step {i}: before_turn allowed a message after a handoff")
            if brain_unresolved >= n and not d.handoff:
                problems.append(f"(a) step {i}: message allowed after {brain_unresolved} unresolved turns (N={n})")
            if not d.handoff and step.text is not None and read_signals(step.text).danger is not None:
                problems.append(f"(e) step {i}: a message reporting danger went to the brain")
        else:
            outcome = step.outcome
            assert outcome is not None
            if d.deliver and handed:
                problems.append(f"(b) step {i}: delivered {d.deliver!r} after a handoff")
            is_unresolved = True
            if not handed:
                ok, progress = rule.judge(outcome)
                is_unresolved = not ok
                idle = 0 if progress else idle + 1
                if idle > n + SMALL_TALK_CAP:
                    problems.append(f"(e) step {i}: {idle} turns in a row without progress (N={n})")
            if not handed and is_unresolved:
                brain_unresolved += 1
            if d.deliver and is_unresolved:
                answered_unresolved += 1
                if answered_unresolved > n:
                    problems.append(f"(a) step {i}: {answered_unresolved} unresolved turns answered (N={n})")
            for text in d.deliver:
                if text not in outcome.replies:
                    problems.append(f"step {i}: delivered {text!r}, which the brain did not say")
                key = normalize_reply(text)
                if key in delivered:
                    problems.append(f"(c) step {i}: {text!r} delivered a second time")
                delivered.add(key)
        if d.handoff:
            handed = True
    return problems


# ---- adversarial brains ------------------------------------------------------------------------------

INTENTS = [
    "greet", "goodbye", "thank", "affirm", "deny", "request_human", "complaint_service", "complaint_billing",
    "complaint_privacy", "downgrade_plan", "upgrade_plan", "cancel_subscription", "request_refund",
    "check_case_status", "express_frustration", "bot_challenge", "out_of_scope", "inform", "reopen_case",
    "nlu_fallback",
]
CALM_INTENTS = [i for i in INTENTS if i not in {"request_human", "express_frustration"}]
REPLY_POOL = [
    "Sorry, I didn't get that.", "sorry,  i didn't get that. ", "Which plan would you like?",
    "Have you seen our Premium plan? It has more data!", "Your case HL-20260101-0001 is being verified.",
    "您好！请问有什么可以帮您？", "您好！請問有什麼可以幫您？", "", "  ",
]
NEUTRAL_TEXTS = [
    "hi", "my bill is wrong", "I want to downgrade", "refund please", "我要降级套餐", "我要退款",
    "status of HL-20260101-0001", "ok", "", "the agent hung up on me", "你是人工智能吗",
]
TRIGGER_TEXTS = [
    "agent", "转人工", "真人客服", "I want to talk to a human", "轉人工", "representative", "is anyone there?", "人呢",
    "😤😤", "useless bot", "垃圾", "he is stalking me", "我不想活了", "我阿媽暈低咗",
]

texts = st.one_of(st.sampled_from(NEUTRAL_TEXTS), st.sampled_from(TRIGGER_TEXTS), st.text(max_size=30))
confidences = st.one_of(st.none(), st.floats(0, 1))
reply_texts = st.one_of(st.sampled_from(REPLY_POOL), st.text(max_size=40))

looping_brain = st.builds(
    TurnOutcome,
    intent=st.sampled_from(CALM_INTENTS),
    confidence=confidences,
    replies=st.just(("Have you seen our Premium plan? It has more data!",)),
    resolved=st.booleans(),
)
random_brain = st.builds(
    TurnOutcome,
    intent=st.one_of(st.none(), st.sampled_from(INTENTS), st.text(max_size=12)),
    confidence=confidences,
    replies=st.lists(reply_texts, max_size=3).map(tuple),
    resolved=st.booleans(),
    handoff_requested=st.booleans(),
    handoff_queue=st.one_of(st.none(), st.sampled_from(["finance_compliance", "account_services"])),
)
raising_brain = st.builds(
    TurnOutcome,
    intent=st.one_of(st.none(), st.sampled_from(INTENTS)),
    confidence=confidences,
    replies=st.lists(reply_texts, max_size=2).map(tuple),
    resolved=st.booleans(),
    error=st.sampled_from([e for e in ERROR_KINDS if e != "timeout"]),
)
hanging_brain = st.builds(TurnOutcome.failed, st.just("timeout"))
# Never repeats itself, always sounds helpful, never resolves: only the budget stops it.
_fresh = iter(range(10**12))
stalling_brain = st.builds(
    lambda intent: TurnOutcome(intent, 0.99, (f"Let me check that for you ({next(_fresh)}).",), resolved=False),
    st.sampled_from(["complaint_billing", "downgrade_plan", "cancel_subscription", "request_refund", "inform"]),
)
# Answers everything as small talk or as an acknowledgement and claims every turn resolved, with a
# fresh reply each time: the repeated-reply rule never fires, only the resolution rule stops it.
small_talk_brain = st.builds(
    lambda intent: TurnOutcome(intent, 0.99, (f"You're welcome! Anything else? ({next(_fresh)})",), resolved=True),
    st.sampled_from(["greet", "thank", "goodbye", "bot_challenge", "affirm", "deny"]),
)
# Claims every turn resolved, whatever the intent.
claiming_brain = st.builds(
    lambda intent: TurnOutcome(intent, 0.99, (f"Done! ({next(_fresh)})",), resolved=True),
    st.one_of(st.none(), st.sampled_from(INTENTS)),
)
BRAINS: dict[str, st.SearchStrategy[TurnOutcome]] = {
    "looping": looping_brain,
    "small_talk": small_talk_brain,
    "claiming": claiming_brain,
    "random": random_brain,
    "raising": raising_brain,
    "hanging": hanging_brain,
    "stalling": stalling_brain,
    "mixture": st.one_of(
        looping_brain, random_brain, raising_brain, hanging_brain, stalling_brain, small_talk_brain, claiming_brain
    ),
}


def events_for(brain: st.SearchStrategy[TurnOutcome]) -> st.SearchStrategy[list[Event]]:
    message = st.builds(Message, texts, brain)
    event: st.SearchStrategy[Event] = st.one_of(
        message, message, message, message, message, st.builds(Pair, message, message), st.just(HandBack())
    )
    return st.lists(event, max_size=40)


EVENTS = {kind: events_for(brain) for kind, brain in BRAINS.items()}  # built once: strategies cache their analysis


GuardFactory = Callable[[GuardConfig], HandoffGuard]


def conversation_property(factory: GuardFactory, **overrides: object) -> Callable[[], None]:
    """Properties (a)–(d) over random N, brains and event sequences, for guards made by ``factory``."""

    options: dict[str, object] = {
        "max_examples": 200, "deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow],
    }
    options.update(overrides)

    @settings(**options)  # type: ignore[arg-type]
    @given(n=st.integers(1, 6), kind=st.sampled_from(sorted(BRAINS)), data=st.data())
    def prop(n: int, kind: str, data: st.DataObject) -> None:
        events = data.draw(EVENTS[kind], label="events")
        log = drive(factory(GuardConfig(max_unresolved_turns=n)), events)
        problems = check_log(log, n)
        assert not problems, problems

    return prop


# ---- the properties ---------------------------------------------------------------------------------


def test_properties_hold_for_every_brain() -> None:
    conversation_property(HandoffGuard)()


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 6), turns=st.integers(1, 30))
def test_a_stalling_brain_gets_exactly_n_minus_1_answers(n: int, turns: int) -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=n))
    driver = Driver(guard)
    for i in range(turns):
        driver.message(Message(f"message {i}", TurnOutcome(f"intent_{i}", 0.9, (f"reply {i}",), False)))
    answered = [s for s in driver.log if s.kind == "after" and s.decision and s.decision.deliver]
    assert len(answered) == min(turns, n - 1)
    if turns >= n:
        handoffs = [s.decision for s in driver.log if s.decision and s.decision.new_handoff]
        assert [d.reason for d in handoffs] == ["turn_budget"]
    assert check_log(driver.log, n) == []


def _new_requests(outcomes: list[TurnOutcome]) -> list[TurnOutcome]:
    """Drop an outcome whose intent repeats the previous one (a re-ask is not a new request), and
    small talk after ``SMALL_TALK_CAP`` small-talk turns in a row."""
    out: list[TurnOutcome] = []
    small = 0
    for o in outcomes:
        if out and out[-1].intent == o.intent:
            continue
        if o.intent in SMALL_TALK:
            if small >= SMALL_TALK_CAP:
                continue
            small += 1
        else:
            small = 0
        out.append(o)
    return out


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 6),
    outcomes=st.lists(
        st.builds(
            TurnOutcome,
            intent=st.sampled_from(
                ["greet", "thank", "check_case_status", "downgrade_plan", "inform", "request_refund"]
            ),
            confidence=confidences,
            replies=st.lists(st.uuids().map(str), min_size=1, max_size=3).map(tuple),
            resolved=st.just(True),
        ),
        max_size=30,
    ).map(_new_requests),
)
def test_a_resolving_brain_is_never_interrupted(n: int, outcomes: list[TurnOutcome]) -> None:
    """Liveness: the guard is not a guard that simply always hands off. Every turn resolves a new
    request, or is small talk within its cap."""
    driver = Driver(HandoffGuard(GuardConfig(max_unresolved_turns=n)))
    for i, outcome in enumerate(outcomes):
        driver.message(Message(["hi", "my bill", "我要降级", "status?"][i % 4], outcome))
    decisions = [s.decision for s in driver.log if s.decision is not None]
    assert not any(d.handoff for d in decisions)
    assert [s.decision.deliver for s in driver.log if s.kind == "after" and s.decision] == [o.replies for o in outcomes]


@settings(max_examples=200, deadline=None)
@given(
    state=st.builds(
        GuardState,
        unresolved_turns=st.integers(0, 100),
        fallbacks=st.integers(0, 10),
        unresolved_intents=st.lists(st.text(max_size=20), max_size=5).map(tuple),
        sent_replies=st.lists(st.text(max_size=50), max_size=10).map(tuple),
        handed_off=st.booleans(),
        handoff_reason=st.one_of(st.none(), st.sampled_from(REASONS)),
        last_intent=st.one_of(st.none(), st.text(max_size=20)),
        last_resolved=st.booleans(),
        small_talk_turns=st.integers(0, 10),
    ),
)
def test_state_survives_the_json_column(state: GuardState) -> None:
    assert GuardState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert GuardState.from_json(json.dumps(state.to_json())) == state


class Conversation(RuleBasedStateMachine):
    """The same properties, explored step by step, with an invariant checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 3
        self.brain: st.SearchStrategy[TurnOutcome] = random_brain
        self.driver = Driver(HandoffGuard())

    @initialize(n=st.integers(1, 6), kind=st.sampled_from(sorted(BRAINS)))
    def start(self, n: int, kind: str) -> None:
        self.n = n
        self.brain = BRAINS[kind]
        self.driver = Driver(HandoffGuard(GuardConfig(max_unresolved_turns=n)))

    @rule(text=texts, data=st.data())
    def customer_writes(self, text: str, data: st.DataObject) -> None:
        self.driver.message(Message(text, data.draw(self.brain)))

    @rule(first=texts, second=texts, data=st.data())
    def customer_writes_twice_at_once(self, first: str, second: str, data: st.DataObject) -> None:
        self.driver.pair(Pair(Message(first, data.draw(self.brain)), Message(second, data.draw(self.brain))))

    @rule()
    def agent_hands_back(self) -> None:
        self.driver.hand_back()

    @invariant()
    def promises_hold(self) -> None:
        problems = check_log(self.driver.log, self.n)
        assert not problems, problems

    @invariant()
    def handed_off_state_refuses(self) -> None:
        state = self.driver.load()
        if state.handed_off:
            d = self.driver.guard.before_turn(state, "hello?")
            assert d.handoff and d.deliver == () and not d.new_handoff and d.state == state


Conversation.TestCase.settings = settings(max_examples=75, stateful_step_count=30, deadline=None)
TestConversation = Conversation.TestCase


# ---- the oracle catches broken guards --------------------------------------------------------------


class IgnoresBudget(HandoffGuard):
    """Claims the configured N but really allows a million unresolved turns."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        super().__init__(replace(config or GuardConfig(), max_unresolved_turns=10**6))


class ForgetsHandoffBeforeTurn(HandoffGuard):
    """Lets a message through to the brain although the conversation is handed off."""

    def before_turn(self, state: GuardState, text: str) -> Decision:
        if state.handed_off:
            return Decision(deliver=(), handoff=False, reason=None, state=state)
        return super().before_turn(state, text)


class SpeaksAfterHandoff(HandoffGuard):
    """Checks P2 only before the brain call: a reply generated meanwhile still goes out."""

    def after_turn(self, state: GuardState, outcome: TurnOutcome) -> Decision:
        if state.handed_off:
            return Decision(deliver=outcome.replies, handoff=False, reason=None, state=state)
        return super().after_turn(state, outcome)


class SpeaksWhileHandingOff(HandoffGuard):
    """Delivers the turn's replies together with the handoff."""

    def after_turn(self, state: GuardState, outcome: TurnOutcome) -> Decision:
        d = super().after_turn(state, outcome)
        return replace(d, deliver=outcome.replies) if d.new_handoff else d


class TrustsTheBrain(HandoffGuard):
    """Counts a turn resolved whenever the brain says so (the old rule: canned acknowledgements and
    endless small talk keep the customer with the bot)."""

    def resolves(self, state: GuardState, outcome: TurnOutcome) -> bool:
        return outcome.error is None and outcome.resolved


class IgnoresDanger(HandoffGuard):
    """Reads no signals: danger goes to the brain like any other message."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        super().__init__(replace(config or GuardConfig(), signals=False))


class ForgetsSentReplies(HandoffGuard):
    """Does not remember what it sent: canned loops go through."""

    def after_turn(self, state: GuardState, outcome: TurnOutcome) -> Decision:
        d = super().after_turn(replace(state, sent_replies=()), outcome)
        return replace(d, state=replace(d.state, sent_replies=()))


def _unresolved(i: int) -> TurnOutcome:
    return TurnOutcome(f"intent_{i}", 0.9, (f"reply {i}",), resolved=False)


LOOP = TurnOutcome("downgrade_plan", 0.9, ("Have you seen our Premium plan?",), resolved=True)
ANGRY = TurnOutcome("express_frustration", 0.9, ("I understand.",), resolved=False)

BROKEN: list[tuple[GuardFactory, str, list[Event]]] = [
    (IgnoresBudget, "(a)", [Message(f"m{i}", _unresolved(i)) for i in range(5)]),
    (ForgetsHandoffBeforeTurn, "(d)", [Message("m0", _unresolved(0))] * 4),
    (SpeaksAfterHandoff, "(b)", [Pair(Message("so?", ANGRY), Message("hello?", LOOP))]),
    (SpeaksWhileHandingOff, "(b)", [Message(f"m{i}", _unresolved(i)) for i in range(5)]),
    (ForgetsSentReplies, "(c)", [Message("downgrade", LOOP), Message("downgrade!", LOOP)]),
    (TrustsTheBrain, "(a)", [Message(f"m{i}", TurnOutcome("thank", 0.9, (f"welcome {i}",), True)) for i in range(8)]),
    (IgnoresDanger, "(e)", [Message("he is stalking me", _unresolved(0))]),
]


@pytest.mark.parametrize(("factory", "prop", "events"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_check_log_catches_a_broken_guard(factory: GuardFactory, prop: str, events: list[Event]) -> None:
    n = 2
    assert check_log(drive(HandoffGuard(GuardConfig(max_unresolved_turns=n)), events), n) == []
    problems = check_log(drive(factory(GuardConfig(max_unresolved_turns=n)), events), n)
    assert any(p.startswith(prop) for p in problems), problems


@pytest.mark.parametrize("factory", [b[0] for b in BROKEN], ids=lambda v: v.__name__)
def test_the_property_search_finds_a_broken_guard(factory: GuardFactory) -> None:
    with pytest.raises(AssertionError):
        # no shrinking: finding the bug is the point, not its smallest example. Derandomised: a
        # random search of 500 examples missed IgnoresBudget once in a full run; a fixed search
        # that finds every broken guard cannot pass one day and fail the next.
        conversation_property(
            factory, max_examples=500, phases=[Phase.generate], report_multiple_bugs=False, derandomize=True
        )()
