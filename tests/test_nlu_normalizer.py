"""Text normalisation and script detection (bot.i18n), and the Rasa component in a tiny pipeline."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.i18n import LANGS, detect_script, normalize_text, script_signal, to_simplified


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我想取消訂閱", "我想取消订阅"),
        ("這個月帳單多扣了錢", "这个月帐单多扣了钱"),
        ("為什麼還沒有退款", "为什么还没有退款"),
        ("我想取消订阅", "我想取消订阅"),  # already Simplified: unchanged
        ("著名的著作", "著名的著作"),  # phrase rules: 著 stays in 著名
        ("hello", "hello"),
    ],
)
def test_to_simplified(text: str, expected: str) -> None:
    assert to_simplified(text) == expected


def test_normalize_full_width_and_case() -> None:
    assert normalize_text("ＨＥＬＬＯ　Ｗｏｒｌｄ！１２３") == "hello world!123"
    assert normalize_text("訂單ＳＯ２０２６１１０４，謝謝") == "订单so20261104,谢谢"
    assert normalize_text("I Want A REFUND") == "i want a refund"
    assert normalize_text("HL-20261104-0001", casefold=False) == "HL-20261104-0001"
    assert normalize_text("") == ""


def test_normalize_keeps_cantonese_characters() -> None:
    assert normalize_text("我嘅戶口冇咗錢") == "我嘅户口冇咗钱"


@given(st.text(max_size=60))
def test_normalize_is_length_preserving_and_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert len(once) == len(text)
    assert normalize_text(once) == once or len(normalize_text(once)) == len(once)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("我想取消訂閱", "zh-Hant"),
        ("為什麼扣我錢", "zh-Hant"),
        ("我嘅戶口", "zh-Hant"),
        ("佢哋唔理我", "zh-Hant"),  # Cantonese markers
        ("我系边个", "zh-Hans"),
        ("我想取消订阅", "zh-Hans"),
        ("你好", "zh-Hans"),
        ("好", "zh-Hans"),
        ("I want 退款", "zh-Hans"),  # code-switching: any CJK wins
        ("我想 cancel 我的 plan", "zh-Hans"),
        ("please cancel 我的訂閱", "zh-Hant"),
        ("hello", "en"),
        ("ok", "en"),
        ("ＨＥＬＬＯ", "en"),
        ("case HL-20261104-0001 please", "en"),
    ],
)
def test_detect_script(text: str, lang: str) -> None:
    assert detect_script(text) == lang
    assert script_signal(text) == lang


@pytest.mark.parametrize(
    "text",
    ["", "   ", "12345678", "SO20261104", "HL-20261104-0001", "+852 91234567", "？", "👍", '/inform{"plan": "basic"}'],
)
def test_no_language_signal(text: str) -> None:
    assert script_signal(text) is None
    assert detect_script(text) == "en"


@given(st.text(max_size=40))
def test_detect_script_total(text: str) -> None:
    assert detect_script(text) in LANGS


def test_i18n_import_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, bot.i18n; sys.exit(1 if 'rasa' in sys.modules or 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0


# ----------------------------------------------------------------- the component


def test_component_process_and_training_data() -> None:
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from bot.nlu.normalizer import OriginalTextRestorer, TextNormalizer

    norm = TextNormalizer({})
    msg = Message(data={"text": "我想查詢ＨＬ-20261104-0001"})
    norm.process([msg])
    assert msg.get("text") == "我想查询hl-20261104-0001"
    assert msg.get("original_text") == "我想查詢ＨＬ-20261104-0001"
    script = [e for e in msg.get("entities") if e["entity"] == "script"]
    assert script == [{"entity": "script", "value": "zh-Hant", "start": 0, "end": 0, "extractor": "TextNormalizer"}]

    # an extractor appends its entity on the normalised text; the restorer gives the case back
    msg.set("entities", [*msg.get("entities"), {"entity": "case_id", "value": "hl-20261104-0001", "start": 4,
                                                 "end": 20, "extractor": "RegexEntityExtractor"}])
    OriginalTextRestorer().process([msg])
    assert msg.get("text") == "我想查詢ＨＬ-20261104-0001"
    values = {e["entity"]: e["value"] for e in msg.get("entities")}
    assert values == {"script": "zh-Hant", "case_id": "HL-20261104-0001"}
    assert msg.as_dict(only_output_properties=True)["normalized_text"] == "我想查询hl-20261104-0001"

    # "/intent" payloads are left alone; digits-only answers carry no script entity
    button = Message(data={"text": '/inform{"plan":"高級版"}'})
    digits = Message(data={"text": "13800138000"})
    norm.process([button, digits])
    assert button.get("text") == '/inform{"plan":"高級版"}'
    assert digits.get("entities") is None

    td = TrainingData(
        [Message(data={"text": "我要升級到高級版", "intent": "upgrade_plan",
                       "entities": [{"entity": "plan", "value": "高級版", "start": 5, "end": 8}]})],
        entity_synonyms={"高級版": "premium"},
        lookup_tables=[{"name": "plan", "elements": ["高級版", "Premium", "高级版"]}],
    )
    norm.process_training_data(td)
    ex = td.training_examples[0]
    assert ex.get("text") == "我要升级到高级版"
    assert ex.get("entities")[0]["value"] == "高级版"
    assert td.entity_synonyms == {"高级版": "premium"}
    assert td.lookup_tables[0]["elements"] == ["高级版", "premium"]


def test_tokenizer_drops_whitespace_and_punctuation() -> None:
    from rasa.shared.nlu.training_data.message import Message

    from bot.nlu.tokenizer import HumanlineJiebaTokenizer

    tok = HumanlineJiebaTokenizer(HumanlineJiebaTokenizer.get_default_config(), None, None)  # type: ignore[arg-type]
    words = [t.text for t in tok.tokenize(Message(data={"text": "i want to cancel, 我想取消订阅！"}), "text")]
    assert words == ["i", "want", "to", "cancel", "我", "想", "取消", "订阅"]
    assert [t.text for t in tok.tokenize(Message(data={"text": "？"}), "text")] == ["？"]


def test_tokenizer_gives_english_words_their_stem_as_lemma() -> None:
    from rasa.shared.nlu.training_data.message import Message

    from bot.nlu.tokenizer import HumanlineJiebaTokenizer

    tok = HumanlineJiebaTokenizer(HumanlineJiebaTokenizer.get_default_config(), None, None)  # type: ignore[arg-type]
    tokens = tok.tokenize(Message(data={"text": "cancelled charges for so20261104 我被多收费"}), "text")
    assert [(t.text, t.lemma) for t in tokens] == [
        ("cancelled", "cancel"), ("charges", "charg"), ("for", "for"), ("so20261104", "so20261104"),
        ("我", "我"), ("被", "被"), ("多", "多"), ("收费", "收费"),
    ]
    plain = HumanlineJiebaTokenizer(
        {**HumanlineJiebaTokenizer.get_default_config(), "stem_english": False}, None, None  # type: ignore[arg-type]
    )
    assert [t.lemma for t in plain.tokenize(Message(data={"text": "cancelled charges"}), "text")] == [
        "cancelled", "charges",
    ]


_TINY_CONFIG = """\
recipe: default.v1
assistant_id: tiny
language: zh
pipeline:
  - name: bot.nlu.normalizer.TextNormalizer
  - name: bot.nlu.tokenizer.HumanlineJiebaTokenizer
  - name: RegexFeaturizer
    case_sensitive: false
    use_word_boundaries: false
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 3
  - name: LogisticRegressionClassifier
  - name: RegexEntityExtractor
    case_sensitive: false
    use_word_boundaries: false
  - name: bot.nlu.normalizer.OriginalTextRestorer
  - name: EntitySynonymMapper
