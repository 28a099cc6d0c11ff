"""The NLU evaluation's metrics and its view of the ensemble's members (bot.evaluation)."""

from __future__ import annotations

import pytest

from bot.evaluation import (
    Parsed,
    accuracy,
    confusions,
    decide,
    f1_by_label,
    fallback_settings,
    macro_f1,
    member_predictions,
    print_report,
)


def test_accuracy_and_macro_f1_count_every_label_seen_on_either_side() -> None:
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "c"]
    assert accuracy(gold, pred) == 0.5
    scores = f1_by_label(gold, pred)
    assert scores == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 0.0})
    assert macro_f1(gold, pred) == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    assert confusions(gold, pred) == [("a", "b", 1), ("b", "c", 1)]
    assert accuracy([], []) == 0.0


def test_fallback_settings_come_from_the_pipeline() -> None:
    config = """
pipeline:
  - name: DIETClassifier
  - name: FallbackClassifier
    threshold: 0.55
    ambiguity_threshold: 0.05
"""
    assert fallback_settings(config) == (0.55, 0.05)
    assert fallback_settings("pipeline:\n  - name: FallbackClassifier\n") == (0.3, 0.1)  # Rasa's defaults
    assert fallback_settings("pipeline:\n  - name: DIETClassifier\n") == (0.0, 0.0)


@pytest.mark.parametrize(
    ("ranking", "expected"),
    [
        ({"refund": 0.8, "cancel": 0.2}, "refund"),
        ({"refund": 0.45, "cancel": 0.3}, "out_of_scope"),  # below the threshold
        ({"refund": 0.52, "cancel": 0.48}, "out_of_scope"),  # too close to the runner-up
        ({"refund": 1.0}, "refund"),
        ({}, "out_of_scope"),
    ],
)
def test_decide_is_the_fallback_classifiers_rule(ranking: dict[str, float], expected: str) -> None:
    assert decide(ranking, threshold=0.5, ambiguity=0.1) == expected


def test_member_predictions_apply_the_same_rule_to_each_ranking() -> None:
    config = "pipeline:\n  - name: FallbackClassifier\n    threshold: 0.5\n    ambiguity_threshold: 0.1\n"
    parsed = [
        Parsed("refund", {"diet": {"refund": 0.9, "cancel": 0.1}, "linear": {"refund": 0.4, "cancel": 0.35}}),
        Parsed("out_of_scope", {"diet": {"cancel": 0.99}, "linear": {"out_of_scope": 0.7, "cancel": 0.2}}),
    ]
    assert member_predictions(parsed, config) == {
        "ours:diet": ["refund", "cancel"],
        "ours:linear": ["out_of_scope", "out_of_scope"],
    }
    # a model without the ensemble has no members to show
    assert member_predictions([Parsed("refund"), *parsed], config) == {}


def test_the_report_shows_the_members_beside_ours(capsys: pytest.CaptureFixture[str]) -> None:
    figures = {"accuracy": 0.9, "macro_f1": 0.91}
    entry = {"n": 10, "ours": figures, "ours:diet": figures, "ours:linear": figures}
    print_report({
        "models": {"ours": "m.tar.gz"},
        "members": ["ours:diet", "ours:linear"],
        "heldout": {"en": entry},
        "external": {"x": entry},
        "confusions_heldout_ours": [],
        "confusions_external_ours": [],
        "missed": [],
    })
    out = capsys.readouterr().out
    assert "F1 diet alone" in out and "acc linear alone" in out and "All targets met." in out
