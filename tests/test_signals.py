"""bot/signals.py: frustration and danger read from the raw text, in three scripts, and measured.

The lexicon is measured on three labelled sets of our own, none of them NLU training data: calm
requests with trap words, frustration inside requests and in emoji, danger of every kind.

* ``signals_labelled.yml`` (46-47 messages per script) and ``signals_dev2.yml`` (26 per script):
  development sets — the lexicon was tuned on them, so their perfect figures say little;
* ``signals_heldout.yml`` (26 per script): written after the last change to the frustration
  lexicon and never tuned on: the figures to expect (docs/guard.md). Only danger phrases were
  added after measuring it (self-harm and breathing), for safety; its danger figures before that
  are in docs/guard.md too.

The floors asserted here are the measured figures, rounded down: a change to the word lists that
loses recall or precision fails this test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bot.guard import GuardConfig
from bot.signals import DANGER_KINDS, Signals, read_signals

LABELLED = Path(__file__).parent / "data" / "signals_labelled.yml"
THRESHOLD = GuardConfig().frustration_threshold


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    n: int


def _score(pairs: list[tuple[bool, bool]]) -> Scores:
    tp = sum(1 for predicted, gold in pairs if predicted and gold)
    fp = sum(1 for predicted, gold in pairs if predicted and not gold)
    fn = sum(1 for predicted, gold in pairs if gold and not predicted)
    return Scores(tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 1.0, len(pairs))


def _labelled(name: str = "signals_labelled") -> dict[str, list[dict]]:
    return yaml.safe_load((LABELLED.parent / f"{name}.yml").read_text(encoding="utf-8"))


def measure(script: str, name: str = "signals_labelled") -> tuple[Scores, Scores]:
    """(frustration, danger) precision and recall of the lexicon on one script's messages of the
    labelled set ``name``."""
    frustration, danger = [], []
    for item in _labelled(name)[script]:
        s = read_signals(item["t"])
        frustration.append((s.frustration >= THRESHOLD, bool(item.get("f"))))
        danger.append((s.danger is not None, item.get("d") is not None))
    return _score(frustration), _score(danger)


SETS = ("signals_labelled", "signals_dev2", "signals_heldout")


@pytest.mark.parametrize("name", SETS)
def test_the_labelled_sets_are_large_enough_and_well_formed(name: str) -> None:
    data = _labelled(name)
    assert set(data) == {"en", "zh-Hans", "zh-Hant"}
    for items in data.values():
        assert len(items) >= 26
        assert sum(1 for i in items if i.get("f")) >= 8 and sum(1 for i in items if i.get("d")) >= 6
        assert all(set(i) <= {"t", "f", "d"} and i.get("d", DANGER_KINDS[0]) in DANGER_KINDS for i in items)
    assert sum(len(items) for items in data.values()) >= 78
    if name == "signals_labelled":
        assert all(len(items) >= 40 for items in data.values())


# Floors: (precision, recall) as measured with the lexicon and the classifier together (docs/guard.md),
# rounded down. The development sets were tuned on; the held-out set says what to expect.
DEV = {"frustration": (0.95, 0.95), "danger": (0.95, 0.95)}
FLOORS = {
    ("signals_labelled", "en"): {"frustration": (0.87, 0.95), "danger": (0.95, 0.95)},
    ("signals_labelled", "zh-Hans"): DEV, ("signals_labelled", "zh-Hant"): DEV,
    ("signals_dev2", "en"): DEV, ("signals_dev2", "zh-Hans"): DEV, ("signals_dev2", "zh-Hant"): DEV,
    ("signals_heldout", "en"): {"frustration": (0.85, 0.75), "danger": (0.95, 0.8)},
    ("signals_heldout", "zh-Hans"): {"frustration": (0.95, 0.62), "danger": (0.95, 0.8)},
    ("signals_heldout", "zh-Hant"): {"frustration": (0.8, 0.5), "danger": (0.95, 0.8)},
}
# The lexicon alone on the held-out set (docs/guard.md): what the classifier adds.
LEXICON_ONLY_HELDOUT_RECALL = {"en": 0.375, "zh-Hans": 0.25, "zh-Hant": 0.25}


@pytest.mark.parametrize(("name", "script"), sorted(FLOORS))
def test_lexicon_precision_and_recall(name: str, script: str) -> None:
    frustration, danger = measure(script, name)
    p, r = FLOORS[name, script]["frustration"]
    assert frustration.precision >= p and frustration.recall >= r, frustration
    p, r = FLOORS[name, script]["danger"]
    assert danger.precision >= p and danger.recall >= r, danger


@pytest.mark.parametrize("script", sorted(LEXICON_ONLY_HELDOUT_RECALL))
def test_the_classifier_adds_recall_on_new_phrasing(script: str) -> None:
    items = _labelled("signals_heldout")[script]
    frustrated = [i["t"] for i in items if i.get("f")]
    lexicon = sum(read_signals(t, classifier=False).frustration >= THRESHOLD for t in frustrated) / len(frustrated)
    both = sum(read_signals(t).frustration >= THRESHOLD for t in frustrated) / len(frustrated)
    assert lexicon == pytest.approx(LEXICON_ONLY_HELDOUT_RECALL[script])
    assert both > lexicon


def test_the_classifier_table_scores_like_a_probability() -> None:
    from bot.signals import frustration_probability

    assert frustration_probability("this is absolutely unacceptable, you are useless") > 0.5
    assert frustration_probability("I would like to change my plan to basic") < 0.2
    assert 0.0 < frustration_probability("") < 1.0


@pytest.mark.parametrize(("text", "kind"), [
    ("I want to kill myself", "self_harm"), ("我想死", "self_harm"), ("我唔想活", "self_harm"),
    ("my dad is having a heart attack", "medical"), ("他昏迷了", "medical"), ("要叫白車", "medical"),
    ("the installer hit me", "violence"), ("他拿刀", "violence"), ("佢打我", "violence"),
    ("your courier threatened me", "threat"), ("有人恐吓我", "threat"), ("有人恐嚇我", "threat"),
    ("the technician keeps texting me", "harassment"), ("维修师傅跟踪我", "harassment"), ("佢騷擾我", "harassment"),
    # Traditional and Cantonese phrasings the multi-turn evaluation found missing (written anew here)
    ("佢話知道我屋企喺邊", "threat"), ("那個人說他知道我女兒在哪裡補習", "threat"), ("我怕到唔敢出門", "threat"),
    ("那個師傅三更半夜還傳訊息給我", "harassment"), ("他每天都在我家樓下等我", "harassment"),
])
def test_danger_kinds(text: str, kind: str) -> None:
    assert read_signals(text).danger == kind


@pytest.mark.parametrize("text", [
    "I'm afraid my bill is wrong", "the agent never called me back", "I'd like to kill my subscription",
    "the technician came yesterday and fixed it", "电话一直打不通", "能砍价吗", "有什么套餐", "我妈的手机号要改",
    "please cancel", "HL-20260101-0001", "",
    "我知道我的套餐在哪里看", "你知道我哪天续费吗", "我很怕麻烦，直接帮我退订吧", "半夜传来的账单又多扣钱",
])
def test_calm_messages_carry_no_signal_worth_a_handoff(text: str) -> None:
    s = read_signals(text)
    assert s.danger is None and s.frustration < THRESHOLD, s


def test_frustration_cues_add_up_and_are_capped() -> None:
    assert read_signals("hello").frustration == 0.0
    assert read_signals("😤😤") == Signals(1.0, None, ("emoji_only",))
    assert read_signals("still waiting").frustration == pytest.approx(0.4)
    assert read_signals("still waiting!!!", classifier=False).frustration == pytest.approx(0.7)
    assert read_signals("still waiting!!!").cues[0] == "classifier"
    assert read_signals("WHERE IS MY REFUND").cues == ("caps",)
    assert "repetition" in read_signals("hello? hello? hello?").cues
    assert "repetition" in read_signals("人呢人呢人呢").cues
    assert read_signals("useless garbage 🤬🤬 WTF!!!").frustration == 1.0
    assert read_signals("ok 🙄").frustration == pytest.approx(0.3)  # an eye-roll alone is not anger


def test_signals_ignore_width_and_case() -> None:
    assert read_signals("ＵＳＥＬＥＳＳ bot").frustration >= THRESHOLD
    assert read_signals("I WANT TO KILL MYSELF").danger == "self_harm"


# ---- properties -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PHRASES = ["he is stalking me", "I want to kill myself", "我不想活了", "有人威胁我", "我阿媽暈低咗", "佢打我"]
AROUND = st.text(alphabet=st.sampled_from(list("abc xyz，。!?我的你們")), max_size=30)


@settings(max_examples=200, deadline=None)
@given(before=AROUND, phrase=st.sampled_from(PHRASES), after=AROUND)
def test_danger_is_found_whatever_surrounds_it(before: str, phrase: str, after: str) -> None:
    assert read_signals(f"{before} {phrase} {after}").danger is not None


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60), emoji=st.sampled_from(["😤", "😡", "🤬", "💢", "👿", "🖕", "😠"]))
def test_an_anger_emoji_is_enough_and_never_lowers_the_lexicons_score(text: str, emoji: str) -> None:
    assert read_signals(f"{text} {emoji}").frustration >= THRESHOLD
    # (the classifier's probability may move either way with an extra character; the lexicon's not)
    lexicon = read_signals(text, classifier=False).frustration
    assert read_signals(f"{text} {emoji}", classifier=False).frustration >= lexicon


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_gives_a_score_in_range(text: str) -> None:
    s = read_signals(text)
    assert 0.0 <= s.frustration <= 1.0 and (s.danger is None or s.danger in DANGER_KINDS)


def test_the_classifier_table_was_generated_from_the_current_training_data() -> None:
    """bot/frustration_model.py is generated from data/nlu: a change to the data without running
    scripts/train_frustration_model.py again would silently ship a classifier of older data."""
    import importlib.util
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script_path = root / "scripts" / "train_frustration_model.py"
    spec = importlib.util.spec_from_file_location("train_frustration_model", script_path)
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    texts, labels = script.training_data()
    header = (root / "bot" / "frustration_model.py").read_text(encoding="utf-8").splitlines()[1]
    found = re.search(r"\((\d+) examples, (\d+) express_frustration\)", header)
    assert found, header
    assert (int(found.group(1)), int(found.group(2))) == (len(texts), sum(labels)), (
        "data/nlu changed: run `PYTHONPATH=. .venv/bin/python scripts/train_frustration_model.py`"
    )
