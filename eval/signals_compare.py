"""Lexicon, second classifier, or both? Measure the three on our labelled sets.

The second classifier (``bot.signals.frustration_probability``, ``bot/frustration_model.py``) is a
character n-gram logistic regression trained on the NLU data by ``scripts/train_frustration_model.py``;
none of the labelled sets of ``tests/data`` is NLU training data, and the classifier's cut-off (0.5)
was not tuned on them.

    PYTHONPATH=. .venv/bin/python eval/signals_compare.py

Prints frustration precision / recall per set and script. Figures are in docs/guard.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.signals import CLASSIFIER_CUTOFF, frustration_probability, read_signals  # noqa: E402

THRESHOLD = 0.6
SETS = ("signals_labelled", "signals_dev2", "signals_heldout")


def score(predicted: list[bool], gold: list[bool]) -> str:
    tp = sum(p and g for p, g in zip(predicted, gold, strict=True))
    fp = sum(p and not g for p, g in zip(predicted, gold, strict=True))
    fn = sum(g and not p for p, g in zip(predicted, gold, strict=True))
    return f"P {tp / (tp + fp) if tp + fp else 1.0:.2f} R {tp / (tp + fn) if tp + fn else 1.0:.2f}"


def main() -> None:
    for name in SETS:
        data = yaml.safe_load((ROOT / "tests" / "data" / f"{name}.yml").read_text(encoding="utf-8"))
        for script, items in data.items():
            gold = [bool(i.get("f")) for i in items]
            lexicon = [read_signals(i["t"], classifier=False).frustration >= THRESHOLD for i in items]
            classifier = [frustration_probability(i["t"]) >= CLASSIFIER_CUTOFF for i in items]
            both = [read_signals(i["t"]).frustration >= THRESHOLD for i in items]
            print(f"{name:17} {script:8} lexicon {score(lexicon, gold)} | classifier {score(classifier, gold)} | "
                  f"both {score(both, gold)}")


if __name__ == "__main__":
    main()
