"""The training data does not copy the sentences it is evaluated on (bot.leakage)."""

from __future__ import annotations

from bot.leakage import Origin, dialogue_sentences, evaluation_sentences, find_leaks, normalise, training_sentences


def _o(text: str, intent: str = "x", source: str = "s") -> Origin:
    return Origin(source, intent, text)


def test_normalise_folds_width_case_punctuation_and_numbers() -> None:
    assert normalise("Ｈｉ，THERE!!  case HL-20261105-0019") == "hi there case hl 0 0"


def test_a_close_paraphrase_is_a_leak_and_reports_the_closest_sentence() -> None:
    leaks = find_leaks(
        [_o("who did you give my phone number to")],
        [_o("who did you share my phone number with"), _o("who has my email address")],
    )
    assert [(leak.evaluation.text, round(leak.similarity, 2)) for leak in leaks] == [
        ("who did you share my phone number with", 0.85)
    ]


def test_short_universal_messages_and_different_sentences_are_not_leaks() -> None:
    assert find_leaks([_o("thank you"), _o("HL-20261105-0019")], [_o("thank you!"), _o("HL-20261015-0202")]) == []
    assert find_leaks([_o("my bill doubled this month")], [_o("my parcel never arrived this week")]) == []


def test_chinese_is_compared_by_character() -> None:
    leaks = find_leaks([_o("你们把我的手机号码给了谁啊")], [_o("你们把我的手机号码给了谁")])
    assert len(leaks) == 1


def test_no_training_sentence_copies_the_heldout_split_or_the_external_sets() -> None:
    evaluation = evaluation_sentences()
    assert any(o.source.startswith("heldout:") for o in evaluation), "tests/nlu is missing"
    assert any(o.source.startswith("dialogue:") for o in evaluation), "eval/dialogues is missing"
    leaks = find_leaks(training_sentences(), evaluation)
    assert not leaks, "\n".join(
        f"{leak.training.source} {leak.training.text!r} ~ {leak.evaluation.source} {leak.evaluation.text!r}"
        for leak in leaks
    )


def test_every_typed_turn_of_the_dialogue_evaluation_is_compared_with_the_training_data() -> None:
    from bot.dialogues import SCRIPTS, load_dialogues

    dialogue = dialogue_sentences()
    assert {o.source for o in dialogue} == {f"dialogue:{s}" for s in SCRIPTS}
    assert len(dialogue) == sum(1 for d in load_dialogues() for _ in d.texts())
    # a training sentence written after a dialogue turn is caught like one copied from tests/nlu
    turn = next(o for o in dialogue if len(normalise(o.text)) > 30)
    assert find_leaks([_o(turn.text + "!")], dialogue)
    leaks = find_leaks(training_sentences(), dialogue)
    assert not leaks, "\n".join(f"{x.training.source} {x.training.text!r} ~ {x.evaluation.intent} {x.evaluation.text!r}"
                                for x in leaks)


SUBSTANTIVE = [
    "request_human", "complaint_service", "complaint_billing", "complaint_privacy", "downgrade_plan",
    "upgrade_plan", "cancel_subscription", "request_refund", "check_case_status", "express_frustration",
    "bot_challenge", "out_of_scope",
]


def test_every_substantive_intent_has_60_examples_15_of_them_traditional() -> None:
    counts: dict[tuple[str, str], int] = {}
    for origin in training_sentences():
        lang = origin.source.split("/")[2]  # data/nlu/<lang>/<file>.yml
        counts[(origin.intent, lang)] = counts.get((origin.intent, lang), 0) + 1
    for intent in SUBSTANTIVE:
        total = sum(n for (i, _), n in counts.items() if i == intent)
        assert total >= 60, (intent, total)
        assert counts.get((intent, "zh-Hant"), 0) >= 15, (intent, counts.get((intent, "zh-Hant")))
