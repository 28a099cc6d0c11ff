"""``SentenceFeaturizer`` gives the intent classifier exactly the sentence features of the stock
``CountVectorsFeaturizer`` pair and ``RegexFeaturizer`` it replaced, only faster (issue #14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import CountVectorsFeaturizer
from rasa.nlu.featurizers.sparse_featurizer.regex_featurizer import RegexFeaturizer
from rasa.shared.nlu.constants import TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.featurizer import SentenceFeaturizer
from bot.nlu.normalizer import TextNormalizer
from bot.nlu.tokenizer import HumanlineJiebaTokenizer

TRAIN = [
    ("我要退款，订单 SO20261104", "request_refund"),
    ("請退錢畀我，唔該", "request_refund"),
    ("I want a refund for the 2 charges", "request_refund"),
    ("cancelled my plan but you charged me 45 dollars", "complaint_billing"),
    ("check case HL-20261104-0001 please", "check_case_status"),
    ("我的工单进度怎么样", "check_case_status"),
    ("switch me from premium to basic", "downgrade_plan"),
]
UNSEEN = ["refund 3 orders please", "我想查 HL-20261105-0002", "downgrading to basic, not cancelling", "😤"]


def _component(cls: type, config: dict[str, Any], storage: LocalModelStorage, name: str) -> Any:
    context = ExecutionContext(GraphSchema({}), "test", node_name=name)
    return cls.create({**cls.get_default_config(), **config}, storage, Resource(name), context)


def _messages(texts: list[str], storage: LocalModelStorage) -> list[Message]:
    normalizer = _component(TextNormalizer, {}, storage, "norm")
    tokenizer = _component(HumanlineJiebaTokenizer, {}, storage, "tok")
    return tokenizer.process(normalizer.process([Message(data={TEXT: t}) for t in texts]))


def _training_data(storage: LocalModelStorage) -> TrainingData:
    messages = _messages([t for t, _ in TRAIN], storage)
    for message, (_, intent) in zip(messages, TRAIN, strict=True):
        message.set("intent", intent)
    regexes = [{"name": "case_id", "pattern": r"hl-\d{8}-\d{4}"}, {"name": "direction", "pattern": r"from \w+ to"}]
    return TrainingData(messages, regex_features=regexes, lookup_tables=[{"name": "plan", "elements": ["basic"]}])


def _sentence_terms(message: Message, origin_prefix: str, vocabulary: dict[str, int]) -> dict[str, float]:
    """The message's sentence row of the featurizer(s) whose origin starts with ``origin_prefix``,
    as ``{term: count}`` (column indices translated back through ``vocabulary``)."""
    by_index = {i: term for term, i in vocabulary.items()}
    out: dict[str, float] = {}
    for f in message.features:
        if f.type == "sentence" and str(f.origin).startswith(origin_prefix):
            row = f.features.tocoo()
            for col, value in zip(row.col, row.data, strict=True):
                out[by_index[int(col)]] = float(value)
    return out


@pytest.fixture
def storage(tmp_path: Path) -> LocalModelStorage:
    return LocalModelStorage(tmp_path)


def test_words_and_character_ngrams_equal_the_stock_count_vectors(storage: LocalModelStorage) -> None:
    data = _training_data(storage)
    stock_words = _component(CountVectorsFeaturizer, {}, storage, "cv_words")
    stock_chars = _component(
        CountVectorsFeaturizer, {"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4, "use_lemma": False},
        storage, "cv_chars",
    )
    ours = _component(SentenceFeaturizer, {"use_patterns": False}, storage, "ours")
    for component in (stock_words, stock_chars, ours):
        component.train(data)

    texts = [t for t, _ in TRAIN] + UNSEEN
    stock = stock_chars.process(stock_words.process(_messages(texts, storage)))
    mine = ours.process(_messages(texts, storage))
    words_vocab = stock_words.vectorizers[TEXT].vocabulary_
    chars_vocab = stock_chars.vectorizers[TEXT].vocabulary_
    assert ours.words == dict(sorted(words_vocab.items(), key=lambda kv: kv[1]))
    assert ours.chars == dict(sorted(chars_vocab.items(), key=lambda kv: kv[1]))
    for s, m in zip(stock, mine, strict=True):
        assert _sentence_terms(m, "ours:words", ours.words) == _sentence_terms(s, "cv_words", words_vocab)
        assert _sentence_terms(m, "ours:chars", ours.chars) == _sentence_terms(s, "cv_chars", chars_vocab)


def test_patterns_equal_the_stock_regex_featurizer(storage: LocalModelStorage) -> None:
    data = _training_data(storage)
    stock = _component(
        RegexFeaturizer, {"case_sensitive": False, "use_word_boundaries": False}, storage, "regex"
    )
    ours = _component(SentenceFeaturizer, {}, storage, "ours")
    stock.train(data)
    ours.train(data)
    texts = [t for t, _ in TRAIN] + UNSEEN
    names = [p["name"] for p in ours.patterns]
    assert names == [p["name"] for p in stock.known_patterns]
    for s, m in zip(stock.process(_messages(texts, storage)), ours.process(_messages(texts, storage)), strict=True):
        stock_row = [f for f in s.features if f.type == "sentence"]
        mine = _sentence_terms(m, "ours:patterns", {n: i for i, n in enumerate(names)})
        expected = {names[c]: 1.0 for c in stock_row[0].features.tocoo().col} if stock_row else {}
        assert mine == expected


def test_the_vocabulary_survives_persist_and_load(storage: LocalModelStorage) -> None:
    ours = _component(SentenceFeaturizer, {}, storage, "ours")
    ours.train(_training_data(storage))
    loaded = SentenceFeaturizer.load(
        {**SentenceFeaturizer.get_default_config()}, storage, Resource("ours"), ExecutionContext(GraphSchema({}), "t")
    )
    assert (loaded.words, loaded.chars, loaded.patterns) == (ours.words, ours.chars, ours.patterns)
    a = ours.process(_messages(UNSEEN, storage))
    b = loaded.process(_messages(UNSEEN, storage))
    for x, y in zip(a, b, strict=True):
        assert [(f.origin, f.features.toarray().tolist()) for f in x.features] == [
            (f.origin, f.features.toarray().tolist()) for f in y.features
        ]


def test_bad_ngram_range_is_refused() -> None:
    with pytest.raises(ValueError):
        SentenceFeaturizer.validate_config({"min_ngram": 3, "max_ngram": 2})
