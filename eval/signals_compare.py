"""Lexicon or a second classifier for frustration? Measure both on our labelled sets.

The second classifier: character 1–4-gram TF-IDF + logistic regression, trained on the NLU training
data (``data/nlu``: ``express_frustration`` against every other intent) — the cheapest stand-in for
"a classifier beside the intent". It is measured on the three labelled sets of ``tests/data`` (none
of which is NLU training data), alone and OR-ed with the lexicon of ``bot/signals.py``.

    PYTHONPATH=. .venv/bin/python eval/signals_compare.py

Prints precision / recall per set and script. Figures are in docs/guard.md.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.i18n import normalize_text  # noqa: E402
from bot.signals import read_signals  # noqa: E402

THRESHOLD = 0.6
SETS = ("signals_labelled", "signals_dev2", "signals_heldout")


def training_data() -> tuple[list[str], list[int]]:
    texts: list[str] = []
    labels: list[int] = []
    for path in sorted(glob.glob(str(ROOT / "data" / "nlu" / "*" / "*.yml"))):
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for block in data.get("nlu") or []:
            if "intent" not in block:
                continue
            for line in block["examples"].splitlines():
                line = line.strip()
                if line.startswith("- "):
                    texts.append(normalize_text(line[2:]))
                    labels.append(int(block["intent"] == "express_frustration"))
    return texts, labels


def score(pairs: list[tuple[bool, bool]]) -> str:
    tp = sum(p and g for p, g in pairs)
    fp = sum(p and not g for p, g in pairs)
    fn = sum(g and not p for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return f"P {precision:.2f} R {recall:.2f}"


def main() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = training_data()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", C=4.0)
    model.fit(vectorizer.fit_transform(texts), labels)
    print(f"trained on {len(texts)} NLU examples, {sum(labels)} express_frustration")
    for name in SETS:
        data = yaml.safe_load((ROOT / "tests" / "data" / f"{name}.yml").read_text(encoding="utf-8"))
        for script, items in data.items():
            gold = [bool(i.get("f")) for i in items]
            lexicon = [read_signals(i["t"]).frustration >= THRESHOLD for i in items]
            probs = model.predict_proba(vectorizer.transform([normalize_text(i["t"]) for i in items]))[:, 1]
            classifier = [bool(p >= 0.5) for p in probs]
            both = [a or b for a, b in zip(lexicon, classifier, strict=True)]
            print(
                f"{name:17} {script:8} lexicon {score(list(zip(lexicon, gold, strict=True)))} | "
                f"classifier {score(list(zip(classifier, gold, strict=True)))} | "
                f"either {score(list(zip(both, gold, strict=True)))}"
            )


if __name__ == "__main__":
    main()
