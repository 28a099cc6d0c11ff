"""IntentEnsemble (bot.nlu.ensemble): the tf-idf blocks, the mean of two rankings, a real tiny pipeline."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from bot.nlu.ensemble import IntentEnsemble, TfidfBlocks, combine, softmax_rows
from tests.nlu_tiny import TINY_NLU


def _row(values: list[float]) -> sp.spmatrix:
    return sp.csr_matrix(np.array([values]))


def test_each_featurizer_block_is_tfidf_and_unit_length() -> None:
    rows = [
        {"words": _row([1, 0, 0]), "chars": _row([2, 2, 0, 0])},
        {"words": _row([1, 1, 0]), "chars": _row([0, 3, 0, 1])},
        {"words": _row([1, 0, 4])},  # no character features: that block is all zero
    ]
    tfidf = TfidfBlocks.fit(rows)
    assert tfidf.origins == ["chars", "words"] and tfidf.dims == [4, 3]
    # a feature present everywhere has the lowest idf; absent ones the highest
    assert tfidf.idf[1][0] == pytest.approx(1.0)
    assert tfidf.idf[1][2] > tfidf.idf[1][0]
    x = tfidf.transform(rows).toarray()
    assert x.shape == (3, 7)
    assert np.linalg.norm(x[0, :4]) == pytest.approx(1.0)
    assert np.linalg.norm(x[0, 4:]) == pytest.approx(1.0)
    assert np.linalg.norm(x[2, :4]) == 0.0
    # log-scaled counts: 4 occurrences weigh less than four times one
    assert x[2, 6] / x[2, 4] < 4 * tfidf.idf[1][2] / tfidf.idf[1][0]


def test_an_unseen_featurizer_or_a_short_row_does_not_break_parsing() -> None:
    tfidf = TfidfBlocks.fit([{"words": _row([1, 1])}])
    x = tfidf.transform([{"words": _row([1]), "other": _row([5, 5])}, {}])
    assert x.shape == (2, 2)
    assert x.toarray()[1].tolist() == [0.0, 0.0]


def test_the_mean_of_two_rankings() -> None:
    diet = {"complaint_service": 0.9, "out_of_scope": 0.1}
    linear = {"complaint_service": 0.2, "out_of_scope": 0.7, "greet": 0.1}
    mean = combine(diet, linear, diet_weight=0.5)
    assert mean == pytest.approx({"complaint_service": 0.55, "out_of_scope": 0.4, "greet": 0.05})
    assert combine(diet, linear, 1.0) == pytest.approx({**diet, "greet": 0.0})
    assert combine({}, linear, 0.5) == linear  # no DIET ranking: the linear model alone


def test_softmax_rows_sum_to_one() -> None:
    probs = softmax_rows(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert probs.tolist()[0] == pytest.approx([0.5, 0.5])
    assert probs.tolist()[1] == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize("config", [{"diet_weight": 1.5}, {"diet_weight": "half"}, {"C": 0}])
def test_bad_config_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IntentEnsemble.validate_config(config)


_CONFIG = """\
recipe: default.v1
assistant_id: tiny-ensemble
language: zh
pipeline:
  - name: bot.nlu.normalizer.TextNormalizer
  - name: bot.nlu.tokenizer.HumanlineJiebaTokenizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 3
  - name: DIETClassifier
    epochs: 5
    ranking_length: 0
    random_seed: 1
  - name: bot.nlu.ensemble.IntentEnsemble
    diet_weight: {weight}
policies: []
"""



def _train(tmp_path: Path, weight: float) -> str:
    from rasa.model_training import train_nlu

    (tmp_path / "config.yml").write_text(_CONFIG.format(weight=weight), encoding="utf-8")
    (tmp_path / "nlu.yml").write_text(textwrap.dedent(TINY_NLU), encoding="utf-8")
    model = train_nlu(str(tmp_path / "config.yml"), str(tmp_path / "nlu.yml"), str(tmp_path / "models"))
    assert model
    return str(model)


@pytest.mark.slow
def test_in_a_real_pipeline_the_ranking_is_the_mean_of_diet_and_the_linear_model(tmp_path: Path) -> None:
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import UserMessage
    from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
    from rasa.shared.core.trackers import DialogueStateTracker

    agent = Agent.load(_train(tmp_path, 0.5))  # trained, stored, loaded again
    parsed = asyncio.run(agent.parse_message("我想退款"))
    assert parsed["intent"]["name"] == "request_refund"
    assert sum(r["confidence"] for r in parsed["intent_ranking"]) == pytest.approx(1.0, abs=1e-6)
    assert "intent_ranking_parts" not in parsed  # diagnosis only, not in the parse result

    processor = agent.processor
    assert processor is not None
    target = processor.model_metadata.nlu_target
    texts = ["what's the status of my case", "播放一首歌吧", "give me my money back please"]
    inputs = {PLACEHOLDER_MESSAGE: [UserMessage(t) for t in texts], PLACEHOLDER_TRACKER: DialogueStateTracker("t", [])}
    messages = processor.graph_runner.run(inputs=inputs, targets=[target])[target]
    for message in messages:
        parts = message.get("intent_ranking_parts")
        assert set(parts) == {"diet", "linear", "coverage"}
        assert set(parts["linear"]) == {"request_refund", "check_case_status", "out_of_scope"}
        assert sum(parts["linear"].values()) == pytest.approx(1.0)
        expected = combine(parts["diet"], parts["linear"], 0.5)
        for entry in message.get("intent_ranking"):
            assert entry["confidence"] == pytest.approx(expected[entry["name"]])
        assert message.get("intent")["name"] == max(expected, key=lambda k: expected[k])
    assert [m.get("intent")["name"] for m in messages] == ["check_case_status", "out_of_scope", "request_refund"]


@pytest.mark.slow
def test_weight_zero_is_the_linear_model_alone(tmp_path: Path) -> None:
    from rasa.core.agent import Agent

    agent = Agent.load(_train(tmp_path, 0.0))
    parsed = asyncio.run(agent.parse_message("tell me the weather and a joke"))
    assert parsed["intent"]["name"] == "out_of_scope"
    ranking = {r["name"]: r["confidence"] for r in parsed["intent_ranking"]}
    assert set(ranking) == {"request_refund", "check_case_status", "out_of_scope"}


# ---- the shipped model ----------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_the_shipped_model_keeps_general_requests_out_and_our_requests_in(shipped_agent: Any) -> None:
    """Sentences written for this test (in no training or evaluation file), through the real pipeline."""
    expected = {
        "set a timer for twenty minutes": "out_of_scope",
        "what's the weather like in Lisbon this weekend": "out_of_scope",
        "播放一首周杰伦的稻香": "out_of_scope",
        "明天台北會唔會落雨": "out_of_scope",
        "幫我訂今晚七點四個人嘅枱": "out_of_scope",
        "my internet has been down for three days and nobody came to fix it": "complaint_service",
        "我要投诉，你们多扣了我两次月费": "complaint_billing",
        "我想將個plan降返做基本版": "downgrade_plan",
    }
    got = {}
    for text in expected:
        parsed = asyncio.run(shipped_agent.parse_message(text))
        name = parsed["intent"]["name"]
        got[text] = "out_of_scope" if name == "nlu_fallback" else name
        ranking = parsed["intent_ranking"]
        # the ensemble's ranking: a probability distribution over the intents, best first
        assert [r["confidence"] for r in ranking] == sorted((r["confidence"] for r in ranking), reverse=True)
    assert got == expected
