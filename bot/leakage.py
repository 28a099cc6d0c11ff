"""Training data must not copy the text it is evaluated on.

The held-out split (``tests/nlu``), the external sets (``../shared/benchmarks/external``) and the
customer turns of the multi-turn evaluation (``eval/dialogues``, :mod:`bot.dialogues`) only
measure anything if no training example is the same sentence or a close paraphrase of one of
theirs. :func:`find_leaks` compares every example under ``data/nlu`` with every evaluation
sentence and reports the pairs whose normalised texts are more alike than ``threshold``
(``difflib`` ratio, 1.0 = identical after normalisation).

Short messages are exempt (fewer than ``min_chars`` characters after normalisation, where a
number counts as one character): "thank you", "hello", "退款", "转人工", "HL-20261105-0019" are
what everyone writes, and a model that has never seen them is
not a fairer test, only a worse model. ``tests/test_nlu_data.py`` fails on any other leak;
``python -m bot.leakage`` prints them.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bot.evaluation import Sample, load_external, load_heldout
from bot.training import ROOT

TRAINING_DIR = ROOT / "data" / "nlu"
DEFAULT_THRESHOLD = 0.8
DEFAULT_MIN_CHARS = 12

_NOT_WORD = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Origin:
    """Where a sentence comes from: a training file or an evaluation set, and its intent."""

    source: str
    intent: str
    text: str


@dataclass(frozen=True)
class Leak:
    training: Origin
    evaluation: Origin
    similarity: float


def normalise(text: str) -> str:
    """Width- and case-folded, punctuation and spacing reduced to single spaces, numbers to ``0``.

    Numbers collapse because a case number, order id or phone number is a form, not wording:
    "HL-20261105-0019" and "HL-20261015-0202" are the same message.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub(" ", _DIGITS.sub("0", folded)).strip()


def _bigrams(text: str) -> set[str]:
    return {text[i : i + 2] for i in range(max(1, len(text) - 1))}


def find_leaks(
    training: Iterable[Origin],
    evaluation: Iterable[Origin],
    threshold: float = DEFAULT_THRESHOLD,
    min_chars: int = DEFAULT_MIN_CHARS,
) -> list[Leak]:
    """Every training sentence of ``min_chars`` or more that is closer than ``threshold`` to an evaluation one.

    Each training sentence is reported once, with its closest evaluation sentence.
    """
    refs = [(o, n, _bigrams(n)) for o in evaluation if (n := normalise(o.text))]
    leaks = []
    for origin in training:
        text = normalise(origin.text)
        if len(text) < min_chars:
            continue
        grams = _bigrams(text)
        best: tuple[float, Origin] | None = None
        for ref, ref_text, ref_grams in refs:
            # Two cheap bounds first: difflib's ratio cannot exceed the length ratio, and
            # sentences sharing few character pairs are never close.
            if 2 * min(len(text), len(ref_text)) / (len(text) + len(ref_text)) <= threshold:
                continue
            if 2 * len(grams & ref_grams) / (len(grams) + len(ref_grams)) < threshold - 0.2:
                continue
            ratio = difflib.SequenceMatcher(None, text, ref_text, autojunk=False).ratio()
            if ratio > threshold and (best is None or ratio > best[0]):
                best = (ratio, ref)
        if best is not None:
            leaks.append(Leak(origin, best[1], best[0]))
    return leaks


def training_sentences(folder: Path = TRAINING_DIR) -> list[Origin]:
    from rasa.shared.nlu.training_data.loading import load_data

    out = []
    for path in sorted(folder.rglob("*.yml")):
        data = load_data(str(path))
        source = path.relative_to(ROOT).as_posix()
        out += [Origin(source, m.get("intent"), m.get("text")) for m in data.intent_examples]
    return out


def dialogue_sentences(folder: Path | None = None) -> list[Origin]:
    """Every typed customer turn of ``eval/dialogues`` (button presses are not sentences), as
    ``dialogue:<script>`` with the intent ``<conversation id>#<turn>`` (they have no intent label)."""
    from bot.dialogues import DIALOGUES_DIR, load_dialogues

    return [
        Origin(f"dialogue:{d.script}", f"{d.id}#{number}", text)
        for d in load_dialogues(folder or DIALOGUES_DIR)
        for number, text in d.texts()
    ]


def evaluation_sentences() -> list[Origin]:
    """The held-out split, the external sets and the dialogue evaluation's customer turns."""
    def origins(kind: str, name: str, samples: list[Sample]) -> list[Origin]:
        return [Origin(f"{kind}:{name}", s.intent, s.text) for s in samples]

    out = []
    for es in load_heldout() + load_external():
        out += origins(es.kind, es.name, es.samples)
    return out + dialogue_sentences()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.leakage", description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--min-chars", type=int, default=DEFAULT_MIN_CHARS)
    args = parser.parse_args(argv)
    leaks = find_leaks(training_sentences(), evaluation_sentences(), args.threshold, args.min_chars)
    for leak in leaks:
        t, e = leak.training, leak.evaluation
        print(f"{leak.similarity:.2f}  {t.source} [{t.intent}] {t.text!r}  ~  {e.source} [{e.intent}] {e.text!r}")
    print(f"{len(leaks)} training sentences too close to evaluation text", file=sys.stderr)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