policies: []
"""

_TINY_NLU = """\
version: "3.1"
nlu:
- intent: request_refund
  examples: |
    - 我要退款
    - 请退钱给我
    - 退款
    - i want a refund
    - give me my money back
- intent: check_case_status
  examples: |
    - 我的工单进度怎么样
    - 查询工单 [HL-20261104-0001](case_id)
    - check my case
    - what is the status of my case
- regex: case_id
  examples: |
    - HL-\\d{8}-\\d{4}
"""


@pytest.mark.slow
def test_component_in_a_real_rasa_pipeline(tmp_path: Path) -> None:
    """Train a tiny NLU model with our components and parse through rasa's Agent."""
    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu

    (tmp_path / "config.yml").write_text(_TINY_CONFIG, encoding="utf-8")
    (tmp_path / "nlu.yml").write_text(textwrap.dedent(_TINY_NLU), encoding="utf-8")
    model = train_nlu(str(tmp_path / "config.yml"), str(tmp_path / "nlu.yml"), str(tmp_path / "models"))
    assert model
    agent = Agent.load(model)

    parsed = asyncio.run(agent.parse_message("我要退款，謝謝"))
    assert parsed["intent"]["name"] == "request_refund"
    assert parsed["text"] == "我要退款，謝謝"
    assert {"entity": "script", "value": "zh-Hant", "start": 0, "end": 0,
            "extractor": "TextNormalizer"} in parsed["entities"]

    parsed = asyncio.run(agent.parse_message("查詢工單 hl-20261104-0042"))
    values = {e["entity"]: e["value"] for e in parsed["entities"]}
    assert values["script"] == "zh-Hant"
    assert values["case_id"] == "hl-20261104-0042"  # the customer's own case, in their own case
    parsed = asyncio.run(agent.parse_message("check case ＨＬ-20261104-0042"))
    values = {e["entity"]: e["value"] for e in parsed["entities"]}
    assert values == {"script": "en", "case_id": "HL-20261104-0042"}


# ---- the conversation's script for ambiguous text ---------------------------------------------


@pytest.mark.parametrize("text", ["基本方案", "你好", "高级方案"])
def test_text_that_reads_the_same_keeps_a_traditional_conversation(text: str) -> None:
    from bot.i18n import reads_the_same_in_both_scripts, resolve_script

    if text == "高级方案":  # 级 is Simplified-only: not ambiguous, the customer switched
        assert not reads_the_same_in_both_scripts(text)
        assert resolve_script(text, "zh-Hant") == "zh-Hans"
        return
    assert reads_the_same_in_both_scripts(text)
    assert resolve_script(text, "zh-Hant") == "zh-Hant"
    assert resolve_script(text, "zh-Hans") == "zh-Hans"
    assert resolve_script(text, None) == "zh-Hans"


def test_resolve_script_passes_clear_signals_through() -> None:
    from bot.i18n import resolve_script

    assert resolve_script("我想降級", "zh-Hans") == "zh-Hant"
    assert resolve_script("I want a refund", "zh-Hant") == "en"
    assert resolve_script("SO20261104", "zh-Hant") is None
