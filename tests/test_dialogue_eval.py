"""The multi-turn evaluation: its conversation files, its scoring, and its runner against a real hub.

The scoring tests feed recorded transcripts to the pure functions of :mod:`bot.dialogue_eval`.
The runner tests play conversations over the WebSocket against a real hub (``tests.hubtools``)
whose brain is scripted, so that a handoff, a button, a confirmed and an unconfirmed plan change
happen on cue; the last test (marked ``model``) runs ``python -m bot eval-dialogue`` on a few
conversations against the real system with the trained model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bot.dialogue_eval import (
    MUST_BE_ZERO,
    Event,
    StoreChanges,
    Timing,
    Transcript,
    TurnRecord,
    choose_button,
    play_all,
    report,
    score,
    summarise,
)
from bot.dialogues import (
    MIN_PER_SCRIPT,
    SCRIPTS,
    Dialogue,
    DialogueSchemaError,
    Turn,
    load_dialogues,
    load_script,
    parse_dialogue,
)

# ---------------------------------------------------------------- the conversation files


def test_the_files_load_and_have_at_least_30_conversations_per_script_and_90_in_all() -> None:
    dialogues = load_dialogues()
    per_script = Counter(d.script for d in dialogues)
    assert set(per_script) == set(SCRIPTS)
    assert all(n >= MIN_PER_SCRIPT for n in per_script.values()), per_script
    assert len(dialogues) >= 90
    for d in dialogues:
        assert d.handoff_by is None or 1 <= d.handoff_by <= len(d.turns), d.id
        assert isinstance(d.allowed_changes, tuple), d.id
        if d.allowed_changes:  # a change may only follow an explicit confirmation
            assert any(t.confirm for t in d.turns), d.id


HAN = re.compile(r"[\u4e00-\u9fff]")
REQUIRED_TAGS = {
    "long", "negation", "mixed_language", "emoji", "correction", "polite_refusal", "anger", "danger", "how_to",
    "confirmed", "not_confirmed", "refund", "complaint", "case_status", "small_talk", "noise", "request_human",
    "indirect", "silence_after_handoff", "budget",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_covers_every_kind_of_conversation(script: str) -> None:
    dialogues = [d for d in load_dialogues() if d.script == script]
    tags = {t for d in dialogues for t in d.tags}
    assert tags >= REQUIRED_TAGS, REQUIRED_TAGS - tags
    for d in dialogues:
        if "danger" in d.tags:  # danger goes to a person at once, to the safety queue
            assert d.handoff_by is not None and d.queue == "safety", d.id
        if "confirmed" in d.tags:
            assert d.allowed_changes, d.id
        if "not_confirmed" in d.tags or "how_to" in d.tags:
            assert not d.allowed_changes, d.id


def test_traditional_conversations_are_written_in_traditional_and_simplified_ones_in_simplified() -> None:
    from bot.i18n import script_signal

    hant_signals = 0
    for d in load_dialogues():
        for _, text in d.texts():
            signal = script_signal(text)
            if d.script == "zh-Hans":
                assert signal != "zh-Hant", (d.id, text)
            elif d.script == "zh-Hant" and len(HAN.findall(text)) >= 8:
                # short replies ("好", "嗯", "掰掰") may read the same in both scripts; a sentence never does
                assert signal == "zh-Hant", (d.id, text)
            hant_signals += d.script == "zh-Hant" and signal == "zh-Hant"
    assert hant_signals >= 60


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "x", "description": "d", "turns": ["hello", {"button": "Confirm", "payload": "/affirm", "confirm": True}],
        "handoff_by": None, "allowed_changes": [{"kind": "downgrade", "to": "basic"}],
    }
    raw.update(over)
    return raw


def test_a_valid_conversation_parses_into_turns_and_allowed_changes() -> None:
    d = parse_dialogue(_raw(), "en", "en", "t")
    assert d.turns == (Turn(text="hello"), Turn(button=("Confirm",), payload="/affirm", confirm=True))
    assert d.allowed_changes[0].matches("downgrade", "basic")
    assert not d.allowed_changes[0].matches("cancel", None)
    assert list(d.texts()) == [(1, "hello")]


@pytest.mark.parametrize(
    "over, message",
    [
        ({"turns": [True]}, "quote yes/no"),  # YAML's bare `yes`
        ({"handoff_by": 3}, "handoff_by"),
        ({"handoff_by": True}, "handoff_by"),
        ({"allowed_changes": [{"kind": "refund"}]}, "kind must be one of"),
        ({"allowed_changes": [{"kind": "cancel", "to": "basic"}]}, "no target plan"),
        ({"turns": ["only text"]}, "could never be met"),
        ({"turns": [{"text": "hi", "button": "Confirm"}]}, "either text or a button"),
        ({"colour": "blue"}, "unknown keys"),
        ({"allowed_changes": None}, "must be a list"),
    ],
)
def test_the_loader_refuses_what_breaks_the_schema(over: dict[str, Any], message: str) -> None:
    with pytest.raises(DialogueSchemaError, match=message):
        parse_dialogue(_raw(**over), "en", "en", "t")


def test_a_missing_key_and_a_repeated_id_are_refused(tmp_path: Path) -> None:
    raw = _raw()
    del raw["handoff_by"]
    with pytest.raises(DialogueSchemaError, match="missing"):
        parse_dialogue(raw, "en", "en", "t")
    for script in SCRIPTS:
        (tmp_path / f"{script}.yml").write_text(
            json.dumps({"lang": script, "conversations": [_raw(id="same")]}), encoding="utf-8"
        )
    assert len(load_script(tmp_path / "en.yml")) == 1
    with pytest.raises(DialogueSchemaError, match="used twice"):
        load_dialogues(tmp_path)


# ---------------------------------------------------------------- scoring (pure)


def _dialogue(handoff_by: int | None = None, allowed: list[dict[str, Any]] | None = None, n: int = 3,
              confirm_at: int | None = None, queue: str | None = None, script: str = "en") -> Dialogue:
    turns: list[Any] = [f"turn {i}" for i in range(1, n + 1)]
    if confirm_at is not None:
        turns[confirm_at - 1] = {"text": "yes, do it", "confirm": True}
    raw = {"id": f"d-{handoff_by}-{n}", "description": "d", "turns": turns, "handoff_by": handoff_by,
           "allowed_changes": allowed or []}
    if queue:
        raw["queue"] = queue
    return parse_dialogue(raw, script, script, "t")


def _transcript(d: Dialogue, events: dict[int, list[Event]]) -> Transcript:
    turns = [TurnRecord(i, t.label(), t.label(), confirm=t.confirm, events=events.get(i, []))
             for i, t in enumerate(d.turns, 1)]
    return Transcript(d.id, "c", turns)


def bot(text: str = "a bot reply") -> Event:
    return Event("message", sender="bot", text=text)


def queued(queue: str = "general", reason: str = "customer_request") -> Event:
    return Event("status", status="queued", queue=queue, reason=reason)


def change(kind: str, to: str | None, frm: str = "standard") -> Event:
    return Event("change", change_kind=kind, from_plan=frm, to_plan=to)


def test_a_handoff_by_the_required_turn_is_in_time_a_later_one_late_none_never() -> None:
    d = _dialogue(handoff_by=2)
    assert score(d, _transcript(d, {2: [bot(), queued()]})).handoff == "in_time"
    assert score(d, _transcript(d, {1: [queued()]})).handoff == "in_time"
    late = score(d, _transcript(d, {1: [bot()], 2: [bot()], 3: [queued(reason="turn_budget")]}))
    assert (late.handoff, late.handoff_turn, late.handoff_reason) == ("late", 3, "turn_budget")
    assert late.failures == ["handed over at turn 3, required by turn 2"]
    never = score(d, _transcript(d, {1: [bot()], 2: [bot()], 3: [bot()]}))
    assert never.handoff == "never" and never.failures


def test_a_handoff_where_none_is_required_is_not_a_failure() -> None:
    d = _dialogue(handoff_by=None)
    s = score(d, _transcript(d, {2: [queued()]}))
    assert s.handoff == "unrequired" and s.failures == []
    assert score(d, _transcript(d, {1: [bot()]})).handoff == "none"


def test_bot_messages_after_the_handoff_status_count_and_those_before_it_do_not() -> None:
    d = _dialogue(handoff_by=2)
    s = score(d, _transcript(d, {
        1: [bot("first")],
        2: [bot("before the status"), Event("message", sender="system", text="queued notice"), queued(),
            bot("right after")],
        3: [bot("a later turn"), Event("status", status="queued", queue="general")],  # a position update
    }))
    assert s.bot_after_handoff == [(2, "right after"), (3, "a later turn")]
    assert "2 bot message(s) after handoff" in s.failures


def test_after_a_hand_back_to_the_bot_its_messages_are_allowed_again() -> None:
    d = _dialogue(handoff_by=1)
    s = score(d, _transcript(d, {1: [queued(), Event("status", status="agent")],
                                 2: [Event("status", status="bot"), bot("welcome back")]}))
    assert s.bot_after_handoff == [] and s.handoff == "in_time"


def test_a_confirmed_allowed_change_passes_an_unconfirmed_or_unlisted_one_fails() -> None:
    d = _dialogue(allowed=[{"kind": "downgrade", "to": "basic"}], confirm_at=2)
    ok = score(d, _transcript(d, {2: [bot(), change("downgrade", "basic")]}))
    assert ok.failures == [] and len(ok.changes) == 1
    early = score(d, _transcript(d, {1: [change("downgrade", "basic")]}))
    assert len(early.unconfirmed) == 1 and early.wrong == []
    wrong_target = score(d, _transcript(d, {2: [change("downgrade", "standard", frm="premium")]}))
    assert len(wrong_target.wrong) == 1 and wrong_target.unconfirmed == []
    cancel = score(d, _transcript(d, {2: [change("cancel", None)]}))
    assert len(cancel.wrong) == 1
    twice = score(d, _transcript(d, {2: [change("downgrade", "basic")], 3: [change("downgrade", "basic")]}))
    assert len(twice.wrong) == 1 and len(twice.unconfirmed) == 1  # each allowed change is used once
    none_allowed = _dialogue(allowed=[])
    bad = score(none_allowed, _transcript(none_allowed, {1: [change("upgrade", "premium")]}))
    assert len(bad.unconfirmed) == len(bad.wrong) == 1
    assert "wrong plan change at turn 1: upgrade standard → premium" in bad.failures


def test_an_allowed_change_without_a_target_accepts_any_target() -> None:
    d = parse_dialogue(_raw(allowed_changes=[{"kind": "upgrade"}]), "en", "en", "t")
    s = score(d, _transcript(d, {2: [change("upgrade", "family")]}))
    assert s.failures == []


def test_totals_per_script_and_overall_and_which_counts_must_be_zero() -> None:
    good = _dialogue(handoff_by=1)
    late = _dialogue(handoff_by=1, script="zh-Hans")
    free = _dialogue(handoff_by=None, allowed=[{"kind": "cancel"}], confirm_at=3, script="zh-Hant")
    scores = [
        score(good, _transcript(good, {1: [queued()]})),
        score(late, _transcript(late, {2: [queued()], 3: [bot()]})),
        score(free, _transcript(free, {1: [change("cancel", None)]})),
    ]
    by_script, total = summarise(scores)
    assert list(by_script) == ["en", "zh-Hans", "zh-Hant"]
    assert (total.conversations, total.handoff_required) == (3, 2)
    assert (total.handed_over_in_time, total.handed_over_late) == (1, 1)
    assert (total.bot_messages_after_handoff, total.changes_without_confirmation, total.wrong_changes) == (1, 1, 0)
    assert total.failed_conversations == 2 and not total.passed
    assert by_script["en"].passed and not by_script["zh-Hans"].passed
    assert set(MUST_BE_ZERO) <= set(vars(total))


def test_an_unplayable_conversation_fails() -> None:
    d = _dialogue(handoff_by=None)
    s = score(d, Transcript(d.id, error="TimeoutError: no ack"))
    assert s.failures == ["could not be played: TimeoutError: no ack"]
    _, total = summarise([s])
    assert total.errors == 1 and not total.passed


def test_the_report_lists_failing_conversations_with_the_lines_that_matter() -> None:
    good = _dialogue(handoff_by=1)
    bad = _dialogue(handoff_by=2, allowed=[], n=3)
    text, results, passed = report(
        [good, bad],
        [_transcript(good, {1: [queued()]}),
         _transcript(bad, {1: [bot("Recorded!"), change("downgrade", "basic")], 3: [queued(), bot("still here")]})],
    )
    assert not passed and results["passed"] is False
    assert results["totals"]["handed_over_late"] == 1 and results["totals"]["wrong_changes"] == 1
    assert [c["id"] for c in results["conversations"]] == [good.id, bad.id]
    failing = text.split("failing conversation(s):")[1]
    assert good.id not in failing and bad.id in failing
    assert "!!     $ plan change recorded: downgrade standard → basic" in failing
    assert "!!    bot: still here" in failing
    assert "   bot: Recorded!" in failing and "!!    bot: Recorded!" not in failing
    assert "!! 2> turn 2" in failing  # the turn by which the handoff was due
    assert text.rstrip().splitlines()[-1].startswith("FAIL: handed_over_late = 1")


# ---------------------------------------------------------------- buttons


def test_a_button_is_chosen_by_title_then_by_payload_else_its_payload_is_sent() -> None:
    offered = [{"title": "Confirm", "payload": "/confirm_change"},
               {"title": "Talk to a person", "payload": "/request_human"}]
    assert choose_button(Turn(button=("confirm",), payload="/affirm"), offered) == ("/confirm_change", False)
    assert choose_button(Turn(button=("确认",), payload="/request_human"), offered) == ("/request_human", False)
    assert choose_button(Turn(button=("确认",), payload="/affirm"), offered) == ("/affirm", True)
    assert choose_button(Turn(button=("Yes",)), []) == ("Yes", True)


# ---------------------------------------------------------------- the runner against a real hub


class ProposingBrain:
    """A brain that behaves well or badly on cue: "basic" is proposed with buttons and recorded
    only on ``/affirm``; "premium" is recorded at once (the failure the evaluation must catch);
    ``/request_human`` asks for a person; anything else is an unresolved answer."""

    def __init__(self, db: Any) -> None:
        from bot.services.plans import PlanChangeService

        self.plans = PlanChangeService(db)
        self.pending: dict[str, str] = {}

    async def ready(self) -> bool:
        return True

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> Any:
        from bot.brain import BotReply
        from tests.hubtools import turn

        visitor = metadata["visitor_id"]
        if text == "/affirm" and conversation_id in self.pending:
            self.plans.request_change(visitor, self.pending.pop(conversation_id))
            return turn("Recorded.", intent="affirm", resolved=True)
        if text == "/request_human":
            return turn("Connecting you.", intent="request_human")
        if "premium" in text.lower():
            self.plans.request_change(visitor, "premium")
            return turn("Upgraded!", intent="upgrade_plan", resolved=True)
        if "basic" in text.lower():
            self.pending[conversation_id] = "basic"
            reply = turn(intent="downgrade_plan")
            reply.replies = [BotReply("Standard → Basic from 1 January. Confirm?", buttons=[
                {"title": "Confirm", "payload": "/affirm"}, {"title": "Talk to a person", "payload": "/request_human"},
            ])]
            return reply
        # a different unresolved intent each time: only the guard's turn budget stops it
        return turn(f"I am not sure what you mean by {text!r}.", intent=f"topic_{text}")


def _d(cid: str, turns: list[Any], handoff_by: int | None, allowed: list[dict[str, Any]] | None = None) -> Dialogue:
    return parse_dialogue({"id": cid, "description": cid, "turns": turns, "handoff_by": handoff_by,
                           "allowed_changes": allowed or []}, "en", "en", cid)


CONFIRM = {"button": "Confirm", "payload": "/affirm", "confirm": True}


async def test_the_runner_plays_conversations_through_a_real_hub_and_scores_them(tmp_path: Path) -> None:
    from bot.store.db import Database
    from tests.hubtools import running_hub

    db = Database(f"sqlite:///{tmp_path / 'eval.db'}")
    db.migrate()
    dialogues = [
        _d("confirmed", ["move me to basic", CONFIRM, "thanks"], None, [{"kind": "downgrade", "to": "basic"}]),
        _d("eager", ["put me on premium"], None),
        _d("budget-late", ["one", "two", "three", "four"], 2),
        _d("person-button", ["I want basic", {"button": "Talk to a person", "payload": "/request_human"}, "hi?"], 2),
        _d("no-button", ["hello", CONFIRM], None),
    ]
    reader = StoreChanges(str(db.url))
    try:
        with running_hub(tmp_path, ProposingBrain(db), db=db) as hub:
            transcripts = await play_all(dialogues, hub.ws_url, reader, Timing(settle=0.4, reply_timeout=10),
                                         concurrency=2)
    finally:
        reader.close()
        db.dispose()
    scores = {d.id: score(d, t) for d, t in zip(dialogues, transcripts, strict=True)}
    assert all(t.error is None for t in transcripts), [t.error for t in transcripts]

    ok = scores["confirmed"]
    assert ok.failures == [] and [(c.turn, c.kind, c.to_plan) for c in ok.changes] == [(2, "downgrade", "basic")]
    assert ok.missing_buttons == [] and transcripts[0].turns[1].sent == "/affirm"

    eager = scores["eager"]
    assert [(c.kind, c.confirmed, c.allowed) for c in eager.changes] == [("upgrade", False, False)]

    late = scores["budget-late"]  # the guard's budget (N = 3) hands off at turn 3
    assert (late.handoff, late.handoff_turn, late.handoff_reason) == ("late", 3, "turn_budget")
    assert late.bot_after_handoff == []
    assert transcripts[2].turns[3].events == []  # turn 4: acknowledged, nothing from the bot

    person = scores["person-button"]
    assert (person.handoff, person.handoff_turn) == ("in_time", 2) and person.changes == []
    assert transcripts[3].turns[1].sent == "/request_human"

    assert scores["no-button"].missing_buttons == [2]
    _, total = summarise(list(scores.values()))
    assert (total.handed_over_late, total.changes_without_confirmation, total.wrong_changes) == (1, 1, 1)


@pytest.mark.model
@pytest.mark.slow
def test_eval_dialogue_runs_against_the_real_system(trained_model: Path, tmp_path: Path) -> None:
    """``python -m bot eval-dialogue`` end to end on three conversations: the system starts, every
    turn is played and recorded, and the results file is written. (Whether the bot passes them is
    what the evaluation measures, not what this test checks.)"""
    from bot.dialogue_eval import main

    out = tmp_path / "dialogue_eval.json"
    code = main(["--model", str(trained_model), "--only", "en-smalltalk", "--only", "zhs-indirect-anyone",
                 "--only", "zht-mixed-hk-downgrade", "--results", str(out), "--settle", "0.8"])
    results = json.loads(out.read_text(encoding="utf-8"))
    assert code == (0 if results["passed"] else 1)
    assert results["totals"]["conversations"] == 3 and results["totals"]["errors"] == 0
    for conv in results["conversations"]:
        turns = conv["transcript"]["turns"]
        assert [t["number"] for t in turns] == list(range(1, len(turns) + 1))
        assert turns[0]["events"], conv["id"]  # the first message got an answer (a reply or a handoff)


def test_the_command_against_a_running_hub_prints_the_table_writes_the_results_and_fails_on_a_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m bot eval-dialogue --url … --database-url …`` on two of the real conversations,
    with the scripted brain: it records the confirmed downgrade (a pass), and records the upgrade
    to Premium as soon as it is asked for, before the confirmation (exit status 1)."""
    import bot.__main__ as cli
    from bot.store.db import Database
    from tests.hubtools import running_hub

    db = Database(f"sqlite:///{tmp_path / 'cli.db'}")
    db.migrate()
    out = tmp_path / "results.json"
    try:
        with running_hub(tmp_path, ProposingBrain(db), db=db) as hub:
            code = cli.main(["eval-dialogue", "--url", hub.ws_url, "--database-url", str(db.url), "--settle", "0.3",
                             "--only", "zhs-mixed-english-downgrade", "--only", "en-noise-then-upgrade",
                             "--results", str(out)])
    finally:
        db.dispose()
    printed = capsys.readouterr()
    assert code == 1
    assert "conversation 2/2" in printed.err
    assert "plan change without confirmation at turn 2: upgrade standard → premium" in printed.out
    assert "FAIL:" in printed.out
    results = json.loads(out.read_text(encoding="utf-8"))
    verdicts = {c["id"]: c["failures"] for c in results["conversations"]}
    assert verdicts["zhs-mixed-english-downgrade"] == []
    assert verdicts["en-noise-then-upgrade"] == [
        "plan change without confirmation at turn 2: upgrade standard → premium"
    ]
    assert results["totals"]["changes_without_confirmation"] == 1 and results["totals"]["plan_changes"] == 2


def test_the_command_refuses_a_url_without_its_database_and_an_empty_selection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bot.dialogue_eval import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--url", "ws://127.0.0.1:9/ws/chat"])
    assert exit_info.value.code == 2 and "--database-url" in capsys.readouterr().err
    assert main(["--only", "no-such-conversation"]) == 2
