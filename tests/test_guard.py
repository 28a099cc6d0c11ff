"""Example-based tests of the handoff guard (bot/guard.py): every rule, every reason, the state."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bot.guard import (
    ACTION_REQUEST,
    BRAIN_ERROR,
    CUSTOMER_REQUEST,
    DANGER,
    FRUSTRATION,
    REASONS,
    REPEATED_FALLBACK,
    REPEATED_REPLY,
    REPEATED_REQUEST,
    TIMEOUT,
    TURN_BUDGET,
    Decision,
    GuardConfig,
    GuardState,
    HandoffGuard,
    TurnOutcome,
    asks_for_human,
    normalize_reply,
    turn_resolves,
)

_counter = iter(range(10**9))


def unresolved(intent: str | None = None, *replies: str, **kw: object) -> TurnOutcome:
    """An unresolved turn with a fresh intent and a fresh reply unless given."""
    n = next(_counter)
    return TurnOutcome(
        intent=intent or f"intent_{n}",
        confidence=0.9,
        replies=replies or (f"unresolved reply {n}",),
        resolved=False,
        **kw,  # type: ignore[arg-type]
    )


def resolved(intent: str = "check_case_status", *replies: str, **kw: object) -> TurnOutcome:
    n = next(_counter)
    return TurnOutcome(
        intent=intent, confidence=0.95, replies=replies or (f"resolved reply {n}",), resolved=True, **kw  # type: ignore[arg-type]
    )


def turn(guard: HandoffGuard, state: GuardState, text: str, outcome: TurnOutcome) -> Decision:
    """One customer message, as the hub does it: before_turn, then (if allowed) after_turn."""
    before = guard.before_turn(state, text)
    if before.handoff:
        return before
    assert before.deliver == () and before.reason is None and before.state == state
    return guard.after_turn(before.state, outcome)


def assert_handoff(d: Decision, reason: str, *, new: bool = True) -> None:
    assert d.handoff is True
    assert d.deliver == ()
    assert d.reason == reason
    assert d.new_handoff is new
    assert d.state.handed_off is True
    assert d.state.handoff_reason == reason


def assert_delivers(d: Decision, outcome: TurnOutcome) -> None:
    assert d.handoff is False
    assert d.reason is None
    assert d.new_handoff is False
    assert d.deliver == outcome.replies
    assert d.state.handed_off is False


# ---- configuration and values -----------------------------------------------------------------


def test_defaults_match_the_architecture() -> None:
    cfg = GuardConfig()
    assert cfg.max_unresolved_turns == 3
    assert cfg.brain_timeout_s == 3.0
    state = GuardState()
    assert (state.unresolved_turns, state.fallbacks, state.unresolved_intents, state.sent_replies) == (0, 0, (), ())
    assert state.handed_off is False
    assert set(REASONS) == {
        "danger", "customer_request", "frustration", "repeated_request", "repeated_fallback", "repeated_reply",
        "turn_budget", "brain_error", "timeout", "action_request",
    }
    assert HandoffGuard().config == GuardConfig()


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "3"])
def test_config_rejects_a_bad_budget(n: object) -> None:
    with pytest.raises(ValueError):
        GuardConfig(max_unresolved_turns=n)  # type: ignore[arg-type]


@pytest.mark.parametrize("t", [0, -1.0, float("inf"), float("nan")])
def test_config_rejects_a_bad_timeout(t: float) -> None:
    with pytest.raises(ValueError):
        GuardConfig(brain_timeout_s=t)


def test_config_takes_any_collection_of_intents() -> None:
    cfg = GuardConfig(repeatable_intents={"inform"})  # type: ignore[arg-type]
    assert cfg.repeatable_intents == frozenset({"inform"})
    with pytest.raises(ValueError):
        GuardConfig(fallback_intents="nlu_fallback")  # type: ignore[arg-type]


def test_values_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GuardState().handed_off = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        GuardConfig().max_unresolved_turns = 9  # type: ignore[misc]


def test_outcome_accepts_a_list_or_a_single_string() -> None:
    assert TurnOutcome("greet", 1.0, ["a", "b"], True).replies == ("a", "b")  # type: ignore[arg-type]
    assert TurnOutcome("greet", 1.0, "hello", True).replies == ("hello",)  # type: ignore[arg-type]
    failed = TurnOutcome.failed("timeout")
    assert failed.error == "timeout" and failed.resolved is False and failed.replies == ()


# ---- the turn budget --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_the_nth_unresolved_turn_hands_off_and_turn_n_plus_1_is_refused(n: int) -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=n))
    state = GuardState()
    for i in range(1, n):
        outcome = unresolved()
        d = turn(guard, state, f"message {i}", outcome)
        assert_delivers(d, outcome)
        assert d.state.unresolved_turns == i
        state = d.state
    last = unresolved()
    d = turn(guard, state, f"message {n}", last)
    assert_handoff(d, TURN_BUDGET)
    assert d.withheld == last.replies
    assert d.state.unresolved_turns == n
    refused = guard.before_turn(d.state, f"message {n + 1}")
    assert_handoff(refused, TURN_BUDGET, new=False)
    assert refused.state == d.state


def test_n_equals_1_hands_off_on_the_first_unresolved_turn() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=1))
    state = GuardState()
    hello = resolved("greet", "Hello! How can I help?")
    d = turn(guard, state, "hi", hello)
    assert_delivers(d, hello)
    d = turn(guard, d.state, "my bill is wrong", unresolved("complaint_billing"))
    assert_handoff(d, TURN_BUDGET)


def test_n_equals_5_allows_four_unresolved_answers_between_resolved_ones() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=5))
    state = GuardState()
    answered = 0
    for i in range(20):
        outcome = resolved() if i % 2 else unresolved()
        d = turn(guard, state, f"m{i}", outcome)
        state = d.state
        if d.handoff:
            break
        answered += not outcome.resolved
    assert answered == 4
    assert_handoff(d, TURN_BUDGET)
    assert state.unresolved_turns == 5


def test_resolved_turns_do_not_consume_the_budget() -> None:
    guard = HandoffGuard()
    state = GuardState()
    for i in range(30):
        intent = ("check_case_status", "complaint_billing", "downgrade_plan")[i % 3]
        outcome = resolved(intent, f"Case HL-20260101-{i:04d} is being verified.")
        d = turn(guard, state, "status?", outcome)
        assert_delivers(d, outcome)
        state = d.state
    assert state.unresolved_turns == 0


def test_small_talk_counts_as_resolved_only_when_the_brain_says_so() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=2))
    d = turn(guard, GuardState(), "hi", TurnOutcome("greet", 0.99, ("Hi there!",), resolved=True))
    assert d.state.unresolved_turns == 0
    d = turn(guard, d.state, "hello", TurnOutcome("greet", 0.99, ("Hello again!",), resolved=False))
    assert d.state.unresolved_turns == 1 and not d.handoff


def test_before_turn_refuses_a_state_whose_budget_is_already_spent() -> None:
    """A state written under a larger N, loaded by a guard with a smaller one."""
    state = GuardState(unresolved_turns=3)
    assert_handoff(HandoffGuard(GuardConfig(max_unresolved_turns=3)).before_turn(state, "hello"), TURN_BUDGET)
    assert not HandoffGuard(GuardConfig(max_unresolved_turns=4)).before_turn(state, "hello").handoff
    assert_handoff(HandoffGuard().before_turn(GuardState(fallbacks=2), "hello"), REPEATED_FALLBACK)


# ---- immediate handoffs -----------------------------------------------------------------------


@pytest.mark.parametrize("is_resolved", [False, True])
def test_request_human_intent_hands_off_whatever_the_resolved_flag(is_resolved: bool) -> None:
    outcome = TurnOutcome("request_human", 0.6, ("Let me see what I can do first!",), resolved=is_resolved)
    d = HandoffGuard().after_turn(GuardState(), outcome)
    assert_handoff(d, CUSTOMER_REQUEST)
    assert d.withheld == outcome.replies


def test_frustration_hands_off() -> None:
    d = HandoffGuard().after_turn(GuardState(), TurnOutcome("express_frustration", 0.8, ("I hear you.",), True))
    assert_handoff(d, FRUSTRATION)


def test_an_action_handoff_request_hands_off_with_its_queue() -> None:
    outcome = TurnOutcome(
        "request_refund", 0.9, ("Passing you to finance.",), resolved=True,
        handoff_requested=True, handoff_queue="finance_compliance",
    )
    d = HandoffGuard().after_turn(GuardState(), outcome)
    assert d.handoff and d.new_handoff and d.reason == ACTION_REQUEST
    assert d.state.handed_off and d.state.handoff_reason == ACTION_REQUEST
    assert d.queue == "finance_compliance"
    # the completed action's confirmation (the case number) goes out with the handoff, once
    assert d.deliver == ("Passing you to finance.",)
    assert normalize_reply("Passing you to finance.") in d.state.sent_replies


def test_an_unresolved_or_repeated_action_handoff_delivers_nothing() -> None:
    failed = TurnOutcome("request_refund", 0.9, ("Something went wrong.",), resolved=False, handoff_requested=True)
    assert_handoff(HandoffGuard().after_turn(GuardState(), failed), ACTION_REQUEST)
    repeated = dataclasses.replace(failed, resolved=True)
    sent = GuardState(sent_replies=(normalize_reply("Something went wrong."),))
    assert_handoff(HandoffGuard().after_turn(sent, repeated), ACTION_REQUEST)


def test_request_human_with_action_handoff_reports_the_customer_request() -> None:
    outcome = TurnOutcome("request_human", 0.97, (), resolved=False, handoff_requested=True, handoff_queue="q")
    d = HandoffGuard().after_turn(GuardState(), outcome)
    assert_handoff(d, CUSTOMER_REQUEST)
    assert d.queue == "q"


def test_the_same_unresolved_intent_a_second_time_hands_off() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=6))
    d = turn(guard, GuardState(), "I want to downgrade", unresolved("downgrade_plan"))
    assert d.state.unresolved_intents == ("downgrade_plan",)
    d = turn(guard, d.state, "what plans are there", unresolved("upgrade_plan"))
    assert not d.handoff
    d = turn(guard, d.state, "I said downgrade", unresolved("downgrade_plan"))
    assert_handoff(d, REPEATED_REQUEST)


def test_an_intent_resolved_the_first_time_may_come_again() -> None:
    guard = HandoffGuard()
    d = turn(guard, GuardState(), "status of HL-1", resolved("check_case_status"))
    d = turn(guard, d.state, "and my other case?", unresolved("check_case_status"))
    assert not d.handoff
    assert d.state.unresolved_intents == ("check_case_status",)


def test_a_repeated_request_resolved_the_second_time_is_delivered() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=5))
    d = turn(guard, GuardState(), "refund please", unresolved("request_refund"))
    outcome = resolved("request_refund", "Case HL-20260101-0001 opened for your refund.")
    d = turn(guard, d.state, "refund, order AB123456", outcome)
    assert_delivers(d, outcome)


def test_answers_to_a_form_are_not_repeated_requests() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=5))
    state = GuardState()
    for text in ("AB123456", "13812345678", "it was charged twice"):
        d = turn(guard, state, text, unresolved("inform"))
        assert not d.handoff
        state = d.state
    assert state.unresolved_intents == ()
    assert state.unresolved_turns == 3


@pytest.mark.parametrize("first,second", [
    ("nlu_fallback", "nlu_fallback"), ("out_of_scope", "nlu_fallback"), ("nlu_fallback", "out_of_scope"),
])
def test_the_second_fallback_hands_off(first: str, second: str) -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=6))
    d = turn(guard, GuardState(), "asdf", unresolved(first, "Sorry, I didn't get that."))
    assert not d.handoff and d.state.fallbacks == 1
    assert d.state.unresolved_intents == ()  # fallbacks are the fallback rule's business
    d = turn(guard, d.state, "qwer", unresolved(second, "Could you put that differently?"))
    assert_handoff(d, REPEATED_FALLBACK)


def test_an_already_sent_reply_is_not_delivered_again() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=6))
    d = turn(guard, GuardState(), "downgrade", unresolved("downgrade_plan", "Have you seen our Premium offers?"))
    assert d.state.sent_replies == ("have you seen our premium offers?",)
    again = unresolved("upgrade_plan", "Case opened.", "  HAVE you seen our\n premium   offers? ")
    d = turn(guard, d.state, "no, downgrade", again)
    assert_handoff(d, REPEATED_REPLY)
    assert d.withheld == again.replies
    assert d.state.sent_replies == ("have you seen our premium offers?",)


def test_a_resolved_turn_repeating_a_reply_hands_off_too() -> None:
    guard = HandoffGuard()
    d = turn(guard, GuardState(), "thanks", resolved("thank", "You're welcome!"))
    d = turn(guard, d.state, "thanks again", resolved("thank", "You're welcome!"))
    assert_handoff(d, REPEATED_REPLY)


def test_the_same_reply_twice_in_one_turn_is_a_repeated_reply() -> None:
    d = HandoffGuard().after_turn(GuardState(), resolved("greet", "Hello!", "hello!"))
    assert_handoff(d, REPEATED_REPLY)


def test_replies_differing_in_punctuation_are_different() -> None:
    guard = HandoffGuard()
    d = turn(guard, GuardState(), "a", resolved("thank", "Okay."))
    d = turn(guard, d.state, "b", resolved("thank", "Okay!"))
    assert not d.handoff


@pytest.mark.parametrize("error,reason", [
    ("timeout", TIMEOUT), ("brain_error", BRAIN_ERROR), ("action_error", BRAIN_ERROR),
    ("db_error", BRAIN_ERROR), ("something_new", BRAIN_ERROR),
])
def test_errors_and_timeouts_hand_off_and_deliver_nothing(error: str, reason: str) -> None:
    outcome = TurnOutcome("greet", 0.99, ("Hello!",), resolved=True, error=error)
    d = HandoffGuard().after_turn(GuardState(), outcome)
    assert_handoff(d, reason)
    assert d.withheld == ("Hello!",)
    assert d.state.unresolved_turns == 1
    assert_handoff(HandoffGuard().after_turn(GuardState(), TurnOutcome.failed(error)), reason)


def test_an_unresolved_turn_without_a_reply_hands_off() -> None:
    d = HandoffGuard().after_turn(GuardState(), TurnOutcome("complaint_service", 0.9, ("", "  "), resolved=False))
    assert_handoff(d, BRAIN_ERROR)


def test_a_resolved_turn_without_a_reply_is_fine_and_blank_replies_are_dropped() -> None:
    d = HandoffGuard().after_turn(GuardState(), TurnOutcome("goodbye", 0.9, ("", "Bye!", " "), resolved=True))
    assert not d.handoff
    assert d.deliver == ("Bye!",)
    assert d.state.sent_replies == ("bye!",)
    assert not HandoffGuard().after_turn(GuardState(), TurnOutcome("goodbye", 0.9, (), resolved=True)).handoff


def test_precedence_of_reasons() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=1))
    sent = GuardState(sent_replies=("hi",), unresolved_intents=("x",), fallbacks=1)
    everything = TurnOutcome("express_frustration", 0.5, ("hi",), False, handoff_requested=True, error="timeout")
    assert guard.after_turn(sent, everything).reason == TIMEOUT
    assert guard.after_turn(sent, dataclasses.replace(everything, error=None)).reason == FRUSTRATION
    only = TurnOutcome("x", 0.5, ("hi",), False, handoff_requested=True)
    assert guard.after_turn(sent, only).reason == ACTION_REQUEST
    assert guard.after_turn(sent, dataclasses.replace(only, handoff_requested=False)).reason == REPEATED_REQUEST
    assert guard.after_turn(sent, TurnOutcome("nlu_fallback", 0.1, ("hi",), False)).reason == REPEATED_FALLBACK
    assert guard.after_turn(sent, TurnOutcome("y", 0.5, ("hi",), False)).reason == REPEATED_REPLY
    assert guard.after_turn(sent, TurnOutcome("y", 0.5, ("new",), False)).reason == TURN_BUDGET


# ---- the keyword rule -------------------------------------------------------------------------

REQUESTS = [
    "human", "agent", "AGENT!!!", "human please", "operator", "representative", "human agent pls",
    "I want to talk to a human", "connect me to a real person", "can I speak to an operator",
    "let me talk to your manager", "you're useless, get me a human", "transfer me to customer service",
    "is there a live agent available", "I need to speak with someone, not a bot", "get me a supervisor now",
    "I'd rather talk to a human being about this", "please put me through to a staff member",
    "let me chat with a live rep", "pass me to one of your staff", "is anyone there? a real person?",
    "ＡＧＥＮＴ", "talk to human resources",
    "人工", "转人工", "轉人工", "人工客服", "我要找真人", "真人客服", "我要跟客服专员说", "請安排專人跟我聯絡",
    "唔該搵真人同我講", "搵人工", "有没有活人啊", "请给我转接到在线客服", "請幫我轉接客服人員", "叫你们经理出来",
    "找你們主管來", "不要机器人，我要人", "我想和你们的工作人员直接沟通", "找个人跟我说", "agent 呀，我要 agent",
    "我要搵個 real person",
]
NOT_REQUESTS = [
    "", "   ", "hello", "thanks", "I want to downgrade my plan", "give me my money back",
    "worst customer service ever, the agent hung up on me", "your agent on the phone was condescending",
    "five stars for the agent who fixed my bill", "I talked to an agent yesterday", "are you a human?",
    "are you a real person", "human error on your side", "我要退款", "你是真人吗", "你係唔係真人",
    "你们是人工智能吗", "人工费太贵了", "我想改个人信息", "帮我查一下个人资料", "agent 好差",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_keyword_rule_recognises_requests_for_a_person(text: str) -> None:
    assert asks_for_human(text)
    d = HandoffGuard().before_turn(GuardState(sent_replies=("x",)), text)
    assert_handoff(d, CUSTOMER_REQUEST)
    assert d.state.sent_replies == ("x",)


@pytest.mark.parametrize("text", NOT_REQUESTS)
def test_keyword_rule_leaves_other_messages_to_the_brain(text: str) -> None:
    assert not asks_for_human(text)
    d = HandoffGuard(GuardConfig(signals=False)).before_turn(GuardState(), text)
    assert d == Decision(deliver=(), handoff=False, reason=None, state=GuardState())


def test_keyword_rule_can_be_switched_off() -> None:
    assert not HandoffGuard(GuardConfig(keyword_rule=False)).before_turn(GuardState(), "agent").handoff


def test_normalize_reply() -> None:
    assert normalize_reply("  Sorry,\n I  didn't GET that ") == "sorry, i didn't get that"
    assert normalize_reply("ＯＫ\u3000好的") == "ok 好的"
    assert normalize_reply("Straße") == normalize_reply("STRASSE")


# ---- once handed off (P2) ---------------------------------------------------------------------


def test_once_handed_off_before_turn_refuses_everything() -> None:
    guard = HandoffGuard()
    d = guard.after_turn(GuardState(), TurnOutcome("express_frustration", 0.9, (), False))
    for text in ("hello", "agent", "are you there?", ""):
        refused = guard.before_turn(d.state, text)
        assert_handoff(refused, FRUSTRATION, new=False)
        assert refused.state == d.state


def test_once_handed_off_after_turn_delivers_nothing() -> None:
    """A reply generated for a message that was allowed before a concurrent message handed off."""
    guard = HandoffGuard()
    state = GuardState()
    assert not guard.before_turn(state, "first").handoff
    assert not guard.before_turn(state, "second").handoff
    handed = guard.after_turn(state, TurnOutcome("request_human", 0.9, (), False)).state
    late = resolved("check_case_status", "Your case is being verified.")
    d = guard.after_turn(handed, late)
    assert_handoff(d, CUSTOMER_REQUEST, new=False)
    assert d.withheld == late.replies
    assert d.state == handed


def test_a_legacy_handed_off_state_without_reason_still_refuses() -> None:
    d = HandoffGuard().before_turn(GuardState(handed_off=True), "hi")
    assert d.handoff and d.deliver == () and d.reason is None and not d.new_handoff


def test_hand_back_resets_the_budget_but_keeps_the_sent_replies() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=2))
    d = turn(guard, GuardState(), "a", unresolved("downgrade_plan", "Which plan?"))
    d = turn(guard, d.state, "b", unresolved("nlu_fallback", "Sorry?"))
    assert_handoff(d, TURN_BUDGET)
    back = guard.hand_back(d.state)
    assert back == GuardState(sent_replies=("which plan?",))
    assert guard.hand_back(back) == back
    # a fresh budget: the same intent is no repeat now, one fallback is allowed again ...
    d = turn(guard, back, "c", unresolved("downgrade_plan", "Which plan would you like?"))
    assert not d.handoff
    # ... but a reply sent before the agent took over is still never sent again
    d = turn(guard, back, "c", unresolved("downgrade_plan", "Which plan?"))
    assert_handoff(d, REPEATED_REPLY)


def test_methods_do_not_mutate_their_arguments() -> None:
    guard = HandoffGuard()
    state = GuardState(unresolved_turns=1, sent_replies=("a",))
    snapshot = dataclasses.replace(state)
    guard.before_turn(state, "agent")
    guard.after_turn(state, unresolved())
    guard.hand_back(state)
    assert state == snapshot


# ---- persistence --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [
    GuardState(),
    GuardState(3, 1, ("downgrade_plan", "request_refund"), ("hi", "你好 世界"), True, "turn_budget"),
    GuardState(sent_replies=("a \"quoted\" reply",), handed_off=True, handoff_reason=None),
    GuardState(last_intent="greet", last_resolved=True, small_talk_turns=2),
    GuardState(last_intent="", last_resolved=False),
])
def test_json_round_trip(state: GuardState) -> None:
    data = state.to_json()
    assert isinstance(data["unresolved_intents"], list) and isinstance(data["sent_replies"], list)
    assert GuardState.from_json(data) == state
    assert GuardState.from_json(json.loads(json.dumps(data))) == state
    assert GuardState.from_json(json.dumps(data)) == state
    assert GuardState.from_json(json.dumps(data).encode()) == state


def test_from_json_tolerates_missing_and_unknown_keys() -> None:
    assert GuardState.from_json(None) == GuardState()
    assert GuardState.from_json({}) == GuardState()
    assert GuardState.from_json("null") == GuardState()
    old = {"unresolved_turns": 2, "fallbacks": 1, "unresolved_intents": ["x"], "sent_replies": [], "handed_off": False}
    assert GuardState.from_json(old) == GuardState(2, 1, ("x",))
    newer = {**old, "handed_off": True, "handoff_reason": "sentiment", "future_counter": 7, "notes": {"a": 1}}
    assert GuardState.from_json(newer) == GuardState(2, 1, ("x",), (), True, "sentiment")


@pytest.mark.parametrize("bad", [
    [], "[1]", "{not json", 5, {"unresolved_turns": -1}, {"unresolved_turns": "2"}, {"fallbacks": True},
    {"sent_replies": "hi"}, {"sent_replies": [1]}, {"handed_off": "yes"}, {"handoff_reason": 3},
    {"last_intent": 1}, {"last_resolved": "yes"}, {"small_talk_turns": -1},
])
def test_from_json_rejects_corrupt_state(bad: object) -> None:
    with pytest.raises(ValueError):
        GuardState.from_json(bad)  # type: ignore[arg-type]


# ---- signals: danger and frustration, whatever the intent (issue #12, item 3) ----------------------

DANGER_MESSAGES = [
    "The technician who came to my home last week now sends me frightening messages every night",
    "I want to end my life", "my mother collapsed and is not breathing", "someone threatened to kill me",
    "上门维修的师傅一直给我发微信骚扰我", "我不想活了", "快递员打我", "有人威胁我",
    "上門安裝的師傅成日send訊息畀我，好驚", "我想自殺", "佢家暴我", "我阿媽暈低咗",
]


@pytest.mark.parametrize("text", DANGER_MESSAGES)
def test_danger_hands_off_at_once_whatever_else_the_message_says(text: str) -> None:
    d = HandoffGuard().before_turn(GuardState(sent_replies=("x",)), text)
    assert_handoff(d, DANGER)
    assert d.signals is not None and d.signals.danger is not None
    assert d.state.sent_replies == ("x",)


def test_danger_comes_before_every_other_reason() -> None:
    spent = GuardState(unresolved_turns=5, fallbacks=3)
    assert_handoff(HandoffGuard().before_turn(spent, "get me a human, he is stalking me"), DANGER)


FRUSTRATED = [
    "😤😤", "🤬", "this bot is useless, where is my refund", "what a waste of time, I want to downgrade",
    "nobody helps here, my bill is wrong", "WHY IS MY BILL STILL WRONG!!!",
    "垃圾客服，我要退款", "气死我了，又扣我钱", "搞什么，我要降级", "😡😡",
    "廢物客服，我要退款", "激氣，又扣我錢", "你哋真係冇用", "搞乜鬼呀",
]


@pytest.mark.parametrize("text", FRUSTRATED)
def test_frustration_hands_off_at_once_whatever_the_intent(text: str) -> None:
    d = HandoffGuard().before_turn(GuardState(), text)
    assert_handoff(d, FRUSTRATION)
    assert d.signals is not None and d.signals.frustration >= GuardConfig().frustration_threshold


CALM = ["I want to downgrade", "my bill is wrong", "我要退款", "我想降級", "hi!", "still waiting"]


@pytest.mark.parametrize("text", CALM)
def test_calm_messages_go_to_the_brain_with_their_signals(text: str) -> None:
    d = HandoffGuard().before_turn(GuardState(), text)
    assert not d.handoff and d.reason is None and d.state == GuardState()
    assert d.signals is not None and d.signals.danger is None and d.signals.frustration < 0.6


def test_frustration_threshold_and_signals_are_configurable() -> None:
    lenient = HandoffGuard(GuardConfig(frustration_threshold=1.0))
    assert not lenient.before_turn(GuardState(), "WHERE IS MY ORDER").handoff
    assert_handoff(HandoffGuard().before_turn(GuardState(), "WHERE IS MY ORDER"), FRUSTRATION)
    off = HandoffGuard(GuardConfig(signals=False)).before_turn(GuardState(), "😤😤 I want to end my life")
    assert not off.handoff and off.signals is None
    for bad in (0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError):
            GuardConfig(frustration_threshold=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GuardConfig(max_small_talk_turns=-1)


def test_a_handed_off_conversation_still_reports_danger_signals() -> None:
    state = GuardState(handed_off=True, handoff_reason=TURN_BUDGET)
    d = HandoffGuard().before_turn(state, "he is outside my door with a knife")
    assert_handoff(d, TURN_BUDGET, new=False)
    assert d.signals is not None and d.signals.danger == "violence"


INDIRECT_REQUESTS = [
    "is anyone actually there?", "anybody there?", "is there a human I can talk to", "hello? anyone?",
    "can I talk to someone who can help", "is there anyone who can actually help me",
    "有没有人", "有没有能说上话的人", "有人在吗？", "人呢", "你们客服人呢", "有冇人呀", "有人在嗎", "我要同客服講",
]


@pytest.mark.parametrize("text", INDIRECT_REQUESTS)
def test_indirect_requests_for_a_person_hand_off_before_the_brain(text: str) -> None:
    assert asks_for_human(text)
    assert_handoff(HandoffGuard().before_turn(GuardState(), text), CUSTOMER_REQUEST)


@pytest.mark.parametrize("text", ["有没有个人套餐", "别人呢？", "is there a fee for this", "anyone can see my data?"])
def test_indirect_rule_keeps_its_exclusions(text: str) -> None:
    assert not asks_for_human(text)


# ---- "resolved" means resolved (issue #12, item 4) ---------------------------------------------------


@pytest.mark.parametrize(("intent", "actions", "resolution", "expected"), [
    ("greet", ["utter_greet"], None, True),
    ("bot_challenge", ["utter_iamabot"], None, True),
    ("thank", ["utter_thank"], None, True),
    ("greet", ["utter_default"], None, False),  # small talk without its answer
    ("affirm", ["utter_ack"], None, False),  # a generic acknowledgement
    ("deny", ["utter_deny_ack"], None, False),
    ("out_of_scope", ["utter_out_of_scope"], None, False),
    ("nlu_fallback", ["utter_out_of_scope"], None, False),
    ("downgrade_plan", ["plan_change_form"], None, False),  # a question (or a confirmation proposal)
    ("affirm", ["action_change_plan", "utter_plan_change_recorded"], "plan_change_recorded", True),
    ("complaint_billing", ["action_open_case"], "case_opened", True),
    (None, [], None, False),
])
def test_turn_resolves_only_on_a_completed_action_or_answered_small_talk(
    intent: str | None, actions: list[str], resolution: str | None, expected: bool
) -> None:
    assert turn_resolves(intent, actions, resolution) is expected


def test_affirm_or_deny_answering_nothing_is_unresolved() -> None:
    guard = HandoffGuard()
    d = turn(guard, GuardState(), "yes", resolved("affirm"))
    assert d.state.unresolved_turns == 1
    d = turn(guard, resolved_state := turn(guard, GuardState(), "status", resolved()).state, "no", resolved("deny"))
    assert resolved_state.unresolved_turns == 0 and d.state.unresolved_turns == 1


def test_affirm_answering_an_open_question_resolves_when_the_action_completed() -> None:
    guard = HandoffGuard()
    proposal = unresolved("downgrade_plan", "Basic from 1 Jan, -100/month. OK?")
    d = turn(guard, GuardState(), "downgrade to basic", proposal)
    d = turn(guard, d.state, "yes", resolved("affirm", "Done: Basic from 1 January."))
    assert not d.handoff and d.state.unresolved_turns == 1 and d.state.last_resolved


def test_a_customer_who_re_asks_after_a_resolved_turn_is_unresolved() -> None:
    guard = HandoffGuard()
    d = turn(guard, GuardState(), "status?", resolved("check_case_status", "Case 1 is being verified."))
    assert d.state.unresolved_turns == 0
    d = turn(guard, d.state, "status??", resolved("check_case_status", "Case 1 is still being verified."))
    assert d.state.unresolved_turns == 1
    d = turn(guard, d.state, "and the status?", resolved("check_case_status", "Case 1: verifying."))
    assert_handoff(d, REPEATED_REQUEST)


def test_a_fallback_is_never_resolved_whatever_the_brain_says() -> None:
    d = turn(HandoffGuard(), GuardState(), "blah", resolved("out_of_scope", "I can't help with that here."))
    assert d.state.unresolved_turns == 1 and d.state.fallbacks == 1


def test_small_talk_resolves_only_a_few_turns_in_a_row() -> None:
    guard = HandoffGuard(GuardConfig(max_unresolved_turns=3, max_small_talk_turns=2))
    state = GuardState()
    intents = ["greet", "thank", "bot_challenge", "goodbye", "greet", "thank"]
    decisions = []
    for i, intent in enumerate(intents):
        d = turn(guard, state, "hm", resolved(intent, f"small talk {i}"))
        decisions.append(d)
        state = d.state
        if d.handoff:
            break
    assert [d.state.unresolved_turns for d in decisions] == [0, 0, 1, 2, 3]
    assert_handoff(decisions[-1], TURN_BUDGET)


def test_an_action_resets_the_small_talk_count() -> None:
    guard = HandoffGuard(GuardConfig(max_small_talk_turns=1))
    d = turn(guard, GuardState(), "hi", resolved("greet"))
    d = turn(guard, d.state, "refund please", resolved("request_refund"))
    d = turn(guard, d.state, "thanks", resolved("thank"))
    assert d.state.unresolved_turns == 0 and d.state.small_talk_turns == 1


def test_the_issue_loop_of_canned_acknowledgements_reaches_a_person() -> None:
    """"and? can you do it?" / "anyone there?" answered by "No problem…" / "You're welcome!…"."""
    guard = HandoffGuard()
    state = GuardState()
    script = [
        ("and? can you do it?", "affirm", ["utter_ack"], None),
        ("thanks", "thank", ["utter_thank"], None),
        ("no", "deny", ["utter_deny_ack"], None),
        ("thanks??", "thank", ["utter_thank"], None),
        ("ok", "affirm", ["utter_ack"], None),
    ]
    handed = None
    for i, (text, intent, actions, resolution) in enumerate(script):
        outcome = TurnOutcome(intent, 0.9, (f"canned {i}",), turn_resolves(intent, actions, resolution))
        d = turn(guard, state, text, outcome)
        state = d.state
        if d.handoff:
            handed = i
            break
    # the two "thanks" got their small-talk answer; the three acknowledgements spent the budget
    assert handed == 4 and state.handoff_reason == TURN_BUDGET
